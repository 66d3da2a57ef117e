"""The trigger, run to its one event in an asyncio loop as the triggerer would, against the emulator.

Restarts are driven as Airflow drives them: the kwargs Airflow stored when the task deferred
(``serialize()`` at that moment) rebuild the trigger after the first run's task was cancelled.
"""

from __future__ import annotations

import asyncio
import importlib
import time

import pytest

from airflow_provider_openhands.api.options import StartOptions
from airflow_provider_openhands.engine.state import PHASE_STARTING, Lifecycle
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger
from tests.test_faults import times_logged


async def collect(trigger: OpenHandsConversationTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def make(**kwargs) -> OpenHandsConversationTrigger:
    kwargs.setdefault("openhands_conn_id", "openhands_default")
    kwargs.setdefault("poll_interval", 0.05)
    if "lifecycle" not in kwargs:
        kwargs.setdefault("end_time", time.time() + 20)
    return OpenHandsConversationTrigger(**kwargs)


def rebuild(serialized: tuple[str, dict]) -> OpenHandsConversationTrigger:
    classpath, kwargs = serialized
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def start(connection, message="Fix the README", **fields) -> str:
    return OpenHandsHook().start_conversation(message, "acme/web", poll_interval=0.05, **fields)


def submit(message: str = "Fix it") -> str:
    started = OpenHandsHook().submit_conversation(StartOptions(message, "acme/web"))
    assert started["conversation_id"] is None
    return started["start_task"]["id"]


async def run_then_cancel(trigger: OpenHandsConversationTrigger, seconds: float) -> None:
    """What a triggerer shutdown does to a running trigger: cancel its task."""
    task = asyncio.ensure_future(trigger.run().__anext__())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.cleanup()


def test_waits_for_the_conversation_to_finish(connection):
    conversation_id = start(connection)
    events = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert len(events) == 1
    event = events[0]
    assert event["outcome"] == "success" and event["conversation_id"] == conversation_id
    assert event["status"] == "finished"


def test_the_event_is_small_and_holds_no_state(connection):
    """Airflow logs the event it fires (its repr): ids and what happened, not a 1 KB state. The
    payload carries the conversation as read at its end once, in the lifecycle (about 700 bytes),
    so the worker need not read it again; without the session key."""
    conversation_id = start(connection)
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id)))
    end_state = event["lifecycle"].pop("end_state")
    assert "state" not in event and len(repr(event)) < 600  # ids, outcome, the turn's final message
    assert end_state["conversation_id"] == conversation_id and "session_api_key" not in end_state


@pytest.mark.parametrize("outcome", ["error", "stuck"])
def test_failure_event(connection, api_version, outcome):
    conversation_id = start(connection, f"Go [emulator outcome={outcome}]")
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert event["outcome"] == "failure"
    assert event["status"] in ("error", "stuck")


def test_timeout_event(connection):
    connection.conversation_seconds = 30
    conversation_id = start(connection)
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id, end_time=time.time() + 0.5)))
    assert event["outcome"] == "timeout" and "still status=" in event["message"]


def test_start_task_then_conversation(connection, api_version):
    if api_version == "v0":
        pytest.skip("V0 has no start tasks")
    (event,) = asyncio.run(collect(make(start_task_id=submit(), wait_for_completion=False)))
    assert event["outcome"] == "ready" and event["conversation_id"]


def test_start_task_error_is_a_failure_with_detail(connection, api_version):
    if api_version == "v0":
        pytest.skip("V0 has no start tasks")
    (event,) = asyncio.run(collect(make(start_task_id=submit("Go [emulator start=error]"))))
    assert event["outcome"] == "start_failed" and "repository clone failed" in event["message"]


def test_unknown_conversation_is_a_permanent_error_event(connection):
    (event,) = asyncio.run(collect(make(conversation_id="a" * 32)))
    assert event["outcome"] == "permanent" and "a" * 32 in event["message"]


def test_serialize_holds_no_secret_and_rebuilds(connection):
    """A triggerer restart rebuilds the trigger from its kwargs: it must carry on with the same wait."""
    connection.conversation_seconds = 2.5  # still running when the restart comes, even on a loaded machine
    conversation_id = start(connection)
    first = make(conversation_id=conversation_id)
    serialized = first.serialize()
    assert connection.api_key not in repr(serialized) and connection.api_key not in repr(first)
    asyncio.run(run_then_cancel(first, 0.2))
    rebuilt = rebuild(serialized)
    assert rebuilt.serialize() == serialized
    (event,) = asyncio.run(collect(rebuilt))
    assert event["outcome"] == "success" and event["conversation_id"] == conversation_id
    assert connection.stats()["created"] == 1


