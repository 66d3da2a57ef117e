"""Waiting on a conversation: shared by the start operator (``wait_for_completion``) and the sensor.

Kept free of HTTP imports: the hook and the trigger are imported when a task runs, not when a DAG
file is parsed.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_openhands.api.options import check_positive, check_statuses
from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES
from airflow_provider_openhands.exceptions import OpenHandsConfigError, OpenHandsConversationFailed, OpenHandsError
from airflow_provider_openhands.links.openhands import CONVERSATION_ID_KEY, CONVERSATION_URL_KEY
from airflow_provider_openhands.outcome import (
    ERROR,
    FAILURE,
    SUCCESS,
    TIMEOUT,
    StatusLogger,
    classify,
    describe,
    summary_line,
)

if TYPE_CHECKING:
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook


class ConversationTimeout(OpenHandsError, AirflowFailException):
    """The conversation did not end before the task's ``timeout``; not retried, as a retry would
    only wait on the same (by then stopped) conversation."""


def still_running(state: dict[str, Any]) -> bool:
    """Whether an ended conversation still holds a sandbox (V1) or runtime (V0)."""
    if state.get("api_version") == "v1":
        return state.get("sandbox_status") in ("RUNNING", "STARTING")
    return state.get("conversation_status") in ("RUNNING", "STARTING")


def default_deferrable() -> bool:
    from airflow.providers.common.compat.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


class ConversationWaiter:
    """Mixin for operators that wait on a conversation, in the worker or in the triggerer."""

    openhands_conn_id: str
    poll_interval: float
    stop_on_timeout: bool
    cancel_on_kill: bool
    pause_when_done: bool
    log: Any

    def _init_statuses(
        self, success_statuses: Collection[str] | None, failure_statuses: Collection[str] | None
    ) -> None:
        self.success_statuses = check_statuses(success_statuses, "success_statuses", DEFAULT_SUCCESS_STATUSES)
        self.failure_statuses = check_statuses(failure_statuses, "failure_statuses", DEFAULT_FAILURE_STATUSES)
        overlap = self.success_statuses & self.failure_statuses
        if overlap:
            raise OpenHandsConfigError(f"success_statuses and failure_statuses both contain {sorted(overlap)}")

    @cached_property
    def hook(self) -> OpenHandsHook:
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        return OpenHandsHook(self.openhands_conn_id)

    def push_conversation(self, context: Any, conversation_id: str) -> None:
        """Publish the id and page link as soon as they exist (the extra link reads the URL)."""
        ti = context["ti"]
        ti.xcom_push(key=CONVERSATION_ID_KEY, value=conversation_id)
        ti.xcom_push(key=CONVERSATION_URL_KEY, value=self.hook.conversation_url(conversation_id))

    def make_trigger(
        self,
        *,
        timeout: float,
        conversation_id: str | None = None,
        start_task_id: str | None = None,
        wait_for_completion: bool = True,
        wait_timeout: float | None = None,
    ) -> Any:
        from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

        return OpenHandsConversationTrigger(
            openhands_conn_id=self.openhands_conn_id,
            conversation_id=conversation_id,
            start_task_id=start_task_id,
            poll_interval=self.poll_interval,
            end_time=time.time() + timeout,
            wait_for_completion=wait_for_completion,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            cancel_on_kill=self.cancel_on_kill,
            wait_timeout=wait_timeout,
        )

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the final state of a successful conversation; raise for a failed one."""
        self.log.info(summary_line(state))
        outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
        if outcome is not None and self.pause_when_done and still_running(state):
            self.log.info("Conversation ended: freeing its slot (pause_when_done)")
            self.stop_quietly(state["conversation_id"], state.get("sandbox_id"))
        if outcome == FAILURE:
            raise OpenHandsConversationFailed(
                f"Conversation {state['conversation_id']} failed: {describe(state)} ({state.get('url')})"
            )
        return state

    def on_timeout(self, conversation_id: str | None, message: str) -> None:
        if conversation_id and self.stop_on_timeout:
            self.stop_quietly(conversation_id)
        raise ConversationTimeout(message)

    def stop_quietly(self, conversation_id: str, sandbox_id: str | None = None) -> None:
        """Stop a conversation; a failure to stop is logged, never raised over the real error."""
        try:
            stopped = self.hook.stop_conversation(conversation_id, sandbox_id)
            self.log.info("Stopped conversation %s" if stopped else "Conversation %s was already gone", conversation_id)
        except Exception as exc:
            self.log.warning("Could not stop conversation %s: %s", conversation_id, exc)

    def result_from_event(self, context: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        """Turn the trigger's one event into the task's result (the final state) or its error."""
        conversation_id = event.get("conversation_id")
        if conversation_id:
            self.push_conversation(context, conversation_id)
        outcome, message, state = event.get("outcome"), event.get("message", ""), event.get("state")
        if outcome == TIMEOUT:
            self.on_timeout(conversation_id, message)
        if outcome == ERROR:
            raise OpenHandsError(message)
        if outcome == FAILURE and state is None:
            raise OpenHandsConversationFailed(message)
        if outcome not in (SUCCESS, FAILURE):
            raise OpenHandsError(f"Unexpected event from the OpenHands trigger: {event!r}")
        return self.finish(state) if state is not None else None

    def wait_in_worker(self, conversation_id: str, timeout: float) -> dict[str, Any]:
        """Poll from the worker (non-deferrable mode) until the conversation ends."""
        check_positive(timeout, "timeout")
        deadline = time.time() + timeout
        status_log = StatusLogger(self.log, conversation_id)
        while True:
            state = self.hook.get_conversation(conversation_id)
            outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
            status_log.update(state, outcome)
            if outcome is not None:
                return self.finish(state)
            if time.time() >= deadline:
                self.on_timeout(
                    conversation_id, f"Conversation {conversation_id} still {describe(state)} after {timeout:.0f}s"
                )
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.time())))
