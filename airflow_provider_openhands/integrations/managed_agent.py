"""OpenHands as a common.ai *managed agent* (``BaseManagedAgentHook``), behind the ``common-ai`` extra.

``pip install "airflow-provider-openhands[common-ai]"``, then::

    from airflow.providers.common.ai.toolsets import ManagedAgentToolset
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    coder = ManagedAgentToolset(OpenHandsManagedAgentHook().agent("acme/app"), tool_name="ask_openhands")

An *agent* names the repository the conversation works on: ``"acme/app"``, ``"acme/app@branch"``,
or ``""`` for none. One invocation is one conversation turn: the first starts a conversation, a
request with ``session_id`` (the conversation id of an earlier answer) sends a follow-up message
to it (V1). The import of the contract is guarded: without the extra this module raises
``AirflowOptionalProviderFeatureException``, and nothing else in the provider imports it (the
operator, sensor and hook modules stay light and Airflow 2.11 keeps working).

A thin driver of the lifecycle engine (:mod:`airflow_provider_openhands.engine`), so its rules are
the operator's (a transient sandbox ``ERROR``, 409 on a send, a paused sandbox, a full account):

* **one deadline**, ``request.timeout`` after the call (``default_timeout`` if unset), for the start,
  a resume and the turn together; past it ``TimeoutError``;
* **release on every way out**: what the invocation started (or resumed) and whose turn did not end
  is paused, whatever ends the call (timeout, a transient error, an error class below, cancellation,
  ``KeyboardInterrupt``); a turn that ended is paused with ``pause_when_done``;
* **usage per invocation**: the turn's tokens (``usage``) and cost (``raw["turn_usage"]``), the
  conversation's metrics after the turn less those before it (V1; V0 reports none).

Failures are sorted as the contract asks:

* ``ValueError``, before any request: ``session_id`` on a V0 connection or with ``sessions=False``;
* ``ManagedAgentRejected`` (the calling model may rephrase): an empty prompt; a start or message the
  server refuses as invalid (400/422) when it carried nothing but the model's text;
* ``ManagedAgentInvocationError`` (terminal for this agent; a failover group moves on): a bad agent
  string or vendor option, 401/403, the connection, an unknown conversation or one whose sandbox is
  gone, the daily quota, a start that failed, a turn that ended ``error``/``stuck`` (usually the
  runtime or the LLM: rephrasing would only pay for a new conversation), a 400/422 that
  ``vendor_options.extra_body`` may have caused;
* ``OpenHandsConcurrencyLimitError`` (transient): the account runs as many conversations as it may,
  at once by default (a failover group moves on); ``wait_for_slot=True`` waits for a free slot;
* ``TimeoutError``: the deadline passed (no slot came free in time with ``wait_for_slot``, the start
  or the turn did not end);
* anything transient (5xx, 429, connection errors) while sending the start or the message
  propagates unchanged; while waiting, the engine rides it out until the deadline.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowOptionalProviderFeatureException

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

from airflow_provider_openhands.api.options import StartOptions, check_positive, check_repository
from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES, V0
from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.engine import SUCCESS, Engine, Rules, classify, describe, still_running
from airflow_provider_openhands.engine.state import PHASE_DONE, Lifecycle
from airflow_provider_openhands.exceptions import (
    OpenHandsConcurrencyLimitError,
    OpenHandsConfigError,
    OpenHandsError,
    OpenHandsTransientError,
    OpenHandsUnreachableError,
    OpenHandsValidationError,
)
from airflow_provider_openhands.hooks.driver import SyncDriver, pause_start_task
from airflow_provider_openhands.hooks.openhands import OpenHandsHook

PLATFORM = "openhands"
#: Options a DAG author may pass in ``vendor_options``; anything else (the repository, branch,
#: conversation id, connection) would re-target the call and is refused.
VENDOR_OPTIONS = frozenset({"title", "extra_body", "git_provider"})
#: Start-request fields ``extra_body`` may not set: they are the agent's identity.
RETARGETING_FIELDS = frozenset({"selected_repository", "repository", "selected_branch", "conversation_id"})
#: Seconds the release (pausing what an invocation started) may take after the invocation ended.
RELEASE_SECONDS = 5.0
#: The engine's failures that mean the invocation's deadline passed.
TIMEOUTS = frozenset({"timeout", "start_timeout", "capacity_timeout"})
TRANSIENT = (OpenHandsTransientError, OpenHandsConcurrencyLimitError)


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


def turn_usage(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any] | None:
    """The turn's cost and tokens: the conversation's metrics after it less those before it (a
    session's earlier turns); None where the server reports no metrics (V0)."""
    now, then = after.get("metrics"), (before or {}).get("metrics") or {}
    if not now:
        return None

    def spent(key: str) -> Any:
        total, earlier = now.get(key), then.get(key)
        if not isinstance(total, (int, float)) or isinstance(total, bool):
            return None
        difference = total - (earlier if isinstance(earlier, (int, float)) else 0)
        return round(difference, 6) if isinstance(difference, float) else difference

    return {
        "cost": spent("accumulated_cost"),
        "input_tokens": spent("prompt_tokens"),
        "output_tokens": spent("completion_tokens"),
    }


def contract_error(exc: OpenHandsError, *, rephrasable: bool = False) -> BaseException:
    """A request's error as the contract sorts it: transient ones unchanged, an invalid request the
    model alone wrote rejected, the rest terminal."""
    if isinstance(exc, TRANSIENT):
        return exc
    if isinstance(exc, OpenHandsValidationError) and rephrasable:
        return ManagedAgentRejected(str(exc))
    return ManagedAgentInvocationError(str(exc))


class OpenHandsManagedAgentHook(OpenHandsHook, BaseManagedAgentHook):
    """``OpenHandsHook`` with the common.ai managed-agent contract (``resolve_agent``,
    ``get_agent_capabilities``, ``invoke_agent``, and the contract's ``agent`` to bind one).

    :param sessions: whether ``session_id`` continues a conversation (capability ``sessions``; V1 only).
    :param default_timeout: seconds for one invocation when the request sets no ``timeout``.
    :param poll_interval: seconds between status reads while the agent works.
    :param pause_when_done: pause the sandbox once the turn ended (frees the account's slot; a
        follow-up turn resumes it).
    :param wait_for_slot: when the account runs as many conversations as it may, wait (within the
        invocation's timeout) for a free slot. Off by default: the full account's
        ``OpenHandsConcurrencyLimitError`` is raised at once, so a failover group moves on.
    """

    agent_platform = PLATFORM

    def __init__(
        self,
        openhands_conn_id: str = OpenHandsHook.default_conn_name,
        *,
        sessions: bool = True,
        default_timeout: float = 3600.0,
        poll_interval: float = 5.0,
        pause_when_done: bool = True,
        wait_for_slot: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(openhands_conn_id, **kwargs)
        self.sessions = sessions
        self.default_timeout = check_positive(default_timeout, "default_timeout")
        self.poll_interval = check_positive(poll_interval, "poll_interval")
        self.pause_when_done = pause_when_done
        self.wait_for_slot = wait_for_slot

    # -- the contract: no request to OpenHands --------------------------------------------------

    def resolve_agent(self, agent: str) -> ManagedAgentRef:
        repository, branch = parse_agent(agent)
        return ManagedAgentRef(platform=PLATFORM, name=repository or "(no repository)", version=branch)

    def get_agent_capabilities(self, agent: str) -> ManagedAgentCapabilities:
        """By the connection's API version (read from the Airflow connection, no request to
        OpenHands): V0 has no follow-up turns and reports no metrics."""
        parse_agent(agent)
        v1 = self._speaks_v1()
        return ManagedAgentCapabilities(sessions=self.sessions and v1, structured_output=False, usage=v1, trace=True)

    def _speaks_v1(self) -> bool:
        try:
            return self.api_version != V0
        except AirflowException as exc:  # no connection (yet): the default, V1; an invocation fails on it anyway
            self.log.debug("Connection %r not readable (%s): capabilities of V1", self.openhands_conn_id, exc)
            return True

    # -- the contract: one turn -------------------------------------------------------------------

    def invoke_agent(self, agent: str, request: ManagedAgentRequest) -> ManagedAgentResponse:
        called = time.time()
        try:
            repository, branch = parse_agent(agent)
        except ValueError as exc:
            raise ManagedAgentInvocationError(str(exc)) from None
        options = self._vendor_options(request.vendor_options)
        text = _prompt_text(request)
        if not text.strip():
            raise ManagedAgentRejected("The prompt is empty: tell the OpenHands agent what to do.")
        timeout = self.default_timeout if request.timeout is None else float(request.timeout)
        if timeout <= 0:
            raise ManagedAgentInvocationError(f"request.timeout must be positive, got {request.timeout!r}")
        if request.session_id is not None and not self.sessions:
            raise ValueError("session_id cannot be honored: sessions are off for this hook (sessions=False)")
        try:
            api_version = self.api_version
        except AirflowException as exc:  # no connection, no API key, a bad extra
            raise ManagedAgentInvocationError(str(exc)) from exc
        if request.session_id is not None and api_version == V0:
            raise ValueError(
                "session_id cannot be honored: follow-up turns need the V1 API and this connection uses V0"
            )
        before = None
        if request.session_id is None:
            start = {"repository": repository, "selected_branch": branch, **options}
            lc = Lifecycle(options={"initial_user_msg": text, **start})
        else:
            with self.deadline(called + timeout):  # the session's lookup counts against the deadline too
                before = self._session(request.session_id, repository)
            lc = Lifecycle(
                follow_up=True, conversation_id=before["conversation_id"], options={"initial_user_msg": text}
            )
        lc.started_at, lc.hard_deadline = called, called + timeout  # the engine caps every deadline by it
        lc.start_timeout = lc.wait_timeout = timeout
        rules = Rules(
            poll_interval=self.poll_interval,
            cancel_on_kill=True,
            stop_on_timeout=True,
            api_version=api_version,
            capacity_timeout=timeout if self.wait_for_slot else 0.0,  # 0: a full account fails at once
        )
        invocation = _Invocation(self, Engine(rules, lc), text, timeout, before)
        try:
            with self.deadline(called + timeout):  # retries and Retry-After waits too; the release is not cut
                return invocation.driver.run(a.Begin())
        finally:
            # The release gets a short window of its own after the deadline: a failover must not wait
            # long on it; a pause that fails is a warning, never raised over the invocation's own error.
            with self.deadline(time.time() + RELEASE_SECONDS):
                try:
                    invocation.release()
                except Exception as exc:
                    self.log.warning("Could not pause what the invocation started: %s", exc)

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
        return {**options, "extra_body": extra_body}

    def _session(self, session_id: str, repository: str | None) -> dict[str, Any]:
        """The session's conversation before the message is sent (its metrics are where this turn's
        usage counts from). It must be the bound agent's: a session id cannot re-target the agent."""
        try:
            state = self.get_conversation(session_id)
        except OpenHandsError as exc:
            error = contract_error(exc)
            if error is exc:
                raise
            raise error from exc
        if (state.get("selected_repository") or "").lower() != (repository or "").lower():
            raise ManagedAgentInvocationError(
                f"session {session_id} belongs to repository {state.get('selected_repository')!r}, "
                f"not to this agent's {repository!r}"
            )
        return state

    def _pause(self, conversation_id: str, sandbox_id: str | None) -> None:
        try:
            self.stop_conversation(conversation_id, sandbox_id)
            self.log.info("Paused OpenHands conversation %s", conversation_id)
        except Exception as exc:
            self.log.warning("Could not pause conversation %s: %s", conversation_id, exc)


class _Driver(SyncDriver):
    """The sync driver, noting what the sorting of errors and the release need: the request that
    failed last (with its error), whether a session was resumed or sent to, and what was paused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: tuple[a.Action, OpenHandsError] | None = None
        self.touched = False
        self.stopped: set[str] = set()

    def request(self, action: a.Action) -> Any:
        self.failed = None
        self.touched = self.touched or isinstance(action, (a.Resume, a.Send))
        try:
            answer = super().request(action)
        except OpenHandsError as exc:
            self.failed = (action, exc)
            raise
        if isinstance(action, (a.Pause, a.PauseStartTask)):
            self.stopped.add(action.conversation_id if isinstance(action, a.Pause) else action.start_task_id)
        return answer


class _Invocation:
    """One invocation as the driver's :class:`~airflow_provider_openhands.hooks.driver.Host`: the
    message, the start request, the answer or the contract's error, and the release."""

    def __init__(
        self, hook: OpenHandsManagedAgentHook, engine: Engine, text: str, timeout: float, before: dict | None
    ) -> None:
        self.hook, self.engine, self.text, self.timeout, self.before = hook, engine, text, timeout, before
        self.driver = _Driver(engine, hook, self, hook.log)
        self.settled = False  # the turn ended and pause_when_done was seen to

    # -- Host ----------------------------------------------------------------------------------------

    def publish(self, conversation_id: str) -> None:
        self.hook.log.info(
            "OpenHands conversation %s: %s", conversation_id, self.hook.conversation_url(conversation_id)
        )

    def save(self, engine: Engine) -> None:
        """Nothing to keep: an invocation is not retried from its state."""

    def message(self) -> str:
        return self.text

    def hand_over(self, engine: Engine, action: a.Action) -> bool:
        return False  # the call blocks: every wait is the driver's

    def post_start(self, engine: Engine, action: a.PostStart) -> dict[str, Any]:
        return self.hook.submit_conversation(StartOptions(**engine.lc.options, conversation_id=action.client_id))

    def end(self, engine: Engine, action: a.Action) -> ManagedAgentResponse:
        if isinstance(action, a.Conclude):
            return self.answer(action)
        raise self.failure(action)

    # -- the two ends --------------------------------------------------------------------------------

    def answer(self, action: a.Conclude) -> ManagedAgentResponse:
        """The turn ended: read the conversation once, pause it (``pause_when_done``), answer."""
        hook = self.hook
        state = hook.get_conversation(action.conversation_id)
        state["status"] = action.status  # how the turn ended, as the wait saw it
        state["final_message"] = self.final_message(state)
        if hook.pause_when_done and still_running(state):
            hook._pause(state["conversation_id"], state.get("sandbox_id"))
        self.settled = True
        where = f"conversation {state['conversation_id']}, {state.get('url')}"
        if classify(action.status, DEFAULT_SUCCESS_STATUSES, DEFAULT_FAILURE_STATUSES) != SUCCESS:
            said = f": {state['final_message']}" if state.get("final_message") else ""
            raise ManagedAgentInvocationError(
                f"The OpenHands agent ended its turn with status {action.status}{said} ({where})"
            )
        state["turn_usage"] = usage = turn_usage(self.before, state)
        return ManagedAgentResponse(
            text=state["final_message"]
            or f"The OpenHands agent finished without a final message; see {state.get('url')}",
            raw=state,
            session_id=state["conversation_id"],
            usage=ManagedAgentUsage(usage["input_tokens"], usage["output_tokens"]) if usage else None,
            trace_ref=state.get("url"),
        )

    def final_message(self, state: dict[str, Any]) -> str | None:
        """The agent's last word in this turn: read with the turn's end (V1), else from the events
        (V1: a failed read is a warning) or with the state (V0: its events page)."""
        lc = self.engine.lc
        if lc.turn_read:
            return lc.final_message
        if state.get("api_version") == V0 or lc.events_unreadable:
            return state.get("final_message")
        try:
            return self.hook.get_turn_outcome(state["conversation_id"]).get("final_message")
        except OpenHandsError as exc:
            self.hook.log.warning("Could not read the final message of %s: %s", state["conversation_id"], exc)
            return None

    def failure(self, action: a.Fail) -> BaseException:
        """The contract's exception for the engine's ``Fail`` (what is left running is paused by :meth:`release`)."""
        failed = self.driver.failed
        if action.kind == "capacity_timeout" and not self.hook.wait_for_slot:
            self.hook.log.warning("%s: not waiting for a free slot (wait_for_slot=False)", action.message)
            if failed is not None and isinstance(failed[1], OpenHandsConcurrencyLimitError):
                return failed[1]
            return OpenHandsConcurrencyLimitError(action.message)  # a start task that failed for capacity
        if action.kind in TIMEOUTS:
            last = describe(self.engine.last_state) if self.engine.last_state else self.engine.lc.last_status
            return TimeoutError(
                f"OpenHands did not end the turn within {self.timeout:g}s (request timeout; last: {last}): "
                "what the invocation started is paused"
            )
        if action.kind in ("transient", "unreachable"):
            if failed is not None and isinstance(failed[1], TRANSIENT):
                return failed[1]
            return OpenHandsUnreachableError(action.message)
        if action.kind == "permanent" and failed is not None:
            wrote = isinstance(failed[0], (a.PostStart, a.Send))
            return contract_error(failed[1], rephrasable=wrote and not self.engine.lc.options.get("extra_body"))
        return ManagedAgentInvocationError(action.message)

    def release(self) -> None:
        """On every way out: pause what this invocation started (or resumed) whose turn did not end,
        or (``pause_when_done``) whose turn ended but whose answer was not given."""
        lc, driver, hook = self.engine.lc, self.driver, self.hook
        if self.settled or (lc.phase == PHASE_DONE and not hook.pause_when_done):
            return
        if lc.conversation_id:
            if lc.conversation_id not in driver.stopped and (driver.touched or not lc.follow_up):
                hook._pause(lc.conversation_id, lc.sandbox_id)
        elif lc.start_task_id and lc.start_task_id not in driver.stopped:
            try:
                pause_start_task(hook, lc.start_task_id, hook.log)
            except Exception as exc:
                hook.log.warning("Could not pause the sandbox of start task %s: %s", lc.start_task_id, exc)


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


__all__ = ["OpenHandsManagedAgentHook", "parse_agent", "turn_usage"]
