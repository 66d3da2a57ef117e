"""HTTP answer -> parsed body or provider exception, shared by the sync and async transports."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsConcurrencyLimitError,
    OpenHandsNotFoundError,
    OpenHandsTransientError,
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


def check_response(method: str, path: str, status: int, headers: Mapping[str, str], text: str, conn_id: str) -> Any:
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
    if status in (401, 403):
        reason = "is missing, wrong or revoked" if status == 401 else "belongs to an account not allowed this"
        raise OpenHandsAuthError(
            f"{where} was refused with HTTP {status}: the API key of connection {conn_id!r} {reason}. "
            f"Check the connection's password (Settings -> API Keys in OpenHands).",
            **kwargs,
        )
    if status == 429:
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, dict) and detail.get("error") == "CONCURRENCY_LIMIT_REACHED":
            raise OpenHandsConcurrencyLimitError(
                f"{where}: the account already runs {detail.get('current')} of its "
                f"{detail.get('limit')} concurrent conversations (CONCURRENCY_LIMIT_REACHED)",
                limit=detail.get("limit") if isinstance(detail.get("limit"), int) else None,
                current=detail.get("current") if isinstance(detail.get("current"), int) else None,
                **kwargs,
            )
    if status in TRANSIENT_STATUSES:
        raise OpenHandsTransientError(
            f"{where} answered HTTP {status}: {_short(text)!r}",
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            **kwargs,
        )
    if status == 404:
        raise OpenHandsNotFoundError(f"{where} answered HTTP 404: not found", **kwargs)
    if status == 422 and isinstance(body, dict) and "detail" in body:
        raise OpenHandsApiError(
            f"{where} was rejected as invalid (HTTP 422): {_short(json.dumps(body['detail']))}", **kwargs
        )
    raise OpenHandsApiError(f"{where} answered HTTP {status}: {_short(text)!r}", **kwargs)


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Transient failures are retried; a POST only when the server surely did not act on it."""
    if not isinstance(exc, OpenHandsTransientError):
        return False
    if idempotent:
        return True
    if exc.status_code is None:
        return not exc.request_sent
    return exc.status_code in NOT_PROCESSED_STATUSES
