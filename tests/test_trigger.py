"""The trigger, run to its one event in an asyncio loop as the triggerer would, against the emulator."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_openhands.api.options import StartOptions
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger


async def collect(trigger: OpenHandsConversationTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def make(**kwargs) -> OpenHandsConversationTrigger:
    kwargs.setdefault("openhands_conn_id", "openhands_default")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_time", time.time() + 20)
    return OpenHandsConversationTrigger(**kwargs)


def start(connection, message="Fix the README", **fields) -> str:
    return OpenHandsHook().start_conversation(message, "acme/web", poll_interval=0.05, **fields)


def test_waits_for_the_conversation_to_finish(connection):
    conversation_id = start(connection)
    events = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert len(events) == 1
    event = events[0]
    assert event["outcome"] == "success" and event["conversation_id"] == conversation_id
    assert event["state"]["status"] == "finished"


@pytest.mark.parametrize("outcome", ["error", "stuck"])
def test_failure_event(connection, api_version, outcome):
    conversation_id = start(connection, f"Go [emulator outcome={outcome}]")
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert event["outcome"] == "failure"
    assert event["state"]["status"] in ("error", "stuck")


def test_timeout_event_keeps_the_last_state(connection):
    connection.conversation_seconds = 30
    conversation_id = start(connection)
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id, end_time=time.time() + 0.5)))
    assert event["outcome"] == "timeout"
    assert event["state"]["status"] in ("starting", "running")


def test_start_task_then_conversation(connection, api_version):
    if api_version == "v0":
        pytest.skip("V0 has no start tasks")
    started = OpenHandsHook().submit_conversation(
        __import__("airflow_provider_openhands.api.options", fromlist=["StartOptions"]).StartOptions(
            "Fix it", "acme/web"
        )
    )
    assert started["conversation_id"] is None
    (event,) = asyncio.run(collect(make(start_task_id=started["start_task"]["id"], wait_for_completion=False)))
    assert event["outcome"] == "success" and event["conversation_id"]
    assert event["state"] is None


def test_start_task_error_is_a_failure_with_detail(connection, api_version):
    if api_version == "v0":
        pytest.skip("V0 has no start tasks")
    started = OpenHandsHook().submit_conversation(StartOptions("Go [emulator start=error]", "acme/web"))
    (event,) = asyncio.run(collect(make(start_task_id=started["start_task"]["id"])))
    assert event["outcome"] == "failure" and "repository clone failed" in event["message"]


def test_unknown_conversation_is_an_error_event(connection):
    (event,) = asyncio.run(collect(make(conversation_id="a" * 32)))
    assert event["outcome"] == "error" and "a" * 32 in event["message"]


def test_serialize_holds_no_secret_and_rebuilds(connection):
    """A triggerer restart rebuilds the trigger from its kwargs: it must carry on with the same wait."""
    connection.conversation_seconds = 1.0
    conversation_id = start(connection)
    first = make(conversation_id=conversation_id)
    classpath, kwargs = first.serialize()
    assert connection.api_key not in repr((classpath, kwargs)) and connection.api_key not in repr(first)

    async def interrupted() -> None:
        run = first.run().__aiter__()
        task = asyncio.ensure_future(run.__anext__())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    (event,) = asyncio.run(collect(rebuilt))
    assert event["outcome"] == "success" and event["conversation_id"] == conversation_id
    assert connection.stats()["created"] == 1


def test_transient_errors_are_retried_inside_the_trigger(connection):
    conversation_id = start(connection)
    connection.add_fault(status=502, method="GET", times=2)
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert event["outcome"] == "success"


def test_needs_an_id():
    with pytest.raises(ValueError, match="conversation_id or a start_task_id"):
        make()
