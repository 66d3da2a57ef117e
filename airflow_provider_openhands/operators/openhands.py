"""``OpenHandsStartConversationOperator``: start an OpenHands conversation (and optionally wait for it)."""

from __future__ import annotations

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
from airflow_provider_openhands.links.openhands import OpenHandsConversationLink
from airflow_provider_openhands.operators._waiting import ConversationWaiter, default_deferrable

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_CONN_ID = "openhands_default"


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
    :param cancel_on_kill: stop the conversation when the task is killed.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.initial_user_msg = initial_user_msg
        self.repository = repository
        self.selected_branch = selected_branch
        self.git_provider = git_provider
        self.title = title
        self.extra_body = extra_body
        self.openhands_conn_id = openhands_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = check_positive(poll_interval, "poll_interval")
        self.start_timeout = check_positive(start_timeout, "start_timeout")
        self.timeout = check_positive(timeout, "timeout")
        self.stop_on_timeout = stop_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self._init_statuses(success_statuses, failure_statuses)
        self._conversation_id: str | None = None
        self._check_static_inputs()

    def _check_static_inputs(self) -> None:
        """Fail at DAG parse time for values that are not templated (a bad DAG never runs)."""
        if not is_templated(self.initial_user_msg):
            check_message(self.initial_user_msg)
        if not is_templated(self.repository):
            check_repository(self.repository)
        check_git_provider(self.git_provider)

    def _options(self) -> StartOptions:
        return StartOptions(
            initial_user_msg=check_message(self.initial_user_msg),
            repository=check_repository(self.repository),
            selected_branch=self.selected_branch or None,
            git_provider=self.git_provider,
            title=self.title or None,
            extra_body=dict(self.extra_body or {}),
        )

    def execute(self, context: Context) -> Any:
        options = self._options()  # rendered values, checked before any request
        started = self.hook.submit_conversation(options)
        conversation_id = started["conversation_id"]
        if conversation_id is None:
            task_id = started["start_task"]["id"]
            self.log.info("Start task %s created; waiting for the sandbox to be READY", task_id)
            if self.deferrable:
                timeout = self.start_timeout + (self.timeout if self.wait_for_completion else 0)
                self.defer(
                    trigger=self.make_trigger(
                        timeout=timeout, start_task_id=task_id, wait_for_completion=self.wait_for_completion
                    ),
                    method_name="execute_complete",
                )
            conversation_id = self.hook.wait_for_start_task(
                task_id, poll_interval=self.poll_interval, timeout=self.start_timeout
            )
        return self._started(context, conversation_id)

    def _started(self, context: Context, conversation_id: str) -> Any:
        self._conversation_id = conversation_id
        self.push_conversation(context, conversation_id)
        self.log.info("Conversation %s started: %s", conversation_id, self.hook.conversation_url(conversation_id))
        if not self.wait_for_completion:
            return conversation_id
        if self.deferrable:
            self.defer(
                trigger=self.make_trigger(timeout=self.timeout, conversation_id=conversation_id),
                method_name="execute_complete",
            )
        return self.wait_in_worker(conversation_id, self.timeout)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the conversation started (and ended, if waited on)."""
        self._conversation_id = event.get("conversation_id")
        result = self.result_from_event(context, event)
        if not self.wait_for_completion:
            return self._conversation_id
        return result

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._conversation_id:
            self.stop_quietly(self._conversation_id)
