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

from airflow_provider_openhands.api.options import check_positive
from airflow_provider_openhands.exceptions import OpenHandsError
from airflow_provider_openhands.lifecycle import PHASE_RUNNING, Lifecycle
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import (
    ConversationWaiter,
    default_deferrable,
    raise_for_error_event,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_openhands.watch import Watch


class OpenHandsConversationSensor(ConversationWaiter, BaseSensorOperator):
    """Wait for an OpenHands conversation to reach a success or failure status.

    Returns (XCom ``return_value``) the conversation's final normalised state: ``status``,
    ``pr_number``, ``url``, ``title``, ``metrics`` (cost, tokens), ...

    The three modes behave the same: a conversation that fails, or a permanent API error
    (401/403/404/422), fails the task without retries; transient failures (5xx, 429, timeouts) are
    ridden out until the sensor's ``timeout`` (or ``unreachable_timeout``); at the ``timeout`` the
    conversation is stopped if ``stop_on_timeout``; with ``soft_fail`` every one of these failures
    skips the task instead. A paused conversation whose events show it had ended counts as ended.

    :param conversation_id: the conversation to wait on (templated), e.g. ``start.output``.
    :param openhands_conn_id: the ``openhands`` connection.
    :param success_statuses: normalised statuses that succeed (default ``{"finished"}``).
    :param failure_statuses: statuses that fail the task (default error, stuck, missing,
        stopped, rejected).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param stop_on_timeout: stop the conversation when the sensor's ``timeout`` passes.
    :param cancel_on_kill: stop the conversation when the task is killed.
    :param pause_when_done: once it ended, pause its sandbox (V1) / stop it (V0), freeing the slot.
    :param unreachable_timeout: seconds of transient failures a deferred wait rides out.
    :param max_cost_usd: stop the conversation and fail once its cost passes this many dollars.

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
        self.max_cost_usd = None if max_cost_usd is None else check_positive(max_cost_usd, "max_cost_usd")
        self._init_statuses(success_statuses, failure_statuses)
        check_positive(self.poke_interval, "poke_interval")
        check_positive(self.timeout, "timeout")
        self._watch: Watch | None = None

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_openhands.watch import NEED_EVENTS

        self._context = context
        if self._watch is None:
            self.push_conversation(context, self.conversation_id)
            self._watch = self.make_watch(Lifecycle(phase=PHASE_RUNNING, conversation_id=self.conversation_id))
        watch = self._watch
        try:
            event = watch.on_conversation(self.hook.get_conversation(self.conversation_id), time.time())
            if event == NEED_EVENTS:
                event = watch.on_events(self.hook.get_ended_status(self.conversation_id), time.time())
        except OpenHandsError as exc:
            event = watch.on_error(exc, time.time())
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._complete(event))

    def execute(self, context: Context) -> Any:
        soft_fail = self.soft_fail
        self.soft_fail = False  # this sensor maps failures to skips itself, the same in every mode
        try:
            if not self.deferrable:
                return super().execute(context)
            result = self.poke(context)  # already over? then no need to defer
            if isinstance(result, PokeReturnValue):
                return result.xcom_value
            lifecycle = Lifecycle(
                phase=PHASE_RUNNING, conversation_id=self.conversation_id, deadline=time.time() + self.timeout
            )
            self.defer(
                trigger=self.make_trigger(lifecycle),
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
        self._context = context
        try:
            return self._complete(event)
        except OpenHandsError as exc:
            self._skip_if_soft(self.soft_fail, exc)
            raise

    @staticmethod
    def _skip_if_soft(soft_fail: bool, exc: Exception) -> None:
        if soft_fail:
            raise AirflowSkipException(f"soft_fail: {exc}") from exc

    def _complete(self, event: dict[str, Any]) -> Any:
        """The task's result for the wait's final event (the same for a poke and a trigger)."""
        outcome = event.get("outcome")
        if outcome in ("success", "failure"):
            return self.finish(self.final_state(self.conversation_id, event.get("status"), context=self._context))
        if outcome == "budget":
            from airflow_provider_openhands.exceptions import OpenHandsBudgetExceeded

            self.stop_quietly(self.conversation_id)
            self.push_usage_quietly(self._context, self.conversation_id)
            raise OpenHandsBudgetExceeded(event.get("message", "over max_cost_usd"))
        if outcome == "timeout":
            self.on_timeout(self.conversation_id, event.get("message", "timed out"), context=self._context)
        raise_for_error_event(event)

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            self.stop_quietly(self.conversation_id)


__all__ = ["OpenHandsConversationSensor"]