def starting_lifecycle(task_id: str, *, start_timeout: float, wait_timeout: float) -> dict:
    now = time.time()
    lifecycle = Lifecycle(
        phase=PHASE_STARTING,
        start_task_id=task_id,
        start_timeout=start_timeout,
        wait_timeout=wait_timeout,
        start_deadline=now + start_timeout,
    )
    return lifecycle.for_trigger()


@pytest.mark.parametrize("api_version", ["v1"])
def test_restart_after_ready_later_than_start_timeout_goes_on_waiting(connection, api_version):
    """Item 1: the trigger saw READY, then the triggerer restarted after ``start_timeout`` had
    passed. The rebuilt trigger (from the kwargs stored at deferral) must go on waiting for the
    conversation, not fire a false ``timeout``."""
    connection.conversation_seconds = 2.5
    task_id = submit()
    first = make(lifecycle=starting_lifecycle(task_id, start_timeout=1.0, wait_timeout=30))
    stored_at_deferral = first.serialize()
    asyncio.run(run_then_cancel(first, 0.8))
    assert first.lifecycle.conversation_id  # READY was seen before the restart
    time.sleep(0.5)  # the restart happens after the start deadline
    (event,) = asyncio.run(collect(rebuild(stored_at_deferral)))
    assert event["outcome"] == "success", event
    assert connection.stats()["created"] == 1 and connection.stats()["stops"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_restart_keeps_the_conversation_deadline_absolute(connection, api_version):
    """The conversation's deadline counts from when its start task became READY, so a restart
    neither shortens nor extends it."""
    connection.conversation_seconds = 30
    task_id = submit()
    first = make(lifecycle=starting_lifecycle(task_id, start_timeout=10, wait_timeout=1.5))
    stored_at_deferral = first.serialize()
    asyncio.run(run_then_cancel(first, 0.8))
    deadline = first.lifecycle.deadline
    assert deadline is not None
    time.sleep(1.2)
    started = time.time()
    rebuilt = rebuild(stored_at_deferral)
    (event,) = asyncio.run(collect(rebuilt))
    assert event["outcome"] == "timeout"
    assert abs(rebuilt.lifecycle.deadline - deadline) < 0.3
    assert time.time() - started < 1.0  # not a fresh 1.5 s from the restart


def test_many_triggers_in_one_loop_each_get_their_own_event(connection):
    ids = [start(connection, f"Task {n} [emulator duration={0.3 + n * 0.2}]") for n in range(5)]

    async def all_of_them() -> list[dict]:
        results = await asyncio.gather(*(collect(make(conversation_id=i)) for i in ids))
        return [events[0] for events in results]

    events = asyncio.run(all_of_them())
    assert [e["conversation_id"] for e in events] == ids
    assert {e["outcome"] for e in events} == {"success"}


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_short_outage_is_ridden_out(connection, api_version, caplog, capfd):
    """Item 7: a 503 outage longer than the hook's own retries does not fail the wait."""
    connection.conversation_seconds = 1.0
    conversation_id = start(connection)
    connection.add_fault(status=503, method="GET", path="app-conversations$", times=10**6, headers={"Retry-After": "0"})

    async def outage_then_recovery() -> list[dict]:
        waiting = asyncio.ensure_future(collect(make(conversation_id=conversation_id)))
        await asyncio.sleep(1.5)
        connection.faults.clear()
        return await waiting

    (event,) = asyncio.run(outage_then_recovery())
    assert event["outcome"] == "success", event
    assert times_logged(caplog, capfd, "OpenHands is not answering") == 1  # once per failure streak


@pytest.mark.parametrize("api_version", ["v1"])
def test_an_outage_longer_than_unreachable_timeout_fails_the_wait(connection, api_version):
    conversation_id = start(connection)
    connection.add_fault(status=502, method="GET", path="app-conversations$", times=10**6, headers={"Retry-After": "0"})
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id, unreachable_timeout=0.5)))
    assert event["outcome"] == "unreachable"


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_permanent_error_fails_the_wait_at_once(connection, api_version):
    conversation_id = start(connection)
    connection.add_fault(status=403, method="GET", times=10**6, body={"error": "forbidden"})
    started = time.time()
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id)))
    assert event["outcome"] == "permanent" and "openhands_default" in event["message"]
    assert time.time() - started < 2


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_key_refused_fails_the_wait_after_unreachable_timeout_naming_the_conversation(connection, api_version):
    """Issue 29, scenario 2: a 401 is a key-rotation gap ridden out like an outage, then a failure for good."""
    conversation_id = start(connection)
    connection.rotate_key("the-rotated-key")
    started = time.time()
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id, unreachable_timeout=1)))
    assert event["outcome"] == "permanent" and "openhands_default" in event["message"]
    assert f"Conversation {conversation_id} could not be stopped (the key is refused)" in event["message"]
    assert 1 <= time.time() - started < 10


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_conversation_paused_after_it_ended_reads_as_ended(connection, api_version):
    """Item 12: pause_when_done paused it; a later wait learns from its events that it finished."""
    conversation_id = start(connection, "Quick [emulator duration=0.2]")
    time.sleep(0.6)
    OpenHandsHook().stop_conversation(conversation_id)
    (event,) = asyncio.run(collect(make(conversation_id=conversation_id, end_time=time.time() + 5)))
    assert event["outcome"] == "success" and event["status"] == "finished"


