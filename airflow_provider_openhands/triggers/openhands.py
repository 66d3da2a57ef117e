"""Triggers: wait in the triggerer for a start task and/or a conversation, or for a free slot.

``OpenHandsConversationTrigger`` serializes the task's lifecycle (ids, phase, absolute deadlines),
the connection id and its options; never the API key, which it reads from the connection inside
the triggerer. Rebuilt from those kwargs at any moment (a triggerer restart, a move to another
triggerer), it continues the same wait: a start task it had seen READY is read again and found
READY, and the conversation's deadline is counted from when it became READY, not from the
restart. It yields exactly one event (see :mod:`airflow_provider_openhands.watch`):
``{"outcome", "message", "conversation_id", "start_task_id", "sandbox_id", "deadline", ...}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES
from airflow_provider_openhands.lifecycle import PHASE_RUNNING, PHASE_STARTING, START_STOP_GRACE, Lifecycle
from airflow_provider_openhands.watch import DEFAULT_UNREACHABLE_TIMEOUT, ERROR, NEED_EVENTS, Watch


def _lifecycle(
    lifecycle: dict[str, Any] | None,
    conversation_id: str | None,
    start_task_id: str | None,
    end_time: float | None,
) -> Lifecycle:
    """The lifecycle from the kwargs; ``conversation_id``/``start_task_id``/``end_time`` is the
    short form for a plain wait (the sensor, tests)."""
    if lifecycle is not None:
        return Lifecycle.from_dict(lifecycle)
    if not conversation_id and not start_task_id:
        raise ValueError("OpenHandsConversationTrigger needs a conversation_id or a start_task_id")
    if conversation_id:
        return Lifecycle(phase=PHASE_RUNNING, conversation_id=conversation_id, deadline=end_time)
    return Lifecycle(phase=PHASE_STARTING, start_task_id=start_task_id, start_deadline=end_time)


def _raise_if_cancelled() -> None:
    """``wait_for`` can swallow a cancellation that lands as its inner call finishes (Python 3.11):
    a triggerer shutdown must stop the trigger all the same."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


