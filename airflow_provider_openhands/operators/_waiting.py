"""What the start operator and the sensor share: the engine's rules from their parameters, the
trigger, publishing the conversation, reading the results after the end, and Airflow's exception
for each way a task fails.

Kept light: the engine, the results helpers, the hook, the driver and the trigger are imported when
a task runs, not when a DAG file is parsed (tests/test_parse_imports.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_openhands.api.options import check_statuses
from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES
from airflow_provider_openhands.exceptions import (
    OpenHandsConfigError,
    OpenHandsConversationFailed,
    OpenHandsConversationTimeout,
    OpenHandsError,
)
from airflow_provider_openhands.links.openhands import CONVERSATION_ID_KEY, CONVERSATION_URL_KEY, push_link

if TYPE_CHECKING:
    from airflow_provider_openhands.engine.engine import Engine, Rules
    from airflow_provider_openhands.engine.state import Lifecycle
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook
    from airflow_provider_openhands.operators._store import LifecycleStore


#: The name this module gave it first.
ConversationTimeout = OpenHandsConversationTimeout


def default_deferrable() -> bool:
    from airflow.providers.common.compat.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def results_error(message: str) -> Exception:
    from airflow_provider_openhands.exceptions import OpenHandsOutputError

    return OpenHandsOutputError(message)


def failure(action: Any) -> Exception:
    """The exception for the engine's ``Fail``, from the one table of ways out (``WAYS_OUT``): the
    kinds a retry cannot change raise an ``AirflowFailException``, which Airflow does not retry."""
    from airflow_provider_openhands import exceptions
    from airflow_provider_openhands.engine.actions import WAYS_OUT

    way = WAYS_OUT.get(action.kind)
    return getattr(exceptions, way.exception if way else "OpenHandsError")(action.message)


__all__ = ["ConversationTimeout", "ConversationWaiter"]


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
    max_result_bytes: int = 1_000_000
    archive_trajectory: bool = False

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

    @cached_property
    def _store_copy(self) -> LifecycleStore:
        """The task state store's copy of the lifecycle, written when it changed (Airflow >= 3.3)."""
        from airflow_provider_openhands.operators._store import LifecycleStore

        return LifecycleStore()

    def push_conversation(self, context: Any, conversation_id: str) -> None:
        """Publish the id and page link as soon as they exist (the extra link reads the URL)."""
        ti = context["ti"]
        url = self.hook.conversation_url(conversation_id)
        ti.xcom_push(key=CONVERSATION_ID_KEY, value=conversation_id)
        ti.xcom_push(key=CONVERSATION_URL_KEY, value=url)
        try:
            push_link(ti, url)
        except Exception as exc:  # the link then appears when this run of the task ends
            self.log.warning("Could not show the conversation's link yet: %s", exc)
        self.log.info("OpenHands conversation %s: %s", conversation_id, url)

    def check_budget_enforceable(self) -> None:
        """``max_cost_usd`` is enforced or refused, never ignored: V0 reports no cost (read the
        connection, before any request)."""
        if self.max_cost_usd is not None and self.hook.api_version != "v1":
            raise OpenHandsConfigError(
                f"max_cost_usd: connection {self.openhands_conn_id!r} uses api_version "
                f"{self.hook.api_version}, which reports no cost, so a budget cannot be enforced; "
                f"use a V1 connection or drop max_cost_usd"
            )

    def rules(self, *, wait_for_completion: bool = True) -> Rules:
        """The engine's rules from this task's parameters."""
        from airflow_provider_openhands.engine.engine import Rules

        return Rules(
            success_statuses=frozenset(self.success_statuses),
            failure_statuses=frozenset(self.failure_statuses),
            wait_for_completion=wait_for_completion,
            poll_interval=float(self.poll_interval),
            stop_on_timeout=self.stop_on_timeout,
            cancel_on_kill=self.cancel_on_kill,
            capacity_timeout=float(getattr(self, "capacity_timeout", 6 * 3600.0)),
            unreachable_timeout=float(self.unreachable_timeout),
            sandbox_error_grace=float(getattr(self, "sandbox_error_grace", 120.0)),
            max_cost_usd=self.max_cost_usd,
            api_version=self.hook.api_version,
            on_confirmation=getattr(self, "on_confirmation", "wait"),
            pause_when_done=bool(getattr(self, "pause_when_done", True)),
            restart_failed=bool(getattr(self, "restart_failed", False)),
        )

    def make_engine(self, lifecycle: Lifecycle) -> Engine:
        from airflow_provider_openhands.engine.engine import Engine

        return Engine(self.rules(wait_for_completion=getattr(self, "wait_for_completion", True)), lifecycle)

    def make_trigger(self, lifecycle: Lifecycle) -> Any:
        from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

        rules = self.rules(wait_for_completion=getattr(self, "wait_for_completion", True))
        return OpenHandsConversationTrigger(
            openhands_conn_id=self.openhands_conn_id,
            lifecycle=lifecycle.for_trigger(),
            poll_interval=self.poll_interval,
            wait_for_completion=rules.wait_for_completion,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            cancel_on_kill=self.cancel_on_kill,
            unreachable_timeout=self.unreachable_timeout,
            max_cost_usd=self.max_cost_usd,
            sandbox_error_grace=rules.sandbox_error_grace,
            stop_on_timeout=self.stop_on_timeout,
            capacity_timeout=rules.capacity_timeout,
            on_confirmation=rules.on_confirmation,
        )

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the final state of a successful conversation; raise for a failed one. The state is
        recorded first, for the outlets' asset events and the OpenLineage facets."""
        from airflow_provider_openhands.engine.engine import FAILURE, classify, describe, over_budget, still_running
        from airflow_provider_openhands.lineage import record_state
        from airflow_provider_openhands.outcome import summary_line
        from airflow_provider_openhands.results import bounded

        outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
        crossed = over_budget(state, self.max_cost_usd, state["conversation_id"])
        if crossed:  # in the turn's last step: the wait saw it ended, so the turn's result stands
            self.log.warning(
                "%s, but the turn had already ended (%s): its result is returned", crossed, state["status"]
            )
            state = {**state, "budget_exceeded": crossed}
        if outcome is not None and self.pause_when_done and still_running(state):
            self.pause_after_end(state["conversation_id"], state.get("sandbox_id"))
        if outcome != FAILURE:  # after the pause: a result that does not fit fails, its sandbox paused
            state = bounded(state, self.max_result_bytes, keep_files=self.output_path is not None)
            for what in state.get("cut") or ():
                self.log.warning("Result over max_result_bytes (%d): cut %s", self.max_result_bytes, what)
        record_state(self, state)
        self.log.info(summary_line(state))
        if outcome == FAILURE:
            error = state.get("error")
            if error:
                self.log.error(
                    "Conversation %s ended %s; the agent's last error: %s",
                    state["conversation_id"],
                    state["status"],
                    error,
                )
            said = f"; the agent's last error: {error}" if error else ""
            raise OpenHandsConversationFailed(
                f"Conversation {state['conversation_id']} failed: {describe(state)}{said} ({state.get('url')})"
            )
        return state

    def pause_after_end(self, conversation_id: str, sandbox_id: str | None = None) -> None:
        """``pause_when_done``: free the account's slot once the turn ended (never raised over the result),
        with the wait's patience for an outage."""
        try:
            self._once_more_after_401(
                lambda: self._patiently(self.hook.stop_conversation, conversation_id, sandbox_id, about=conversation_id)
            )
            self.log.info("Paused the sandbox of conversation %s to free its slot", conversation_id)
        except Exception as exc:
            self.log.warning("Could not pause the sandbox of conversation %s: %s", conversation_id, exc)

    def _once_more_after_401(self, call: Any, *args: Any) -> Any:
        """A call after the turn ended, once more after reading the connection again if a 401 met it."""
        from airflow_provider_openhands.exceptions import OpenHandsAuthError

        try:
            return call(*args)
        except OpenHandsAuthError as exc:
            self.log.warning("%s: reading the connection again (a rotated key?)", exc)
            self.hook.reread_connection()
            return call(*args)

    def final_state(self, conversation_id: str, status: str | None, **kwargs: Any) -> dict[str, Any]:
        """:meth:`read_final_state`, with the wait's patience for an outage, and once more after reading
        the connection again if a 401 met it (a key rotated as the turn ended)."""
        lc = kwargs.get("lc")
        self._end_deadline = lc.capped(lc.deadline) if lc is not None else None
        return self._once_more_after_401(
            lambda: self._patiently(
                lambda: self.read_final_state(conversation_id, status, **kwargs), about=conversation_id
            )
        )

    #: No request after the turn ended rides out an outage past this (epoch seconds): the task's deadline.
    _end_deadline: float | None = None

    def _patiently(self, call: Any, *args: Any, about: str | None = None) -> Any:
        """One patience (README, "Errors"): a request after the turn ended (the final read, the pause)
        rides out transient failures for ``unreachable_timeout``, as the wait did, but not past the
        task's deadline; then it fails as the wait would (``OpenHandsUnreachableError``, retried)."""
        from airflow_provider_openhands.exceptions import OpenHandsTransientError, OpenHandsUnreachableError

        since = None
        while True:
            began = time.time()
            try:
                result = call(*args)
            except OpenHandsTransientError as exc:
                since = since or began
                give_up = since + float(self.unreachable_timeout)
                if self._end_deadline is not None:
                    give_up = min(give_up, self._end_deadline)
                pause = min(max(float(self.poll_interval), 1.0), 30.0)
                if time.time() + pause >= give_up:
                    raise OpenHandsUnreachableError(
                        f"OpenHands kept failing for {time.time() - since:.0f}s after the turn of conversation "
                        f"{about} ended "
                        f"(unreachable_timeout, or the task's deadline): {exc}"
                    ) from exc
                if since == began:
                    self.log.warning(
                        "OpenHands is not answering (%s); trying again until the deadline or %.0f min of failures.",
                        exc,
                        float(self.unreachable_timeout) / 60,
                    )
                time.sleep(pause)
                continue
            if since is not None:
                self.log.info("OpenHands answers again, after %.0fs of failures.", time.time() - since)
            return result

    def read_final_state(
        self,
        conversation_id: str,
        status: str | None,
        *,
        context: Any = None,
        output_file: str | None = None,
        lc: Lifecycle | None = None,
    ) -> dict[str, Any]:
        """Read the conversation once it ended, with what it produced: the agent's final message
        (events), the changed files (git), the files and structured output asked for. Read while the
        sandbox still runs, before ``pause_when_done`` pauses it; a sandbox paused since is resumed
        for files that must be read. ``usage`` goes to XCom first, so it is there even when reading
        the output fails. A status the wait saw (or remembered) stands over a later ``paused``."""
        from airflow_provider_openhands import results
        from airflow_provider_openhands.engine.engine import FAILURE, classify

        needs_files = bool(self.output_schema or self.output_files or self.include_diff)
        if lc is not None and lc.end_state and not needs_files:  # as read when the turn ended: no second read
            state = dict(lc.end_state)
        else:  # files that must be read: the sandbox as it is now (resumed if paused since)
            state = self.hook.get_conversation(conversation_id)
        if status:  # how the turn ended, as the wait saw it (a later read may show the sandbox paused)
            state["status"] = status
        if lc is not None and lc.turn_read:  # read with the turn's end
            state["final_message"], state["error"] = lc.final_message, lc.error
        elif state.get("api_version") == "v1" and not (lc is not None and lc.events_unreadable):
            turn = self._read("final message", self.hook.get_turn_outcome, conversation_id) or {}
            state["final_message"], state["error"] = turn.get("final_message"), turn.get("error")
        elif state.get("api_version") == "v1":
            state["final_message"] = None  # V0 reads it with the state, from the same events page
        state["usage"] = results.usage(state)
        if context is not None:
            self.push_usage(context, state)
        if self.archive_trajectory:
            state["trajectory"] = self.archive(conversation_id)
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
            path = output_file or results.output_file(conversation_id.replace("-", "")[:12], self.git_path)
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

    def archive(self, conversation_id: str) -> str | None:
        """``archive_trajectory``: the conversation's trajectory (a zip of its events and metadata)
        written to ``output_path``; its path, or None (a warning) when it could not be had."""
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        data = self._read("trajectory", self.hook.download_trajectory, conversation_id)
        if data is None:
            return None
        target = ObjectStoragePath(str(self.output_path)) / conversation_id / "trajectory.zip"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except Exception as exc:  # the archive never changes how the task ends (a budget stop stays one)
            self.log.warning("Could not archive the trajectory of %s to %s: %s", conversation_id, target, exc)
            return None
        self.log.info("Archived the trajectory of conversation %s (%d bytes) to %s", conversation_id, len(data), target)
        return str(target)

    def push_usage(self, context: Any, state: dict[str, Any]) -> None:
        """Cost and tokens to XCom ``usage``, on success and on failure alike."""
        from airflow_provider_openhands.results import usage

        context["ti"].xcom_push(key="usage", value=state.get("usage") or usage(state))

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
