"""``OpenHandsConversationSensor``: wait until a conversation ends, in poke, reschedule or deferrable mode."""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_provider_openhands.api.options import check_conversation_id, check_positive
from airflow_provider_openhands.exceptions import OpenHandsError
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import ConversationWaiter, default_deferrable, failure

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_openhands.engine.engine import Engine
    from airflow_provider_openhands.engine.state import Lifecycle


class OpenHandsConversationSensor(ConversationWaiter, BaseSensorOperator):
    """Wait for an OpenHands conversation to reach a success or failure status.

    Returns (XCom ``return_value``) the conversation's final normalised state: ``status``,
    ``pr_number``, ``url``, ``title``, ``metrics`` (cost, tokens), ...

    The three modes behave the same: a conversation that fails, or a permanent API error
    (401/403/404/422), fails the task without retries; transient failures (5xx, 429, timeouts) are
    ridden out until the sensor's ``timeout`` (or ``unreachable_timeout``); at the ``timeout`` the
    conversation is stopped if ``stop_on_timeout``; with ``soft_fail`` every one of these failures
    skips the task instead. A paused conversation whose events show it had ended counts as ended.

    :param conversation_id: the conversation to wait on (templated), e.g. ``start.output``; the
        start operator's or another sensor's result dict (its ``conversation_id``) also works.
    :param openhands_conn_id: the ``openhands`` connection.
    :param success_statuses: normalised statuses that succeed (default ``{"finished"}``).
    :param failure_statuses: statuses that fail the task (default error, stuck, missing,
        stopped, rejected).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param stop_on_timeout: stop the conversation when the sensor's ``timeout`` passes.
    :param cancel_on_kill: stop the conversation when the task is killed.
    :param pause_when_done: once it ended, pause its sandbox (V1) / stop it (V0), freeing the slot.
    :param unreachable_timeout: seconds of transient failures (or of a key refused) a wait rides out.
    :param max_cost_usd: stop the conversation and fail once its cost (the conversation's total)
        passes this many dollars; a V1 connection only (refused on V0, which reports no cost).
    :param sandbox_error_grace: seconds a sandbox must keep reading ``ERROR`` before it counts (default
        2 min): the service shows a transient ``ERROR`` when a health check is slow.

    ``poke_interval``, ``timeout``, ``mode`` and ``soft_fail`` are Airflow's own sensor options.
    """

    template_fields = ("conversation_id",)
    operator_extra_links = (OpenHandsConversationLink(),)
    ui_color = "#e7f0fe"

    def __init__(
        self,
        *,
        conversation_id: str,
        openhands_conn_id: str = "openhands_default",
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        deferrable: bool | None = None,
        stop_on_timeout: bool = False,
        cancel_on_kill: bool = False,
        pause_when_done: bool = True,
        unreachable_timeout: float = 30 * 60.0,
        max_cost_usd: float | None = None,
        sandbox_error_grace: float = 120.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 30.0)
        super().__init__(**kwargs)
        self.conversation_id = conversation_id
        self.openhands_conn_id = openhands_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.stop_on_timeout = stop_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self.pause_when_done = pause_when_done
        self.unreachable_timeout = check_positive(unreachable_timeout, "unreachable_timeout")
        self.sandbox_error_grace = check_positive(sandbox_error_grace, "sandbox_error_grace")
        self.max_cost_usd = None if max_cost_usd is None else check_positive(max_cost_usd, "max_cost_usd")
        self._init_statuses(success_statuses, failure_statuses)
        check_positive(self.poke_interval, "poke_interval")
        check_positive(self.timeout, "timeout")
        self._engine: Engine | None = None

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One look at the conversation, by the same engine the operator and the trigger drive. The
        lifecycle (with its clock of transient failures) lives on between pokes: on this instance in
        poke mode, in the task state store across reschedules (Airflow >= 3.3)."""
        from airflow_provider_openhands.engine.actions import Continue

        self._context = context
        self.conversation_id = check_conversation_id(self.conversation_id)
        engine = self._engine_for(context)
        engine.last_read = None  # a poke reads at once
        host = _SensorHost(self, context)
        result = self.driver(engine, host).run(Continue())
        return False if host.waiting else PokeReturnValue(is_done=True, xcom_value=result)

    def execute(self, context: Context) -> Any:
        self.check_budget_enforceable()
        self.conversation_id = check_conversation_id(self.conversation_id)  # bad input fails, even with soft_fail
        soft_fail = self.soft_fail
        self.soft_fail = False  # this sensor maps failures to skips itself, the same in every mode
        try:
            if not self.deferrable:
                return super().execute(context)
            result = self.poke(context)  # already over? then no need to defer
            if isinstance(result, PokeReturnValue):
                return result.xcom_value
            engine = self._engine_for(context)
            engine.lc.deadline = time.time() + self.timeout
            self.defer(
                trigger=self.make_trigger(engine.lc),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + 10 * self.poke_interval + 60),
            )
        except AirflowSensorTimeout as exc:
            if self.stop_on_timeout:
                self.stop_quietly(self.conversation_id)
            self._skip_if_soft(soft_fail, exc)
            raise
        except OpenHandsError as exc:
            self._skip_if_soft(soft_fail, exc)
            raise
        finally:
            self.soft_fail = soft_fail

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from airflow_provider_openhands.engine.actions import Continue
        from airflow_provider_openhands.engine.state import Lifecycle

        self._context = context
        self.conversation_id = check_conversation_id(self.conversation_id)
        try:
            lc = Lifecycle.from_dict(event.get("lifecycle") or {"conversation_id": self.conversation_id})
            self._engine = self.make_engine(lc)
            return self.driver(self._engine, _SensorHost(self, context, deferred=True)).run(Continue())
        except OpenHandsError as exc:
            self._skip_if_soft(self.soft_fail, exc)
            raise

    def driver(self, engine: Engine, host: Any) -> Any:
        from airflow_provider_openhands.hooks.driver import SyncDriver

        return SyncDriver(engine, self.hook, host, self.log)

    def _engine_for(self, context: Context) -> Engine:
        from airflow_provider_openhands.engine.state import PHASE_RUNNING, Lifecycle

        engine = getattr(self, "_engine", None)
        if engine is None:
            try_number = int(getattr(context["ti"], "try_number", 1) or 1)
            lc = self._stored(context, try_number) or Lifecycle(
                phase=PHASE_RUNNING, conversation_id=str(self.conversation_id), try_number=try_number
            )
            engine = self._engine = self.make_engine(lc)
        return engine

    def _stored(self, context: Context, try_number: int) -> Lifecycle | None:
        """Reschedule mode: what the earlier pokes of this try learnt (Airflow >= 3.3's task state store)."""
        from airflow_provider_openhands.engine.state import PHASE_RUNNING, Lifecycle

        try:
            saved = self._store_copy.load(context)
        except Exception:
            return None
        lc = Lifecycle.from_dict(saved) if saved else None
        if lc is None or lc.conversation_id != str(self.conversation_id) or lc.try_number != try_number:
            return None
        return lc if lc.phase == PHASE_RUNNING else None

    def save(self, context: Context, engine: Engine) -> None:
        try:
            self._store_copy.save(context, engine.lc)
        except Exception as exc:
            self.log.warning("Could not save the wait in the task state store: %s", exc)

    @staticmethod
    def _skip_if_soft(soft_fail: bool, exc: Exception) -> None:
        if soft_fail:
            raise AirflowSkipException(f"soft_fail: {exc}") from exc

    def end(self, engine: Engine, action: Any) -> Any:
        """The task's result for the engine's last word (the same for a poke and a trigger)."""
        from airflow_provider_openhands.engine.actions import Conclude

        if isinstance(action, Conclude):
            state = self.final_state(action.conversation_id, action.status, context=self._context, lc=engine.lc)
            return self.finish(state)
        if engine.lc.conversation_id and action.kind in ("budget", "timeout", "unreachable"):
            self.push_usage_quietly(self._context, engine.lc.conversation_id)
        raise failure(action)

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            self.stop_quietly(self.conversation_id)


class _SensorHost:
    """The sensor as the driver's host: a poke ends at its first wait (or it defers)."""

    def __init__(self, sensor: OpenHandsConversationSensor, context: Any, *, deferred: bool = False) -> None:
        self.sensor = sensor
        self.context = context
        self.deferred = deferred
        self.waiting = False
        self.polls = 0

    def publish(self, conversation_id: str) -> None:
        self.sensor.push_conversation(self.context, conversation_id)

    def save(self, engine: Engine) -> None:
        self.sensor.save(self.context, engine)

    def hand_over(self, engine: Engine, action: Any) -> bool:
        from airflow_provider_openhands.engine.actions import ReadConversation

        if isinstance(action, ReadConversation) and action.poll:
            if self.deferred:
                self.sensor.defer(trigger=self.sensor.make_trigger(engine.lc), method_name="execute_complete")
            self.polls += 1
            if self.polls > 1:
                self.waiting = True
                return True
        return False

    def end(self, engine: Engine, action: Any) -> Any:
        return self.sensor.end(engine, action)


__all__ = ["OpenHandsConversationSensor"]
