"""Exceptions raised by the OpenHands provider.

Every message names what failed (method, path, status, id, connection) and never a credential:
exception text ends up in task logs and in the UI.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class OpenHandsError(AirflowException):
    """Base class of every error the provider raises."""


class OpenHandsConfigError(OpenHandsError, AirflowFailException, ValueError):
    """Bad input: a parameter or connection setting that cannot work. Raised before any request,
    and not retried: the same input fails the same way."""


class OpenHandsApiError(OpenHandsError):
    """The API answered with an error status, or with a body the provider cannot read."""

    def __init__(self, message: str, *, status_code: int | None = None, method: str = "", path: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.path = path


class OpenHandsPermanentError(OpenHandsApiError, AirflowFailException):
    """An answer that asking again cannot change (401/403/404/422, a spent quota).

    Fails the task at once, and Airflow does not retry it either: a retry would meet the same answer.
    """


class OpenHandsAuthError(OpenHandsPermanentError):
    """401/403: the API key is wrong, revoked or its account unverified. Never retried."""


class OpenHandsNotFoundError(OpenHandsPermanentError):
    """The conversation or start task does not exist (404 or a ``null`` answer)."""


class OpenHandsValidationError(OpenHandsPermanentError):
    """422: the server rejected the request as invalid; the message carries its ``detail``."""


class OpenHandsQuotaError(OpenHandsPermanentError):
    """429 DAILY_SANDBOX_LIMIT_REACHED: the account's daily sandbox quota is spent until midnight UTC."""


class OpenHandsTransientError(OpenHandsApiError):
    """429, 5xx, connection errors and timeouts: worth retrying with backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None, request_sent: bool = True, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        #: False when the request never reached the server (connection refused): safe to resend.
        self.request_sent = request_sent


class OpenHandsConcurrencyLimitError(OpenHandsApiError):
    """429 CONCURRENCY_LIMIT_REACHED: the account runs as many conversations as it may.

    Not retried by the transport: retrying at once cannot help, only waiting for a slot can.
    """

    def __init__(self, message: str, *, limit: int | None = None, current: int | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.limit = limit
        self.current = current


class OpenHandsStartError(OpenHandsError):
    """The start task of a V1 conversation ended in ERROR; the message carries its ``detail``."""

    def __init__(self, message: str, *, capacity: bool = False):
        super().__init__(message)
        #: True when the start failed for want of a free conversation slot: worth waiting for.
        self.capacity = capacity


class OpenHandsStartTimeout(OpenHandsError, AirflowFailException):
    """The V1 start task was not READY before ``start_timeout``; whatever had started was stopped.

    Not retried, like a conversation timeout: the same in the worker and in the triggerer.
    """


class OpenHandsUnreachableError(OpenHandsError):
    """The service kept failing transiently (5xx, 429, timeouts, refused) for ``unreachable_timeout``.

    An ordinary failure: Airflow's task retries are for a service that was down.
    """


class OpenHandsConversationFailed(OpenHandsError, AirflowFailException):
    """The conversation reached a failure status (error, stuck, sandbox missing, ...).

    Fails the task without retries: a retry would only find the same failed conversation (or pay
    for a new one that likely fails alike). Task retries stay for what they are good at: a worker
    that died, a service that was down.
    """


class OpenHandsConversationTimeout(OpenHandsError, AirflowFailException):
    """The conversation did not end before the task's ``timeout``; not retried, as a retry would
    only wait on the same (by then stopped) conversation."""


class OpenHandsConfirmationRequired(OpenHandsError, AirflowFailException):
    """The agent waits for a confirmation this task may not give (``on_confirmation="fail"``, or no
    way to ask a person). Not retried: a retry would meet the same question."""


class OpenHandsBudgetExceeded(OpenHandsError, AirflowFailException):
    """The conversation's cost passed ``max_cost_usd``: it was stopped, and the task fails."""


class OpenHandsOutputError(OpenHandsError, AirflowFailException):
    """The agent's structured output is missing, not JSON, or does not match ``output_schema``."""


class OpenHandsCapacityTimeout(OpenHandsError, AirflowFailException):
    """No free conversation slot within ``capacity_timeout``."""