class OpenHandsConversationTrigger(BaseTrigger):
    """Poll OpenHands until a conversation ends, or until a V1 start task is READY.

    :param openhands_conn_id: the Airflow connection (read in the triggerer, never serialized).
    :param lifecycle: the task's :class:`~airflow_provider_openhands.lifecycle.Lifecycle` as a dict.
    :param conversation_id: short form: wait on this conversation until ``end_time``.
    :param start_task_id: short form: wait on this V1 start task until ``end_time``.
    :param end_time: short form: the wall-clock deadline (epoch seconds).
    :param poll_interval: seconds between polls.
    :param wait_for_completion: False to fire as soon as the conversation exists.
    :param cancel_on_kill: stop the conversation (or its start) if a user kills the task (Airflow >= 3.3).
    :param unreachable_timeout: seconds of transient failures (5xx, 429, timeouts) to ride out.
    :param max_cost_usd: fire a ``budget`` event once the conversation's cost passes it.
    :param coalesce: share one poller with the other OpenHands triggers of this triggerer on the
        same connection; False polls on its own.
    :param success_statuses: normalised statuses that end the wait successfully.
    :param failure_statuses: normalised statuses that end it as a failure.
    """

    def __init__(
        self,
        *,
        openhands_conn_id: str,
        lifecycle: dict[str, Any] | None = None,
        conversation_id: str | None = None,
        start_task_id: str | None = None,
        end_time: float | None = None,
        poll_interval: float = 10.0,
        wait_for_completion: bool = True,
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        cancel_on_kill: bool = False,
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
        max_cost_usd: float | None = None,
        coalesce: bool = True,
    ) -> None:
        super().__init__()
        self.openhands_conn_id = openhands_conn_id
        self.lifecycle = _lifecycle(lifecycle, conversation_id, start_task_id, end_time)
        self.poll_interval = float(poll_interval)
        self.wait_for_completion = wait_for_completion
        self.success_statuses = sorted(success_statuses or DEFAULT_SUCCESS_STATUSES)
        self.failure_statuses = sorted(failure_statuses or DEFAULT_FAILURE_STATUSES)
        self.cancel_on_kill = cancel_on_kill
        self.unreachable_timeout = float(unreachable_timeout)
        self.max_cost_usd = None if max_cost_usd is None else float(max_cost_usd)
        self.coalesce = coalesce

    @property
    def conversation_id(self) -> str | None:
        return self.lifecycle.conversation_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "openhands_conn_id": self.openhands_conn_id,
                "lifecycle": self.lifecycle.for_trigger(),
                "poll_interval": self.poll_interval,
                "wait_for_completion": self.wait_for_completion,
                "success_statuses": self.success_statuses,
                "failure_statuses": self.failure_statuses,
                "cancel_on_kill": self.cancel_on_kill,
                "unreachable_timeout": self.unreachable_timeout,
                "max_cost_usd": self.max_cost_usd,
                "coalesce": self.coalesce,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_openhands.triggers.poller import CONVERSATION, START_TASK, SharedPoller

        poller = SharedPoller.for_connection(self.openhands_conn_id, shared=self.coalesce)
        watch = Watch(
            self.lifecycle,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            wait_for_completion=self.wait_for_completion,
            unreachable_timeout=self.unreachable_timeout,
            max_cost_usd=self.max_cost_usd,
            log=self.log,
        )
        event = None
        hook = None
        try:
            if self.lifecycle.phase == PHASE_STARTING:
                event = await self._follow(poller, START_TASK, str(self.lifecycle.start_task_id), watch, None)
            if event is None:
                from airflow_provider_openhands.hooks.openhands import OpenHandsHook

                hook = OpenHandsHook(self.openhands_conn_id)
                event = await self._follow(
                    poller, CONVERSATION, str(self.lifecycle.conversation_id), watch, hook.aget_ended_status
                )
        finally:
            if hook is not None:
                await hook.aclose()
        yield TriggerEvent(event)

    async def _follow(
        self,
        poller: Any,
        kind: str,
        item_id: str,
        watch: Watch,
        read_events: Callable[[str], Any] | None,
    ) -> dict[str, Any] | None:
        """Wait on one id until the watch decides; None when the phase moved on (start task READY)."""
        phase = self.lifecycle.phase
        judge = watch.on_start_task if phase == PHASE_STARTING else watch.on_conversation
        async with poller.subscribe(kind, item_id, self.poll_interval) as subscription:
            while True:
                event = watch.expired(time.time())
                if event is not None:
                    return event
                try:
                    answer = await asyncio.wait_for(subscription.next(), watch.wake_in(time.time()))
                    _raise_if_cancelled()
                except asyncio.TimeoutError:
                    continue
                except Exception as exc:
                    event = watch.on_error(exc, time.time())
                else:
                    event = judge(answer, time.time())
                    if event == NEED_EVENTS and read_events is not None:
                        event = await self._read_events(watch, read_events)
                if event is not None:
                    return event
                if self.lifecycle.phase != phase:
                    return None

    async def _read_events(self, watch: Watch, read_events: Callable[[str], Any]) -> dict[str, Any] | None:
        try:
            ended = await read_events(str(self.lifecycle.conversation_id))
        except Exception as exc:
            return watch.on_error(exc, time.time())
        return watch.on_events(ended, time.time())

    async def on_kill(self) -> None:
        """A user killed the deferred task (Airflow >= 3.3): stop the conversation, it costs money.

        During the start phase the conversation has no id yet: the start task's sandbox is paused
        once it has one. Not done in ``cleanup()``, which also runs when the triggerer restarts or
        hands the trigger to another triggerer: the conversation must survive those.
        """
        if not self.cancel_on_kill:
            return
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        lc = self.lifecycle
        hook = OpenHandsHook(self.openhands_conn_id)
        try:
            if lc.conversation_id:
                stopped = await hook.astop_conversation(lc.conversation_id, lc.sandbox_id)
                self.log.info("Task killed: stopped conversation %s (%s)", lc.conversation_id, stopped)
            elif lc.start_task_id:
                stopped = await self._stop_start(hook, lc.start_task_id)
                self.log.info(
                    "Task killed during its start: paused start task %s's sandbox (%s)", lc.start_task_id, stopped
                )
        except Exception as exc:
            self.log.warning("Task killed, but its conversation could not be stopped: %s", exc)
        finally:
            await hook.aclose()

    async def _stop_start(self, hook: Any, start_task_id: str) -> bool:
        """Pause the start task's sandbox, waiting a little for the sandbox to exist."""
        deadline = time.time() + START_STOP_GRACE
        while True:
            if await hook.astop_start_task(start_task_id):
                return True
            task = await hook.aget_start_task(start_task_id)
            if task["status"] == "ERROR" or time.time() >= deadline:
                return False
            await asyncio.sleep(min(self.poll_interval, 2.0))


class OpenHandsCapacityWaitTrigger(BaseTrigger):
    """Sleep in the triggerer until ``wake_time`` (epoch seconds), then fire once.

    Used while the account runs as many conversations as it may: the task waits for a free slot
    without holding a worker slot, then tries to start again. The rest of the task's state travels
    in the defer's ``kwargs``, not here.
    """

    def __init__(self, *, wake_time: float, lifecycle: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.wake_time = float(wake_time)
        self.lifecycle = dict(lifecycle or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"wake_time": self.wake_time, "lifecycle": self.lifecycle},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(max(0.0, self.wake_time - time.time()))
        # The task starts again from this lifecycle, start options included.
        yield TriggerEvent({"outcome": "wake", "message": "time to try again", "lifecycle": self.lifecycle})


__all__ = ["ERROR", "OpenHandsCapacityWaitTrigger", "OpenHandsConversationTrigger"]
