"""The hook against the emulator over loopback, on V1 and V0."""

from __future__ import annotations

import time

import pytest

from airflow_provider_openhands.api.state import canonical_id
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsConcurrencyLimitError,
    OpenHandsConfigError,
    OpenHandsNotFoundError,
    OpenHandsStartError,
    OpenHandsTransientError,
)
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from tests.conftest import FAST_RETRIES

POST_START = {"v1": "/api/v1/app-conversations", "v0": "/api/conversations"}


def wait_for_status(hook: OpenHandsHook, conversation_id: str, wanted: str, limit: float = 10.0) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        state = hook.get_conversation(conversation_id)
        if state["status"] == wanted:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{conversation_id} never reached {wanted}; last {state}")


def test_start_and_follow_a_conversation(hook, connection, api_version):
    conversation_id = hook.start_conversation(
        "Check the README and open a PR if it is wrong", "acme/website", selected_branch="main", poll_interval=0.05
    )
    assert canonical_id(conversation_id) in connection.conversations
    state = wait_for_status(hook, conversation_id, "finished")
    assert state["conversation_id"] == conversation_id
    assert state["api_version"] == api_version
    assert state["selected_repository"] == "acme/website"
    assert state["url"] == f"{connection.url}/conversations/{conversation_id}"
    assert "session_api_key" not in state
    if api_version == "v1":
        assert state["execution_status"] == "finished" and state["sandbox_status"] == "RUNNING"
        assert state["pr_number"] and state["metrics"]["accumulated_cost"] > 0
    else:
        # V0's status stays RUNNING: "finished" comes from the agent's state in the events.
        assert state["conversation_status"] == "RUNNING"
        assert state["agent_state"] == "awaiting_user_input"


def test_seed_vocabulary_is_mapped_per_version(hook, connection, api_version):
    hook.start_conversation("Fix typos", "acme/app", git_provider="github", title="Typos", poll_interval=0.05)
    body = connection.requests_to("POST", POST_START[api_version] + "$")[0]["body"]
    if api_version == "v1":
        assert body["initial_message"]["content"] == [{"type": "text", "text": "Fix typos"}]
        assert body["selected_repository"] == "acme/app"
        assert body["title"] == "Typos"
        assert "initial_user_msg" not in body and "repository" not in body
    else:
        assert body == {"initial_user_msg": "Fix typos", "repository": "acme/app", "git_provider": "github"}


def test_running_conversation_is_not_finished(hook, connection):
    connection.conversation_seconds = 30
    conversation_id = hook.start_conversation("Long task", "acme/app", poll_interval=0.05)
    state = wait_for_status(hook, conversation_id, "running")
    assert state["status"] == "running"


@pytest.mark.parametrize("outcome", ["error", "stuck"])
def test_failed_outcomes_are_reported(hook, connection, api_version, outcome):
    conversation_id = hook.start_conversation(f"Do it [emulator outcome={outcome}]", "acme/app", poll_interval=0.05)
    expected = outcome if api_version == "v1" else "error"  # V0 agents only know "error"
    assert wait_for_status(hook, conversation_id, expected)["status"] == expected


def test_stop_conversation(hook, connection, api_version):
    connection.conversation_seconds = 30
    conversation_id = hook.start_conversation("Long task", "acme/app", poll_interval=0.05)
    assert hook.stop_conversation(conversation_id) is True
    state = hook.get_conversation(conversation_id)
    assert state["status"] == ("paused" if api_version == "v1" else "stopped")
    assert connection.stats()["stops"] == 1


def test_start_task_error_fails_with_its_detail(hook, connection, api_version):
    if api_version == "v0":
        pytest.skip("V0 has no start tasks")
    with pytest.raises(OpenHandsStartError, match="repository clone failed"):
        hook.start_conversation("Go [emulator start=error]", "acme/app", poll_interval=0.05)


def test_test_connection_ok(hook, api_version):
    ok, message = hook.test_connection()
    assert ok, message
    assert ("V0" in message) == (api_version == "v0")


def test_wrong_key_fails_at_once_naming_the_connection(connection, api_version, monkeypatch):
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(connection, api_version).replace(connection.api_key, "wrong-key-123"),
    )
    hook = OpenHandsHook(retry_policy=FAST_RETRIES)
    with pytest.raises(OpenHandsAuthError) as caught:
        hook.start_conversation("Fix it", "acme/app")
    assert "'openhands_default'" in str(caught.value) and "401" in str(caught.value)
    assert "wrong-key-123" not in str(caught.value)
    assert len(connection.requests) == 1  # no retry
    ok, message = hook.test_connection()
    assert not ok and "API key" in message


def test_forbidden_is_not_retried(hook, connection):
    connection.add_fault(status=403, body={"error": "unverified"}, times=5)
    with pytest.raises(OpenHandsAuthError, match="403"):
        hook.get_conversation("0" * 32)
    assert len(connection.requests) == 1


def test_unknown_conversation_names_the_id(hook):
    with pytest.raises(OpenHandsNotFoundError, match="deadbeef" * 4):
        hook.get_conversation("deadbeef" * 4)


def test_validation_error_carries_the_server_detail(hook, connection, api_version):
    connection.add_fault(status=422, body={"detail": [{"loc": ["body", "x"], "msg": "field required"}]})
    with pytest.raises(OpenHandsApiError, match="field required"):
        hook.start_conversation("Fix it", "acme/app")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_on_reads_are_retried(hook, connection, status):
    conversation_id = hook.start_conversation("Fix it", "acme/app", poll_interval=0.05)
    connection.add_fault(status=status, method="GET", times=2)
    assert hook.get_conversation(conversation_id)["conversation_id"] == conversation_id
    assert sum(1 for r in connection.requests if r.get("fault")) == 2


