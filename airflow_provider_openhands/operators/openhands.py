"""``OpenHandsStartConversationOperator``: start an OpenHands conversation (and optionally wait for it)."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_openhands.api.options import (
    StartOptions,
    check_git_provider,
    check_message,
    check_positive,
    check_repository,
    is_templated,
)
from airflow_provider_openhands.exceptions import (
    OpenHandsConfigError,
    OpenHandsError,
    OpenHandsStartError,
    OpenHandsStartTimeout,
)
from airflow_provider_openhands.lifecycle import (
    MAX_GENERATIONS,
    PHASE_CAPACITY,
    PHASE_DONE,
    PHASE_RUNNING,
    PHASE_START,
    PHASE_STARTING,
    START_STOP_GRACE,
    STATE_STORE_KEY,
    Lifecycle,
    client_id,
    conversation_key,
    series_start,
)
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import (
    ConversationWaiter,
    default_deferrable,
    raise_for_error_event,
)
from airflow_provider_openhands.results import check_output_schema

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_CONN_ID = "openhands_default"


def datetime_now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


#: Start options a task carries through deferrals and retries (secrets are not among them).
CARRIED_OPTIONS = ("initial_user_msg", "repository", "selected_branch", "git_provider", "title", "extra_body")


class OpenHandsCapacityTimeout(OpenHandsError, AirflowFailException):
    """No free conversation slot within ``capacity_timeout``."""


class OpenHandsStartConversationOperator(ConversationWaiter, BaseOperator):
    """Start a conversation with the OpenHands agent on a repository.

    Returns the conversation id (XCom ``return_value``) and pushes ``conversation_id`` and
    ``conversation_url``. With ``wait_for_completion=True`` it also waits for the conversation to
    end, in the same task, and returns its final normalised state instead.

    The task's lifecycle (phase, ids, absolute deadlines, rendered options) is one serializable
    state (:class:`~airflow_provider_openhands.lifecycle.Lifecycle`): deferrals carry it, the task
    state store keeps it (Airflow >= 3.3), and a retry rebuilds it from deterministic ids. Deferrable
    and worker modes wait with the same logic and fail the same way:

    * conversation failed, ``timeout`` or ``start_timeout`` passed, no slot within
      ``capacity_timeout``, a permanent API error (401/403/404/422, daily quota): the task fails
      without retries (after stopping what it started, for timeouts);
    * a start task that failed, or a service unreachable for ``unreachable_timeout``: an ordinary
      failure, which Airflow retries; a retry reconnects to what the earlier try started;
    * a clear by a person starts a new conversation.

    :param initial_user_msg: what the agent should do (templated).
    :param repository: ``owner/repo`` the agent works on (templated).
    :param selected_branch: branch to check out (templated).
    :param git_provider: ``github``, ``gitlab``, ``bitbucket``, ...
    :param title: conversation title (templated; V1 only, ignored with a warning on V0).
    :param extra_body: other documented fields of the start request, passed through (templated).
    :param secrets: secrets for the agent's sandbox (V1 ``secrets``): masked in logs, not templated,
        never stored in trigger kwargs or the task state store.
    :param openhands_conn_id: the ``openhands`` connection.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param wait_for_completion: also wait for the conversation to end.
    :param poll_interval: seconds between status polls.
    :param start_timeout: seconds for the V1 start task to become READY.
    :param timeout: seconds for the conversation to end, counted from when it was ready.
    :param success_statuses: normalised statuses that count as success (default ``{"finished"}``).
    :param failure_statuses: normalised statuses that fail the task.
    :param stop_on_timeout: stop the conversation when ``timeout`` (or Airflow's
        ``execution_timeout``, which the deadline is folded into) passes.
    :param cancel_on_kill: stop the conversation (or pause its start task's sandbox) when the task
        is killed (worker ``on_kill``, and the trigger's ``on_kill`` on Airflow >= 3.3; never on a
        triggerer restart).
    :param pause_when_done: once the conversation ended, pause its sandbox (V1) or stop it (V0): a
        finished conversation's sandbox keeps running, and so keeps one of the account's slots.
    :param capacity_timeout: seconds to keep waiting for a free slot when the account already runs
        as many conversations as it may (HTTP 429 CONCURRENCY_LIMIT_REACHED) before failing.
    :param unreachable_timeout: seconds of transient failures (5xx, 429, timeouts, refused
        connections) a wait rides out before it fails (default 30 min).
    :param deterministic_conversation_id: derive the conversation id from the task instance, so a
        retry finds the conversation an earlier try started instead of starting a second one.
    :param id_namespace: salt for those ids besides the connection id, e.g. ``"staging"``.
    :param max_cost_usd: stop the conversation and fail the task (``OpenHandsBudgetExceeded``) once
        its cost passes this many dollars. Cost and tokens go to XCom ``usage`` on success and failure.
    :param include_changes: add ``changed_files`` (path, status) to the result, read once after the end.
    :param include_diff: also add each changed file's ``diff`` (original and modified text, each cut to
        ``max_diff_chars`` with a marker).
    :param git_path: the repository's directory in the workspace (default: the repository's name).
    :param output_files: workspace files to read into the result's ``files`` after the end.
    :param output_path: with ``output_files``, write them under this object-storage path
        (``ObjectStoragePath``, e.g. ``s3://bucket/prefix``) and put their paths in the result instead.
    :param conversation_id: continue this conversation instead of starting one (V1): the message is
        sent as a follow-up turn (a paused sandbox is resumed first), and the task waits for the end
        of that turn only. A retry does not send the message twice.
    :param output_schema: a JSON Schema. The agent is asked to write ``openhands_output.json``
        matching it; the task returns it validated as ``output``, and fails (saying why, with the
        agent's final message) when it is missing or invalid.
    """

    template_fields = ("initial_user_msg", "repository", "selected_branch", "title", "extra_body", "conversation_id")
    template_fields_renderers = {"extra_body": "json", "initial_user_msg": "md"}
    operator_extra_links = (OpenHandsConversationLink(),)
    ui_color = "#e7f0fe"

    def __init__(
        self,
        *,
        initial_user_msg: str,
        repository: str | None = None,
        selected_branch: str | None = None,
        git_provider: str | None = None,
        title: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        openhands_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        wait_for_completion: bool = False,
        poll_interval: float = 10.0,
        start_timeout: float = 900.0,
        timeout: float = 24 * 3600.0,
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        stop_on_timeout: bool = True,
        cancel_on_kill: bool = True,
        pause_when_done: bool = True,
        capacity_timeout: float = 6 * 3600.0,
        unreachable_timeout: float = 30 * 60.0,
        deterministic_conversation_id: bool = True,
        id_namespace: str | None = None,
        max_cost_usd: float | None = None,
        include_changes: bool = True,
        include_diff: bool = False,
        max_diff_chars: int = 100_000,
        git_path: str | None = None,
        output_files: Collection[str] = (),
        output_path: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.initial_user_msg = initial_user_msg
        self.repository = repository
        self.selected_branch = selected_branch
        self.git_provider = git_provider
        self.title = title
        self.extra_body = extra_body
        self.secrets = self._masked(secrets)
        self.openhands_conn_id = openhands_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = check_positive(poll_interval, "poll_interval")
        self.start_timeout = check_positive(start_timeout, "start_timeout")
        self.timeout = check_positive(timeout, "timeout")
        self.stop_on_timeout = stop_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self.pause_when_done = pause_when_done
        self.capacity_timeout = check_positive(capacity_timeout, "capacity_timeout")
        self.unreachable_timeout = check_positive(unreachable_timeout, "unreachable_timeout")
        self.deterministic_conversation_id = deterministic_conversation_id
        self.id_namespace = id_namespace
        self.conversation_id = conversation_id
        self.max_cost_usd = None if max_cost_usd is None else check_positive(max_cost_usd, "max_cost_usd")
        self.include_changes = include_changes
        self.include_diff = include_diff
        self.max_diff_chars = int(check_positive(max_diff_chars, "max_diff_chars"))
        self.git_path = git_path
        if isinstance(output_files, str):
            raise OpenHandsConfigError("output_files must be a list of paths, not one string")
        self.output_files = tuple(output_files)
        self.output_path = output_path
        self.output_schema = check_output_schema(output_schema)
        if self.output_schema and not wait_for_completion:
            raise OpenHandsConfigError("output_schema needs wait_for_completion=True: the output is read after the end")
        self._init_statuses(success_statuses, failure_statuses)
        self._lifecycle: Lifecycle | None = None
        self._check_static_inputs()

    @staticmethod
    def _masked(secrets: Mapping[str, str] | None) -> dict[str, str]:
        """Secrets for the agent's sandbox: masked in every log, and never a template field."""
        from airflow.providers.common.compat.sdk import mask_secret

        if secrets is not None and not isinstance(secrets, Mapping):
            raise OpenHandsConfigError("secrets must be a dict of secret name -> value")
        for value in (secrets or {}).values():
            mask_secret(value)
        return dict(secrets or {})

    def _check_static_inputs(self) -> None:
        """Fail at DAG parse time for values that are not templated (a bad DAG never runs)."""
        from airflow.providers.common.compat.sdk import SET_DURING_EXECUTION

        # @task.openhands sets the message when the task runs: nothing to check before
        if self.initial_user_msg is not SET_DURING_EXECUTION and not is_templated(self.initial_user_msg):
            check_message(self.initial_user_msg)
        if not is_templated(self.repository):
            check_repository(self.repository)
        check_git_provider(self.git_provider)

    def _options(self) -> dict[str, Any]:
        """The rendered start options, checked before any request. Data from here on: never rendered again."""
        extra_body = dict(self.extra_body or {})
        if "secrets" in extra_body:
            raise OpenHandsConfigError("pass secrets with the operator's secrets= parameter, not in extra_body")
        options = StartOptions(
            initial_user_msg=check_message(self.initial_user_msg),
            repository=check_repository(self.repository),
            selected_branch=self.selected_branch or None,
            git_provider=check_git_provider(self.git_provider),
            title=self.title or None,
            extra_body=extra_body,
        )
        return {name: getattr(options, name) for name in CARRIED_OPTIONS}

    # -- run -------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        options = self._options()
        self._check_api_features()
        if self.conversation_id:
            return self._advance(context, self._follow_up(context, options))
        lifecycle = self._begin(context, options)
        return self._advance(context, lifecycle)

    def _check_api_features(self) -> None:
        """What only the V1 API serves fails before any request on a V0 connection, naming it."""
        if self.hook.api_version == "v1":
            return
        wanted = {
            "conversation_id (follow-up turns)": bool(self.conversation_id),
            "output_schema": bool(self.output_schema),
            "output_files": bool(self.output_files),
            "include_diff": self.include_diff,
        }
        used = [name for name, on in wanted.items() if on]
        if used:
            raise OpenHandsConfigError(
                f"{', '.join(used)}: not on V0 (connection {self.openhands_conn_id!r} uses api_version v0)"
            )

    # -- follow-up turns ---------------------------------------------------------------------------

    def _follow_up(self, context: Context, options: dict[str, Any]) -> Lifecycle:
        """Send the message to an existing conversation as a new turn; the lifecycle then waits for
        that turn's end (``turn_after``)."""
        from airflow_provider_openhands.api.state import canonical_id

        conversation_id = str(self.conversation_id)
        ti = context["ti"]
        now = time.time()
        try_number = int(getattr(ti, "try_number", 1) or 1)
        lc = Lifecycle(
            series=series_start(try_number, getattr(ti, "max_tries", None), self.retries),
            try_number=try_number,
            started_at=now,
            wait_timeout=self.timeout,
            hard_deadline=self._hard_deadline(context, now),
            options=options,
        )
        state = self.running_sandbox(conversation_id)
        turn = client_id(self._key(context), lc.series)[:8]  # one per follow-up task, the same on its retries
        message = self._with_output_instruction(lc, options["initial_user_msg"], state.get("selected_repository"), turn)
        sent_at = self._earlier_send(conversation_id, message) if try_number > lc.series else None
        if sent_at is None:
            lc.turn_after = state.get("updated_at") or datetime_now_iso()
            self._send(conversation_id, state, message)
            self.log.info("Follow-up message sent to conversation %s", canonical_id(conversation_id))
        else:
            lc.turn_after = sent_at
            self.log.info("An earlier try already sent this message to %s: waiting on its turn", conversation_id)
        lc.conversation_known(state["conversation_id"], now, state.get("sandbox_id"))
        self._announce(context, lc)
        return lc

    def _earlier_send(self, conversation_id: str, message: str) -> str | None:
        """When an earlier try of this task sent ``message`` already: the time of that user message."""
        page = self.hook.get_events(conversation_id, limit=20, kind="MessageEvent")
        for event in page:
            if event.get("kind") == "MessageEvent" and event.get("source") == "user":
                from airflow_provider_openhands.api.state import message_text

                return event.get("timestamp") if message_text(event) == message else None
        return None

    def _send(self, conversation_id: str, state: dict[str, Any], message: str) -> None:
        from airflow_provider_openhands.exceptions import OpenHandsApiError, OpenHandsPermanentError

        try:
            self.hook.send_message(conversation_id, message)
        except OpenHandsApiError as exc:
            if exc.status_code == 410:
                raise OpenHandsPermanentError(
                    f"Conversation {conversation_id} is archived (HTTP 410): start a new one instead", status_code=410
                ) from None
            if exc.status_code != 409:
                raise
            self.running_sandbox(conversation_id)  # paused meanwhile (HTTP 409): resume, send once more
            self.hook.send_message(conversation_id, message)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after a trigger fired: the lifecycle comes back in its event."""
        if not isinstance(event.get("lifecycle"), dict):
            raise OpenHandsError(
                f"Resumed without the task's lifecycle (event {event!r}): clear the task to start again"
            )
        current = Lifecycle.from_dict(event["lifecycle"])
        self._lifecycle = current  # on_kill (Airflow's execution_timeout too) stops what it names
        self._absorb(context, current, event)
        return self._advance(context, current)

    def _advance(self, context: Context, lc: Lifecycle) -> Any:
        """Drive the lifecycle from its phase to the end (or to the next deferral)."""
        while True:
            self._lifecycle = lc
            self._save(context, lc)
            if lc.phase == PHASE_START:
                self._send_start(context, lc)
            elif lc.phase == PHASE_CAPACITY:
                self._wait_for_capacity(lc)
            elif lc.phase == PHASE_DONE:
                return self._result(context, lc)
            elif lc.phase == PHASE_RUNNING and not self.wait_for_completion:
                return lc.conversation_id
            else:
                self._absorb(context, lc, self._wait(lc))

    def _send_start(self, context: Context, lc: Lifecycle) -> None:
        """Send the start request once; on a full account, plan a wait for a free slot."""
        from airflow_provider_openhands.api.state import canonical_id
        from airflow_provider_openhands.exceptions import OpenHandsConcurrencyLimitError

        lc.client_id = self._client_id(context, lc) if self.deterministic_conversation_id else None
        extra_body = dict(lc.options.get("extra_body") or {})
        if self.secrets:
            extra_body["secrets"] = self.secrets
        tags, metadata, title = self._attribution(context)
        message = self._with_output_instruction(lc, lc.options["initial_user_msg"], lc.options.get("repository"), None)
        options = StartOptions(
            **{
                **lc.options,
                "initial_user_msg": message,
                "extra_body": extra_body,
                "title": lc.options.get("title") or title,
            },
            conversation_id=lc.client_id,
            observability_tags=tags,
            observability_metadata=metadata,
        )
        try:
            started = self.hook.submit_conversation(options)
        except OpenHandsConcurrencyLimitError as exc:
            self._plan_capacity_wait(lc, exc.limit, exc.current)
            return
        now = time.time()
        asked = canonical_id(lc.client_id) if lc.client_id else "chosen by the server"
        self.log.info("Start request sent (conversation id %s)", asked)
        if started["conversation_id"]:  # V0 answers the conversation at once
            lc.conversation_known(started["conversation_id"], now)
            self._announce(context, lc)
            return
        lc.start_task_id = started["start_task"]["id"]
        lc.phase = PHASE_STARTING
        lc.start_deadline = now + self.start_timeout
        self.log.info("Start task %s created; waiting for the sandbox to be READY", lc.start_task_id)

    def _with_output_instruction(self, lc: Lifecycle, message: str, repository: str | None, turn: str | None) -> str:
        """With ``output_schema``: where (an absolute path) and how the agent leaves its result."""
        from airflow_provider_openhands.results import output_file, output_instruction, workspace_path

        if not self.output_schema:
            return message
        lc.output_file = output_file(self.git_path or workspace_path(repository), turn)
        return message + output_instruction(self.output_schema, lc.output_file)

    def _attribution(self, context: Context) -> tuple[tuple[str, ...], dict[str, Any], str]:
        """Who spends: DAG, task, run and map index as observability tags and metadata (V1), so spend
        can be grouped per DAG in OpenHands, and a readable default title."""
        ti = context["ti"]
        fields = {
            "airflow_dag_id": ti.dag_id,
            "airflow_task_id": ti.task_id,
            "airflow_run_id": ti.run_id,
            "airflow_map_index": int(getattr(ti, "map_index", -1)),
        }
        moment = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
        when = moment.strftime("%Y-%m-%d") if hasattr(moment, "strftime") else ti.run_id
        suffix = f"[{fields['airflow_map_index']}]" if fields["airflow_map_index"] >= 0 else ""
        title = f"{ti.dag_id}.{ti.task_id}{suffix} {when}"
        return tuple(f"{key}:{value}" for key, value in fields.items()), fields, title

    def _plan_capacity_wait(self, lc: Lifecycle, limit: int | None, current: int | None) -> None:
        """No free conversation slot: wait with backoff, within one ``capacity_timeout`` for the task."""
        now = time.time()
        if lc.capacity_deadline is None:
            lc.capacity_deadline = now + self.capacity_timeout
        deadline = lc.capped(lc.capacity_deadline) or lc.capacity_deadline
        waited = now - (lc.capacity_deadline - self.capacity_timeout)
        if now >= deadline:
            raise OpenHandsCapacityTimeout(
                f"No free OpenHands conversation slot after {waited:.0f}s (capacity_timeout); "
                f"the service reports {current} running of a limit of {limit}"
            )
        delay = min(self.poll_interval * 2**lc.attempt, max(self.poll_interval, 300.0), deadline - now)
        delay *= random.uniform(0.8, 1.0)
        self.log.warning(
            "The account runs as many conversations as it may (limit %s, running %s); waited %.0fs so far, "
            "trying again in %.0fs. Cap concurrency with the 'openhands' pool to avoid this.",
            limit,
            current,
            waited,
            delay,
        )
        lc.attempt += 1
        lc.wake_time = now + delay
        lc.phase = PHASE_CAPACITY

    def _wait_for_capacity(self, lc: Lifecycle) -> None:
        if self.deferrable:
            from airflow_provider_openhands.triggers.openhands import OpenHandsCapacityWaitTrigger

            self._defer(
                OpenHandsCapacityWaitTrigger(wake_time=float(lc.wake_time or time.time()), lifecycle=lc.for_trigger())
            )
        time.sleep(max(0.0, (lc.wake_time or 0.0) - time.time()))
        lc.phase = PHASE_START

    def _wait(self, lc: Lifecycle) -> dict[str, Any]:
        """Wait on the start task and/or the conversation: in the triggerer, or here."""
        if self.deferrable:
            self._defer(self.make_trigger(lc, wait_for_completion=self.wait_for_completion))
        return self.wait_in_worker(self.make_watch(lc, wait_for_completion=self.wait_for_completion))

    def _defer(self, trigger: Any) -> None:
        self.defer(trigger=trigger, method_name="execute_complete")

    def _absorb(self, context: Context, lc: Lifecycle, event: dict[str, Any]) -> None:
        """Move the lifecycle on by what a wait found; raise where the task must fail."""
        outcome = event.get("outcome")
        if outcome in ("wake", "capacity") and not lc.options:  # only events that start again carry them
            lc.options = self._options()
        if outcome == "wake":
            lc.phase = PHASE_START
            return
        self._announce(context, lc)
        message = event.get("message", "")
        if outcome in ("success", "failure"):
            lc.phase, lc.outcome = PHASE_DONE, event.get("status")
        elif outcome == "ready":
            lc.phase = PHASE_RUNNING
        elif outcome == "capacity":
            lc.generation += 1  # that start task spent its id
            lc.start_task_id = None
            self._plan_capacity_wait(lc, None, None)
        elif outcome == "start_failed":
            raise OpenHandsStartError(message)
        elif outcome == "start_timeout":
            self._stop_start(lc)
            raise OpenHandsStartTimeout(message)
        elif outcome == "timeout":
            self.on_timeout(lc.conversation_id, message, lc.sandbox_id, context)
        elif outcome == "budget":
            self._over_budget(context, lc, message)
        elif outcome == "error":
            raise_for_error_event(event)
        else:
            raise OpenHandsError(f"Unexpected event from the OpenHands trigger: {event!r}")

    def _announce(self, context: Context, lc: Lifecycle) -> None:
        """Publish the conversation (XCom, link, log line) once per task run, as soon as it exists."""
        if lc.conversation_id and lc.conversation_id != getattr(self, "_announced", None):
            self._announced = lc.conversation_id
            self._check_client_id(lc)
            self.push_conversation(context, lc.conversation_id)

    def _result(self, context: Context, lc: Lifecycle) -> dict[str, Any]:
        state = self.final_state(str(lc.conversation_id), lc.outcome, context=context, output_file=lc.output_file)
        return self.finish(state)

    def _over_budget(self, context: Context, lc: Lifecycle, message: str) -> None:
        from airflow_provider_openhands.exceptions import OpenHandsBudgetExceeded

        self.stop_quietly(str(lc.conversation_id), lc.sandbox_id)
        self.push_usage_quietly(context, str(lc.conversation_id))
        raise OpenHandsBudgetExceeded(message)

    def _stop_start(self, lc: Lifecycle) -> None:
        """Stop what a start that never became READY may have started: its sandbox, once it has one
        (a start task names its sandbox late), waiting at most ``START_STOP_GRACE`` seconds."""
        if lc.conversation_id:
            self.stop_quietly(lc.conversation_id, lc.sandbox_id)
            return
        if not lc.start_task_id:
            return
        give_up = time.time() + START_STOP_GRACE
        try:
            while not self.hook.stop_start_task(lc.start_task_id):
                if self.hook.get_start_task(lc.start_task_id)["status"] == "ERROR":
                    return
                if time.time() >= give_up:
                    self.log.warning(
                        "Start task %s has no sandbox yet: if it still starts one, that conversation was not stopped",
                        lc.start_task_id,
                    )
                    return
                time.sleep(min(self.poll_interval, 2.0))
            self.log.info("Paused the sandbox of start task %s", lc.start_task_id)
        except Exception as exc:
            self.log.warning("Could not stop start task %s: %s", lc.start_task_id, exc)

    # -- retries, clears and the state store ------------------------------------------------------

    def _key(self, context: Context) -> str:
        ti = context["ti"]
        return conversation_key(
            conn_id=self.openhands_conn_id,
            namespace=self.id_namespace,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", -1),
        )

    def _client_id(
        self, context: Context, lc: Lifecycle, try_number: int | None = None, generation: int | None = None
    ) -> str:
        return client_id(
            self._key(context),
            lc.try_number if try_number is None else try_number,
            lc.generation if generation is None else generation,
        )

    def _hard_deadline(self, context: Context, now: float) -> float | None:
        """Airflow's ``execution_timeout`` ends a deferred task without a word to us: wait no longer
        than it allows, less a margin, so the conversation is stopped first."""
        if not self.execution_timeout:
            return None
        seconds = self.execution_timeout.total_seconds()
        start = getattr(context["ti"], "start_date", None)
        started = start.timestamp() if hasattr(start, "timestamp") else now
        # A deferred task resumes only after the scheduler and an executor have had it: leave them a minute.
        return started + seconds - min(max(2 * self.poll_interval, 60.0), 0.25 * seconds)

    def _begin(self, context: Context, options: dict[str, Any]) -> Lifecycle:
        """This try's lifecycle: a fresh one, or what an earlier try of the same series started."""
        ti = context["ti"]
        now = time.time()
        try_number = int(getattr(ti, "try_number", 1) or 1)
        series = series_start(try_number, getattr(ti, "max_tries", None), self.retries)
        fresh = Lifecycle(
            series=series,
            try_number=try_number,
            started_at=now,
            start_timeout=self.start_timeout,
            wait_timeout=self.timeout,
            hard_deadline=self._hard_deadline(context, now),
            options=options,
        )
        if try_number > series:
            earlier = self._reconnect(context, fresh)
            if earlier is not None:
                return earlier
        return fresh

    def _stored(self, context: Context, series: int) -> Lifecycle | None:
        store = context.get("task_state_store")
        if store is None:
            return None
        try:
            saved = store.get(STATE_STORE_KEY)
        except Exception as exc:
            self.log.warning("Could not read the task state store: %s", exc)
            return None
        lc = Lifecycle.from_dict(saved) if saved else None
        return lc if lc is not None and lc.series == series else None

    def _save(self, context: Context, lc: Lifecycle) -> None:
        """Airflow >= 3.3: keep the lifecycle in the task state store, so a retry finds it."""
        store = context.get("task_state_store")
        if store is None:
            return
        try:
            store.set(STATE_STORE_KEY, lc.to_dict())
        except Exception as exc:
            self.log.warning("Could not save the conversation's lifecycle in the task state store: %s", exc)

    def _reconnect(self, context: Context, fresh: Lifecycle) -> Lifecycle | None:
        """A retry: find what an earlier try of this series started, instead of starting again.

        Alive: wait on it. Ended well: return its result. Failed: start afresh (and say so).
        A start task still working: wait on it (before READY the conversation does not exist).
        """
        from airflow_provider_openhands.api.state import canonical_id
        from airflow_provider_openhands.outcome import FAILURE, SUCCESS, classify

        stored = self._stored(context, fresh.series)
        conversation_ids: list[str] = []
        if stored is not None and stored.conversation_id:
            conversation_ids.append(stored.conversation_id)
        earlier_tries = range(fresh.try_number - 1, fresh.series - 1, -1)  # newest first
        if self.deterministic_conversation_id:
            generations = range(MAX_GENERATIONS if self.hook.api_version == "v1" else 1)
            conversation_ids += [self._client_id(context, fresh, t, g) for t in earlier_tries for g in generations]
        if conversation_ids:
            states = self.hook.get_conversations(list(dict.fromkeys(conversation_ids)))
            for conversation_id in dict.fromkeys(conversation_ids):
                state = states.get(canonical_id(conversation_id))
                if state is None:
                    continue
                status = state["status"]
                if status == "paused":  # paused when it ended (pause_when_done), or mid-run?
                    remembered = (
                        stored.outcome if stored is not None and stored.conversation_id == conversation_id else None
                    )
                    status = remembered or self.hook.get_ended_status(state["conversation_id"]) or status
                outcome = classify(status, self.success_statuses, self.failure_statuses)
                if outcome == FAILURE:
                    self.log.info(
                        "An earlier try's conversation %s ended %s: starting a fresh one", conversation_id, status
                    )
                    continue
                self.log.info("Reconnecting to conversation %s started by an earlier try (%s)", conversation_id, status)
                return self._resumed(context, fresh, stored, state, status if outcome == SUCCESS else None)
        return self._reconnect_to_start(context, fresh, stored, earlier_tries)

    def _reconnect_to_start(
        self, context: Context, fresh: Lifecycle, stored: Lifecycle | None, earlier_tries: range
    ) -> Lifecycle | None:
        """V1: an earlier try's start task that is still working (found in the store or by search)."""
        if self.hook.api_version != "v1":
            return None
        candidates: list[dict[str, Any]] = []
        if stored is not None and stored.start_task_id and stored.phase == PHASE_STARTING:
            candidates.append(self.hook.get_start_task(stored.start_task_id))
        if self.deterministic_conversation_id:
            ids = [self._client_id(context, fresh, t, g) for t in earlier_tries for g in range(MAX_GENERATIONS)]
            candidates += self.hook.find_start_tasks(ids, self._run_started(context))
        for task in candidates:
            if task["status"] == "ERROR":
                continue
            if task["status"] == "READY" and task.get("conversation_id"):
                state = self.hook.get_conversation(task["conversation_id"])
                return self._resumed(context, fresh, stored, state, None)
            self.log.info("Reconnecting to start task %s of an earlier try (%s)", task["id"], task["status"])
            lc = dataclasses.replace(
                fresh, phase=PHASE_STARTING, start_task_id=task["id"], client_id=task.get("requested_id")
            )
            from airflow_provider_openhands.api.state import parse_time

            same = stored is not None and stored.start_task_id == task["id"] and stored.start_deadline
            created = parse_time(task.get("created_at")) or time.time()
            lc.start_deadline = stored.start_deadline if same else created + self.start_timeout
            return lc
        return None

    @staticmethod
    def _run_started(context: Context) -> str:
        """ISO time no later than this task's first try: the DAG run's start, less a minute of clock skew."""
        from datetime import datetime, timedelta, timezone

        dag_run = context.get("dag_run")
        start = getattr(dag_run, "start_date", None) or getattr(dag_run, "queued_at", None)
        if not isinstance(start, datetime):
            start = datetime.now(timezone.utc) - timedelta(days=2)
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        return (start - timedelta(minutes=1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _resumed(
        self, context: Context, fresh: Lifecycle, stored: Lifecycle | None, state: dict[str, Any], ended: str | None
    ) -> Lifecycle:
        """The lifecycle of a found conversation: its deadline counts from its creation, as before."""
        from airflow_provider_openhands.api.state import parse_time

        lc = dataclasses.replace(fresh, client_id=None)
        same = stored is not None and stored.conversation_id == state["conversation_id"]
        lc.deadline = stored.deadline if same else None
        lc.conversation_known(
            state["conversation_id"], parse_time(state.get("created_at")) or time.time(), state.get("sandbox_id")
        )
        self._announce(context, lc)
        if ended:
            lc.phase, lc.outcome = PHASE_DONE, ended
        return lc

    def _check_client_id(self, lc: Lifecycle) -> None:
        from airflow_provider_openhands.api.state import canonical_id

        if lc.client_id and lc.conversation_id and canonical_id(lc.client_id) != canonical_id(lc.conversation_id):
            self.log.warning(
                "The server ignored the client-chosen conversation id %s (it made %s): a retry of this task "
                "can only find the conversation through the task state store (Airflow >= 3.3).",
                lc.client_id,
                lc.conversation_id,
            )

    def on_kill(self) -> None:
        """The worker kills the task (or Airflow's execution_timeout ended it): stop what it started."""
        lc = self._lifecycle
        if not self.cancel_on_kill or lc is None or lc.phase == PHASE_DONE:
            return
        self._stop_start(lc)


class OpenHandsSendMessageOperator(OpenHandsStartConversationOperator):
    """Send a follow-up message to an existing conversation (V1) and wait for the end of that turn.

    The same as ``OpenHandsStartConversationOperator(conversation_id=..., initial_user_msg=...)``:
    a paused sandbox is resumed first, the task waits for the new turn only (not the previous
    turn's ``finished``), returns the same result shape, and a retry does not send twice. HTTP 410
    (archived) fails at once.

    :param conversation_id: the conversation to continue (templated).
    :param message: what the agent should do next (templated).
    """

    template_fields = OpenHandsStartConversationOperator.template_fields

    def __init__(self, *, conversation_id: str, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", True)
        super().__init__(initial_user_msg=message, conversation_id=conversation_id, **kwargs)
