"""Coalesced polling: the OpenHands triggers of one event loop share one poller per connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

INTERVAL = 0.2


def make(conversation_id: str, seconds: float = 20, **kwargs) -> OpenHandsConversationTrigger:
    return OpenHandsConversationTrigger(
        openhands_conn_id="openhands_default",
        conversation_id=conversation_id,
        poll_interval=INTERVAL,
        end_time=time.time() + seconds,
        **kwargs,
    )


async def first_event(trigger: OpenHandsConversationTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def start_many(count: int, outcome_of=lambda n: "finished") -> list[str]:
    hook = OpenHandsHook()
    return [
        hook.start_conversation(
            f"Task {n} [emulator outcome={outcome_of(n)} duration={0.5 + 0.1 * n}]", "acme/app", poll_interval=0.05
        )
        for n in range(count)
    ]


def reads(emulator) -> list[dict]:
    return emulator.requests_to("GET", r"^/api/v1/app-conversations$")


@pytest.mark.parametrize("api_version", ["v1"])
def test_one_batched_request_per_interval_for_all_triggers(connection, api_version):
    connection.concurrency_limit = 50
    ids = start_many(12, outcome_of=lambda n: "error" if n % 4 == 0 else "finished")
    connection.requests.clear()
    started = time.monotonic()

    async def all_of_them() -> list[dict]:
        return await asyncio.gather(*(first_event(make(i)) for i in ids))

    events = asyncio.run(all_of_them())
    elapsed = time.monotonic() - started
    # each trigger got its own answer
    assert [e["conversation_id"] for e in events] == ids
    assert [e["outcome"] for e in events] == ["failure" if n % 4 == 0 else "success" for n in range(12)]
    rounds = elapsed / INTERVAL + 2
    assert len(reads(connection)) <= rounds, (len(reads(connection)), rounds)
    assert max(len(r["query"]["ids"]) for r in reads(connection)) == 12  # one request held them all


@pytest.mark.parametrize("api_version", ["v1"])
def test_without_coalescing_each_trigger_polls_alone(connection, api_version):
    ids = start_many(4)
    connection.requests.clear()

    async def all_of_them() -> list[dict]:
        return await asyncio.gather(*(first_event(make(i, coalesce=False)) for i in ids))

    events = asyncio.run(all_of_them())
    assert {e["outcome"] for e in events} == {"success"}
    assert all(len(r["query"]["ids"]) == 1 for r in reads(connection))


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_cancelled_trigger_leaves_the_batch_at_once(connection, api_version):
    hook = OpenHandsHook()
    long_id = hook.start_conversation("Long [emulator duration=600]", "acme/app", poll_interval=0.05)
    short_id = hook.start_conversation("Short [emulator duration=2]", "acme/app", poll_interval=0.05)

    async def scenario() -> dict:
        leaving = asyncio.ensure_future(first_event(make(long_id)))
        staying = asyncio.ensure_future(first_event(make(short_id)))
        await asyncio.sleep(3 * INTERVAL)
        leaving.cancel()
        connection.requests.clear()
        return await staying

    event = asyncio.run(scenario())
    assert event["outcome"] == "success"
    asked = [r["query"]["ids"] for r in reads(connection)]
    assert asked and all(ids == [short_id] for ids in asked)


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_slow_batch_does_not_stall_deadlines(connection, api_version):
    conversation_id = OpenHandsHook().start_conversation("Long [emulator duration=600]", "acme/app", poll_interval=0.05)
    connection.requests.clear()

    async def scenario() -> dict:
        waiting = asyncio.ensure_future(first_event(make(conversation_id, seconds=1.5)))
        while not reads(connection):  # the first answer came quickly; the next poll hangs
            await asyncio.sleep(0.01)
        connection.add_fault(method="GET", path=r"app-conversations$", delay=4, passthrough=True, times=1)
        return await waiting

    started = time.monotonic()
    event = asyncio.run(scenario())
    assert event["outcome"] == "timeout"
    assert time.monotonic() - started < 3  # the deadline, not the slow request, ended the wait


@pytest.mark.parametrize("api_version", ["v0"])
def test_v0_polls_each_conversation_over_one_client(connection, api_version):
    ids = start_many(3)

    async def all_of_them() -> list[dict]:
        return await asyncio.gather(*(first_event(make(i)) for i in ids))

    events = asyncio.run(all_of_them())
    assert {e["outcome"] for e in events} == {"success"}
    # each conversation was read on its own, with its events (the agent's own state decides on V0)
    reads = connection.requests_to("GET", r"^/api/conversations/[^/]+$")
    assert {r["path"].rsplit("/", 1)[1] for r in reads} == set(ids)
    events_read = connection.requests_to("GET", r"^/api/conversations/[^/]+/events$")
    assert {r["path"].split("/")[3] for r in events_read} == set(ids)


def test_an_unreadable_connection_fails_the_triggers_at_once(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", '{"conn_type": "openhands", "password": ""}')
    started = time.monotonic()
    event = asyncio.run(first_event(make("a" * 32, seconds=30)))
    assert event["outcome"] == "permanent" and "no API key" in event["message"]
    assert time.monotonic() - started < 5  # not at the 30 s deadline
