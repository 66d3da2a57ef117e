"""OpenHands as a common.ai managed agent (issue 13, items 1 and 2): the contract against the emulator.

Needs the ``common-ai`` extra: marked ``ecosystem``, which the default run deselects (CI installs
the extras and runs ``pytest -m ecosystem``). Imports of the extra stay inside the tests, so the
default run collects this module without it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import FAST_RETRIES, REPO
from tests.test_dag_runs import load_dag, task_states

pytestmark = pytest.mark.ecosystem


def managed_hook(**kwargs):
    from airflow_provider_openhands.hooks.managed_agent import OpenHandsManagedAgentHook

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
    caps = hook.get_agent_capabilities(agent)
    assert (caps.sessions, caps.usage, caps.trace, caps.structured_output) == (True, True, True, False)
    assert emulator.requests == [] and "settings" not in hook.__dict__


@pytest.mark.parametrize("agent", ["https://github.com/acme/app", "acme/app@", "@main", "acme"])
def test_a_malformed_agent_fails_resolution_without_a_request(emulator, agent):
    with pytest.raises(ValueError, match="agent"):
        managed_hook().resolve_agent(agent)
    assert emulator.requests == []


def test_the_plain_hook_binds_agents_for_the_toolset(connection):
    from airflow.providers.common.ai.managed_agents.base import BoundManagedAgent
    from airflow.providers.common.ai.toolsets import ManagedAgentToolset

    from airflow_provider_openhands.hooks.managed_agent import OpenHandsManagedAgentHook
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    bound = OpenHandsHook("openhands_default").agent("acme/app@main")
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
def test_v0_answers_a_turn_but_refuses_a_session(connection):
    from airflow.providers.common.ai.exceptions import ManagedAgentInvocationError

    hook = managed_hook()
    response = hook.invoke_agent("acme/app", request())
    assert response.raw["status"] == "finished" and response.session_id
    with pytest.raises(ManagedAgentInvocationError, match="V1"):
        hook.invoke_agent("acme/app", request("more", session_id=response.session_id))


# -- failures sorted as the contract says ---------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1"])
def test_rejected_failures_can_be_rephrased(connection):
    from airflow.providers.common.ai.exceptions import ManagedAgentRejected

    hook = managed_hook()
    with pytest.raises(ManagedAgentRejected, match="empty"):
        hook.invoke_agent("acme/app", request("   "))
    with pytest.raises(ManagedAgentRejected, match="status error"):
        hook.invoke_agent("acme/app", request("Do it [emulator outcome=error]"))


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


# -- item 2: a calling agent delegates through the toolset, in dag.test() ---------------------------------


@pytest.mark.parametrize("api_version", ["v1"])
def test_delegate_example_reaches_the_emulator_and_brings_its_answer_back(airflow_db, connection, monkeypatch):
    """pydantic-ai's offline TestModel calls every tool once: ``ask_openhands`` reaches the emulator,
    and OpenHands' final message comes back in the calling agent's output."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_PYDANTICAI_DEFAULT", json.dumps({"conn_type": "pydanticai", "extra": {"model": "test"}})
    )
    dag = load_dag(REPO / "example_dags" / "openhands_delegate.py", "openhands_delegate")
    dag_run = dag.test()
    assert task_states(dag_run) == {"triage": "success"}
    (conversation,) = connection.conversations.values()
    assert conversation.repository == "acme/app"
    (ti,) = dag_run.get_task_instances()
    output = ti.xcom_pull(task_ids="triage")
    expected = f"Done: {conversation.message[:40]}"
    assert expected in str(output), output
