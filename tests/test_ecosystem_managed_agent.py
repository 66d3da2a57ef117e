"""OpenHands as a common.ai managed agent (issue 13, items 1 and 2): the contract against the emulator.

Needs the ``common-ai`` extra: marked ``ecosystem``, which the default run deselects (CI installs
the extras and runs ``pytest -m ecosystem``). Imports of the extra stay inside the tests, so the
default run collects this module without it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import EXAMPLE_DAGS, FAST_RETRIES
from tests.test_dag_runs import load_dag, task_states

pytestmark = pytest.mark.ecosystem


def managed_hook(**kwargs):
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    kwargs.setdefault("poll_interval", 0.1)
    return OpenHandsManagedAgentHook(retry_policy=FAST_RETRIES, **kwargs)


def request(prompt="Fix the signup page", **kwargs):
    from airflow.providers.common.ai.managed_agents.base import ManagedAgentRequest

    kwargs.setdefault("timeout", 30)
    return ManagedAgentRequest(prompt=prompt, **kwargs)


# -- no network in identity and capabilities ----------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "name", "version"),
    [
        ("acme/app", "acme/app", None),
        ("acme/app@release-1.2", "acme/app", "release-1.2"),
        ("", "(no repository)", None),
    ],
)
def test_resolve_and_capabilities_need_no_connection_and_send_nothing(emulator, monkeypatch, agent, name, version):
    monkeypatch.delenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", raising=False)  # a read would fail: none exists
    hook = managed_hook(openhands_conn_id="no_such_connection")
    ref = hook.resolve_agent(agent)
    assert (ref.platform, ref.name, ref.version) == ("openhands", name, version)
    caps = hook.get_agent_capabilities(agent)  # no connection to read the API version from: V1, the default
    assert (caps.sessions, caps.usage, caps.trace, caps.structured_output) == (True, True, True, False)
    assert emulator.requests == [] and "settings" not in hook.__dict__


@pytest.mark.parametrize(
    ("api_version", "sessions", "usage"),
    [("v1", True, True), ("v0", False, False)],
)
def test_capabilities_tell_the_truth_per_api_version(connection, api_version, sessions, usage):
    """V0 has no follow-up turns and reports no metrics: a consumer refuses a session before the call."""
    caps = managed_hook().get_agent_capabilities("acme/app")
    assert (caps.sessions, caps.usage, caps.trace, caps.structured_output) == (sessions, usage, True, False)
    assert managed_hook(sessions=False).get_agent_capabilities("acme/app").sessions is False
    assert connection.requests == []  # the connection's api_version, read from Airflow: no request to OpenHands


@pytest.mark.parametrize("agent", ["https://github.com/acme/app", "acme/app@", "@main", "acme"])
def test_a_malformed_agent_fails_resolution_without_a_request(emulator, agent):
    with pytest.raises(ValueError, match="agent"):
        managed_hook().resolve_agent(agent)
    assert emulator.requests == []


def test_the_managed_agent_hook_binds_agents_for_the_toolset(connection):
    from airflow.providers.common.ai.managed_agents.base import BoundManagedAgent
    from airflow.providers.common.ai.toolsets import ManagedAgentToolset

    from airflow_provider_openhands.hooks.openhands import OpenHandsHook
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    assert not hasattr(OpenHandsHook, "agent")  # the plain hook knows nothing of common.ai (no import cycle)
    bound = OpenHandsManagedAgentHook("openhands_default").agent("acme/app@main")
    assert isinstance(bound, BoundManagedAgent) and isinstance(bound.hook, OpenHandsManagedAgentHook)
    assert bound.hook.openhands_conn_id == "openhands_default"
    toolset = ManagedAgentToolset(bound, tool_name="ask_openhands")
    assert toolset.agent_ref.name == "acme/app" and connection.requests == []


# -- one turn, and a follow-up turn ---------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1"])
def test_invoke_starts_a_conversation_and_answers_its_final_message(connection):
    response = managed_hook().invoke_agent("acme/app@main", request('Fix it [emulator finish="Fixed in #12"]'))
    (conversation,) = connection.conversations.values()
    assert conversation.repository == "acme/app" and "Fix it" in conversation.message
    start = connection.requests_to("POST", "/api/v1/app-conversations")[0]
    assert start["body"]["selected_branch"] == "main"
    assert response.text == "Fixed in #12"
    assert response.session_id == response.raw["conversation_id"]
    assert response.raw["status"] == "finished" and response.raw["final_message"] == "Fixed in #12"
    assert response.trace_ref == response.raw["url"] and response.session_id in response.trace_ref
    assert response.usage.input_tokens == response.raw["metrics"]["prompt_tokens"] > 0
    assert response.usage.output_tokens == response.raw["metrics"]["completion_tokens"] > 0
    assert response.raw["metrics"]["accumulated_cost"] is not None
    # the sandbox was paused once the turn ended: it holds no slot of the account
    assert connection.requests_to("POST", "/api/v1/sandboxes/[^/]+/pause")


@pytest.mark.parametrize("api_version", ["v1"])
def test_session_id_continues_the_conversation_with_a_follow_up_turn(connection):
    hook = managed_hook()
    first = hook.invoke_agent("acme/app", request('Fix it [emulator finish="first answer"]'))
    second = hook.invoke_agent(
        "acme/app", request('Now the docs [emulator finish="second answer"]', session_id=first.session_id)
    )
    assert second.text == "second answer" and second.session_id == first.session_id
    assert len(connection.conversations) == 1
    (sent,) = connection.requests_to("POST", "/api/v1/app-conversations/[^/]+/send-message")
    assert sent["body"]["content"] == [{"type": "text", "text": 'Now the docs [emulator finish="second answer"]'}]
    # paused after the first turn, so resumed before the follow-up
    assert connection.requests_to("POST", "/api/v1/sandboxes/[^/]+/resume")


@pytest.mark.parametrize("api_version", ["v1"])
def test_sessions_off_are_refused_before_any_request(connection):
    bound = managed_hook(sessions=False).agent("acme/app")
    assert bound.capabilities.sessions is False
    with pytest.raises(ValueError, match="session_id cannot be honored"):
        bound.invoke(request(session_id="0" * 32))
    assert connection.requests == []


@pytest.mark.parametrize("api_version", ["v0"])
def test_v0_answers_a_turn_with_the_agents_final_message(connection):
    """Read as the plain hook reads it (the finish action's final_thought), not a placeholder; V0 has no metrics."""
    response = managed_hook().invoke_agent("acme/app", request('Fix it [emulator finish="Fixed on V0"]'))
    assert response.raw["status"] == "finished" and response.session_id
    assert response.text == "Fixed on V0"
    assert response.usage is None and response.raw["turn_usage"] is None
    assert connection.requests_to("POST", "/api/conversations/[^/]+/stop")  # pause_when_done: V0 stops it


@pytest.mark.parametrize("api_version", ["v0"])
def test_a_session_on_v0_is_refused_upfront_with_value_error(connection):
    """The contract's refusal (ValueError) before any request, from the hook itself and from the bound agent."""
    with pytest.raises(ValueError, match="V1"):
        managed_hook().invoke_agent("acme/app", request("more", session_id="ab" * 16))
    with pytest.raises(ValueError, match="session_id cannot be honored"):
        managed_hook().agent("acme/app").invoke(request("more", session_id="ab" * 16))
    assert connection.requests == []


# -- failures sorted as the contract says ---------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1"])
def test_rejected_failures_can_be_rephrased(connection):
    from airflow.providers.common.ai.exceptions import ManagedAgentRejected

    hook = managed_hook()
    with pytest.raises(ManagedAgentRejected, match="empty"):
        hook.invoke_agent("acme/app", request("   "))
    # a start the server refuses as invalid, carrying nothing but the model's text (here: a bad marker)
    with pytest.raises(ManagedAgentRejected, match=r"HTTP 400|emulator marker"):
        hook.invoke_agent("acme/app", request("Do it [emulator duration=-1]"))
    assert connection.conversations == {}


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_turn_that_ends_in_error_is_an_invocation_error_and_is_paused(connection):
    """A runtime or LLM failure: the calling model cannot rephrase it away (a retry pays for a new
    conversation), a failover group moves on."""
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected
    from airflow.providers.common.ai.managed_agents.base import ManagedAgentRef, ManagedAgentResponse
    from airflow.providers.common.ai.managed_agents.failover import FailoverManagedAgentClient

    for outcome in ("error", "stuck"):
        with pytest.raises(ManagedAgentInvocationError, match=f"status {outcome}") as caught:
            managed_hook().invoke_agent("acme/app", request(f"Do it [emulator outcome={outcome}]"))
        assert not isinstance(caught.value, ManagedAgentRejected)
    assert connection.stats()["alive"] == 0 and all(c.paused_at for c in connection.conversations.values())

    class Standby:
        ref = ManagedAgentRef(platform="standby", name="standby")
        capabilities = managed_hook().get_agent_capabilities("acme/app")

        def invoke(self, req):
            return ManagedAgentResponse(text="served by the standby", raw=None)

    group = FailoverManagedAgentClient([managed_hook().agent("acme/app"), Standby()])
    assert group.invoke(request("Do it [emulator outcome=error]")).text == "served by the standby"


@pytest.mark.parametrize("api_version", ["v1"])
def test_terminal_failures_are_invocation_errors(connection, monkeypatch):
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError

    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    hook = managed_hook()
    with pytest.raises(ManagedAgentInvocationError, match="no conversation"):
        hook.invoke_agent("acme/app", request("more", session_id="ab" * 16))
    with pytest.raises(ManagedAgentInvocationError, match="not accepted"):
        hook.invoke_agent("acme/app", request(vendor_options={"repository": "evil/other"}))
    with pytest.raises(ManagedAgentInvocationError, match="may not set"):
        hook.invoke_agent("acme/app", request(vendor_options={"extra_body": {"selected_repository": "evil/x"}}))
    with pytest.raises(ManagedAgentInvocationError, match="could not start"):
        hook.invoke_agent("acme/app", request("Go [emulator start=error]"))
    connection.configure(daily_sandbox_limit=0)
    with pytest.raises(ManagedAgentInvocationError, match="DAILY_SANDBOX_LIMIT_REACHED"):
        hook.invoke_agent("acme/app", request())
    bad_key = json.loads(connection_json(connection, "v1"))
    bad_key["password"] = "wrong-key"
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(bad_key))
    with pytest.raises(ManagedAgentInvocationError, match=r"401|authenticat"):
        managed_hook().invoke_agent("acme/app", request())
    no_key = json.loads(connection_json(connection, "v1"))
    no_key["password"] = ""
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(no_key))
    with pytest.raises(ManagedAgentInvocationError, match="no API key"):  # a bad credential is no rephrasing matter
        managed_hook().invoke_agent("acme/app", request())


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_session_cannot_retarget_the_agent(connection):
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError

    other = managed_hook().invoke_agent("secret/private", request('Look [emulator finish="hidden"]'))
    with pytest.raises(ManagedAgentInvocationError, match="belongs to repository 'secret/private'"):
        managed_hook().invoke_agent("acme/app", request("And now?", session_id=other.session_id))
    assert connection.requests_to("POST", "send-message") == []


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_start_timeout_pauses_the_start_tasks_sandbox(connection):
    connection.start_seconds = 2.0
    with pytest.raises(TimeoutError):
        managed_hook().invoke_agent("acme/app", request("Long [emulator duration=60]", timeout=0.5))
    assert connection.stats()["stops"] == 1 and connection.stats()["alive"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_transient_failures_propagate_unchanged(connection):
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError, ManagedAgentRejected

    from airflow_provider_openhands.exceptions import OpenHandsTransientError

    connection.outage(seconds=5)
    with pytest.raises(OpenHandsTransientError) as caught:
        managed_hook().invoke_agent("acme/app", request())
    assert not isinstance(caught.value, (ManagedAgentInvocationError, ManagedAgentRejected))


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_request_timeout_is_enforced_and_the_sandbox_paused(connection):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="within 2s"):
        managed_hook().invoke_agent("acme/app", request("Slow [emulator duration=30]", timeout=2))
    assert time.monotonic() - started < 6
    (conversation,) = connection.conversations.values()
    assert conversation.paused_at is not None