def test_retries_are_bounded(hook, connection):
    connection.add_fault(status=503, method="GET", times=100)
    with pytest.raises(OpenHandsTransientError, match="503"):
        hook.get_conversation("0" * 32)
    assert len(connection.requests) == FAST_RETRIES.max_retries + 1


def test_retry_after_is_honoured(connection, monkeypatch):
    from airflow_provider_openhands.hooks.transport import RetryPolicy

    hook = OpenHandsHook(retry_policy=RetryPolicy(max_retries=2, initial_wait=0.001, max_wait=5))
    connection.add_fault(status=429, method="GET", headers={"Retry-After": "1"}, body={"error": "Rate limit"})
    started = time.monotonic()
    hook.test_connection()
    waited = time.monotonic() - started
    assert 0.9 <= waited < 4, waited
    assert len(connection.requests) == 2


def test_start_is_not_resent_when_the_server_may_have_acted(hook, connection):
    """A 500 on POST may mean the conversation exists: resending could start a second one."""
    connection.add_fault(status=500, method="POST", times=1)
    with pytest.raises(OpenHandsTransientError):
        hook.start_conversation("Fix it", "acme/app")
    assert len(connection.requests_to("POST", ".")) == 1


def test_start_is_resent_when_refused_for_rate(hook, connection):
    connection.add_fault(status=429, method="POST", body={"error": "Rate limit exceeded"}, headers={"Retry-After": "0"})
    assert hook.start_conversation("Fix it", "acme/app", poll_interval=0.05)
    assert len(connection.requests_to("POST", ".")) == 2
    assert connection.stats()["created"] == 1


def test_concurrency_limit_is_its_own_error(hook, connection, api_version):
    if api_version == "v0":
        pytest.skip("the limit is a V1 service feature")
    connection.concurrency_limit = 1
    connection.conversation_seconds = 30
    hook.start_conversation("First", "acme/app", poll_interval=0.05)
    with pytest.raises(OpenHandsConcurrencyLimitError) as caught:
        hook.start_conversation("Second", "acme/app", poll_interval=0.05)
    assert caught.value.limit == 1 and caught.value.current == 1
    assert len(connection.requests_to("POST", ".")) == 2  # refused once, not retried blindly


def test_connection_refused_is_retried_then_reported(monkeypatch, caplog):
    import socket

    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Dead:
        url, api_key = f"http://127.0.0.1:{port}", "k"

    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(Dead))
    hook = OpenHandsHook(retry_policy=FAST_RETRIES)
    with pytest.raises(OpenHandsTransientError, match="ConnectionError") as caught:
        hook.get_conversation("0" * 32)
    assert caught.value.request_sent is False
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == FAST_RETRIES.max_retries  # retried, then reported


def test_batch_read_of_many_conversations(hook, connection, api_version):
    ids = [hook.start_conversation(f"Task {n}", "acme/app", poll_interval=0.05) for n in range(3)]
    time.sleep(connection.start_seconds + 0.1)  # all running, so V0 reads each one's events too
    before = len(connection.requests)
    states = hook.get_conversations([*ids, "f" * 32])
    assert [states[canonical_id(i)]["conversation_id"] for i in ids] == ids
    assert states["f" * 32] is None
    reads = len(connection.requests) - before
    # V1 reads them all in one request; V0 has no batch endpoint (conversation + events each).
    assert reads == (1 if api_version == "v1" else 4 + 3)


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"password": ""}, "no API key"),
        ({"extra": {"api_version": "v2"}}, "api_version"),
        ({"host": "http://openhands.example.com"}, "in clear"),
        ({"host": "ftp://x"}, "http"),
        ({"extra": {"timeout": 0}}, "timeout"),
        ({"extra": "api_version=v0"}, "extra is not a JSON object"),
        ({"extra": "[1]"}, "extra is not a JSON object"),
    ],
)
def test_bad_connection_settings_are_named(monkeypatch, conn, message):
    import json

    base = {"conn_type": "openhands", "host": "https://app.all-hands.dev", "password": "k", "extra": {}}
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps({**base, **conn}))
    with pytest.raises(OpenHandsConfigError, match=message) as caught:
        OpenHandsHook().settings  # noqa: B018
    assert "openhands_default" in str(caught.value)


def test_connection_from_uri(monkeypatch, emulator):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        f"openhands://:{emulator.api_key}@127.0.0.1:{emulator.port}/?scheme=http&api_version=v0",
    )
    hook = OpenHandsHook()
    assert hook.base_url == emulator.url and hook.api_version == "v0"
    assert hook.test_connection()[0]
    assert emulator.api_key not in repr(hook.settings)


def test_default_host_is_the_cloud(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", '{"conn_type": "openhands", "password": "k"}')
    hook = OpenHandsHook()
    assert hook.base_url == "https://app.all-hands.dev" and hook.api_version == "v1"


def test_missing_connection_is_named(monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    monkeypatch.delenv("AIRFLOW_CONN_OPENHANDS_NOWHERE", raising=False)
    with pytest.raises(AirflowNotFoundException, match="openhands_nowhere"):
        OpenHandsHook("openhands_nowhere").get_conversation("a" * 32)
