"""Carries out the lifecycle engine's actions with the sync hook: the worker's loop.

The operator (worker mode, and the worker's part of deferrable mode), the sensor's poke and the
managed agent drive the engine through :class:`SyncDriver`: run the action, feed back the answer or
the problem, repeat. What only the task knows (XCom, the task state store, deferring, reading the
results, raising Airflow's exceptions) is the :class:`Host`'s.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.engine import Engine
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsConcurrencyLimitError,
    OpenHandsConfigError,
    OpenHandsError,
    OpenHandsNotFoundError,
    OpenHandsQuotaError,
    OpenHandsTransientError,
    OpenHandsValidationError,
)


def problem_of(exc: BaseException) -> a.Problem:
    """An exception a request raised, as the engine's :class:`~airflow_provider_openhands.engine.actions.Problem`."""
    message = str(exc) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    if isinstance(exc, OpenHandsConcurrencyLimitError):
        return a.Problem("capacity", message, status, exc.limit, exc.current)
    if isinstance(exc, OpenHandsTransientError):
        return a.Problem("transient", message, status)
    if isinstance(exc, OpenHandsAuthError):
        return a.Problem("auth", message, status)
    if isinstance(exc, OpenHandsNotFoundError):
        return a.Problem("not_found", message, status)
    if isinstance(exc, OpenHandsQuotaError):
        return a.Problem("quota", message, status)
    if isinstance(exc, OpenHandsValidationError):
        return a.Problem("invalid", message, status)
    if isinstance(exc, OpenHandsConfigError):
        return a.Problem("config", message, status)
    if isinstance(exc, OpenHandsApiError) and status == 409:
        return a.Problem("conflict", message, status)
    if isinstance(exc, OpenHandsApiError) and status == 410:
        return a.Problem("gone", message, status)
    return a.Problem("permanent", message, status)


class Host(Protocol):
    """What the task (operator, sensor, managed agent) does for the driver."""

    def publish(self, conversation_id: str) -> None: ...
    def save(self, engine: Engine) -> None: ...
    def post_start(self, engine: Engine, action: a.PostStart) -> dict[str, Any]: ...
    def hand_over(self, engine: Engine, action: a.Action) -> bool: ...
    def end(self, engine: Engine, action: a.Action) -> Any: ...
    def read_plan(self, conversation_id: str) -> str | None: ...  # plan_first (the operator only)


