"""Waiting on a conversation: shared by the start operator and the sensor.

The worker-side wait feeds the same :class:`~airflow_provider_openhands.watch.Watch` as the
trigger, so a task waits the same way in both places. Kept free of HTTP imports: the hook and the
trigger are imported when a task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_openhands.api.options import check_statuses
from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES
from airflow_provider_openhands.exceptions import (
    OpenHandsConfigError,
    OpenHandsConversationFailed,
    OpenHandsError,
    OpenHandsPermanentError,
    OpenHandsUnreachableError,
)
from airflow_provider_openhands.lifecycle import PHASE_STARTING, Lifecycle
from airflow_provider_openhands.links.openhands import CONVERSATION_ID_KEY, CONVERSATION_URL_KEY
from airflow_provider_openhands.outcome import FAILURE, classify, describe, summary_line

if TYPE_CHECKING:
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook
    from airflow_provider_openhands.watch import Watch


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


def results_error(message: str) -> Exception:
    from airflow_provider_openhands.exceptions import OpenHandsOutputError

    return OpenHandsOutputError(message)


def raise_for_error_event(event: dict[str, Any]) -> None:
    """An ``error`` event as the exception it stands for: permanent ones are not retried."""
    message = event.get("message") or "OpenHands wait failed"
    if event.get("permanent"):
        raise OpenHandsPermanentError(message)
    if event.get("unreachable"):
        raise OpenHandsUnreachableError(message)
    raise OpenHandsError(message)


class ConversationWaiter:
    """Mixin for operators that wait on a conversation, in the worker or in the triggerer."""

    openhands_conn_id: str
    poll_interval: float
    stop_on_timeout: bool
    cancel_on_kill: bool
    pause_when_done: bool
    unreachable_timeout: float
    log: Any
    #: What is read once after the end (see :meth:`final_state`); operators set them from parameters.
    include_changes: bool = True
    include_diff: bool = False
    max_diff_chars: int = 100_000
    git_path: str | None = None
    output_files: tuple[str, ...] = ()
    output_schema: dict[str, Any] | None = None
    output_path: str | None = None
    max_cost_usd: float | None = None

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
        url = self.hook.conversation_url(conversation_id)
        ti.xcom_push(key=CONVERSATION_ID_KEY, value=conversation_id)
        ti.xcom_push(key=CONVERSATION_URL_KEY, value=url)
        self.log.info("OpenHands conversation %s: %s", conversation_id, url)

    def make_watch(self, lifecycle: Lifecycle, *, wait_for_completion: bool = True) -> Watch:
        from airflow_provider_openhands.watch import Watch

        return Watch(
            lifecycle,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            wait_for_completion=wait_for_completion,
            unreachable_timeout=self.unreachable_timeout,
            max_cost_usd=self.max_cost_usd,
            log=self.log,
        )

    def make_trigger(self, lifecycle: Lifecycle, *, wait_for_completion: bool = True) -> Any:
        from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

        return OpenHandsConversationTrigger(
            openhands_conn_id=self.openhands_conn_id,
            lifecycle=lifecycle.for_trigger(),
            poll_interval=self.poll_interval,
            wait_for_completion=wait_for_completion,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            cancel_on_kill=self.cancel_on_kill,
            unreachable_timeout=self.unreachable_timeout,
            max_cost_usd=self.max_cost_usd,
        )

    def wait_in_worker(self, watch: Watch) -> dict[str, Any]:
        """Poll from the worker until the watch decides; the same decisions as the trigger's."""
        from airflow_provider_openhands.watch import NEED_EVENTS

        lc = watch.lc
        while True:
            event = watch.expired(time.time())
            if event is not None:
                return event
            phase = lc.phase
            try:
                if phase == PHASE_STARTING:
                    event = watch.on_start_task(self.hook.get_start_task(str(lc.start_task_id)), time.time())
                else:
                    event = watch.on_conversation(self.hook.get_conversation(str(lc.conversation_id)), time.time())
                    if event == NEED_EVENTS:
                        event = watch.on_events(self.hook.get_ended_status(str(lc.conversation_id)), time.time())
            except OpenHandsError as exc:
                event = watch.on_error(exc, time.time())
            if event is not None:
                return event
            if lc.phase != phase:
                continue
            wake_in = watch.wake_in(time.time())
            time.sleep(self.poll_interval if wake_in is None else min(self.poll_interval, wake_in))

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the final state of a successful conversation; raise for a failed one. The state is
        recorded first, for the outlets' asset events and the OpenLineage facets."""
        from airflow_provider_openhands.lineage import record_state

        record_state(self, state)
        self.log.info(summary_line(state))
        outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
        if outcome is not None and self.pause_when_done and still_running(state):
            try:
                self.hook.stop_conversation(state["conversation_id"], state.get("sandbox_id"))
                self.log.info("Paused the sandbox of conversation %s to free its slot", state["conversation_id"])
            except Exception as exc:
                self.log.warning("Could not pause the sandbox of conversation %s: %s", state["conversation_id"], exc)
        if outcome == FAILURE:
            raise OpenHandsConversationFailed(
                f"Conversation {state['conversation_id']} failed: {describe(state)} ({state.get('url')})"
            )
        return state

    def final_state(
        self, conversation_id: str, status: str | None, *, context: Any = None, output_file: str | None = None
    ) -> dict[str, Any]:
        """Read the conversation once it ended, with what it produced: the agent's final message
        (events), the changed files (git), the files and structured output asked for. Read while the
        sandbox still runs, before ``pause_when_done`` pauses it; a sandbox paused since is resumed
        for files that must be read. ``usage`` goes to XCom first, so it is there even when reading
        the output fails. A status the wait saw (or remembered) stands over a later ``paused``."""
        from airflow_provider_openhands import results

        state = self.hook.get_conversation(conversation_id)
        if status and classify(state["status"], self.success_statuses, self.failure_statuses) is None:
            state["status"] = status
        if state.get("api_version") == "v1":  # V0 reads it with the state, from the same events page
            state["final_message"] = self.hook.get_turn_outcome(conversation_id)["final_message"]
        state["usage"] = results.usage(state)
        if context is not None:
            self.push_usage(context, state)
        state["changed_files"] = None
        failed = classify(state["status"], self.success_statuses, self.failure_statuses) == FAILURE
        needs_output = bool(self.output_schema) and not failed
        must_read = needs_output or bool(self.output_files) or self.include_diff
        if state.get("api_version") == "v1" and state.get("sandbox_status") == "PAUSED" and must_read:
            running = self.running_sandbox(conversation_id)
            state.update({k: running[k] for k in ("sandbox_status", "execution_status") if k in running})
        if state.get("api_version") != "v1" or state.get("sandbox_status") != "RUNNING":
            if needs_output:
                raise results_error(
                    f"the sandbox of conversation {conversation_id} is not running "
                    f"({state.get('sandbox_status')}): its output cannot be read"
                )
            if must_read:
                self.log.warning(
                    "Conversation %s: its sandbox is not running; its files cannot be read", conversation_id
                )
            return state
        if self.include_changes or self.include_diff:
            state["changed_files"] = self._read(
                "changed files", self.hook.get_git_changes, conversation_id, self._git_path(state)
            )
        root = self._git_path(state)
        if self.include_diff:
            state["diff"] = {
                change["path"]: self._diff(conversation_id, results.in_workspace(root, change["path"]))
                for change in state["changed_files"] or []
                if change["status"] != "DELETED"
            }
        if self.output_files:
            state["files"] = {
                path: self._output_file(conversation_id, results.in_workspace(root, path), path)
                for path in self.output_files
            }
        if needs_output:
            path = output_file or results.output_file(root)
            text = self.hook.read_file(conversation_id, path)
            state["output"] = results.parse_output(text, self.output_schema, state["final_message"], path)
        return state

    def running_sandbox(self, conversation_id: str) -> dict[str, Any]:
        """The conversation, its sandbox resumed first if paused (a follow-up, or files to read, need it)."""
        state = self.hook.get_conversation(conversation_id)
        if state.get("sandbox_status") != "PAUSED":
            return state
        self.log.info("Conversation %s is paused: resuming its sandbox", conversation_id)
        self.hook.resume_conversation(str(state.get("sandbox_id")))
        timeout = float(getattr(self, "start_timeout", 900.0))
        give_up = time.time() + timeout
        while state.get("sandbox_status") != "RUNNING":
            if time.time() >= give_up:
                from airflow_provider_openhands.exceptions import OpenHandsStartTimeout

                raise OpenHandsStartTimeout(
                    f"The sandbox of conversation {conversation_id} was not running {timeout:.0f}s after its resume "
                    f"({state.get('sandbox_status')})"
                )
            time.sleep(min(self.poll_interval, 2.0))
            state = self.hook.get_conversation(conversation_id)
        return state

    def _git_path(self, state: dict[str, Any]) -> str:
        from airflow_provider_openhands.results import workspace_path

        return self.git_path or workspace_path(state.get("selected_repository"))

    def _read(self, what: str, read: Any, *args: Any) -> Any:
        """A read of what the agent produced: its failure is a warning, never the task's failure."""
        try:
            return read(*args)
        except OpenHandsError as exc:
            self.log.warning("Could not read the %s of conversation %s: %s", what, args[0], exc)
            return None

    def _diff(self, conversation_id: str, path: str) -> dict[str, str] | None:
        from airflow_provider_openhands.results import capped

        diff = self._read("diff", self.hook.get_git_diff, conversation_id, path)
        if diff is None:
            return None
        return {side: capped(text, self.max_diff_chars) for side, text in diff.items()}

    def _output_file(self, conversation_id: str, path: str, name: str) -> str | None:
        """A file's text, or where it was written in object storage when ``output_path`` is set."""
        text = self._read("file", self.hook.read_file, conversation_id, path)
        if text is None or self.output_path is None:
            return text
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        target = ObjectStoragePath(str(self.output_path)) / conversation_id / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return str(target)

    def push_usage(self, context: Any, state: dict[str, Any]) -> None:
        """Cost and tokens to XCom ``usage``, on success and on failure alike."""
        from airflow_provider_openhands.results import usage

        context["ti"].xcom_push(key="usage", value=state.get("usage") or usage(state))

    def on_timeout(
        self, conversation_id: str | None, message: str, sandbox_id: str | None = None, context: Any = None
    ) -> None:
        if conversation_id and self.stop_on_timeout:
            self.stop_quietly(conversation_id, sandbox_id)
        if conversation_id and context is not None:
            self.push_usage_quietly(context, conversation_id)
        raise ConversationTimeout(message)

    def push_usage_quietly(self, context: Any, conversation_id: str) -> None:
        """``usage`` for a task that fails (budget, timeout): one read, never raised over the failure."""
        try:
            self.push_usage(context, self.hook.get_conversation(conversation_id))
        except OpenHandsError as exc:
            self.log.warning("Could not read the usage of conversation %s: %s", conversation_id, exc)

    def stop_quietly(self, conversation_id: str, sandbox_id: str | None = None) -> None:
        """Stop a conversation; a failure to stop is logged, never raised over the real error."""
        try:
            stopped = self.hook.stop_conversation(conversation_id, sandbox_id)
            self.log.info("Stopped conversation %s" if stopped else "Conversation %s was already gone", conversation_id)
        except Exception as exc:
            self.log.warning("Could not stop conversation %s: %s", conversation_id, exc)

    # -- asset events and OpenLineage (issue 13; see airflow_provider_openhands.lineage) ----------

    def post_execute(self, context: Any, result: Any = None) -> None:
        """Airflow 3: the ``extra`` of the outlets' asset events holds the conversation's outcome."""
        from airflow_provider_openhands.lineage import emit_asset_events

        super().post_execute(context, result)  # type: ignore[misc]
        emit_asset_events(self, context, result)

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_provider_openhands.lineage import facets_on_start

        return facets_on_start(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_openhands.lineage import facets_on_end

        return facets_on_end(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_openhands.lineage import facets_on_end

        return facets_on_end(self, task_instance)
