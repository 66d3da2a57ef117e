"""Connection settings, retry policy and the two transports that run the API flows.

:mod:`airflow_provider_openhands.api.endpoints` builds requests and parses answers; this module
only sends them: with ``requests`` in workers, with ``httpx`` in the triggerer. Both share one
retry policy (tenacity) and one answer check, so they behave the same.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
import tenacity

from airflow_provider_openhands.api.endpoints import ApiRequest, Flow
from airflow_provider_openhands.api.errors import check_response, is_retryable
from airflow_provider_openhands.api.options import check_api_version, check_positive
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsConfigError,
    OpenHandsTransientError,
)
from airflow_provider_openhands.hooks.budget import RequestBudget, budget_for

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.all-hands.dev"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
#: Requests per minute one process may send with one connection (the service's limit: 100 per account).
DEFAULT_MAX_REQUESTS_PER_MINUTE = 60
USER_AGENT = "airflow-provider-openhands"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    """An IPv6 address as a URL's host: ``::1`` -> ``[::1]`` (a host name or IPv4 address as is)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ConnectionSettings:
    """What a hook needs from an Airflow connection; ``repr`` never shows the key."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    api_version: str = "v1"
    timeout: float = DEFAULT_TIMEOUT
    verify: bool = True
    max_retries: int = DEFAULT_MAX_RETRIES
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE
    #: Self-hosted git providers' base URLs (extra ``git_hosts``, e.g. ``{"gitlab": "https://git.acme.dev"}``),
    #: for the OpenLineage dataset namespaces of repositories.
    git_hosts: Mapping[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"}

    @classmethod
    def from_connection(
        cls, conn_id: str, host: str | None, port: int | None, password: str | None, extra: Mapping[str, Any]
    ) -> ConnectionSettings:
        """Read and check a connection; every error names the connection and the field."""
        if not password or not str(password).strip():
            raise OpenHandsConfigError(
                f"Connection {conn_id!r} has no API key: put the OpenHands API key in its password field."
            )
        base_url = _base_url(conn_id, host, port, extra)
        max_retries = extra.get("max_retries", DEFAULT_MAX_RETRIES)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise OpenHandsConfigError(f"Connection {conn_id!r}: extra max_retries must be an integer >= 0")
        budget = extra.get("max_requests_per_minute", DEFAULT_MAX_REQUESTS_PER_MINUTE)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise OpenHandsConfigError(
                f"Connection {conn_id!r}: extra max_requests_per_minute must be a positive integer"
            )
        try:
            api_version = check_api_version(extra.get("api_version"))
            timeout = check_positive(float(extra.get("timeout", DEFAULT_TIMEOUT)), "timeout")
        except (OpenHandsConfigError, ValueError, TypeError) as exc:
            raise OpenHandsConfigError(f"Connection {conn_id!r}: extra {exc}") from None
        git_hosts = extra.get("git_hosts") or {}
        if not isinstance(git_hosts, Mapping) or not all(
            isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname
            for url in git_hosts.values()
        ):
            raise OpenHandsConfigError(
                f"Connection {conn_id!r}: extra git_hosts must map git providers to base URLs, "
                f'e.g. {{"gitlab": "https://git.example.com"}}'
            )
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            git_hosts={str(provider): url.rstrip("/") for provider, url in git_hosts.items()},
            api_key=str(password).strip(),
            api_version=api_version,
            timeout=timeout,
            verify=not _truthy(extra.get("disable_tls_verification", False)),
            max_retries=max_retries,
            max_requests_per_minute=budget,
        )


def _base_url(conn_id: str, host: str | None, port: int | None, extra: Mapping[str, Any]) -> str:
    """``host`` may be a full base URL or a bare host name (then ``extra.scheme``, default https)."""
    host = (host or "").strip()
    if "@" in host:
        # user:password@ would travel in URLs, logs and XCom (and requests/httpx would send it as Basic
        # auth instead of the key): refused, and never quoted.
        raise OpenHandsConfigError(
            f"Connection {conn_id!r}: the host URL carries a user name or password ('user:password@'). "
            f"Remove it from the host: the OpenHands API key belongs in the connection's password field."
        )
    if not host:
        url = DEFAULT_BASE_URL
    elif "://" in host:
        url = host
    else:
        url = f"{extra.get('scheme', 'https')}://{_bracketed(host)}"
    parts = urlsplit(url)
    try:
        has_port = parts.port is not None
    except ValueError:
        raise OpenHandsConfigError(f"Connection {conn_id!r}: host {host!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OpenHandsConfigError(f"Connection {conn_id!r}: host {host!r} is not an http(s) base URL")
    if port and not has_port:
        url = f"{parts.scheme}://{_bracketed(parts.hostname)}:{port}{parts.path}"
    if (
        parts.scheme == "http"
        and not _is_loopback(parts.hostname)
        and not _truthy(extra.get("allow_insecure_http", False))
    ):
        raise OpenHandsConfigError(
            f"Connection {conn_id!r}: plain http to {parts.hostname} would send the API key in clear. "
            f"Use https, or set extra allow_insecure_http: true if you really mean it."
        )
    return url.rstrip("/")


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Honour the server's ``Retry-After``; otherwise exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float):
        self.maximum = maximum
        # tenacity 9.1 renamed ``initial`` to ``multiplier``; jitter scales with the first wait.
        scale = (
            "multiplier"
            if "multiplier" in inspect.signature(tenacity.wait_exponential_jitter).parameters
            else "initial"
        )
        self.fallback = tenacity.wait_exponential_jitter(**{scale: initial}, max=maximum, jitter=initial)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.maximum)
        return self.fallback(retry_state)


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop retrying when the next attempt would start after the caller's deadline (``time.time()``)."""

    def __init__(self, deadline: Callable[[], float | None]):
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        at = self.deadline()
        return at is not None and time.time() + retry_state.upcoming_sleep >= at


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = DEFAULT_MAX_RETRIES
    initial_wait: float = 1.0
    max_wait: float = 60.0

    def tenacity_kwargs(
        self, request: ApiRequest, deadline: Callable[[], float | None] | None = None
    ) -> dict[str, Any]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s %s failed (%s); retry %d of %d in %.1fs",
                request.method,
                request.path,
                exc,
                state.attempt_number,
                self.max_retries,
                state.upcoming_sleep,
            )

        return {
            "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, idempotent=request.idempotent)),
            "stop": tenacity.stop_after_attempt(self.max_retries + 1) | _StopAtDeadline(deadline or (lambda: None)),
            "wait": _WaitRetryAfter(self.initial_wait, self.max_wait),
            "before_sleep": log_retry,
            "reraise": True,
        }


