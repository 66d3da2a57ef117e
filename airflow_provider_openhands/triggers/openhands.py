"""Triggers: the lifecycle engine's waits, carried out in the triggerer; and a wait for a free slot.

``OpenHandsConversationTrigger`` serializes the task's lifecycle (ids, phase, absolute deadlines,
the clock of transient failures), the connection id and the task's rules; never the API key, which
it reads from the connection inside the triggerer. It runs the engine's reads (the start task and
the conversation through the shared poller, the turn's events through the hook) and hands
everything else back to the worker in its one event: ``{"outcome", "message", "conversation_id",
"lifecycle"}`` (its repr, which the triggerer logs, is one short line without the lifecycle).
Rebuilt from its kwargs at any moment (a triggerer restart, a move to another triggerer), it
continues the same wait: a start task it had seen READY is read again and found READY, and the
conversation's deadline is counted from when it became READY, not from the restart. Airflow keeps
the kwargs as they were when the task deferred, so a clock the engine starts or stops here (see
:func:`~airflow_provider_openhands.engine.state.unsaved_clock`) is handed back to the worker, which
defers again with it stored: a triggerer restarted every minute cannot hold a rule's time off forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES
from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.engine import (
    DEFAULT_SANDBOX_ERROR_GRACE,
    DEFAULT_UNREACHABLE_TIMEOUT,
    SUCCESS,
    Engine,
    Rules,
    classify,
)
from airflow_provider_openhands.engine.state import (
    PHASE_RUNNING,
    PHASE_STARTING,
    START_STOP_GRACE,
    Lifecycle,
    unsaved_clock,
)

#: Event outcome of an action the worker carries out (a pause, a resume, a capacity wait, ...).
HANDED_BACK = "continue"
#: The most characters of one value the event's repr shows.
REPR_VALUE_CHARS = 80


class OpenHandsTriggerEvent(TriggerEvent):
    """A trigger event whose repr is one short line. Airflow's triggerer logs every event it fires by
    its repr (``Trigger fired event ... result=TriggerEvent<...>``), and the payload carries the
    task's whole lifecycle back to the worker: the log line shows the outcome, the status, the
    conversation and the message (each cut to :data:`REPR_VALUE_CHARS`), not the lifecycle."""

    def __repr__(self) -> str:
        payload = self.payload if isinstance(self.payload, dict) else {}
        shown = [
            f"{key}={_cut(payload[key])}"
            for key in ("outcome", "status", "conversation_id", "message")
            if payload.get(key) is not None
        ]
        if "lifecycle" in payload:
            shown.append("lifecycle=...")
        return f"TriggerEvent<{', '.join(shown)}>"

    __str__ = __repr__


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= REPR_VALUE_CHARS else text[: REPR_VALUE_CHARS - 3] + "..."


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


def outcome_of(action: a.Action, rules: Rules, lc: Lifecycle) -> tuple[str, str]:
    """A short name and a message for the event that hands ``action`` back: how the wait ended
    (``success``, ``failure``, ``ready``, ``capacity``, or the kind of failure: ``timeout``,
    ``budget``, ``permanent``, ``unreachable``, ...)."""
    if lc.verdict:  # closing: the worker stops what the task started, then fails this way
        return lc.verdict["kind"], lc.verdict["message"]
    if isinstance(action, a.Conclude):
        outcome = classify(action.status, rules.success_statuses, rules.failure_statuses)
        return ("success" if outcome == SUCCESS else "failure"), f"ended {action.status}"
    if isinstance(action, a.Fail):
        return action.kind, action.message
    if isinstance(action, a.ReturnId):
        return "ready", f"Conversation {action.conversation_id} started"
    if isinstance(action, a.Sleep):
        return "capacity", "waiting for a free conversation slot"
    return HANDED_BACK, type(action).__name__


class OpenHandsConversationTrigger(BaseTrigger):
    """Poll OpenHands until the engine decides (a conversation's end, a start task READY, a deadline, ...).

    :param openhands_conn_id: the Airflow connection (read in the triggerer, never serialized).
    :param lifecycle: the task's :class:`~airflow_provider_openhands.engine.state.Lifecycle` as a dict.
    :param conversation_id: short form: wait on this conversation until ``end_time``.
    :param start_task_id: short form: wait on this V1 start task until ``end_time``.
    :param end_time: short form: the wall-clock deadline (epoch seconds).
    :param poll_interval: seconds between polls.
    :param wait_for_completion: False to fire as soon as the conversation exists.
    :param cancel_on_kill: stop the conversation (or its start) if a user kills the task (Airflow >= 3.3).
    :param unreachable_timeout: seconds of transient failures (5xx, 429, timeouts), or of a key
        refused (401, the connection read again each poll), to ride out.
    :param max_cost_usd: hand back (to pause and fail) once the conversation's cost passes it.
    :param coalesce: share one poller with the other OpenHands triggers of this triggerer on the
        same connection; False polls on its own.
    :param success_statuses: normalised statuses that end the wait successfully.
    :param failure_statuses: normalised statuses that end it as a failure.
    :param sandbox_error_grace: seconds a sandbox must read ``ERROR`` before it counts.
    :param stop_on_timeout: the task stops the conversation at its deadline.
    :param capacity_timeout: seconds a task waits for a free slot (a start task that failed for capacity).
    :param on_confirmation: what the task does when the agent waits for confirmation (the worker
        answers; the trigger hands the wait back to it, except ``wait``, which only logs).
    """

    #: The actions a trigger carries out; any other goes back to the worker in the event.
    CARRIED_OUT = (a.ReadStartTask, a.ReadConversation, a.ReadTurn, a.RereadConnection, a.Publish)

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
        sandbox_error_grace: float = DEFAULT_SANDBOX_ERROR_GRACE,
        stop_on_timeout: bool = True,
        capacity_timeout: float = 6 * 3600.0,
        on_confirmation: str = "wait",
    ) -> None:
        super().__init__()
        self.openhands_conn_id = openhands_conn_id
        self.lifecycle = _lifecycle(lifecycle, conversation_id, start_task_id, end_time)
        self.hands_back_clocks = lifecycle is not None  # a task's wait; the short form's caller expects an end
        self.poll_interval = float(poll_interval)
        self.wait_for_completion = wait_for_completion
        self.success_statuses = sorted(success_statuses or DEFAULT_SUCCESS_STATUSES)
        self.failure_statuses = sorted(failure_statuses or DEFAULT_FAILURE_STATUSES)
        self.cancel_on_kill = cancel_on_kill
        self.unreachable_timeout = float(unreachable_timeout)
        self.max_cost_usd = None if max_cost_usd is None else float(max_cost_usd)
        self.coalesce = coalesce
        self.sandbox_error_grace = float(sandbox_error_grace)
        self.stop_on_timeout = stop_on_timeout
        self.capacity_timeout = float(capacity_timeout)
        self.on_confirmation = on_confirmation

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
                "sandbox_error_grace": self.sandbox_error_grace,
                "stop_on_timeout": self.stop_on_timeout,
                "capacity_timeout": self.capacity_timeout,
                "on_confirmation": self.on_confirmation,
            },
        )

    def rules(self) -> Rules:
        return Rules(
            success_statuses=frozenset(self.success_statuses),
            failure_statuses=frozenset(self.failure_statuses),
            wait_for_completion=self.wait_for_completion,
            poll_interval=self.poll_interval,
            stop_on_timeout=self.stop_on_timeout,
            cancel_on_kill=self.cancel_on_kill,
            unreachable_timeout=self.unreachable_timeout,
            sandbox_error_grace=self.sandbox_error_grace,
            max_cost_usd=self.max_cost_usd,
            capacity_timeout=self.capacity_timeout,
            on_confirmation=self.on_confirmation,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook
        from airflow_provider_openhands.triggers.poller import SharedPoller

        rules = self.rules()
        stored = Lifecycle.from_dict(self.lifecycle.to_dict())  # as Airflow keeps it: a restart starts from it
        engine = Engine(rules, self.lifecycle)
        poller = SharedPoller.for_connection(self.openhands_conn_id, shared=self.coalesce)
        hook = OpenHandsHook(self.openhands_conn_id)
        # A task that published its conversation before deferring publishes a new id (a server that
        # ignored the chosen one) on its resume; a bare wait (the short form) publishes nothing.
        publishes = self.lifecycle.published is not None
        try:
            action = self._step(engine, a.Continue())
            while isinstance(action, self.CARRIED_OUT) and not (publishes and isinstance(action, a.Publish)):
                if isinstance(action, a.Publish):
                    observation = a.Answer(None)
                elif isinstance(action, a.ReadTurn):
                    observation = await self._read_turn(hook, action, engine.wake_at())
                elif isinstance(action, a.RereadConnection):
                    await hook.areread_connection()  # the poller reads it again after a 401 itself
                    observation = a.Answer(None)
                else:
                    observation = await self._poll(poller, engine, action)
                action = self._step(engine, observation)
                clock = unsaved_clock(
                    stored,
                    self.lifecycle,
                    rules.sandbox_error_grace,
                    now=time.time(),
                    unreachable_timeout=rules.unreachable_timeout,
                )
                if clock is not None and self.hands_back_clocks and isinstance(action, self.CARRIED_OUT):
                    self.log.info("Handing the wait back to the worker to store %s (a restart keeps it)", clock)
                    break
        finally:
            await self._unsubscribe()
            await hook.aclose()
        outcome, message = outcome_of(action, rules, self.lifecycle)
        yield OpenHandsTriggerEvent(
            {
                "outcome": outcome,
                "message": message,
                "conversation_id": self.lifecycle.conversation_id,
                "status": self.lifecycle.outcome,
                "lifecycle": self.lifecycle.for_trigger(with_options=isinstance(action, a.Sleep)),
            }
        )

    def _step(self, engine: Engine, observation: Any) -> a.Action:
        action = engine.step(observation, time.time())
        for level, line in engine.logs:
            getattr(self.log, level)("%s", line)
        engine.logs.clear()
        return action

    async def _poll(self, poller: Any, engine: Engine, action: a.Action) -> Any:
        """The next answer for the start task or conversation from the shared poller, or a Tick at the deadline."""
        from airflow_provider_openhands.hooks.driver import problem_of
        from airflow_provider_openhands.triggers.poller import CONVERSATION, START_TASK

        if isinstance(action, a.ReadStartTask):
            kind, item_id = START_TASK, action.start_task_id
        else:
            kind, item_id = CONVERSATION, action.conversation_id  # type: ignore[attr-defined]
        subscription = getattr(self, "_subscription", None)
        if subscription is None or (subscription.kind, subscription.item_id) != (kind, item_id):
            await self._unsubscribe()
            self._subscription_cm = poller.subscribe(kind, item_id, self.poll_interval)
            self._subscription = await self._subscription_cm.__aenter__()
        wake = engine.wake_at()
        timeout = None if wake is None else max(0.0, wake - time.time())
        try:
            answer = await asyncio.wait_for(self._subscription.next(), timeout)
            _raise_if_cancelled()
        except asyncio.TimeoutError:
            return a.Tick()
        except Exception as exc:
            return problem_of(exc)
        return a.Answer(answer)

    async def _unsubscribe(self) -> None:
        cm = getattr(self, "_subscription_cm", None)
        self._subscription = self._subscription_cm = None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def _read_turn(self, hook: Any, action: a.ReadTurn, wake: float | None) -> Any:
        """The turn's events; a Tick at the engine's next deadline if the read (queued in the request
        budget behind others) has not come back by then."""
        from airflow_provider_openhands.hooks.driver import problem_of

        # Out of the batch while the read waits for its slot: polling an id whose trigger is not
        # listening only spends the budget its read is queued for (at N = 1,000, ended ids filled
        # 11 batched requests a round ahead of their own reads). The next poll joins it again.
        await self._unsubscribe()
        timeout = None if wake is None else max(0.0, wake - time.time())
        try:
            return a.Answer(await asyncio.wait_for(hook.aget_turn_outcome(action.conversation_id, action.own), timeout))
        except asyncio.TimeoutError:
            _raise_if_cancelled()
            return a.Tick()
        except Exception as exc:
            return problem_of(exc)

    async def cleanup(self) -> None:
        await self._unsubscribe()
        await super().cleanup()

    async def on_kill(self) -> None:
        """A user killed the deferred task (Airflow >= 3.3): stop the conversation, it costs money.

        During the start phase the conversation has no id yet: the start task's sandbox is paused
        once it has one. Not done in ``cleanup()``, which also runs when the triggerer restarts or
        hands the trigger to another triggerer: the conversation must survive those.
        """
        if not self.cancel_on_kill:
            return
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        action = Engine(self.rules(), self.lifecycle).step(a.Killed(), time.time())
        hook = OpenHandsHook(self.openhands_conn_id)
        try:
            if isinstance(action, a.Pause):
                stopped = await hook.astop_conversation(action.conversation_id, action.sandbox_id)
                self.log.info("Task killed: stopped conversation %s (%s)", action.conversation_id, stopped)
            elif isinstance(action, a.PauseStartTask):
                stopped = await self._stop_start(hook, action.start_task_id)
                self.log.info(
                    "Task killed during its start: paused start task %s's sandbox (%s)", action.start_task_id, stopped
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

    :param wake_time: when to fire, in epoch seconds.
    :param lifecycle: the task's serialized lifecycle, handed back in the event.
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
        yield OpenHandsTriggerEvent({"outcome": "wake", "message": "time to try again", "lifecycle": self.lifecycle})


__all__ = ["OpenHandsCapacityWaitTrigger", "OpenHandsConversationTrigger", "OpenHandsTriggerEvent"]
