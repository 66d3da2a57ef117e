"""``OpenHandsStartConversationOperator``: start an OpenHands conversation (and optionally wait for it)."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_openhands.api.options import (
    StartOptions,
    check_git_provider,
    check_message,
    check_positive,
    check_repository,
    is_templated,
)
from airflow_provider_openhands.exceptions import OpenHandsConfigError, OpenHandsError, OpenHandsStartError
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import ConversationWaiter, default_deferrable

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_CONN_ID = "openhands_default"
#: Where the conversation's ids are kept in the task state store (Airflow >= 3.3) across retries.
STATE_STORE_KEY = "openhands_conversation"


class OpenHandsStartConversationOperator(ConversationWaiter, BaseOperator):
    """Start a conversation with the OpenHands agent on a repository.

    Returns the conversation id (XCom ``return_value``) and pushes ``conversation_id`` and
    ``conversation_url``. With ``wait_for_completion=True`` it also waits for the conversation to
    end, in the same task, and returns its final normalised state instead.

    :param initial_user_msg: what the agent should do (templated).
    :param repository: ``owner/repo`` the agent works on (templated).
    :param selected_branch: branch to check out (templated).
    :param git_provider: ``github``, ``gitlab``, ``bitbucket``, ...
    :param title: conversation title (templated; V1 only, ignored with a warning on V0).
    :param extra_body: other documented fields of the start request, passed through (templated).
    :param secrets: secrets for the agent's sandbox (V1 ``secrets``): masked in logs, not templated.
    :param openhands_conn_id: the ``openhands`` connection.
    :param deferrable: wait in the triggerer instead of holding a worker slot (the V1 start task
        alone can take minutes while the sandbox starts).
    :param wait_for_completion: also wait for the conversation to end.
    :param poll_interval: seconds between status polls.
    :param start_timeout: seconds to wait for the start task to become READY.
    :param timeout: seconds to wait for the conversation to end (``wait_for_completion``).
    :param success_statuses: normalised statuses that count as success (default ``{"finished"}``).
    :param failure_statuses: normalised statuses that fail the task.
    :param stop_on_timeout: stop the conversation when ``timeout`` passes.
    :param cancel_on_kill: stop the conversation when the task is killed (worker ``on_kill``, and the
        trigger's ``on_kill`` on Airflow >= 3.3; never on a triggerer restart).
    :param pause_when_done: once the conversation ended, pause its sandbox (V1) or stop it (V0): a
        finished conversation's sandbox keeps running, and so keeps one of the account's slots.
    :param capacity_timeout: seconds to keep waiting for a free slot when the account already runs
        as many conversations as it may (HTTP 429 CONCURRENCY_LIMIT_REACHED) before failing.
    :param deterministic_conversation_id: derive the conversation id from the task instance, so a
        retry finds the conversation an earlier try started instead of starting a second one.
    """

    template_fields = ("initial_user_msg", "repository", "selected_branch", "title", "extra_body")
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
        deterministic_conversation_id: bool = True,
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
        self.deterministic_conversation_id = deterministic_conversation_id
        self._init_statuses(success_statuses, failure_statuses)
        self._conversation_id: str | None = None
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

    def _options(self) -> StartOptions:
        extra_body = dict(self.extra_body or {})
        if "secrets" in extra_body:
            raise OpenHandsConfigError("pass secrets with the operator's secrets= parameter, not in extra_body")
        if self.secrets:
            extra_body["secrets"] = self.secrets
        return StartOptions(
            initial_user_msg=check_message(self.initial_user_msg),
            repository=check_repository(self.repository),
            selected_branch=self.selected_branch or None,
            git_provider=self.git_provider,
            title=self.title or None,
            extra_body=extra_body,
        )

    # -- run -------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        options = self._options()  # rendered values, checked before any request
        resumed = self._reconnect(context)
        if resumed is not None:
            return resumed
        return self._start(context, options, capacity_deadline=time.time() + self.capacity_timeout, attempt=0)

    def _start(self, context: Context, options: StartOptions, *, capacity_deadline: float, attempt: int) -> Any:
        """Send the start request; on a full account, wait for a free slot and try again."""
        from airflow_provider_openhands.exceptions import OpenHandsApiError, OpenHandsConcurrencyLimitError

        client_id = self._fresh_id(context)
        options = dataclasses.replace(options, conversation_id=client_id)
        try:
            started = self.hook.submit_conversation(options)
        except OpenHandsConcurrencyLimitError as exc:
            return self._wait_for_capacity(context, capacity_deadline, attempt, exc.limit, exc.current)
        except OpenHandsApiError as exc:
            if exc.status_code != 409 or not client_id:
                raise
            self.log.info("Conversation %s already exists (HTTP 409): waiting on it", client_id)
            return self._started(context, client_id)
        self.log.info("Start request sent%s", f" (conversation id {client_id})" if client_id else "")
        conversation_id = started["conversation_id"]
        if conversation_id is None:
            task_id = started["start_task"]["id"]
            self._remember(context, start_task_id=task_id)
            self.log.info("Start task %s created; waiting for the sandbox to be READY", task_id)
            if self.deferrable:
                self.defer(
                    trigger=self.make_trigger(
                        timeout=self.start_timeout,
                        start_task_id=task_id,
                        wait_for_completion=self.wait_for_completion,
                        wait_timeout=self.timeout,
                    ),
                    method_name="execute_complete",
                )
            try:
                conversation_id = self.hook.wait_for_start_task(
                    task_id, poll_interval=self.poll_interval, timeout=self.start_timeout
                )
            except OpenHandsStartError as exc:
                if not exc.capacity:
                    raise
                return self._wait_for_capacity(context, capacity_deadline, attempt, None, None)
        self._check_client_id(client_id, conversation_id)
        return self._started(context, conversation_id)

    def _wait_for_capacity(
        self, context: Context, deadline: float, attempt: int, limit: int | None, current: int | None
    ) -> Any:
        """No free conversation slot: wait (deferred when possible) with backoff, then start again."""
        now = time.time()
        waited = now - (deadline - self.capacity_timeout)
        if now >= deadline:
            raise OpenHandsError(
                f"No free OpenHands conversation slot after {waited:.0f}s (capacity_timeout); "
                f"the service reports {current} running of a limit of {limit}"
            )
        delay = min(self.poll_interval * 2**attempt, max(self.poll_interval, 300.0), deadline - now)
        delay *= random.uniform(0.8, 1.0)
        self.log.warning(
            "The account runs as many conversations as it may (limit %s, running %s); waited %.0fs so far, "
            "trying again in %.0fs. Cap concurrency with the 'openhands' pool to avoid this.",
            limit,
            current,
            waited,
            delay,
        )
        if self.deferrable:
            from airflow_provider_openhands.triggers.openhands import OpenHandsCapacityWaitTrigger

            self.defer(
                trigger=OpenHandsCapacityWaitTrigger(
                    wake_time=now + delay, capacity_deadline=deadline, attempt=attempt + 1
                ),
                method_name="execute_after_capacity_wait",
            )
        time.sleep(delay)
        return self._start(context, self._options(), capacity_deadline=deadline, attempt=attempt + 1)

    def execute_after_capacity_wait(self, context: Context, event: dict[str, Any]) -> Any:
        return self._start(
            context, self._options(), capacity_deadline=event["capacity_deadline"], attempt=event["attempt"]
        )

    def _started(self, context: Context, conversation_id: str) -> Any:
        self._conversation_id = conversation_id
        self._remember(context, conversation_id=conversation_id)
        self.push_conversation(context, conversation_id)
        self.log.info("Conversation %s started: %s", conversation_id, self.hook.conversation_url(conversation_id))
        if not self.wait_for_completion:
            return conversation_id
        return self._wait(context, conversation_id)

    def _wait(self, context: Context, conversation_id: str) -> Any:
        if self.deferrable:
            self.defer(
                trigger=self.make_trigger(timeout=self.timeout, conversation_id=conversation_id),
                method_name="execute_complete",
            )
        return self.wait_in_worker(conversation_id, self.timeout)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the conversation started (and ended, if waited on)."""
        self._conversation_id = event.get("conversation_id")
        if event.get("capacity"):  # the start task failed for want of a slot: a fresh capacity wait
            return self._wait_for_capacity(context, time.time() + self.capacity_timeout, 0, None, None)
        if self._conversation_id:
            self._remember(context, conversation_id=self._conversation_id)
        result = self.result_from_event(context, event)
        if not self.wait_for_completion:
            return self._conversation_id
        return result

    # -- no duplicates ---------------------------------------------------------------------------

    def _id_for_try(self, context: Context, try_number: int) -> str:
        """A conversation id derived from the task instance: the same on every retry of one try."""
        ti = context["ti"]
        key = f"airflow-provider-openhands:{ti.dag_id}:{ti.task_id}:{ti.run_id}:{getattr(ti, 'map_index', -1)}"
        if try_number > 1:
            key += f":{try_number}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, key))

    def _fresh_id(self, context: Context) -> str | None:
        if not self.deterministic_conversation_id:
            return None
        return self._id_for_try(context, int(getattr(context["ti"], "try_number", 1) or 1))

    def _remember(self, context: Context, **ids: str) -> None:
        """Airflow >= 3.3: keep the ids in the task state store, so a retry finds them."""
        store = context.get("task_state_store")
        if store is None:
            return
        try:
            saved = dict(store.get(STATE_STORE_KEY) or {})
            saved.update(ids)
            store.set(STATE_STORE_KEY, saved)
        except Exception as exc:
            self.log.warning("Could not save the conversation id in the task state store: %s", exc)

    def _check_client_id(self, client_id: str | None, conversation_id: str) -> None:
        from airflow_provider_openhands.api.state import canonical_id

        if client_id and canonical_id(client_id) != canonical_id(conversation_id):
            self.log.warning(
                "The server ignored the client-chosen conversation id %s (it made %s): a retry of this task "
                "can only find the conversation through the task state store (Airflow >= 3.3).",
                client_id,
                conversation_id,
            )

    def _reconnect(self, context: Context) -> Any:
        """Before starting, find a conversation an earlier try of this task already started.

        Alive: wait on it again. Finished: return its result. Failed: start a fresh one.
        """
        from airflow_provider_openhands.api.state import START_TASK_READY, canonical_id
        from airflow_provider_openhands.outcome import FAILURE, SUCCESS, classify

        store = context.get("task_state_store")
        saved = dict((store.get(STATE_STORE_KEY) if store is not None else None) or {})
        candidates: list[str] = []
        if saved.get("conversation_id"):
            candidates.append(saved["conversation_id"])
        elif saved.get("start_task_id") and self.hook.api_version == "v1":
            task = self.hook.get_start_task(saved["start_task_id"])
            if task["status"] == START_TASK_READY and task["conversation_id"]:
                candidates.append(task["conversation_id"])
        if self.deterministic_conversation_id:
            tries = int(getattr(context["ti"], "try_number", 1) or 1)
            candidates += [self._id_for_try(context, n) for n in range(1, tries + 1)]
        if not candidates:
            return None
        states = self.hook.get_conversations(list(dict.fromkeys(candidates)))
        for conversation_id in reversed(list(dict.fromkeys(candidates))):
            state = states.get(canonical_id(conversation_id))
            if state is None:
                continue
            outcome = classify(state["status"], self.success_statuses, self.failure_statuses)
            if outcome == FAILURE:
                self.log.info(
                    "An earlier try's conversation %s ended %s: starting a fresh one", conversation_id, state["status"]
                )
                continue
            self.log.info(
                "Reconnecting to conversation %s started by an earlier try (%s)", conversation_id, state["status"]
            )
            self._conversation_id = state["conversation_id"]
            self.push_conversation(context, self._conversation_id)
            if not self.wait_for_completion:
                return self._conversation_id
            if outcome == SUCCESS:
                return self.finish(state)
            if state["status"] == "paused" and state.get("sandbox_id"):
                # Paused by the earlier try once it ended (pause_when_done), by a user, or by the
                # service: a paused sandbox hides the agent's state. Resume it to read that state
                # (and let an unfinished agent go on); it is paused again once it has ended.
                self.log.info("Resuming its sandbox %s to read the agent's state", state["sandbox_id"])
                self.hook.resume_conversation(state["sandbox_id"])
            return self._wait(context, self._conversation_id)
        return None

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._conversation_id:
            self.stop_quietly(self._conversation_id)