def _transport_error(request: ApiRequest, exc: Exception, *, request_sent: bool) -> OpenHandsTransientError:
    return OpenHandsTransientError(
        f"{request.method} {request.path} failed: {type(exc).__name__}: {exc}",
        method=request.method,
        path=request.path,
        request_sent=request_sent,
    )


def _never_connected(exc: BaseException) -> bool:
    """True when ``requests`` failed before the request left (refused or connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError"):
            return True
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        pending.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return False


class SyncTransport:
    """Runs flows with ``requests``: one session per hook, reused across calls."""

    def __init__(self, settings: ConnectionSettings, retry: RetryPolicy):
        self.settings = settings
        self.retry = retry
        self.session = requests.Session()
        self.session.headers.update(settings.headers)
        self.session.verify = settings.verify
        self.budget = budget_for(settings.conn_id, settings.base_url, settings.max_requests_per_minute)
        #: When set (``time.time()``), every request, its retries and ``Retry-After`` waits included,
        #: ends by then: no retry starts after it, and an attempt's timeout is cut to what is left.
        self.deadline: float | None = None

    def _send_once(self, request: ApiRequest) -> Any:
        timeout = self.settings.timeout
        if self.deadline is not None:
            timeout = max(0.5, min(timeout, self.deadline - time.time()))
        # an agent server gets its sandbox's session key and nothing of the connection's
        send = requests.request if request.server else self.session.request
        try:
            response = send(
                request.method,
                (request.server or self.settings.base_url) + request.path,
                params=list(request.params),
                json=request.json,
                timeout=timeout,
                **_agent_server_kwargs(request, self.settings),
            )
        except requests.RequestException as exc:
            raise _transport_error(request, exc, request_sent=not _never_connected(exc)) from None
        if request.raw and 200 <= response.status_code < 300:
            return response.content
        return check_response(
            request.method,
            request.path,
            response.status_code,
            response.headers,
            response.text,
            self.settings.conn_id,
            self.settings.api_version,
            agent_server=bool(request.server),
        )

    def _send_within_budget(self, request: ApiRequest) -> Any:
        """One attempt, in a slot of the connection's request budget in this process (``hooks/budget.py``)."""
        self.budget.acquire(self.settings.conn_id, self.deadline)
        return _budgeted(self.budget, self._send_once, request)

    def send(self, request: ApiRequest) -> Any:
        kwargs = self.retry.tenacity_kwargs(request, lambda: self.deadline)
        return tenacity.Retrying(**kwargs)(self._send_within_budget, request)

    def run(self, flow: Flow[Any]) -> Any:
        return drive(flow, self.send)

    def close(self) -> None:
        self.session.close()


