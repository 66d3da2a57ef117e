"""``OpenHandsConversationSensor``: wait until a conversation ends, in poke, reschedule or deferrable mode."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_provider_openhands.api.options import check_positive
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import (
    ConversationTimeout,
    ConversationWaiter,
    default_deferrable,
)
from airflow_provider_openhands.outcome import StatusLogger, classify

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class OpenHandsConversationSensor(ConversationWaiter, BaseSensorOperator):
    """Wait for an OpenHands conversation to reach a success or failure status.

    Returns (XCom ``return_value``) the conversation's final normalised state: ``status``,
    ``pr_number``, ``url``, ``title``, ``metrics`` (cost, tokens), ...

    :param conversation_id: the conversation to wait on (templated), e.g. ``start.output``.
    :param openhands_conn_id: the ``openhands`` connection.
    :param success_statuses: normalised statuses that succeed (default ``{"finished"}``).
    :param failure_statuses: statuses that fail the task (default error, stuck, missing,
        stopped, rejected).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param stop_on_timeout: stop the conversation when the sensor's ``timeout`` passes.
    :param cancel_on_kill: stop the conversation when the task is killed.
    :param pause_when_done: once it ended, pause its sandbox (V1) / stop it (V0), freeing the slot.

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
        self._init_statuses(success_statuses, failure_statuses)
        check_positive(self.poke_interval, "poke_interval")
        check_positive(self.timeout, "timeout")
        self._status_log: StatusLogger | None = None

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        state = self.hook.get_conversation(self.conversation_id)
        if self._status_log is None:
            self._status_log = StatusLogger(self.log, self.conversation_id)
            self.push_conversation(context, self.conversation_id)
        outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
        self._status_log.update(state, outcome)
        if outcome is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(state))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)  # already over? then no need to defer
        if isinstance(result, PokeReturnValue):
            return result.xcom_value
        self.defer(
            trigger=self.make_trigger(timeout=self.timeout, conversation_id=self.conversation_id),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 10 * self.poke_interval + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        try:
            return self.result_from_event(context, event)
        except ConversationTimeout:
            if self.soft_fail:
                raise AirflowSkipException(event.get("message", "timed out")) from None
            raise

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            self.stop_quietly(self.conversation_id)


__all__ = ["OpenHandsConversationSensor"]
