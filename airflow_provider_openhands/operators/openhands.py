"""``OpenHandsStartConversationOperator``: start an OpenHands conversation (and optionally wait for it)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_openhands.api.options import (
    StartOptions,
    check_conversation_id,
    check_git_provider,
    check_message,
    check_positive,
    check_repository,
    is_templated,
)
from airflow_provider_openhands.exceptions import OpenHandsConfigError, OpenHandsError
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import ConversationWaiter, default_deferrable, failure

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_openhands.engine.engine import Engine
    from airflow_provider_openhands.engine.state import Lifecycle
    from airflow_provider_openhands.hooks.driver import SyncDriver

DEFAULT_CONN_ID = "openhands_default"

# The engine, the results helpers, the hook, the driver and the trigger are imported in the methods
# that run a task, never when a DAG file is parsed (issue 18; tests/test_parse_imports.py).


#: Start options a task carries through deferrals and retries (secrets are not among them).
CARRIED_OPTIONS = ("initial_user_msg", "repository", "selected_branch", "git_provider", "title", "extra_body")
#: What a mapped task instance is named after (its ``rendered_map_index``) when the DAG gives no
#: ``map_index_template``: the repository and branch (``acme/web``, ``acme/web@main``), else its map index.
DEFAULT_MAP_INDEX_TEMPLATE = "{{ task.repository_label or ti.map_index }}"


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
    :param secrets: secrets for the agent's sandbox (V1 ``secrets``), never stored in trigger kwargs
        or the task state store. A value holding Jinja (``"{{ var.value.gh_token }}"``,
        ``"{{ conn.github.password }}"``) is rendered when the task starts the conversation, just
        before the start request, and masked in logs at once; ``secrets`` is no template field, so a
        rendered value never reaches the rendered-fields table ("Rendered Templates"). Other values
        are masked in logs when the DAG is parsed.
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
        connections) a wait rides out before it fails (default 30 min); the same for an API key that
        stays refused (401) while it waits, the connection read again each poll (a key-rotation gap).
    :param sandbox_error_grace: seconds a sandbox must keep reading ``ERROR`` before it counts as
        failed (default 2 min): the service shows a transient ``ERROR`` when a health check is slow.
    :param deterministic_conversation_id: derive the conversation id from the task instance, so a
        retry finds the conversation an earlier try started instead of starting a second one.
    :param restart_failed: a retry that finds the conversation an earlier try started ended in
        failure starts a fresh one. By default (False) it fails the task as that try would have
        (``OpenHandsConversationFailed``, not retried): a try that died after its conversation failed,
        before Airflow recorded the failure, gets a retry, which must not turn into a second conversation.
    :param id_namespace: salt for those ids besides the connection id and the DAG run's start, e.g.
        ``"staging"``.
    :param max_cost_usd: stop the conversation and fail the task (``OpenHandsBudgetExceeded``) once
        its cost (the conversation's total, earlier turns included) passes this many dollars. Needs
        ``wait_for_completion=True`` and a V1 connection (refused otherwise, never ignored). Cost and
        tokens go to XCom ``usage`` on success and failure.
    :param include_changes: add ``changed_files`` (path, status) to the result, read once after the end.
    :param include_diff: also add each changed file's ``diff`` (original and modified text, each cut to
        ``max_diff_chars`` with a marker).
    :param max_diff_chars: characters kept of each text of a diff (default 100 000).
    :param git_path: the repository's directory in the workspace (default: the repository's name).
    :param output_files: workspace files to read into the result's ``files`` after the end.
    :param output_path: with ``output_files``, write them under this object-storage path
        (``ObjectStoragePath``, e.g. ``s3://bucket/prefix``) and put their paths in the result instead.
    :param max_result_bytes: what the task returns (XCom) at most, as JSON (default 1 MB): over it,
        the longest texts (diffs, files, the final message) are cut to one length, each with a marker,
        and the result's ``cut`` lists them; use ``output_path`` to keep whole files.
    :param archive_trajectory: with ``output_path``: after the end (and after a budget or timeout
        stop), download the conversation's trajectory (a zip of its events and metadata, V1
        ``/download``) to ``<output_path>/<conversation id>/trajectory.zip`` for audit; its path is
        the result's ``trajectory`` (None, with a warning, when the service would not serve it).
    :param conversation_id: continue this conversation instead of starting one (V1): the message is
        sent as a follow-up turn (a paused sandbox is resumed first), and the task waits for the end
        of that turn only. A retry does not send the message twice. An id, or a task's result dict
        holding one (``start.output`` of a start that waited, a sensor's ``output``).
    :param on_confirmation: what the task does when the agent waits for a person to confirm its
        next actions (OpenHands' confirmation mode, a user or organisation setting): ``"ask"`` (the
        default on Airflow >= 3.1) asks a person in Airflow's "Required actions" (the actions, the
        conversation link, Approve / Reject with a reason), waits without a worker slot, answers the
        agent and waits on; ``"reject"`` / ``"approve"`` answer at once (each action logged);
        ``"fail"`` (the default before 3.1) fails the task naming the actions.
    :param confirmation_timeout: seconds a person has to answer (``"ask"``, ``plan_first``); no answer rejects.
    :param plan_first: V1, Airflow >= 3.1: the agent first writes a plan (OpenHands' plan mode), a
        person approves it, asks for a revision or rejects it in Airflow's "Required actions", and
        on approval a conversation that shares the plan's sandbox carries it out (what the task
        waits on and returns; its result's ``plan`` holds the plan and its conversation).
    :param output_schema: a JSON Schema. The agent is asked to write ``openhands_output_<id>.json``
        (beside the repository's directory, never in its working tree; a name unique to the task
        series and turn) matching it; the task returns it validated as ``output``, and fails (saying why, with the
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
        sandbox_error_grace: float = 120.0,
        deterministic_conversation_id: bool = True,
        restart_failed: bool = False,
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
        max_result_bytes: int = 1_000_000,
        archive_trajectory: bool = False,
        on_confirmation: str | None = None,
        confirmation_timeout: float = 24 * 3600.0,
        plan_first: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_openhands.operators._confirmations import checked_on_confirmation

        self.on_confirmation = checked_on_confirmation(on_confirmation)
        self.confirmation_timeout = check_positive(confirmation_timeout, "confirmation_timeout")
        self.plan_first = plan_first
        if plan_first:
            from airflow_provider_openhands.operators._confirmations import hitl_available

            problem = (
                "needs Airflow >= 3.1 (a person approves the plan in Airflow)"
                if not hitl_available()
                else "needs wait_for_completion=True"
                if not wait_for_completion
                else "starts a conversation: it cannot continue one (conversation_id)"
                if conversation_id
                else "does not take output_schema yet"
                if output_schema
                else "sets agent_type and parent_conversation_id itself (not in extra_body)"
                if {"agent_type", "parent_conversation_id"} & set(extra_body or {})
                else None
            )
            if problem:
                raise OpenHandsConfigError(f"plan_first {problem}")
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
        self.sandbox_error_grace = check_positive(sandbox_error_grace, "sandbox_error_grace")
        self.deterministic_conversation_id = deterministic_conversation_id
        self.restart_failed = restart_failed
        self.id_namespace = id_namespace
        self.conversation_id = conversation_id
        self.max_cost_usd = None if max_cost_usd is None else check_positive(max_cost_usd, "max_cost_usd")
        self.include_changes = include_changes
        self.include_diff = include_diff
        self.max_diff_chars = int(check_positive(max_diff_chars, "max_diff_chars"))
        self.max_result_bytes = int(check_positive(max_result_bytes, "max_result_bytes"))
        if self.max_result_bytes < 10_000:
            raise OpenHandsConfigError(
                f"max_result_bytes must be at least 10000 (ids, status, markers), got {max_result_bytes!r}"
            )
        self.archive_trajectory = archive_trajectory
        self.git_path = git_path
        if isinstance(output_files, str):
            raise OpenHandsConfigError("output_files must be a list of paths, not one string")
        self.output_files = tuple(output_files)
        self.output_path = output_path
        self.output_schema = self._checked_schema(output_schema)
        if self.output_schema and not wait_for_completion:
            raise OpenHandsConfigError("output_schema needs wait_for_completion=True: the output is read after the end")
        if archive_trajectory and (not output_path or not wait_for_completion):
            raise OpenHandsConfigError(
                "archive_trajectory needs output_path (where the zip goes) and wait_for_completion=True "
                "(the trajectory is complete once the conversation ended)"
            )
        if self.max_cost_usd is not None and not wait_for_completion:
            raise OpenHandsConfigError(
                "max_cost_usd needs wait_for_completion=True: the cost is checked while the task waits, and "
                "without a wait nothing stops the conversation at the budget (or wait with "
                "OpenHandsConversationSensor(max_cost_usd=...) after this task)"
            )
        self._init_statuses(success_statuses, failure_statuses)
        self._lifecycle: Lifecycle | None = None
        self._check_static_inputs()

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``.partial(...).expand(repository=...)``: mapped task instances are named after their
        repository (:data:`DEFAULT_MAP_INDEX_TEMPLATE`) unless the task or the DAG's ``default_args``
        give a ``map_index_template``. Airflow renders it when each run of the task begins (so the
        name shows while the task waits) and again when it ends."""
        partial = super().partial(**kwargs)
        if partial.kwargs.get("map_index_template") is None:
            partial.kwargs["map_index_template"] = DEFAULT_MAP_INDEX_TEMPLATE
        return partial

    @property
    def repository_label(self) -> str | None:
        """``owner/repo`` or ``owner/repo@branch`` as this run knows them (rendered, or as the task's
        lifecycle carries them), None without a repository."""
        options = getattr(getattr(self, "_lifecycle", None), "options", None) or {}
        repository = options.get("repository") or self.repository
        branch = options.get("selected_branch") or self.selected_branch
        if not isinstance(repository, str) or not repository.strip() or is_templated(repository):
            return None
        if isinstance(branch, str) and branch.strip() and not is_templated(branch):
            return f"{repository.strip()}@{branch.strip()}"
        return repository.strip()

    def _name_mapped_instance(self, context: Any) -> None:
        """A mapped task instance without a ``map_index_template`` (``@task.openhands``, whose
        repository its function may return) is named after its repository when the run ends:
        Airflow renders ``context["map_index_template"]`` then (Airflow >= 2.9)."""
        map_index = getattr(context.get("ti"), "map_index", None)
        if isinstance(map_index, int) and map_index >= 0 and context.get("map_index_template") is None:
            context["map_index_template"] = DEFAULT_MAP_INDEX_TEMPLATE

    @staticmethod
    def _checked_schema(output_schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The ``output_schema``, checked at DAG parse time (``jsonschema`` is imported only for one)."""
        if output_schema is None:
            return None
        from airflow_provider_openhands.results import check_output_schema

        return check_output_schema(output_schema)

    @staticmethod
    def _masked(secrets: Mapping[str, str] | None) -> dict[str, str]:
        """Secrets for the agent's sandbox: masked in every log, and never a template field (a value
        holding Jinja is masked once rendered, in :meth:`_rendered_secrets`)."""
        from airflow.providers.common.compat.sdk import mask_secret

        if secrets is not None and not isinstance(secrets, Mapping):
            raise OpenHandsConfigError("secrets must be a dict of secret name -> value")
        for value in (secrets or {}).values():
            if not is_templated(value):
                mask_secret(value)
        return dict(secrets or {})

    def _rendered_secrets(self, context: Any) -> dict[str, str]:
        """The secrets with their Jinja rendered (Variables, Connections), each value masked in logs
        as soon as it exists. Rendered here, just before the start request, and kept nowhere."""
        from airflow.providers.common.compat.sdk import mask_secret

        rendered = {}
        for name, value in self.secrets.items():
            if is_templated(value):
                value = str(self.render_template(value, context))
                mask_secret(value)
            rendered[name] = value
        return rendered

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

    # -- run: the story of a task's conversation -------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Check the inputs, then let the engine drive: start (or continue, or reconnect to what an
        earlier try started), wait here or in the triggerer, read the results, pause, return."""
        from airflow_provider_openhands.engine.actions import Begin

        self._check_api_features()
        lc = self._lifecycle_for(context, self._options())
        if self.plan_first:
            from airflow_provider_openhands.engine.plans import first_stage, stage_options

            lc.plan = first_stage(lc.options, lc.plan)
            lc.options, lc.key = stage_options(lc.plan), self._stage_key(context, lc)
        return self._drive(context, lc, Begin())

    def _check_api_features(self) -> None:
        """A follow-up needs a conversation; what only the V1 API serves fails before any request on a
        V0 connection, naming it."""
        if self.conversation_id is not None and not str(self.conversation_id).strip():
            raise OpenHandsConfigError(
                "conversation_id rendered to an empty value: a follow-up needs the id of the conversation to continue"
            )
        if self.conversation_id is not None:  # an id, or the start operator's or sensor's result dict
            self.conversation_id = check_conversation_id(self.conversation_id)
        self.check_budget_enforceable()
        if self.hook.api_version == "v1":
            return
        wanted = {
            "plan_first": self.plan_first,
            "conversation_id (follow-up turns)": self.conversation_id is not None,
            "output_schema": bool(self.output_schema),
            "output_files": bool(self.output_files),
            "include_diff": self.include_diff,
            "archive_trajectory": self.archive_trajectory,
        }
        used = [name for name, on in wanted.items() if on]
        if used:
            raise OpenHandsConfigError(
                f"{', '.join(used)}: not on V0 (connection {self.openhands_conn_id!r} uses api_version v0)"
            )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after a trigger fired: the lifecycle comes back in its event; the engine goes on from it."""
        from airflow_provider_openhands.engine.actions import Continue
        from airflow_provider_openhands.engine.state import PHASE_CAPACITY, PHASE_START, Lifecycle

        if not isinstance(event.get("lifecycle"), dict):
            raise OpenHandsError(
                f"Resumed without the task's lifecycle (event {event!r}): clear the task to start again"
            )
        lc = Lifecycle.from_dict(event["lifecycle"])
        lc.key = self._stage_key(context, lc)
        # events that start again carry the options; the others only the repository and branch
        if "initial_user_msg" not in lc.options and lc.phase in (PHASE_START, PHASE_CAPACITY):
            lc.options = self._stage_options(lc)
        return self._drive(context, lc, Continue())

    def execute_confirmation(self, context: Context, lifecycle: dict[str, Any], event: Any = None) -> Any:
        """Resume after a person answered the agent's confirmation (or nobody did in time): the engine
        gives the answer to the agent and goes back to waiting."""
        from airflow_provider_openhands.engine.actions import Continue
        from airflow_provider_openhands.engine.state import Lifecycle
        from airflow_provider_openhands.operators._confirmations import answer_of

        lc = Lifecycle.from_dict(lifecycle)
        lc.key = self._stage_key(context, lc)
        lc.confirmation = answer_of(event)
        return self._drive(context, lc, Continue())

    def execute_plan_review(self, context: Context, lifecycle: dict[str, Any], event: Any = None) -> Any:
        """Resume after a person reviewed the plan (or nobody did in time): the engine acts on it."""
        from airflow_provider_openhands.engine.actions import Continue
        from airflow_provider_openhands.engine.state import Lifecycle
        from airflow_provider_openhands.operators._plans import review_of

        lc = Lifecycle.from_dict(lifecycle)
        lc.key = self._stage_key(context, lc)
        decision, comment, who = review_of(event)
        lc.plan = {**(lc.plan or {}), "review": {"decision": decision, "comment": comment, "by": who}}
        return self._drive(context, lc, Continue())

    def _stage_options(self, lc: Lifecycle) -> dict[str, Any]:
        from airflow_provider_openhands.engine.plans import stage_options

        if not lc.plan:
            return self._options()
        return stage_options({**lc.plan, "task": lc.plan.get("task") or self._options()})

    def _stage_key(self, context: Context, lc: Lifecycle) -> str:
        """The ids' key: the build of a plan asks for ids of its own (its plan conversation has the task's)."""
        if not self.deterministic_conversation_id:
            return ""
        from airflow_provider_openhands.engine.plans import stage_key

        return stage_key(self._key(context), lc.plan)

    def read_plan(self, conversation_id: str) -> str | None:
        """The plan the plan agent wrote (its plan file in the project directory)."""
        from airflow_provider_openhands.engine.plans import PLAN_FILE

        state = self.hook.get_conversation(conversation_id)
        return self.hook.read_file(conversation_id, f"{self._git_path(state)}/{PLAN_FILE}")

    def on_kill(self) -> None:
        """The worker kills the task (SIGTERM, Airflow's execution_timeout): pause what it started,
        and remember it in the task state store, so the retry resumes it."""
        from airflow_provider_openhands.engine.actions import Killed, Pause, PauseStartTask

        engine = getattr(self, "_engine", None)
        if engine is None and self._lifecycle is not None:
            engine = self.make_engine(self._lifecycle)
        if engine is None:
            return
        action = engine.step(Killed(), time.time())
        if isinstance(action, (Pause, PauseStartTask)):
            done = self.driver(engine, getattr(self, "_context", None)).execute(action)
            if getattr(done, "message", None):  # a Problem: it may run on
                self.log.warning("Task killed, but what it started could not be stopped: %s", done.message)
            self._save_lifecycle(getattr(self, "_context", None), engine.lc)

    # -- what the driver asks of the task (see hooks/driver.py: Host) -----------------------------

    def _drive(self, context: Context, lc: Lifecycle, first: Any) -> Any:
        self._context = context
        self._lifecycle = lc
        self._name_mapped_instance(context)
        self._engine = self.make_engine(lc)
        return self.driver(self._engine, context).run(first)

    def driver(self, engine: Engine, context: Any) -> SyncDriver:
        from airflow_provider_openhands.hooks.driver import SyncDriver

        return SyncDriver(engine, self.hook, _TaskHost(self, context), self.log)

    def post_start(self, engine: Engine, action: Any) -> dict[str, Any]:
        """The start request, with what only the task knows: secrets, attribution, a title."""
        context = self._context
        lc = engine.lc
        extra_body = dict(lc.options.get("extra_body") or {})
        if self.secrets:
            extra_body["secrets"] = self._rendered_secrets(context)
        tags, metadata, title = self._attribution(context)
        options = StartOptions(
            **{**lc.options, "extra_body": extra_body, "title": lc.options.get("title") or title},
            conversation_id=action.client_id,
            observability_tags=tags,
            observability_metadata=metadata,
        )
        return self.hook.submit_conversation(options)

    def hand_over(self, engine: Engine, action: Any) -> bool:
        """Deferrable: a wait goes to the triggerer (no worker slot held while the agent works)."""
        from airflow_provider_openhands.engine.actions import (
            AskPerson,
            AskReview,
            ReadConversation,
            ReadStartTask,
            Sleep,
        )

        if isinstance(action, AskPerson):  # in either mode: a person may take hours, the slot is freed
            from airflow_provider_openhands.operators._confirmations import ask_person

            link = self.hook.conversation_url(action.conversation_id)
            ask_person(self, self._context, engine.lc.for_trigger(), action, link)
        if isinstance(action, AskReview):
            from airflow_provider_openhands.operators._plans import ask_review

            link = self.hook.conversation_url(action.conversation_id)
            ask_review(self, self._context, engine.lc.for_trigger(), action, link)
        if not self.deferrable:
            return False
        if isinstance(action, Sleep):
            from airflow_provider_openhands.triggers.openhands import OpenHandsCapacityWaitTrigger

            trigger = OpenHandsCapacityWaitTrigger(wake_time=action.until, lifecycle=engine.lc.for_trigger())
            self.defer(trigger=trigger, method_name="execute_complete")
        if isinstance(action, (ReadStartTask, ReadConversation)) and getattr(action, "poll", True):
            self.defer(trigger=self.make_trigger(engine.lc), method_name="execute_complete")
        return False

    def end(self, engine: Engine, action: Any) -> Any:
        from airflow_provider_openhands.engine.actions import Conclude, ReturnId
        from airflow_provider_openhands.engine.plans import building

        lc = engine.lc
        if isinstance(action, ReturnId):
            return action.conversation_id
        if isinstance(action, Conclude):
            try:
                state = self.final_state(
                    action.conversation_id, action.status, context=self._context, output_file=lc.output_file, lc=lc
                )
            except Exception:  # e.g. an invalid output: the task fails, the ended conversation's slot is freed
                if self.pause_when_done:
                    self.pause_after_end(action.conversation_id, lc.sandbox_id)
                raise
            if building(lc.plan):
                state = {**state, "plan": {"conversation_id": lc.plan.get("of"), "text": lc.plan.get("text")}}
            return self.finish(state)
        if lc.conversation_id and action.kind in ("budget", "timeout", "unreachable"):
            self.push_usage_quietly(self._context, lc.conversation_id)
            if self.archive_trajectory and action.kind != "unreachable":
                self.archive(lc.conversation_id)  # for audit, a stopped conversation too
        raise failure(action)

    # -- the lifecycle of this try -------------------------------------------------------------------

    def _lifecycle_for(self, context: Context, options: dict[str, Any]) -> Lifecycle:
        """This try's lifecycle: the one the task state store kept for this series, or a fresh one."""
        from airflow_provider_openhands.engine.state import Lifecycle, series_start

        ti = context["ti"]
        now = time.time()
        try_number = int(getattr(ti, "try_number", 1) or 1)
        series = series_start(try_number, getattr(ti, "max_tries", None), self.retries)
        key = self._key(context) if self.deterministic_conversation_id else ""
        follow_up = self.conversation_id is not None
        stored = self._stored(context)
        lc = stored if stored is not None and stored.series == series else None
        if lc is None or (lc.follow_up != follow_up and not (self.plan_first and lc.plan)):  # a revision follows up
            lc = Lifecycle(
                # what an earlier series could not stop (its key refused): the engine looks at it first
                unstopped=stored.unstopped if stored is not None and stored.series != series else None,
                series=series,
                started_at=now,
                series_started=now if try_number == series else None,  # a retry without the store cannot tell
                start_timeout=self.start_timeout,
                wait_timeout=self.timeout,
                follow_up=follow_up,
                conversation_id=str(self.conversation_id or "").strip() or None if follow_up else None,
            )
        lc.try_number, lc.key, lc.since = try_number, key, self._run_started(context, margin=True)
        max_tries = getattr(ti, "max_tries", None)  # whether a retry follows this try's failure
        lc.max_tries = max_tries if isinstance(max_tries, int) else None
        lc.run_started = self._run_started(context, margin=False)
        lc.hard_deadline = self._hard_deadline(context, now)
        lc.options = {**options, "initial_user_msg": self._with_output_instruction(lc, options)}
        return lc

    def _key(self, context: Context) -> str:
        from airflow_provider_openhands.engine.state import conversation_key

        ti = context["ti"]
        return conversation_key(
            conn_id=self.openhands_conn_id,
            namespace=self.id_namespace,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", -1),
            run_started=self._run_started(context, margin=False),
        )

    @staticmethod
    def _run_started(context: Context, *, margin: bool) -> str | None:
        """When this deployment started the DAG run (ISO): it salts the ids, and (less a minute of clock
        skew) bounds what a retry looks for."""
        from datetime import datetime, timedelta, timezone

        dag_run = context.get("dag_run")
        start = getattr(dag_run, "start_date", None) or getattr(dag_run, "queued_at", None)
        if not isinstance(start, datetime):
            if not margin:
                return None
            start = datetime.now(timezone.utc) - timedelta(days=2)
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        if not margin:
            return start.astimezone(timezone.utc).isoformat()
        return (start - timedelta(minutes=1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

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

    def _stored(self, context: Context) -> Lifecycle | None:
        """The lifecycle the task state store kept (of this series, or an earlier one), or None."""
        from airflow_provider_openhands.engine.state import Lifecycle

        try:
            saved = self._store_copy.load(context)
        except Exception as exc:
            self.log.warning("Could not read the task state store: %s", exc)
            return None
        return Lifecycle.from_dict(saved) if saved else None

    def _save_lifecycle(self, context: Any, lc: Lifecycle) -> None:
        """Airflow >= 3.3: keep the lifecycle in the task state store, so a retry finds it."""
        try:
            self._store_copy.save(context, lc)
        except Exception as exc:
            self.log.warning("Could not save the conversation's lifecycle in the task state store: %s", exc)

    def _with_output_instruction(self, lc: Lifecycle, options: dict[str, Any]) -> str:
        """With ``output_schema``: where (an absolute path outside the repository, unique to this task
        series and turn; kept by the lifecycle across tries) and how the agent leaves its result."""
        import uuid

        from airflow_provider_openhands.engine.state import client_id
        from airflow_provider_openhands.results import output_file, output_instruction

        message = options["initial_user_msg"]
        if not self.output_schema:
            return message
        if not lc.output_file:
            token = client_id(lc.key, lc.series).replace("-", "")[:12] if lc.key else uuid.uuid4().hex[:12]
            lc.output_file = output_file(token, self.git_path)
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


class _TaskHost:
    """The operator as the driver's :class:`~airflow_provider_openhands.hooks.driver.Host`."""

    def __init__(self, operator: OpenHandsStartConversationOperator, context: Any) -> None:
        self.operator = operator
        self.context = context

    def publish(self, conversation_id: str) -> None:
        self.operator.push_conversation(self.context, conversation_id)

    def save(self, engine: Engine) -> None:
        self.operator._lifecycle = engine.lc
        self.operator._save_lifecycle(self.context, engine.lc)

    def post_start(self, engine: Engine, action: Any) -> dict[str, Any]:
        return self.operator.post_start(engine, action)

    def hand_over(self, engine: Engine, action: Any) -> bool:
        return self.operator.hand_over(engine, action)

    def end(self, engine: Engine, action: Any) -> Any:
        return self.operator.end(engine, action)

    def read_plan(self, conversation_id: str) -> str | None:
        return self.operator.read_plan(conversation_id)


class OpenHandsSendMessageOperator(OpenHandsStartConversationOperator):
    """Send a follow-up message to an existing conversation (V1) and wait for the end of that turn.

    The same as ``OpenHandsStartConversationOperator(conversation_id=..., initial_user_msg=...)``:
    a paused sandbox is resumed first, the task waits for the new turn only (not the previous
    turn's ``finished``), returns the same result shape, and a retry does not send twice. HTTP 410
    (archived) fails at once.

    :param conversation_id: the conversation to continue (templated): its id, or a task's result
        dict holding one (the start operator's or the sensor's ``output``).
    :param message: what the agent should do next (templated).
    """

    template_fields = OpenHandsStartConversationOperator.template_fields

    def __init__(self, *, conversation_id: str, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", True)
        super().__init__(initial_user_msg=message, conversation_id=conversation_id, **kwargs)
