"""Fault matrix: each fault the service can throw at a task, and its documented outcome.

Every case checks the outcome, that the number of requests is bounded, that no second
conversation is started, and that the API key appears nowhere in the captured logs.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsNotFoundError,
    OpenHandsTransientError,
)
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger
from tests.conftest import FAST_RETRIES

pytestmark = pytest.mark.parametrize("api_version", ["v1"])


@pytest.fixture
def started(connection, caplog):
    caplog.set_level(logging.DEBUG)
    hook = OpenHandsHook(retry_policy=FAST_RETRIES)
    conversation_id = hook.start_conversation("Fix it", "acme/web", poll_interval=0.05)
    connection.requests.clear()
    yield hook, conversation_id
    assert connection.api_key not in caplog.text
    assert connection.stats()["created"] == 1


GET = {"method": "GET", "path": "app-conversations$"}

# fault -> (exception the hook raises, or None for success after retries; requests sent)
MATRIX = {
    "429 with Retry-After": ({"status": 429, "headers": {"Retry-After": "0"}, "times": 2}, None, 3),
    "429 without Retry-After": ({"status": 429, "times": 2}, None, 3),
    "500": ({"status": 500, "times": 2}, None, 3),
    "502": ({"status": 502, "times": 2}, None, 3),
    "503": ({"status": 503, "times": 2}, None, 3),
    "504": ({"status": 504, "times": 2}, None, 3),
    "503 for good": ({"status": 503, "times": 99}, OpenHandsTransientError, 4),
    "connection reset mid-body": ({"reset": True, "times": 2}, None, 3),
    "body that is not JSON": ({"status": 200, "raw": "<html>gateway</html>"}, OpenHandsApiError, 1),
    "JSON of the wrong shape": ({"status": 200, "raw": '{"items": []}'}, OpenHandsApiError, 1),
    "401": ({"status": 401, "body": {"error": "failed to authenticate"}, "times": 9}, OpenHandsAuthError, 1),
    "403": ({"status": 403, "body": {"error": "unverified"}, "times": 9}, OpenHandsAuthError, 1),
    "404": ({"status": 404, "body": {"detail": "Not Found"}}, OpenHandsNotFoundError, 1),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_fault_matrix_on_reads(connection, started, case):
    hook, conversation_id = started
    fault, raises, requests = MATRIX[case]
    connection.add_fault(**GET, **fault)
    if raises is None:
        assert hook.get_conversation(conversation_id)["conversation_id"] == conversation_id
    else:
        with pytest.raises(raises) as caught:
            hook.get_conversation(conversation_id)
        assert connection.api_key not in str(caught.value)
    assert len(connection.requests) == requests


def test_read_timeout_is_retried(connection, started, caplog):
    hook, conversation_id = started
    object.__setattr__(hook.settings, "timeout", 0.3)
    hook._sync.settings = hook.settings
    connection.add_fault(**GET, delay=0.6, passthrough=True)
    assert hook.get_conversation(conversation_id)["conversation_id"] == conversation_id
    assert "ReadTimeout" in caplog.text  # the first answer came too late; the retry got one


def run_trigger(conversation_id: str, seconds: float) -> dict:
    trigger = OpenHandsConversationTrigger(
        openhands_conn_id="openhands_default",
        conversation_id=conversation_id,
        poll_interval=0.05,
        end_time=time.time() + seconds,
    )

    async def one() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger sent no event")

    return asyncio.run(one())


def times_logged(caplog, capfd, text: str) -> int:
    """How often a line was logged, through logging (caplog) or Airflow's own output (capfd).

    Airflow 3 logs through structlog to the terminal, Airflow 2 through logging *and* to the
    terminal: count in each place and take the larger, so a line shown twice is not counted twice.
    """
    out, err = capfd.readouterr()
    return max(caplog.text.count(text), (out + err).count(text))


def test_unknown_status_is_not_terminal_and_logged_once(connection, started, caplog, capfd):
    _hook, conversation_id = started
    connection.conversation(conversation_id).status_override = "pondering"
    connection.conversation(conversation_id).ready_at = 0  # sandbox running
    event = run_trigger(conversation_id, 0.6)
    assert event["outcome"] == "timeout" and "status=unknown" in event["message"]
    assert times_logged(caplog, capfd, "unknown execution_status 'pondering'") == 1
    assert len(connection.requests) <= 0.6 / 0.05 + 3  # one request per poll, no more


def test_paused_mid_run_keeps_waiting_with_one_warning(connection, started, caplog, capfd):
    hook, conversation_id = started
    hook.stop_conversation(conversation_id)  # someone paused the sandbox in the UI
    event = run_trigger(conversation_id, 0.6)
    assert event["outcome"] == "timeout" and "status=paused" in event["message"]
    assert times_logged(caplog, capfd, "is paused") == 1


def test_sandbox_missing_mid_run_fails(connection, started):
    _hook, conversation_id = started
    connection.conversation(conversation_id).sandbox_override = "MISSING"
    event = run_trigger(conversation_id, 5)
    assert event["outcome"] == "failure" and event["status"] == "missing"


def test_null_in_a_batch_answer_names_the_id(connection, started):
    hook, _conversation_id = started
    with pytest.raises(OpenHandsNotFoundError, match="b" * 32):
        hook.get_conversation("b" * 32)