class AsyncTransport:
    """Runs flows with ``httpx``: one client per transport, reused for every poll."""

    def __init__(self, settings: ConnectionSettings, retry: RetryPolicy):
        self.settings = settings
        self.retry = retry
        self.client = httpx.AsyncClient(
            base_url=settings.base_url, headers=settings.headers, timeout=settings.timeout, verify=settings.verify
        )
        self.budget = budget_for(settings.conn_id, settings.base_url, settings.max_requests_per_minute)

    async def _send_once(self, request: ApiRequest) -> Any:
        try:
            if request.server:  # an agent server gets its sandbox's session key and nothing of the connection's
                async with httpx.AsyncClient(timeout=self.settings.timeout, verify=self.settings.verify) as client:
                    response = await client.request(
                        request.method,
                        request.server + request.path,
                        params=list(request.params),
                        json=request.json,
                        headers=_agent_server_kwargs(request, self.settings)["headers"],
                    )
            else:
                response = await self.client.request(
                    request.method, request.path, params=list(request.params), json=request.json
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _transport_error(request, exc, request_sent=False) from None
        except httpx.HTTPError as exc:
            raise _transport_error(request, exc, request_sent=True) from None
        if request.raw and 200 <= response.status_code < 300:
            return response.content
        return check_response(
            request.method,
            request.path,
            response.status_code,
            response.headers,
            response.text,
            self.settings.conn_id,
            self.settings.api_version,
            agent_server=bool(request.server),
        )

    async def send_in_slot(self, request: ApiRequest) -> Any:
        """One attempt in a slot of the budget the caller has taken already."""
        try:
            response = await self._send_once(request)
        except OpenHandsTransientError as exc:
            _heard(self.budget, exc)
            raise
        self.budget.accepted()
        return response

    async def _send_within_budget(self, request: ApiRequest) -> Any:
        async with self.budget.in_flight():
            await self.budget.aacquire(self.settings.conn_id)
            return await self.send_in_slot(request)

    async def send(self, request: ApiRequest) -> Any:
        return await tenacity.AsyncRetrying(**self.retry.tenacity_kwargs(request))(self._send_within_budget, request)

    async def run(self, flow: Flow[Any]) -> Any:
        return await adrive(flow, self.send)

    async def close(self) -> None:
        await self.client.aclose()


def _heard(budget: RequestBudget, exc: OpenHandsTransientError) -> None:
    """A rate-limit 429 holds and slows the whole budget (capacity and the daily quota raise other errors)."""
    if exc.status_code == 429:
        budget.rate_limited(None if exc.retry_after is None else float(exc.retry_after))


def _budgeted(budget: RequestBudget, send: Callable[[ApiRequest], Any], request: ApiRequest) -> Any:
    """``send(request)`` in a slot already taken: what the service answered adapts the budget."""
    try:
        response = send(request)
    except OpenHandsTransientError as exc:
        _heard(budget, exc)
        raise
    budget.accepted()
    return response


def _agent_server_kwargs(request: ApiRequest, settings: ConnectionSettings) -> dict[str, Any]:
    """What a request to a conversation's agent server carries besides: its session key, TLS as the connection's."""
    if not request.server:
        return {}
    return {"headers": {"X-Session-API-Key": str(request.session_key or "")}, "verify": settings.verify}


def drive(flow: Flow[Any], send: Callable[[ApiRequest], Any]) -> Any:
    """Feed a flow the answers to its requests; an API error is thrown into it to handle."""
    step: Callable[[Any], ApiRequest] = flow.send
    value: Any = None
    while True:
        try:
            request = step(value)
        except StopIteration as done:
            return done.value
        try:
            step, value = flow.send, send(request)
        except OpenHandsApiError as exc:
            step, value = flow.throw, exc


async def adrive(flow: Flow[Any], send: Callable[[ApiRequest], Awaitable[Any]]) -> Any:
    """:func:`drive` for the async transport."""
    step: Callable[[Any], ApiRequest] = flow.send
    value: Any = None
    while True:
        try:
            request = step(value)
        except StopIteration as done:
            return done.value
        try:
            step, value = flow.send, await send(request)
        except OpenHandsApiError as exc:
            step, value = flow.throw, exc
