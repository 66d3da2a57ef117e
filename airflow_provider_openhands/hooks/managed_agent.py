"""OpenHands as a common.ai *managed agent* (``BaseManagedAgentHook``), behind the ``common-ai`` extra.

``pip install "airflow-provider-openhands[common-ai]"``, then::

    from airflow.providers.common.ai.toolsets import ManagedAgentToolset
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    coder = ManagedAgentToolset(OpenHandsHook().agent("acme/app"), tool_name="ask_openhands")

An *agent* names the repository the conversation works on: ``"acme/app"``, ``"acme/app@branch"``,
or ``""`` for none. One invocation is one conversation turn: the first starts a conversation, a
request with ``session_id`` (the conversation id of an earlier answer) sends a follow-up message
to it. The import of the contract is guarded: without the extra this module raises
``AirflowOptionalProviderFeatureException``, and nothing else in the provider imports it (the
operator, sensor and hook modules stay light and Airflow 2.11 keeps working).

Failures are sorted as the contract asks:

* ``ManagedAgentRejected`` (the calling model may rephrase): an empty prompt, a request the
  server rejects as invalid (422), a turn that ended ``error``/``stuck``/``rejected``;
* ``ManagedAgentInvocationError`` (terminal): a bad agent string or vendor option, 401/403, an
  unknown conversation (404) or one whose sandbox is gone, the daily quota, a start that failed,
  a session on a V0 server;
* anything transient (429, 5xx, connection errors, a full account, the request's ``timeout``,
  raised as ``TimeoutError`` after pausing the conversation) propagates unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException

try:
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected
    from airflow.providers.common.ai.managed_agents.base import (
        BaseManagedAgentHook,
        ManagedAgentCapabilities,
        ManagedAgentRef,
        ManagedAgentRequest,
        ManagedAgentResponse,
        ManagedAgentUsage,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise AirflowOptionalProviderFeatureException(
        "OpenHands as a managed agent needs apache-airflow-providers-common-ai: "
        'pip install "airflow-provider-openhands[common-ai]"'
    ) from exc

from airflow_provider_openhands.api.options import check_positive, check_repository
from airflow_provider_openhands.api.state import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_SUCCESS_STATUSES,
    STATUS_DELETING,
    STATUS_MISSING,
    V0,
)
from airflow_provider_openhands.exceptions import (
    OpenHandsAuthError,
    OpenHandsConfigError,
    OpenHandsError,
    OpenHandsNotFoundError,
    OpenHandsQuotaError,
    OpenHandsStartError,
    OpenHandsValidationError,
)
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.outcome import SUCCESS, classify

PLATFORM = "openhands"
#: Options a DAG author may pass in ``vendor_options``; anything else (the repository, branch,
#: conversation id, connection) would re-target the call and is refused.
VENDOR_OPTIONS = frozenset({"title", "extra_body", "git_provider"})
#: Start-request fields ``extra_body`` may not set: they are the agent's identity.
RETARGETING_FIELDS = frozenset({"selected_repository", "repository", "selected_branch", "conversation_id"})
#: A conversation in these states cannot go on: the sandbox (and the conversation with it) is gone.
GONE_STATUSES = frozenset({STATUS_MISSING, STATUS_DELETING})


def parse_agent(agent: str) -> tuple[str | None, str | None]:
    """``"owner/repo@branch"`` -> ``("owner/repo", "branch")``; ``""`` -> ``(None, None)``. No I/O."""
    if not isinstance(agent, str):
        raise ValueError(f"an OpenHands agent is a repository string like 'acme/app@main' or '', got {agent!r}")
    repository, sep, branch = agent.strip().partition("@")
    if sep and not branch.strip():
        raise ValueError(f"agent {agent!r} names no branch after '@'")
    if branch and not repository:
        raise ValueError(f"agent {agent!r} names a branch but no repository")
    try:
        return check_repository(repository or None, "agent"), branch.strip() or None
    except OpenHandsConfigError as exc:
        raise ValueError(str(exc)) from None


class OpenHandsManagedAgentHook(OpenHandsHook, BaseManagedAgentHook):
    """``OpenHandsHook`` with the common.ai managed-agent contract (``resolve_agent``,
    ``get_agent_capabilities``, ``invoke_agent``, ``agent``). ``OpenHandsHook().agent(...)`` builds
    one of these over the same connection.

    :param sessions: whether ``session_id`` continues a conversation (capability ``sessions``).
    :param default_timeout: seconds for one invocation when the request sets no ``timeout``.
    :param poll_interval: seconds between status reads while the agent works.
    :param pause_when_done: pause the sandbox once the turn ended (frees the account's slot; a
        follow-up turn resumes it).
    """

    agent_platform = PLATFORM
    #: ``OpenHandsHook.agent`` builds one of these hooks; here it is the contract's own binding.
    agent = BaseManagedAgentHook.agent

    def __init__(
        self,
        openhands_conn_id: str = OpenHandsHook.default_conn_name,
        *,
        sessions: bool = True,
        default_timeout: float = 3600.0,
        poll_interval: float = 5.0,
        pause_when_done: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(openhands_conn_id, **kwargs)
        self.sessions = sessions
        self.default_timeout = check_positive(default_timeout, "default_timeout")
        self.poll_interval = check_positive(poll_interval, "poll_interval")
        self.pause_when_done = pause_when_done

    @classmethod
    def from_hook(cls, hook: OpenHandsHook, **kwargs: Any) -> OpenHandsManagedAgentHook:
        if isinstance(hook, cls) and not kwargs:
            return hook
        return cls(hook.openhands_conn_id, retry_policy=hook._retry_policy, **kwargs)

    # -- the contract: no network -----------------------------------------------------------------

    def resolve_agent(self, agent: str) -> ManagedAgentRef:
        repository, branch = parse_agent(agent)
        return ManagedAgentRef(platform=PLATFORM, name=repository or "(no repository)", version=branch)

    def get_agent_capabilities(self, agent: str) -> ManagedAgentCapabilities:
        parse_agent(agent)
        return ManagedAgentCapabilities(sessions=self.sessions, structured_output=False, usage=True, trace=True)

    # -- the contract: one turn -------------------------------------------------------------------

    def invoke_agent(self, agent: str, request: ManagedAgentRequest) -> ManagedAgentResponse:
        try:
            repository, branch = parse_agent(agent)
        except ValueError as exc:
            raise ManagedAgentInvocationError(str(exc)) from None
        options = self._vendor_options(request.vendor_options)
        text = _prompt_text(request)
        if not text.strip():
            raise ManagedAgentRejected("The prompt is empty: tell the OpenHands agent what to do.")
        if request.session_id is not None and not self.sessions:
            raise ManagedAgentInvocationError("sessions are off for this hook (sessions=False)")
        timeout = self.default_timeout if request.timeout is None else float(request.timeout)
        if timeout <= 0:
            raise ManagedAgentInvocationError(f"request.timeout must be positive, got {request.timeout!r}")
        deadline = time.monotonic() + timeout
        try:
            if request.session_id is not None:
                conversation_id = self._continue(request.session_id, text, deadline, repository)
            else:
                conversation_id = self._start(text, repository, branch, options, timeout)
            state = self._wait_for_turn(conversation_id, deadline, timeout)
        except OpenHandsValidationError as exc:
            raise ManagedAgentRejected(str(exc)) from exc
        except (OpenHandsAuthError, OpenHandsNotFoundError, OpenHandsQuotaError, OpenHandsConfigError) as exc:
            raise ManagedAgentInvocationError(str(exc)) from exc
        except OpenHandsStartError as exc:
            if exc.capacity:  # a full account: transient, the task's retry is the right layer
                raise
            raise ManagedAgentInvocationError(str(exc)) from exc
        except OpenHandsError as exc:
            if "timed out" in str(exc) or "not READY after" in str(exc):
                raise TimeoutError(str(exc)) from exc
            raise
        return self._response(state)

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _vendor_options(vendor_options: dict[str, Any] | None) -> dict[str, Any]:
        options = dict(vendor_options or {})
        unknown = sorted(set(options) - VENDOR_OPTIONS)
        if unknown:
            raise ManagedAgentInvocationError(
                f"vendor_options {unknown} are not accepted (allowed: {sorted(VENDOR_OPTIONS)}); the repository "
                "and branch are the agent's identity, the connection the hook's"
            )
        extra_body = dict(options.get("extra_body") or {})
        retargeting = sorted(set(extra_body) & RETARGETING_FIELDS)
        if retargeting:
            raise ManagedAgentInvocationError(f"vendor_options.extra_body may not set {retargeting}")
        return options

    def _start(
        self, text: str, repository: str | None, branch: str | None, options: dict[str, Any], timeout: float
    ) -> str:
        """Start a conversation; a start not READY in time is stopped (its sandbox paused) before the
        ``TimeoutError``, so it costs nothing more."""
        from airflow_provider_openhands.api.options import StartOptions

        started = self.submit_conversation(
            StartOptions(
                initial_user_msg=text,
                repository=repository,
                selected_branch=branch,
                git_provider=options.get("git_provider"),
                title=options.get("title"),
                extra_body=dict(options.get("extra_body") or {}),
            )
        )
        if started["conversation_id"]:
            return started["conversation_id"]
        task_id = started["start_task"]["id"]
        try:
            return self.wait_for_start_task(task_id, poll_interval=min(self.poll_interval, 2.0), timeout=timeout)
        except OpenHandsError as exc:
            if "not READY after" not in str(exc):
                raise
            self._stop_start(task_id)
            raise TimeoutError(str(exc)) from exc

    def _stop_start(self, task_id: str) -> None:
        """Pause the start task's sandbox once it has one (a start names its sandbox late)."""
        from airflow_provider_openhands.lifecycle import START_STOP_GRACE

        give_up = time.monotonic() + START_STOP_GRACE
        try:
            while not self.stop_start_task(task_id):
                if self.get_start_task(task_id)["status"] == "ERROR" or time.monotonic() >= give_up:
                    self.log.warning("Start task %s has no sandbox to pause (yet)", task_id)
                    return
                time.sleep(min(self.poll_interval, 1.0))
        except OpenHandsError as exc:
            self.log.warning("Could not stop start task %s: %s", task_id, exc)

    def _continue(self, conversation_id: str, text: str, deadline: float, repository: str | None) -> str:
        """A follow-up turn: resume the sandbox if it was paused, then send the message. The session
        must belong to the bound agent's repository: a session id cannot re-target the agent."""
        if self.api_version == V0:
            raise ManagedAgentInvocationError("follow-up turns (session_id) need the V1 API; this connection uses V0")
        state = self.get_conversation(conversation_id)
        if (state.get("selected_repository") or "").lower() != (repository or "").lower():
            raise ManagedAgentInvocationError(
                f"session {conversation_id} belongs to repository {state.get('selected_repository')!r}, "
                f"not to this agent's {repository!r}"
            )
        if state["status"] in GONE_STATUSES:
            raise ManagedAgentInvocationError(
                f"conversation {conversation_id} cannot go on: its sandbox is {state.get('sandbox_status')}"
            )
        if state.get("sandbox_status") == "PAUSED":
            if not self.resume_conversation(str(state["sandbox_id"])):
                raise ManagedAgentInvocationError(f"the sandbox of conversation {conversation_id} is gone")
            while self.get_conversation(conversation_id).get("sandbox_status") != "RUNNING":
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the sandbox of conversation {conversation_id} did not resume in time")
                time.sleep(min(self.poll_interval, 1.0))
        self.send_message(state["conversation_id"], text)
        return state["conversation_id"]

    def _wait_for_turn(self, conversation_id: str, deadline: float, timeout: float) -> dict[str, Any]:
        """Poll until the newest turn ended (V1: by its events, so a follow-up is not mistaken for
        the turn before it; V0: by the status). Past the deadline: pause it and raise TimeoutError."""
        polls = 0
        while True:
            state = self.get_conversation(conversation_id)
            if state["status"] in GONE_STATUSES:
                raise ManagedAgentInvocationError(
                    f"conversation {conversation_id} cannot go on: its sandbox is {state.get('sandbox_status')}"
                )
            if state.get("api_version") == V0:
                ended = classify(state["status"], DEFAULT_SUCCESS_STATUSES, DEFAULT_FAILURE_STATUSES)
                if ended is not None:
                    state["final_message"] = None
                    return state
            else:
                outcome = self.get_turn_outcome(conversation_id)
                if outcome["status"]:
                    state["status"] = outcome["status"]
                    state["final_message"] = outcome["final_message"]
                    return state
            if time.monotonic() >= deadline:
                self._pause(state)
                raise TimeoutError(
                    f"OpenHands conversation {conversation_id} did not end its turn within {timeout:.0f}s "
                    f"(request timeout); its sandbox was paused ({state.get('url')})"
                )
            # short answers come back quickly: 0.5 s, 1 s, 2 s, ... up to poll_interval
            polls += 1
            time.sleep(max(0.0, min(self.poll_interval, 0.25 * 2**polls, deadline - time.monotonic())))

    def _pause(self, state: dict[str, Any]) -> None:
        try:
            self.stop_conversation(state["conversation_id"], state.get("sandbox_id"))
        except Exception as exc:
            self.log.warning("Could not pause conversation %s: %s", state["conversation_id"], exc)

    def _response(self, state: dict[str, Any]) -> ManagedAgentResponse:
        from airflow_provider_openhands.operators._waiting import still_running

        if self.pause_when_done and still_running(state):
            self._pause(state)
        outcome = classify(state["status"], DEFAULT_SUCCESS_STATUSES, DEFAULT_FAILURE_STATUSES)
        if outcome != SUCCESS:  # error, stuck, rejected: the model may ask again differently
            said = f": {state['final_message']}" if state.get("final_message") else ""
            raise ManagedAgentRejected(
                f"The OpenHands agent ended its turn with status {state['status']}{said} "
                f"(conversation {state['conversation_id']}, {state.get('url')})"
            )
        metrics = state.get("metrics") or {}
        usage = ManagedAgentUsage(
            input_tokens=metrics.get("prompt_tokens"), output_tokens=metrics.get("completion_tokens")
        )
        text = state.get("final_message") or (
            f"The OpenHands agent finished without a final message; see {state.get('url')}"
        )
        return ManagedAgentResponse(
            text=text,
            raw=state,
            session_id=state["conversation_id"],
            usage=usage,
            trace_ref=state.get("url"),
        )


def _prompt_text(request: ManagedAgentRequest) -> str:
    """The request as one message: ``prompt``, or the text parts of ``messages`` joined."""
    if request.prompt is not None:
        return request.prompt
    parts: list[str] = []
    for message in request.messages or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text")) for p in content if isinstance(p, dict) and p.get("text") is not None]
    return "\n\n".join(parts)


__all__ = ["OpenHandsManagedAgentHook", "parse_agent"]