def test_needs_an_id():
    with pytest.raises(ValueError, match="conversation_id or a start_task_id"):
        make()


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_restart_long_after_the_start_deadline_reads_before_it_gives_up(connection, api_version):
    """However late the rebuild (here 10 minutes after the start deadline stored at deferral), the
    trigger first reads the start task: READY meanwhile -> it waits on the conversation, no false
    ``start_timeout`` (which would also pause the live conversation)."""
    connection.conversation_seconds = 1.0
    task_id = submit()
    time.sleep(0.6)  # READY by now, while "the triggerer was down"
    lifecycle = starting_lifecycle(task_id, start_timeout=1, wait_timeout=3600)
    lifecycle["start_deadline"] = time.time() - 600
    (event,) = asyncio.run(collect(make(lifecycle=lifecycle)))
    assert event["outcome"] == "success", event
    assert connection.stats()["stops"] == 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_event_line_the_triggerer_logs_is_short(connection):
    """The triggerer logs every event it fires by its repr (Airflow 3: ``Trigger fired event ...
    result=<repr>``, console or JSON; Airflow 2: ``Trigger <name> fired: <str>``). The lifecycle
    travels in the payload, for the task's resume, and stays out of that line: under 300 characters
    with a long final message and start options, which the payload keeps."""
    import json

    from airflow_provider_openhands.engine.state import PHASE_RUNNING

    final = "Fixed it. " + "A long account of what the agent did. " * 20
    conversation_id = start(connection, f'Fix it [emulator finish="{final}"]')
    lifecycle = Lifecycle(
        phase=PHASE_RUNNING,
        conversation_id=conversation_id,
        key="airflow-provider-openhands:openhands_default::dag:task:run:-1",
        deadline=time.time() + 20,
        options={"initial_user_msg": "Fix the README. " * 100},
    )

    async def events() -> list:
        return [event async for event in make(lifecycle=lifecycle.for_trigger()).run()]

    (event,) = asyncio.run(events())
    assert event.payload["lifecycle"]["final_message"].startswith("Fixed it.")  # the resume gets it all
    assert len(json.dumps(event.payload)) > 600
    fields = {"event": "Trigger fired event", "name": f"{conversation_id} (ID 1)", "result": event}
    lines = {"airflow 2": f"Trigger {fields['name']} fired: {event}"}
    try:  # Airflow 3 logs with structlog (Airflow 2 has none)
        import structlog
    except ImportError:
        structlog = None
    if structlog is not None:
        lines["console"] = structlog.dev.ConsoleRenderer(colors=False)(None, "info", dict(fields))
        lines["json"] = structlog.processors.JSONRenderer()(None, "info", dict(fields))
    for style, line in lines.items():
        assert len(line) < 300, (style, line)
        assert "outcome=success" in line and conversation_id in line and "final_message" not in line, (style, line)


def test_the_capacity_wait_event_line_is_short_too():
    """Its payload holds the start options (the prompt) for the next start; its logged line does not."""
    from airflow_provider_openhands.triggers.openhands import OpenHandsCapacityWaitTrigger

    lifecycle = Lifecycle(options={"initial_user_msg": "Fix the README. " * 100}).for_trigger()

    async def events() -> list:
        return [event async for event in OpenHandsCapacityWaitTrigger(wake_time=0, lifecycle=lifecycle).run()]

    (event,) = asyncio.run(events())
    assert event.payload["lifecycle"] == lifecycle
    assert repr(event) == str(event) == "TriggerEvent<outcome=wake, message=time to try again, lifecycle=...>"
