"""HTTP answer -> parsed body or provider exception, shared by the sync and async transports."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsConcurrencyLimitError,
    OpenHandsNotFoundError,
    OpenHandsQuotaError,
    OpenHandsTransientError,
    OpenHandsValidationError,
)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that prove the server did not act on the request: safe to retry even a POST.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
_MAX_DETAIL_CHARS = 500


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, from either of its two forms (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "..."


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def check_response(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    text: str,
    conn_id: str,
    api_version: str | None = None,
    agent_server: bool = False,
) -> Any:
    """Return the JSON body of a 2xx answer, or raise the exception its status calls for.

    The text of the answer is quoted (shortened) so the task log says what the server said; the
    request's headers, which carry the key, are never part of any message.
    """
    where = f"{method} {path}"
    if 200 <= status < 300:
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise OpenHandsApiError(
                f"{where} answered {status} with a body that is not JSON: {_short(text)!r}",
                status_code=status,
                method=method,
                path=path,
            ) from None
    body = _json_or_none(text)
    kwargs: dict[str, Any] = {"status_code": status, "method": method, "path": path}
    if status in (401, 403) and agent_server:  # a sandbox's own key, read with the conversation each time
        raise OpenHandsAuthError(
            f"{where} was refused with HTTP {status} by the conversation's agent server: its session key "
            "(read with the conversation) is no longer valid; the sandbox may have restarted",
            **kwargs,
        )
    if status in (401, 403):
        reason = "is missing, wrong or revoked" if status == 401 else "belongs to an account not allowed this"
        check = "the connection's password (Settings -> API Keys in OpenHands)"
        if status == 401 and api_version == "v0":
            # A V0 server's AuthenticationError also means a repository the key cannot reach.
            reason = "may be wrong, revoked, or without access to the repository (V0 answers 401 for each)"
            check += " and that its account can reach the repository"
        raise OpenHandsAuthError(
            f"{where} was refused with HTTP {status}: the API key of connection {conn_id!r} {reason}. Check {check}.",
            **kwargs,
        )
    if status == 429:
        _raise_for_429(where, body, kwargs)
    if status in TRANSIENT_STATUSES:
        raise OpenHandsTransientError(
            f"{where} answered HTTP {status}: {_short(text)!r}",
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            **kwargs,
        )
    if status == 404:
        raise OpenHandsNotFoundError(f"{where} answered HTTP 404: not found", **kwargs)
    if status in (400, 422):
        detail = json.dumps(body["detail"]) if isinstance(body, dict) and "detail" in body else text
        raise OpenHandsValidationError(f"{where} was rejected as invalid (HTTP {status}): {_short(detail)}", **kwargs)
    raise OpenHandsApiError(f"{where} answered HTTP {status}: {_short(text)!r}", **kwargs)


def _quota_detail(body: Any) -> dict[str, Any] | None:
    """The error object of a 429 body: nested under ``detail`` (usual) or flat (also seen)."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        return detail
    return body if isinstance(body.get("error"), str) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raise_for_429(where: str, body: Any, kwargs: dict[str, Any]) -> None:
    """Account limits are no rate limit: waiting seconds cannot lift them (the caller decides)."""
    detail = _quota_detail(body)
    error = detail.get("error") if detail else None
    if error == "CONCURRENCY_LIMIT_REACHED":
        raise OpenHandsConcurrencyLimitError(
            f"{where}: the account already runs {detail.get('current')} of its "
            f"{detail.get('limit')} concurrent conversations (CONCURRENCY_LIMIT_REACHED)",
            limit=_int_or_none(detail.get("limit")),
            current=_int_or_none(detail.get("current")),
            **kwargs,
        )
    if error == "DAILY_SANDBOX_LIMIT_REACHED":
        now = datetime.now(timezone.utc)
        reset = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        hours, rest = divmod(int((reset - now).total_seconds()), 3600)
        limit = _int_or_none(detail.get("limit"))
        raise OpenHandsQuotaError(
            f"{where}: the account's daily sandbox quota{f' of {limit}' if limit else ''} is spent "
            f"(DAILY_SANDBOX_LIMIT_REACHED). It resets at midnight UTC ({reset:%Y-%m-%d %H:%M} UTC, in "
            f"{hours}h{rest // 60:02d}m); starting again before then cannot succeed.",
            **kwargs,
        )


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Transient failures are retried; a POST only when the server surely did not act on it."""
    if not isinstance(exc, OpenHandsTransientError):
        return False
    if idempotent:
        return True
    if exc.status_code is None:
        return not exc.request_sent
    return exc.status_code in NOT_PROCESSED_STATUSES