@pytest.mark.parametrize("api_version", ["v1"])
def test_one_deadline_covers_the_start_and_the_turn(connection):
    """request.timeout bounds the whole invocation: a start that takes most of it leaves the turn only
    the rest (not a timeout of its own); then the sandbox is paused and TimeoutError raised."""
    connection.start_seconds = 2.0
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="within 3s"):
        managed_hook().invoke_agent("acme/app", request("Slow [emulator duration=30]", timeout=3))
    assert time.monotonic() - started < 4.2  # a fresh deadline after the start would take 5 s
    (conversation,) = connection.conversations.values()
    assert conversation.paused_at is not None and connection.stats()["alive"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_usage_is_the_turns_own_and_sums_to_the_conversations_total(connection):
    """Issue 22, item 4: a follow-up turn reports its own tokens and cost, not the conversation's
    running total, so usage summed over the turns is the conversation's."""
    hook = managed_hook()
    first = hook.invoke_agent("acme/app", request("One [emulator cost=1.0]"))
    second = hook.invoke_agent("acme/app", request("Two [emulator cost=2.0]", session_id=first.session_id))
    total = hook.get_conversation(first.session_id)["metrics"]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (100_000, 20_000)
    assert (second.usage.input_tokens, second.usage.output_tokens) == (200_000, 40_000)
    assert first.usage.input_tokens + second.usage.input_tokens == total["prompt_tokens"]
    assert first.usage.output_tokens + second.usage.output_tokens == total["completion_tokens"]
    assert first.raw["turn_usage"]["cost"] == pytest.approx(1.0)
    assert second.raw["turn_usage"]["cost"] == pytest.approx(2.0) == total["accumulated_cost"] - 1.0


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_transient_failure_propagates_and_a_resumed_session_is_paused_again(connection):
    """The send meets 503s: the error propagates unchanged (the task's retry, or the failover group),
    and the session's sandbox, which this invocation resumed, is paused again."""
    from airflow_provider_openhands.exceptions import OpenHandsTransientError

    hook = managed_hook()
    first = hook.invoke_agent("acme/app", request("One"))
    connection.add_fault(status=503, method="POST", path="send-message", times=20)
    with pytest.raises(OpenHandsTransientError):
        hook.invoke_agent("acme/app", request("Two", session_id=first.session_id))
    assert connection.stats()["resumes"] == 1  # resumed for the message...
    assert connection.stats()["alive"] == 0  # ...and paused again when the send failed


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_wait_that_keeps_failing_is_ridden_out_to_the_deadline_then_paused(connection):
    """Issue 22, item 2: 503s on every poll no longer end the call with the conversation running."""
    connection.add_fault(status=503, method="GET", path=r"^/api/v1/app-conversations$", seconds=30)
    with pytest.raises(TimeoutError):
        managed_hook().invoke_agent("acme/app", request("Slow [emulator duration=30]", timeout=3))
    (conversation,) = connection.conversations.values()
    assert conversation.paused_at is not None and connection.stats()["alive"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_session_whose_sandbox_does_not_resume_in_time_times_out(connection):
    """The resume counts against the same deadline: a sandbox still not running at it is a TimeoutError."""
    hook = managed_hook()
    first = hook.invoke_agent("acme/app", request("One"))
    # the service accepts the resume but the sandbox stays paused
    connection.add_fault(status=200, method="POST", path="/resume", body={"success": True}, times=1000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        hook.invoke_agent("acme/app", request("Two", session_id=first.session_id, timeout=2))
    assert time.monotonic() - started < 3.5
    assert connection.requests_to("POST", "send-message") == [] and connection.stats()["alive"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_cancelled_invocation_pauses_its_conversation(connection):
    """KeyboardInterrupt (or any exception) mid-wait: the conversation the invocation started is paused."""
    hook = managed_hook()
    reads = []
    read = hook.get_conversation

    def interrupted(conversation_id):
        reads.append(conversation_id)
        if len(reads) >= 2:
            raise KeyboardInterrupt
        return read(conversation_id)

    hook.get_conversation = interrupted
    with pytest.raises(KeyboardInterrupt):
        hook.invoke_agent("acme/app", request("Slow [emulator duration=30]"))
    (conversation,) = connection.conversations.values()
    assert conversation.paused_at is not None and connection.stats()["alive"] == 0


# -- item 2: a calling agent delegates through the toolset, in dag.test() ---------------------------------


@pytest.mark.parametrize("api_version", ["v1"])
def test_delegate_example_reaches_the_emulator_and_brings_its_answer_back(airflow_db, connection, monkeypatch):
    """pydantic-ai's offline TestModel calls every tool once: ``ask_openhands`` reaches the emulator,
    and OpenHands' final message comes back in the calling agent's output."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_PYDANTICAI_DEFAULT", json.dumps({"conn_type": "pydanticai", "extra": {"model": "test"}})
    )
    dag = load_dag(EXAMPLE_DAGS / "openhands_delegate.py", "openhands_delegate")
    dag_run = dag.test()
    assert task_states(dag_run) == {"triage": "success"}
    (conversation,) = connection.conversations.values()
    assert conversation.repository == "acme/app"
    (ti,) = dag_run.get_task_instances()
    output = ti.xcom_pull(task_ids="triage")
    expected = f"Done: {conversation.message[:40]}"
    assert expected in str(output), output


def _failover_group(hook):
    from airflow.providers.common.ai.managed_agents.base import ManagedAgentRef, ManagedAgentResponse
    from airflow.providers.common.ai.managed_agents.failover import FailoverManagedAgentClient

    class Standby:
        ref = ManagedAgentRef(platform="standby", name="standby")
        capabilities = hook.get_agent_capabilities("acme/app")

        def invoke(self, req):
            return ManagedAgentResponse(text="served by the standby", raw=None)

    return FailoverManagedAgentClient([hook.agent("acme/app"), Standby()])


@pytest.mark.parametrize("api_version", ["v1"])
@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503},
        {"status": 429, "headers": {"Retry-After": "30"}, "body": {"error": "Rate limit exceeded: 100 per 1 minute"}},
    ],
    ids=["503", "429-retry-after-30"],
)
def test_failover_within_the_timeout_under_the_default_retry_policy(connection, fault):
    """Issue 22, item 1: with the connection's own retry policy (5 retries, up to 60 s, honouring
    ``Retry-After``), a service answering 503 or 429 to the start fails over within ``timeout + 2 s``:
    the invocation's deadline cuts the HTTP retries and their waits; nothing is left running."""
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    connection.add_fault(method="POST", path=r"^/api/v1/app-conversations$", seconds=120, **fault)
    hook = OpenHandsManagedAgentHook(poll_interval=0.2)  # the default retry policy
    started = time.monotonic()
    answer = _failover_group(hook).invoke(request("Fix it", timeout=5))
    assert answer.text == "served by the standby"
    assert time.monotonic() - started < 5 + 2
    assert connection.stats()["alive"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_failover_within_the_timeout_when_a_429_meets_the_turn(connection):
    """Mid-turn, the polls meet 429 with ``Retry-After: 30``: the process's request budget is held
    for 30 s, but the invocation does not wait past its deadline for it (nor its release long after)."""
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    hook = OpenHandsManagedAgentHook(poll_interval=0.2)  # the default retry policy
    connection.add_fault(
        method="GET",
        path=r"^/api/v1/app-conversations$",
        seconds=120,
        status=429,
        headers={"Retry-After": "30"},
        body={"error": "Rate limit exceeded: 100 per 1 minute"},
    )
    started = time.monotonic()
    answer = _failover_group(hook).invoke(request("Slow [emulator duration=30]", timeout=3))
    assert answer.text == "served by the standby"
    assert time.monotonic() - started < 3 + 2 + 5  # the deadline, a margin, the release's own window


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_session_s_lookup_counts_against_the_deadline(connection):
    """A follow-up turn first reads its session: under 503s that read is cut at the deadline too."""
    from airflow_provider_openhands.exceptions import OpenHandsTransientError
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    hook = OpenHandsManagedAgentHook(poll_interval=0.2)
    first = hook.invoke_agent("acme/app", request("One"))
    connection.add_fault(status=503, method="GET", path="app-conversations", seconds=120)
    started = time.monotonic()
    with pytest.raises((OpenHandsTransientError, TimeoutError)):
        hook.invoke_agent("acme/app", request("Two", session_id=first.session_id, timeout=3))
    assert time.monotonic() - started < 3 + 2  # was 7.7 s: its retries waited 1.2, 2.2 and 4.3 s


def _fill_the_account(connection) -> str:
    """One slot, held by a long conversation someone else started: the account is full."""
    from airflow_provider_openhands.api.options import StartOptions
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    connection.concurrency_limit = 1
    started = OpenHandsHook().submit_conversation(StartOptions(initial_user_msg="Busy [emulator duration=60]"))
    return started["conversation_id"]


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_full_account_fails_over_at_once(connection):
    """Issue 29, scenario 12: in a failover group whose standby is free, a full OpenHands account
    made the call wait its whole timeout (30 s) for a slot before the standby served."""
    _fill_the_account(connection)
    started = time.monotonic()
    answer = _failover_group(managed_hook()).invoke(request("Fix it", timeout=30))
    assert answer.text == "served by the standby"
    assert time.monotonic() - started < 5
    assert connection.stats()["alive"] == 1  # the other conversation only


@pytest.mark.parametrize("api_version", ["v1"])
def test_wait_for_slot_waits_for_a_free_one(connection):
    """``wait_for_slot=True``: the invocation waits (within its timeout) and is served by OpenHands
    once a slot comes free (the account's limit raised here)."""
    import threading

    _fill_the_account(connection)
    threading.Timer(1.5, lambda: setattr(connection, "concurrency_limit", 2)).start()
    answer = _failover_group(managed_hook(wait_for_slot=True)).invoke(request("Fix it [emulator duration=1]"))
    assert answer.text != "served by the standby" and answer.session_id
