"""One request budget per process and connection: every request the provider sends counts.

An OpenHands account allows about 100 requests a minute (and 10 a second). Every request a
process sends with one connection, in a worker (``requests``) or in the triggerer (``httpx``: the
shared poller's batched reads and each trigger's own reads alike), first takes a slot here. The
connection's ``max_requests_per_minute`` (default 60) is the most that start in any minute, at
most :attr:`RequestBudget.BURST` at once; slots are handed out in the order they were asked for.

Several processes may share one account (two triggerers, a few workers). A rate-limit 429 says the
account's window is spent: the budget holds every caller of the process for at least its
``Retry-After`` (one over :attr:`RequestBudget.HOLD_MAX` counts as that; up to half as long again,
so processes held by one wave do not all come back at once) and cuts its rate to half of what it
sent in the last minute (over its life if that is shorter; never below a tenth of the budget). One
cut a minute: the account counts a sliding minute, so a cut shows there only a minute later, and
the 429s before that are the old minute's (they hold, they do not cut again). The rate then doubles
each minute of accepted requests up to half the rate it had before the cut (a slow start), and
grows by half a request a minute per minute beyond (additive increase, multiplicative decrease, as
TCP shares a link).
So processes that together ask for more than the account allows settle under its limit instead
of each hammering it. A caller never retries around the budget: each retry takes a slot too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import weakref
from collections import deque

from airflow_provider_openhands.exceptions import OpenHandsTransientError

log = logging.getLogger(__name__)


class RequestBudget:
    """Slots for the requests of one process and connection (thread-safe, usable from asyncio).

    A generic cell rate algorithm: request ``n`` may start at ``tat - tolerance``, where ``tat``
    moves on by :attr:`spacing` per slot; ``tolerance`` lets :attr:`BURST` start at once. At most
    ``limit`` start in any :attr:`window` seconds.
    """

    #: Seconds over which ``max_requests_per_minute`` is counted (tests shrink it).
    window = 60.0
    #: Requests that may start at once (the service allows 10 a second: three processes may burst together).
    BURST = 3
    #: Slots are a little further apart than the limit needs: the service sees them jittered.
    SLACK = 1.05
    #: After a 429 the rate is cut to this share of what the process sent in the last window (its
    #: nominal rate may be far above that: halving it would change nothing).
    DECREASE = 0.5
    #: Each window of requests the service accepts grows the rate by this many requests a window.
    INCREASE = 0.5
    #: The rate is never cut below this share of the budget (the batched polls must go on).
    FLOOR = 0.1
    #: Per-conversation requests of one event loop out at once (the poller's batches are not counted).
    IN_FLIGHT = 4
    #: Longest hold one 429 puts on the budget, in seconds.
    HOLD_MAX = 600.0

    def __init__(self, per_window: int) -> None:
        self.per_window = per_window
        #: The rate in force (requests per window): the budget, lower after a 429.
        self.limit = float(per_window)
        self._tat = float("-inf")  # theoretical arrival time of the next slot
        self._sent: deque[float] = deque()  # the slots of the last window
        self._first = float("inf")  # the first slot: a budget younger than a window sent over less time
        self._hold_until = float("-inf")
        self._cut_until = float("-inf")  # one cut a window
        self._regrow_fast_to = 0.0  # after a cut, the rate doubles each window up to this (half the rate before)
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Lock, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )
        self.taken = 0  # slots handed out (what the process sent)
        self.refused = 0  # 429s heard

    # -- the shape of the rate -------------------------------------------------------------------

    def _shape(self) -> tuple[float, float]:
        """``(spacing, tolerance)`` for the rate in force."""
        limit = max(1, min(int(self.limit), self.per_window))
        burst = self.BURST if limit >= 2 * self.BURST else 1
        spacing = self.window * self.SLACK / (limit - burst + 1) if burst > 1 else self.window * self.SLACK / limit
        return spacing, (burst - 1) * spacing

    def _reserve(self, now: float, deadline_in: float | None) -> float | None:
        """The moment (``time.monotonic()``) of this caller's slot, taken; None if it comes only
        after ``deadline_in`` seconds (nothing taken)."""
        spacing, tolerance = self._shape()
        at = max(now, self._tat - tolerance, self._hold_until)
        if deadline_in is not None and at - now > deadline_in:
            return None
        self._tat = max(self._tat, at) + spacing
        self.taken += 1
        self._first = min(self._first, at)
        while self._sent and self._sent[0] < now - self.window:
            self._sent.popleft()
        self._sent.append(at)
        return at

    def _refuse(self, conn_id: str, wait: float | None) -> OpenHandsTransientError:
        return OpenHandsTransientError(
            f"Connection {conn_id!r}: no request may be sent for {wait or 0:.1f} s (request budget, or a "
            f"rate-limit 429's Retry-After), past the caller's deadline",
            request_sent=False,
        )

    def _slot(self, conn_id: str, deadline: float | None) -> float:
        with self._lock:
            now = time.monotonic()
            left = None if deadline is None else deadline - time.time()
            at = self._reserve(now, left)
            if at is None:
                raise self._refuse(conn_id, max(self._tat - self._shape()[1], self._hold_until) - now)
            if at - now >= 1.0:
                log.info(
                    "Connection %r: request budget of this process (max_requests_per_minute %d, now %d a "
                    "minute) spent; waiting %.1f s",
                    conn_id,
                    self.per_window,
                    int(self.limit),
                    at - now,
                )
            return at

    def _held_past(self, at: float) -> bool:
        """A 429 put the budget on hold past this slot while its caller waited: take another."""
        with self._lock:
            if self._hold_until <= at:
                return False
            self.taken -= 1
            if at in self._sent:
                self._sent.remove(at)
            return True

    # -- callers -----------------------------------------------------------------------------------

    def acquire(self, conn_id: str = "", deadline: float | None = None) -> None:
        """Wait (sleeping the thread) for a slot; a slot only after ``deadline`` (``time.time()``)
        is refused at once with a transient error (nothing was sent)."""
        while True:
            at = self._slot(conn_id, deadline)
            pause = at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not self._held_past(at):
                return

    async def aacquire(self, conn_id: str = "", deadline: float | None = None, *, first: bool = False) -> None:
        """:meth:`acquire` without blocking the event loop. Callers queue one behind the other (FIFO),
        except ``first`` ones (the shared poller's batched reads, which serve every wait): those take
        the next slot, behind at most the one caller that holds it."""
        if first:
            await self._await_slot(conn_id, deadline)
            return
        async with self._queue():
            await self._await_slot(conn_id, deadline)

    def _of_loop(self) -> tuple[asyncio.Lock, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._loops.get(loop)
            if made is None:
                made = self._loops[loop] = (asyncio.Lock(), asyncio.Semaphore(self.IN_FLIGHT))
            return made

    def _queue(self) -> asyncio.Lock:
        """The FIFO queue of this event loop's callers (asyncio's lock is fair)."""
        return self._of_loop()[0]

    def in_flight(self) -> asyncio.Semaphore:
        """Held from a request's slot until its answer (``async with``): at most :attr:`IN_FLIGHT` of this
        event loop's own reads are out at once, so a slow service's 429 reaches the budget before many
        more were sent into the spent window."""
        return self._of_loop()[1]

    async def _await_slot(self, conn_id: str, deadline: float | None) -> None:
        while True:
            at = self._slot(conn_id, deadline)
            pause = at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            if not self._held_past(at):
                return

    def accepted(self) -> None:
        """The service took a request: grow the rate back towards the budget."""
        with self._lock:
            fast = self.limit < self._regrow_fast_to  # a slow start: one more a window per request accepted
            step = 1.0 if fast else self.INCREASE / max(self.limit, 1.0)
            self.limit = min(float(self.per_window), self.limit + step)

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered 429 (its request-rate window is spent): hold every caller for at least
        ``retry_after`` seconds, and cut the rate once per episode."""
        with self._lock:
            now = time.monotonic()
            self.refused += 1
            hold = min(self.HOLD_MAX, retry_after if retry_after is not None else self._shape()[0])
            # up to half as long again: processes held by one 429 wave do not all come back at once
            hold *= 1.0 + random.random() / 2
            self._hold_until = max(self._hold_until, now + hold)
            if now >= self._cut_until:
                while self._sent and self._sent[0] < now - self.window:
                    self._sent.popleft()
                # the rate it sent at: over the last window, or over its life if that is shorter
                span = min(self.window, max(self.window / 6, now - self._first))
                sent = min(self.limit, max(1, len(self._sent)) * self.window / span)
                self._regrow_fast_to = self.limit * self.DECREASE
                self.limit = max(1.0, self.per_window * self.FLOOR, sent * self.DECREASE)
                tolerance = self._shape()[1]
                # The slots handed out at the old rate are forgotten: the next one starts after the hold.
                self._tat = self._hold_until + tolerance
                self._cut_until = now + self.window
                log.warning(
                    "Rate limit reached (429): holding this process's requests for %.1f s and slowing to %d a "
                    "minute (the account's limit is shared with other processes)",
                    hold,
                    int(self.limit),
                )


_budgets: dict[tuple[str, str], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(conn_id: str, base_url: str, per_minute: int) -> RequestBudget:
    """This process's budget for one connection (its ``max_requests_per_minute`` as last read)."""
    with _budgets_lock:
        budget = _budgets.setdefault((conn_id, base_url), RequestBudget(per_minute))
    with budget._lock:
        if budget.per_window != per_minute:  # the connection changed: a lower budget at once, a higher one grown to
            budget.per_window, budget.limit = per_minute, min(budget.limit, float(per_minute))
        return budget
