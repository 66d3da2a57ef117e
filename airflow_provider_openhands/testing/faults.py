"""What the emulated service answers instead of the normal answer: injected faults and outages,
and the account's limits (concurrency, daily sandboxes, rate limit).

The limits are knobs of the :class:`Emulator` (constructor keyword arguments; also
``POST /_emulator/config`` with the same names):

* ``concurrency_limit`` (10): one start too many, or a resume too many, is refused with 429
  ``CONCURRENCY_LIMIT_REACHED``. A sandbox holds its slot from the POST until it is paused or
  deleted, **even after the agent finished**, as on the service; a start task that ends in ERROR
  holds one until the ERROR shows (*stricter*).
* ``capacity_error_style``: ``"nested"`` (default, ``{"detail": {"error": ..., "message", "limit",
  "current"}}``) or ``"flat"`` (``{"error": "CONCURRENCY_LIMIT_REACHED", ...}``). No Retry-After.
* ``daily_sandbox_limit`` (None): once that many sandboxes were created in the current UTC day
  (every accepted V1 POST and ``seed`` counts; *stricter*: starts that fail count too), the POST
  answers 429 ``{"detail": {"error": "DAILY_SANDBOX_LIMIT_REACHED", "message", "limit", "reset_at"}}``.
* ``rate_limit_per_minute`` (None): over that many API requests (control calls excluded) in any
  60 s window, or over 10 in any second (the service's ``10/second; 100/minute``) -> 429
  ``{"error": "Rate limit exceeded: N per 1 minute"}`` with ``Retry-After``. Refused requests do not
  count against the window. ``rate_limit_window`` (60) scales both windows down for tests (6: N per
  6 s and 10 per 0.1 s). :meth:`Emulator.requests_per_minute` gives the
  peak of API requests seen in any 60 s window (``max_requests_per_minute`` in ``stats()``).

Faults (:meth:`Emulator.add_fault`, ``POST /_emulator/faults``): a status code, headers, a raw
body, a delay (``passthrough``: delay then answer normally), a reset connection, for requests
matching a method and a path pattern, ``times`` times (1 by default) and/or for ``seconds`` from
when it was added (an outage window: every matching request in it). :meth:`Emulator.outage`
(``POST /_emulator/outage``) is the shorthand for a 503 window.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any


def max_in_window(times: list[float], window: float) -> int:
    """The most of the sorted ``times`` in any half-open window of ``window`` seconds (for rate checks)."""
    most = first = 0
    for last, at in enumerate(times):
        while times[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass
class Fault:
    """Answer matching requests with something other than the normal answer.

    It applies ``times`` times (1 when neither ``times`` nor ``seconds`` is given), and/or to every
    matching request for ``seconds`` from when it was added (an outage window).
    """

    status: int = 500
    method: str | None = None
    path: str | None = None  # a regular expression searched in the path
    times: int | None = None
    body: Any = None  # JSON-encoded unless ``raw`` is given
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection mid-answer
    after: bool = False  # with reset: act on the request first (the client never hears the answer)
    passthrough: bool = False  # only delay, then answer normally
    seconds: float | None = None  # an outage window, from ``added_at``
    added_at: float = field(default_factory=time.time)
    used: int = 0

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.seconds is not None and now >= self.added_at + self.seconds:
            return False
        limit = self.times if self.times is not None else (None if self.seconds is not None else 1)
        return limit is None or self.used < limit

    def matches(self, method: str, path: str, now: float | None = None) -> bool:
        if not self.active(now):
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))


class Faults:
    """The emulator's faults, outages and limits (a mixin of :class:`Emulator`, whose state it
    reads and counts in)."""

    # -- faults and outages ----------------------------------------------------------------------

    def add_fault(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        fault.added_at = time.time()
        with self.lock:
            self.faults.append(fault)
        return fault

    def outage(
        self,
        status: int = 503,
        seconds: float = 5,
        path: str | None = None,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Every matching API request answers ``status`` for ``seconds`` from now."""
        return self.add_fault(
            status=status,
            seconds=seconds,
            path=path,
            method=method,
            headers=dict(headers or {}),
            body={"detail": HTTPStatus(status).phrase},
        )

    def take_fault(self, method: str, path: str) -> Fault | None:
        now = time.time()
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, now):
                    fault.used += 1
                    return fault
        return None

    # -- limits ----------------------------------------------------------------------------------

    def _capacity_refusal(self) -> tuple[int, Any] | None:
        current = self.alive_count()
        if current < self.concurrency_limit:
            return None
        self.refused_for_capacity += 1
        error = {
            "error": "CONCURRENCY_LIMIT_REACHED",
            "message": f"You have reached the maximum of {self.concurrency_limit} concurrent conversations.",
            "limit": self.concurrency_limit,
            "current": current,
        }
        return 429, (error if self.capacity_error_style == "flat" else {"detail": error})

    def _sandboxes_today(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        midnight = datetime.fromtimestamp(now, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return sum(1 for at in self.sandbox_creations if at >= midnight.timestamp())

    def _quota_refusal(self) -> tuple[int, Any] | None:
        limit = self.daily_sandbox_limit
        if limit is None or self._sandboxes_today() < limit:
            return None
        self.refused_for_quota += 1
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        reset_at = (today + timedelta(days=1)).isoformat()
        return 429, {
            "detail": {
                "error": "DAILY_SANDBOX_LIMIT_REACHED",
                "message": f"You have reached your daily limit of {limit} sandboxes. It resets at {reset_at}.",
                "limit": limit,
                "reset_at": reset_at,
            }
        }

    def admit(self, now: float | None = None) -> float | None:
        """Count an API request against the rate limit: None if admitted, else seconds to wait."""
        now = time.time() if now is None else now
        with self.lock:
            self.api_request_times.append(now)
            limit, window = self.rate_limit_per_minute, self.rate_limit_window
            while self._accepted and now - self._accepted[0] >= window:
                self._accepted.popleft()
            if limit is not None and len(self._accepted) >= limit:
                self.refused_for_rate += 1
                return max(0.0, self._accepted[0] + window - now)
            second = window / 60.0
            if limit is not None and len(self._accepted) >= 10 and now - self._accepted[-10] < second:
                self.refused_for_rate += 1
                return max(0.0, self._accepted[-10] + second - now)
            self._accepted.append(now)
        return None

    def requests_per_minute(self, since: float | None = None) -> int:
        """The most API requests (control calls excluded) seen in any 60 s window since ``since``."""
        with self.lock:
            times = sorted(t for t in self.api_request_times if since is None or t >= since)
        return max_in_window(times, 60.0)
