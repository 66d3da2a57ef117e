"""What each answer means while a task waits on its start task and conversation.

No I/O here: the trigger (answers from the shared poller) and the worker (answers from the hook)
feed the same :class:`Watch`, so both wait the same way: the same deadlines, the same rides over a
service that fails for a while, the same reading of a paused conversation. Each decision is an
event dict, the one shape a trigger fires and an operator resumes from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from airflow_provider_openhands.api.endpoints import is_capacity_error
from airflow_provider_openhands.api.state import START_TASK_ERROR, START_TASK_READY, V1, parse_time
from airflow_provider_openhands.exceptions import OpenHandsPermanentError, OpenHandsTransientError
from airflow_provider_openhands.lifecycle import PHASE_DONE, PHASE_STARTING, Lifecycle
from airflow_provider_openhands.outcome import StatusLogger, classify, describe

# Event outcomes
SUCCESS = "success"
FAILURE = "failure"
READY = "ready"  # the start task is READY and the task does not wait for the end
CAPACITY = "capacity"  # the start task failed for want of a free conversation slot
START_FAILED = "start_failed"
START_TIMEOUT = "start_timeout"
TIMEOUT = "timeout"
ERROR = "error"
BUDGET = "budget"  # the conversation's cost passed max_cost_usd

#: Returned by :meth:`Watch.on_conversation` for a paused V1 conversation: read its events once.
NEED_EVENTS = "need_events"

#: Default for how long a wait rides out a service that keeps failing transiently.
DEFAULT_UNREACHABLE_TIMEOUT = 30 * 60.0
#: A wait rebuilt after its deadline (a triggerer restart) reads once before it gives up: it waits
#: this long after the rebuild for a first answer.
FIRST_READ_GRACE = 60.0


class Watch:
    """The wait of one task: fed answers (or the errors met reading them), returns an event once
    the wait is over, None while it goes on. It updates the :class:`Lifecycle` as it learns ids."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        success_statuses: Collection[str],
        failure_statuses: Collection[str],
        wait_for_completion: bool = True,
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
        max_cost_usd: float | None = None,
        log: logging.Logger | Any,
    ) -> None:
        self.lc = lifecycle
        self.success_statuses = frozenset(success_statuses)
        self.failure_statuses = frozenset(failure_statuses)
        self.wait_for_completion = wait_for_completion
        self.unreachable_timeout = unreachable_timeout
        self.max_cost_usd = max_cost_usd
        self.log = log
        self.last_state: dict[str, Any] | None = None
        self.last_start_status: str | None = None
        self.failing_since: float | None = None
        self.paused_read = False
        self.created = time.time()
        self._status_log: StatusLogger | None = None

    # -- deadlines ---------------------------------------------------------------------------

    def due(self) -> float | None:
        """When the current phase must be over (epoch seconds), or None for no limit."""
        own = self.lc.start_deadline if self.lc.phase == PHASE_STARTING else self.lc.deadline
        return self.lc.capped(own)

    def _seen(self) -> bool:
        return (self.last_start_status if self.lc.phase == PHASE_STARTING else self.last_state) is not None

    def _expiry(self) -> float | None:
        """When :meth:`expired` fires: at the deadline, but not before one answer was read (a trigger
        rebuilt after its deadline, however late, first learns whether the start task became READY,
        or the conversation ended, meanwhile; only a service that gives no answer at all within
        ``FIRST_READ_GRACE`` of the rebuild lets the deadline stand unread)."""
        due = self.due()
        if due is None or self._seen():
            return due
        return max(due, self.created + FIRST_READ_GRACE)

    def wake_in(self, now: float) -> float | None:
        """Seconds until :meth:`expired` may fire (for the wait on the next answer), or None."""
        expiry = self._expiry()
        return None if expiry is None else max(0.0, expiry - now)

    def expired(self, now: float) -> dict[str, Any] | None:
        expiry = self._expiry()
        if expiry is None or now < expiry:
            return None
        due = self.due() or now
        by_airflow = self.lc.hard_deadline is not None and due >= self.lc.hard_deadline
        why = " (before Airflow's execution_timeout ends the task)" if by_airflow else ""
        if self.lc.phase == PHASE_STARTING:
            return self.event(
                START_TIMEOUT,
                f"Start task {self.lc.start_task_id} was not READY in time{why} (last: {self.last_start_status})",
            )
        last = describe(self.last_state) if self.last_state else "not read yet"
        return self.event(TIMEOUT, f"Conversation {self.lc.conversation_id} still {last} at its deadline{why}")

    # -- answers -----------------------------------------------------------------------------

    def event(self, outcome: str, message: str, **extra: Any) -> dict[str, Any]:
        """Small on purpose: what happened and the lifecycle the task resumes from (its start
        options only when it must start again); the task reads the conversation it needs."""
        return {
            "outcome": outcome,
            "message": message,
            "conversation_id": self.lc.conversation_id,
            "lifecycle": self.lc.for_trigger(with_options=outcome == CAPACITY),
            **extra,
        }

    def on_start_task(self, task: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        self._reachable(now)
        if task is None:
            return self.event(ERROR, f"OpenHands has no start task with id {self.lc.start_task_id!r}", permanent=True)
        if task["status"] != self.last_start_status:
            self.log.info("Start task %s: %s", self.lc.start_task_id, task["status"])
            self.last_start_status = task["status"]
        self.lc.sandbox_id = task.get("sandbox_id") or self.lc.sandbox_id
        if task["status"] == START_TASK_READY and task.get("conversation_id"):
            ready_at = min(now, parse_time(task.get("updated_at")) or now)
            self.lc.conversation_known(task["conversation_id"], ready_at, task.get("sandbox_id"))
            if not self.wait_for_completion:
                return self.event(READY, f"Conversation {self.lc.conversation_id} started")
            return None
        if task["status"] == START_TASK_ERROR:
            detail = task.get("detail") or "no detail given"
            message = f"OpenHands could not start the conversation (start task {task['id']}): {detail}"
            return self.event(CAPACITY if is_capacity_error(task) else START_FAILED, message)
        return None

    def on_conversation(self, state: dict[str, Any] | None, now: float) -> dict[str, Any] | str | None:
        self._reachable(now)
        if state is None:
            message = f"OpenHands has no conversation with id {self.lc.conversation_id!r}"
            return self.event(ERROR, message, permanent=True)
        self.last_state = state
        self.lc.sandbox_id = state.get("sandbox_id") or self.lc.sandbox_id
        if state["status"] != "paused":
            self.paused_read = False
        elif state.get("api_version") == V1 and not self.paused_read:
            return NEED_EVENTS
        return self._judge(state)

    def on_events(self, ended: str | None, now: float) -> dict[str, Any] | None:
        """What a paused conversation's events say: the status its last turn ended with, or None."""
        self._reachable(now)
        self.paused_read = True
        state = dict(self.last_state or {})
        if ended:
            state["status"] = ended
            self.last_state = state
        return self._judge(state)

    def _judge(self, state: dict[str, Any]) -> dict[str, Any] | None:
        cost = (state.get("metrics") or {}).get("accumulated_cost")
        if self.max_cost_usd is not None and isinstance(cost, (int, float)) and cost > self.max_cost_usd:
            message = (
                f"Conversation {self.lc.conversation_id} cost ${cost:.4f}, over max_cost_usd "
                f"${self.max_cost_usd:.4f}: stopped"
            )
            return self.event(BUDGET, message, cost=cost)
        outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
        if outcome is not None and not self._newer_than_turn_start(state):
            outcome = None  # still the previous turn's end: a follow-up's turn has not shown yet
        if self._status_log is None:
            self._status_log = StatusLogger(self.log, str(self.lc.conversation_id))
        self._status_log.update(state, outcome)
        if outcome is None:
            return None
        self.lc.phase = PHASE_DONE
        self.lc.outcome = state["status"]
        message = f"Conversation {self.lc.conversation_id} ended: {describe(state)}"
        return self.event(outcome, message, status=state["status"])

    def _newer_than_turn_start(self, state: dict[str, Any]) -> bool:
        """For a follow-up turn: the state was updated after the message was sent. Right after a
        send-message the service still shows the previous turn's ``finished`` with its old
        ``updated_at``."""
        if not self.lc.turn_after:
            return True
        updated, start = parse_time(state.get("updated_at")), parse_time(self.lc.turn_after)
        return updated is not None and start is not None and updated > start

    def on_error(self, exc: BaseException, now: float) -> dict[str, Any] | None:
        """Ride out what may pass (5xx, 429, timeouts, refused) until the deadline; stop on the rest."""
        if not isinstance(exc, OpenHandsTransientError):
            return self.event(ERROR, str(exc) or type(exc).__name__, permanent=isinstance(exc, OpenHandsPermanentError))
        if self.failing_since is None:
            self.failing_since = now
            self.log.warning(
                "OpenHands is not answering (%s); waiting on, until the deadline or %.0f min of failures.",
                exc,
                self.unreachable_timeout / 60,
            )
        if now - self.failing_since >= self.unreachable_timeout:
            message = f"OpenHands kept failing for {now - self.failing_since:.0f}s (unreachable_timeout): {exc}"
            return self.event(ERROR, message, unreachable=True)
        return None

    def _reachable(self, now: float) -> None:
        if self.failing_since is not None:
            self.log.info("OpenHands answers again, after %.0fs of failures.", now - self.failing_since)
            self.failing_since = None
