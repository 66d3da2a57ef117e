"""The request budget of worker-side tasks: a connection's ``max_requests_per_minute``, per process.

The triggerer's shared poller paces its requests within that budget
(:class:`~airflow_provider_openhands.triggers.poller.RequestBudget`); a task in a worker sends its
own (the start, reads of the results: one ``git/diff`` per changed file with ``include_diff``), and
200 of them in a few seconds would pass the service's limit. Every request a worker process sends
with one connection takes a place in a sliding window here, and a rate-limit 429 holds the whole
window, so the other tasks of the process slow down too. Bursts below the budget are not delayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from airflow_provider_openhands.exceptions import OpenHandsTransientError

log = logging.getLogger(__name__)


class RequestWindow:
    """At most ``per_window`` requests start in any :attr:`window` seconds (thread-safe)."""

    #: Seconds over which ``max_requests_per_minute`` is counted (tests shrink it).
    window = 60.0
    #: Counted over a slightly longer window, so the service, which sees the requests a little
    #: jittered, never counts one too many in its own.
    SLACK = 1.02

    def __init__(self, per_window: int) -> None:
        self.per_window = per_window
        self._started: deque[float] = deque()
        self._hold_until = float("-inf")
        self._lock = threading.Lock()

    def wait_time(self, now: float) -> float:
        """Seconds until a request may start (0: at once); forgets starts older than the window."""
        window = self.window * self.SLACK
        while self._started and self._started[0] <= now - window:
            self._started.popleft()
        wait = self._hold_until - now
        if len(self._started) >= self.per_window:
            wait = max(wait, self._started[len(self._started) - self.per_window] + window - now)
        return max(0.0, wait)

    def acquire(self, conn_id: str = "", deadline: float | None = None) -> None:
        """Take a place for one request, sleeping until there is one; a place only after the
        caller's ``deadline`` (``time.time()``) is refused at once (a transient error)."""
        told = False
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self.wait_time(now)
                if wait <= 0:
                    self._started.append(now)
                    return
            if deadline is not None and time.time() + wait > deadline:
                raise OpenHandsTransientError(
                    f"Connection {conn_id!r}: no request may be sent for {wait:.1f} s (request budget, or a "
                    f"rate-limit 429's Retry-After), past the caller's deadline",
                    request_sent=False,
                )
            if not told and wait >= 1.0:
                log.info(
                    "Connection %r: %d requests in %.0f s spent in this process (max_requests_per_minute); "
                    "waiting %.1f s",
                    conn_id,
                    self.per_window,
                    self.window,
                    wait,
                )
                told = True
            time.sleep(min(wait, self.window))

    def hold(self, seconds: float) -> None:
        """Start nothing for ``seconds`` (the service said the rate limit is reached)."""
        with self._lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)


_windows: dict[tuple[str, str], RequestWindow] = {}
_windows_lock = threading.Lock()


def window_for(conn_id: str, base_url: str, per_minute: int) -> RequestWindow:
    """This process's window for one connection (its budget as last read from the connection)."""
    with _windows_lock:
        window = _windows.setdefault((conn_id, base_url), RequestWindow(per_minute))
        window.per_window = per_minute
        return window
