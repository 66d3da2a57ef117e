"""``OpenHandsConversationTrigger``: waits in the triggerer for a start task and/or a conversation.

It serializes only ids, the connection id, the poll interval and a wall-clock deadline (epoch
seconds, so a triggerer restart on another machine keeps the same deadline); the API key is read
from the connection inside the triggerer. It yields exactly one event:

``{"outcome": "success" | "failure" | "timeout" | "error", "conversation_id", "state", "message"}``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openhands.api.endpoints import started_conversation_id
from airflow_provider_openhands.api.state import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_SUCCESS_STATUSES,
)
from airflow_provider_openhands.exceptions import OpenHandsError, OpenHandsNotFoundError, OpenHandsStartError
from airflow_provider_openhands.outcome import ERROR, FAILURE, SUCCESS, TIMEOUT, StatusLogger, classify, describe


class OpenHandsConversationTrigger(BaseTrigger):
    """Poll OpenHands until a conversation ends, or until a V1 start task is READY.

    :param openhands_conn_id: the Airflow connection (read in the triggerer, never serialized).
    :param conversation_id: the conversation to wait on; None while only a start task is known.
    :param start_task_id: a V1 start task to wait on first, to learn the conversation id.
    :param poll_interval: seconds between polls.
    :param end_time: wall-clock deadline (epoch seconds); a ``timeout`` event is sent then.
    :param wait_for_completion: False to fire as soon as the conversation id is known.
    :param wait_timeout: seconds to wait for the end once a start task turned READY (the
        ``end_time`` deadline then covers only the start).
    :param cancel_on_kill: stop the conversation if a user kills the task (Airflow >= 3.3).
    :param coalesce: share one poller (one batched request per interval) with the other OpenHands
        triggers of this triggerer on the same connection; False polls on its own.
    :param success_statuses: normalised statuses that end the wait successfully.
    :param failure_statuses: normalised statuses that end it as a failure.
    """

    def __init__(
        self,
        *,
        openhands_conn_id: str,
        end_time: float,
        conversation_id: str | None = None,
        start_task_id: str | None = None,
        poll_interval: float = 10.0,
        wait_for_completion: bool = True,
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        cancel_on_kill: bool = False,
        wait_timeout: float | None = None,
        coalesce: bool = True,
    ) -> None:
        super().__init__()
        if not conversation_id and not start_task_id:
            raise ValueError("OpenHandsConversationTrigger needs a conversation_id or a start_task_id")
        self.openhands_conn_id = openhands_conn_id
        self.end_time = float(end_time)
        self.conversation_id = conversation_id
        self.start_task_id = start_task_id
        self.poll_interval = float(poll_interval)
        self.wait_for_completion = wait_for_completion
        self.success_statuses = sorted(success_statuses or DEFAULT_SUCCESS_STATUSES)
        self.failure_statuses = sorted(failure_statuses or DEFAULT_FAILURE_STATUSES)
        self.cancel_on_kill = cancel_on_kill
        self.wait_timeout = wait_timeout
        self.coalesce = coalesce
        self._last_state: dict[str, Any] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "openhands_conn_id": self.openhands_conn_id,
                "end_time": self.end_time,
                "conversation_id": self.conversation_id,
                "start_task_id": self.start_task_id,
                "poll_interval": self.poll_interval,
                "wait_for_completion": self.wait_for_completion,
                "success_statuses": self.success_statuses,
                "failure_statuses": self.failure_statuses,
                "cancel_on_kill": self.cancel_on_kill,
                "wait_timeout": self.wait_timeout,
                "coalesce": self.coalesce,
            },
        )

    def _event(self, outcome: str, message: str, state: dict[str, Any] | None = None, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"outcome": outcome, "conversation_id": self.conversation_id, "state": state, "message": message, **extra}
        )

    async def on_kill(self) -> None:
        """A user killed the deferred task (Airflow >= 3.3): stop the conversation, it costs money.

        Not done in ``cleanup()``, which also runs when the triggerer restarts or hands the
        trigger to another triggerer: the conversation must survive those.
        """
        if not (self.cancel_on_kill and self.conversation_id):
            return
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        hook = OpenHandsHook(self.openhands_conn_id)
        try:
            stopped = await hook.astop_conversation(self.conversation_id)
            self.log.info("Task killed: stopped conversation %s (%s)", self.conversation_id, stopped)
        except Exception as exc:
            self.log.warning("Task killed, but conversation %s could not be stopped: %s", self.conversation_id, exc)
        finally:
            await hook.aclose()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_openhands.triggers.poller import SharedPoller

        poller = SharedPoller.for_connection(self.openhands_conn_id, shared=self.coalesce)
        try:
            if not self.conversation_id:
                event = await self._wait_for_start_task(poller)
                if event is not None:
                    yield event
                    return
                if not self.wait_for_completion:
                    yield self._event(SUCCESS, f"Conversation {self.conversation_id} started")
                    return
                if self.wait_timeout is not None:  # the wait for the end has its own deadline
                    self.end_time = time.time() + self.wait_timeout
            event = await self._wait_for_conversation(poller)
        except OpenHandsError as exc:
            event = self._event(ERROR, str(exc), self._last_state)
        yield event

    async def _next_answer(self, subscription: Any) -> tuple[bool, Any]:
        """The next polled answer, or ``(True, None)`` once the deadline has come."""
        remaining = self.end_time - time.time()
        if remaining <= 0:
            return True, None
        try:
            return False, await asyncio.wait_for(subscription.next(), remaining)
        except asyncio.TimeoutError:
            return True, None

    async def _wait_for_start_task(self, poller: Any) -> TriggerEvent | None:
        """Wait for the start task to be READY (sets ``conversation_id``); an event if it cannot be."""
        from airflow_provider_openhands.triggers.poller import START_TASK

        last_status = None
        async with poller.subscribe(START_TASK, self.start_task_id, self.poll_interval) as subscription:
            while True:
                timed_out, task = await self._next_answer(subscription)
                if timed_out:
                    return self._event(
                        TIMEOUT, f"Start task {self.start_task_id} was not READY in time ({last_status})"
                    )
                if task is None:
                    raise OpenHandsNotFoundError(f"OpenHands has no start task with id {self.start_task_id!r}")
                if task["status"] != last_status:
                    self.log.info("Start task %s: %s", self.start_task_id, task["status"])
                    last_status = task["status"]
                try:
                    self.conversation_id = started_conversation_id(task)
                except OpenHandsStartError as exc:
                    return self._event(FAILURE, str(exc), capacity=exc.capacity)
                if self.conversation_id:
                    return None

    async def _wait_for_conversation(self, poller: Any) -> TriggerEvent:
        from airflow_provider_openhands.triggers.poller import CONVERSATION

        status_log = StatusLogger(self.log, str(self.conversation_id))
        async with poller.subscribe(CONVERSATION, str(self.conversation_id), self.poll_interval) as subscription:
            while True:
                timed_out, state = await self._next_answer(subscription)
                if timed_out:
                    last = describe(self._last_state) if self._last_state else "not read yet"
                    return self._event(
                        TIMEOUT, f"Conversation {self.conversation_id} still {last} at the deadline", self._last_state
                    )
                if state is None:
                    raise OpenHandsNotFoundError(f"OpenHands has no conversation with id {self.conversation_id!r}")
                self._last_state = state
                outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
                status_log.update(state, outcome)
                if outcome is not None:
                    return self._event(outcome, f"Conversation {self.conversation_id} ended: {describe(state)}", state)


class OpenHandsCapacityWaitTrigger(BaseTrigger):
    """Sleep in the triggerer until ``wake_time`` (epoch seconds), then fire once.

    Used while the account runs as many conversations as it may: the task waits for a free slot
    without holding a worker slot, then tries to start again.
    """

    def __init__(self, *, wake_time: float, capacity_deadline: float, attempt: int) -> None:
        super().__init__()
        self.wake_time = float(wake_time)
        self.capacity_deadline = float(capacity_deadline)
        self.attempt = int(attempt)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"wake_time": self.wake_time, "capacity_deadline": self.capacity_deadline, "attempt": self.attempt},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(max(0.0, self.wake_time - time.time()))
        # The event carries the wait's own bookkeeping back to the task: it resumes from it alone.
        yield TriggerEvent({"outcome": SUCCESS, "capacity_deadline": self.capacity_deadline, "attempt": self.attempt})