class SyncDriver:
    """Runs the engine's actions with ``hook`` until the task ends (or hands over to the triggerer)."""

    def __init__(self, engine: Engine, hook: Any, host: Host, log: Any, *, sleep: Any = time.sleep) -> None:
        self.engine = engine
        self.hook = hook
        self.host = host
        self.log = log
        self.sleep = sleep

    def run(self, first: Any) -> Any:
        """Feed ``first`` (``Begin()``, ``Continue()``), then act until :meth:`Host.end` returns or raises."""
        action = self.step(first)
        while True:
            self.host.save(self.engine)
            if isinstance(action, (a.Conclude, a.ReturnId, a.Fail)):
                return self.host.end(self.engine, action)
            if self.host.hand_over(self.engine, action):
                return None
            action = self.step(self.execute(action))

    def step(self, observation: Any) -> a.Action:
        action = self.engine.step(observation, time.time())
        self.flush()
        return action

    def flush(self) -> None:
        for level, line in self.engine.logs:
            getattr(self.log, level)("%s", line)
        self.engine.logs.clear()

    def execute(self, action: a.Action) -> Any:
        """One action: the observation it yields."""
        if isinstance(action, (a.ReadConversation, a.ReadStartTask)):
            wait = action.at - time.time()
            due = self.engine.wake_at()
            if due is not None:
                wait = min(wait, due - time.time())
            if wait > 0:
                self.sleep(wait)
            if due is not None and time.time() >= due:
                return a.Tick()
        if isinstance(action, a.Sleep):
            self.sleep(max(0.0, action.until - time.time()))
            return a.Continue()
        if isinstance(action, a.Publish):
            self.host.publish(action.conversation_id)
            return a.Answer(None)
        try:
            return a.Answer(self.request(action))
        except OpenHandsError as exc:
            return problem_of(exc)

    def message(self) -> str:
        """The follow-up's text, as the task rendered it (with the output instruction)."""
        return str(self.engine.lc.options["initial_user_msg"])

    def request(self, action: a.Action) -> Any:
        hook = self.hook
        if isinstance(action, a.ReadConversation):
            return hook.get_conversation(action.conversation_id)
        if isinstance(action, a.ReadStartTask):
            return hook.get_start_task(action.start_task_id)
        if isinstance(action, a.ReadTurn):
            return hook.get_turn_outcome(action.conversation_id, action.own)
        if isinstance(action, a.PostStart):
            return self.host.post_start(self.engine, action)
        if isinstance(action, a.Reconnect):
            return reconnect(hook, action)
        if isinstance(action, a.ReadPending):
            return hook.get_pending_actions(action.conversation_id)
        if isinstance(action, a.Confirm):
            return hook.respond_to_confirmation(action.conversation_id, action.accept, action.reason)
        if isinstance(action, a.ReadPlan):
            return self.host.read_plan(action.conversation_id)
        if isinstance(action, a.RunOn):
            return hook.run_agent_on(action.conversation_id)
        if isinstance(action, a.FindSend):
            return hook.find_user_message(action.conversation_id, self.message(), action.since)
        if isinstance(action, a.Send):
            return hook.send_message(action.conversation_id, self.message())
        if isinstance(action, a.Resume):
            return hook.resume_conversation(action.sandbox_id)
        if isinstance(action, a.Pause):
            stopped = hook.stop_conversation(action.conversation_id, action.sandbox_id)
            self.log.info("Stopped conversation %s" if stopped else "Conversation %s was gone", action.conversation_id)
            return stopped
        if isinstance(action, a.PauseStartTask):
            return pause_start_task(hook, action.start_task_id, self.log, self.sleep, until=action.until)
        if isinstance(action, a.RereadConnection):
            hook.reread_connection()
            return None
        raise AssertionError(f"unknown action {action!r}")  # pragma: no cover


def reconnect(hook: Any, action: a.Reconnect) -> dict[str, Any]:
    """What the earlier tries of a series may have started (see ``actions.Reconnect``)."""
    from airflow_provider_openhands.api.state import canonical_id

    ids = list(action.conversation_ids)
    states = hook.get_conversations(ids) if ids else {}
    found: dict[str, Any] = {"conversations": {}, "ended": {}, "start_tasks": []}
    for cid in ids:
        state = states.get(canonical_id(cid))
        found["conversations"][cid] = state
        if state is not None and state["status"] == "paused":
            try:
                found["ended"][cid] = hook.get_ended_status(state["conversation_id"])
            except (OpenHandsNotFoundError, OpenHandsValidationError):
                found["ended"][cid] = None  # events that cannot be read: paused mid-run, as far as is known
    if action.start_task_id:
        task = hook.get_start_task(action.start_task_id)
        found["start_tasks"].append(task)
    if action.since and ids:
        found["start_tasks"] += hook.find_start_tasks(ids, action.since)
    return found


def pause_start_task(
    hook: Any, start_task_id: str, log: Any, sleep: Any = time.sleep, *, until: float | None = None
) -> bool:
    """Pause what a start that never became READY started: its sandbox, once it has one (a start
    task names its sandbox late, at READY), watching it until ``until`` (default: ``START_STOP_GRACE``
    seconds from now). True: paused; False: the start failed, nothing runs. A start task still
    working at ``until`` raises: its agent may yet run, unwatched, and the task must say so."""
    from airflow_provider_openhands.engine import state

    give_up = (
        until if until is not None else time.time() + state.START_STOP_GRACE
    )  # read at call time: tests shorten it
    delay = 1.0
    while not hook.stop_start_task(start_task_id):
        task = hook.get_start_task(start_task_id)
        if task is None or task["status"] == "ERROR":
            return False
        if time.time() >= give_up:
            raise OpenHandsError(
                f"start task {start_task_id} still had no sandbox to pause ({task['status']}); if it starts "
                "one, its agent runs unwatched"
            )
        sleep(max(0.0, min(delay, give_up - time.time())))
        delay = min(delay * 1.5, 10.0)  # a long watch reads less often
    log.info("Paused the sandbox of start task %s", start_task_id)
    return True
