"""The shared poller on its own: independent batches, the request budget, backoff, key rotation, context.

Each test talks to the poller through its public interface (``for_connection``, ``subscribe``,
``next``), as the trigger does, against the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import time

import pytest

from airflow_provider_openhands.api.options import StartOptions
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsAuthError,
    OpenHandsConfigError,
    OpenHandsTransientError,
)
from airflow_provider_openhands.hooks.budget import RequestBudget
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.hooks.transport import ConnectionSettings
from airflow_provider_openhands.testing.emulator import max_in_window
from airflow_provider_openhands.testing.pytest_plugin import connection_json
from airflow_provider_openhands.triggers import poller as poller_module
from airflow_provider_openhands.triggers.poller import CONVERSATION, START_TASK, SharedPoller

CONN = "openhands_default"
READS = r"^/api/v1/app-conversations$"


def use_connection(monkeypatch, emulator, api_version: str = "v1", *, password: str | None = None, **extra) -> None:
    if password is None:
        monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, api_version, **extra))
    else:
        conn = {"conn_type": "openhands", "host": emulator.url, "password": password}
        conn["extra"] = {"api_version": api_version, **extra}
        monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(conn))


def start(message: str = "Fix it [emulator duration=600]") -> str:
    return OpenHandsHook().start_conversation(message, "acme/app", poll_interval=0.05)


def api_times(emulator) -> list[float]:
    """When the emulator received each API request (control paths left out)."""
    return sorted(r["at"] for r in list(emulator.requests) if r["path"].startswith("/api/"))


async def answers(subscription, count: int, timeout: float = 10) -> list:
    """The next ``count`` answers, each an answer or the exception ``next()`` raised."""
    found = []
    for _ in range(count):
        try:
            found.append(await asyncio.wait_for(subscription.next(), timeout))
        except OpenHandsApiError as exc:
            found.append(exc)
    return found


# -- A: independent batches ----------------------------------------------------------------------


def test_a_slow_start_task_poll_does_not_delay_an_ending_conversation(emulator, monkeypatch):
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start("Quick [emulator duration=1.5]")
    emulator.start_seconds = 60
    task_id = OpenHandsHook().submit_conversation(StartOptions("Slow start", "acme/app"))["start_task"]["id"]
    emulator.add_fault(method="GET", path="start-tasks", delay=6, passthrough=True)
    interval = 0.2

    async def scenario() -> float:
        poller = SharedPoller.for_connection(CONN)
        async with (
            poller.subscribe(START_TASK, task_id, interval),
            poller.subscribe(CONVERSATION, conversation_id, interval) as conversation,
        ):
            while True:
                state = await asyncio.wait_for(conversation.next(), 10)
                if state["status"] == "finished":
                    return time.time()

    heard = asyncio.run(scenario())
    assert heard - emulator.conversation(conversation_id).finished_at() < interval + 0.5


def test_an_id_in_flight_is_not_asked_for_again_until_its_batch_returns(emulator, monkeypatch):
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()
    emulator.start_seconds = 60
    task_id = OpenHandsHook().submit_conversation(StartOptions("Slow start", "acme/app"))["start_task"]["id"]
    emulator.requests.clear()
    emulator.add_fault(method="GET", path="start-tasks", delay=1.0, passthrough=True)

    async def scenario() -> None:
        poller = SharedPoller.for_connection(CONN)
        async with (
            poller.subscribe(START_TASK, task_id, 0.05) as task,
            poller.subscribe(CONVERSATION, conversation_id, 0.05),
        ):
            assert (await asyncio.wait_for(task.next(), 5))["status"] != "READY"  # the slow answer came
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    # one slow start-task request held its id; the conversation kept its own cadence meanwhile
    assert len(emulator.requests_to("GET", "start-tasks")) <= 1 + 0.3 / 0.05 + 1
    assert len(emulator.requests_to("GET", "start-tasks")) < len(emulator.requests_to("GET", READS)) / 2
    assert len(emulator.requests_to("GET", READS)) >= 1.0 / 0.05 / 2


# -- B: the request budget -------------------------------------------------------------------------


def test_the_budget_holds_whatever_the_subscribers_ask_for(emulator, monkeypatch):
    """5 requests per (scaled-down) 6 s window, with tiny intervals, two kinds and failures."""
    monkeypatch.setattr(RequestBudget, "window", 6.0)
    monkeypatch.setattr(SharedPoller, "backoff_initial", 0.01, raising=False)
    use_connection(monkeypatch, emulator)  # the setup's own requests are not the poller's to pace
    conversations = [start() for _ in range(3)]
    emulator.start_seconds = 60
    tasks = [OpenHandsHook().submit_conversation(StartOptions("Wait", "acme/app"))["start_task"]["id"]]
    use_connection(monkeypatch, emulator, max_requests_per_minute=5, max_retries=5)
    emulator.requests.clear()
    emulator.add_fault(method="GET", path=READS, status=502, times=2)  # backoff and retries count too

    async def scenario() -> None:
        poller = SharedPoller.for_connection(CONN)
        async with all_of(
            [poller.subscribe(CONVERSATION, c, 0.01) for c in conversations]
            + [poller.subscribe(START_TASK, t, 0.001) for t in tasks]
        ):
            await asyncio.sleep(9)

    asyncio.run(scenario())
    times = api_times(emulator)
    assert max_in_window(times, 6.0) <= 5, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 6.0 / 5 * 0.9, gaps  # paced, not in bursts
    assert len(times) >= 7  # and the budget is used


@contextlib.asynccontextmanager
async def all_of(managers):
    async with contextlib.AsyncExitStack() as exits:
        yield [await exits.enter_async_context(m) for m in managers]


def test_max_requests_per_minute_is_checked():
    settings = ConnectionSettings.from_connection("oh", None, None, "key", {})
    assert settings.max_requests_per_minute == 60
    ok = ConnectionSettings.from_connection("oh", None, None, "key", {"max_requests_per_minute": 30})
    assert ok.max_requests_per_minute == 30
    for bad in (0, -1, 1.5, "60", True, None):
        with pytest.raises(OpenHandsConfigError, match=r"'oh'.*max_requests_per_minute"):
            ConnectionSettings.from_connection("oh", None, None, "key", {"max_requests_per_minute": bad})


# -- C: transient and permanent failures -----------------------------------------------------------


def test_transient_failures_back_off_and_reach_the_subscriber_each_round(emulator, monkeypatch):
    monkeypatch.setattr(SharedPoller, "backoff_initial", 0.2, raising=False)
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000, max_retries=5)
    conversation_id = start()
    emulator.requests.clear()
    emulator.add_fault(method="GET", path=READS, status=503, times=3)

    async def scenario() -> list:
        async with SharedPoller.for_connection(CONN).subscribe(CONVERSATION, conversation_id, 0.02) as subscription:
            return await answers(subscription, 4)

    got = asyncio.run(scenario())
    assert [type(a) for a in got[:3]] == [OpenHandsTransientError] * 3  # the streak, one per failed round
    assert isinstance(got[3], dict)
    reads = [r["at"] for r in emulator.requests_to("GET", READS)]
    assert len(reads) == 4  # no hidden retries behind the budget's back
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # 0.2, 0.4, 0.8 jittered by half


def test_retry_after_is_honoured(emulator, monkeypatch):
    monkeypatch.setattr(SharedPoller, "backoff_initial", 0.01, raising=False)
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()
    emulator.requests.clear()
    emulator.add_fault(method="GET", path=READS, status=429, headers={"Retry-After": "1"}, body={"error": "slow"})

    async def scenario() -> list:
        async with SharedPoller.for_connection(CONN).subscribe(CONVERSATION, conversation_id, 0.02) as subscription:
            return await answers(subscription, 2)

    got = asyncio.run(scenario())
    assert isinstance(got[0], OpenHandsTransientError) and got[0].retry_after == 1
    assert isinstance(got[1], dict)
    first, second = (r["at"] for r in emulator.requests_to("GET", READS)[:2])
    assert second - first >= 0.95


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 422, "body": {"detail": [{"msg": "bad id"}]}},
        {"status": 404, "body": {"detail": "Not Found"}},
        {"status": 403, "body": {"error": "unverified"}},
        {"status": 200, "raw": '{"items": []}'},
    ],
    ids=["422", "404", "403", "bad shape"],
)
def test_permanent_errors_are_delivered(emulator, monkeypatch, fault):
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()
    emulator.add_fault(method="GET", path=READS, **fault)

    async def scenario() -> list:
        async with SharedPoller.for_connection(CONN).subscribe(CONVERSATION, conversation_id, 0.02) as subscription:
            return await answers(subscription, 1)

    (got,) = asyncio.run(scenario())
    assert isinstance(got, OpenHandsApiError) and not isinstance(got, OpenHandsTransientError)


# -- D: a rotated key ------------------------------------------------------------------------------


def test_a_rotated_key_is_picked_up_by_the_same_poller(emulator, monkeypatch):
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()

    async def scenario() -> list:
        poller = SharedPoller.for_connection(CONN)
        async with poller.subscribe(CONVERSATION, conversation_id, 0.05) as subscription:
            before = await answers(subscription, 2)
            use_connection(monkeypatch, emulator, password="rotated-key", max_requests_per_minute=6000)
            emulator.api_key = "rotated-key"
            after = await answers(subscription, 5)
            assert SharedPoller.for_connection(CONN) is poller
            return before + after

    got = asyncio.run(scenario())
    assert all(isinstance(a, dict) for a in got), got
    assert any(r.get("status") == 401 for r in emulator.requests)  # the old key was refused on the way


def test_an_unchanged_refused_key_is_delivered_as_an_auth_error(emulator, monkeypatch):
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()
    emulator.api_key = "someone-revoked-it"

    async def scenario() -> list:
        async with SharedPoller.for_connection(CONN).subscribe(CONVERSATION, conversation_id, 0.05) as subscription:
            return await answers(subscription, 1)

    (got,) = asyncio.run(scenario())
    assert isinstance(got, OpenHandsAuthError)


def test_the_connection_is_read_again_periodically(emulator, monkeypatch):
    monkeypatch.setattr(poller_module, "SETTINGS_REFRESH_SECONDS", 0.3, raising=False)
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()

    async def scenario() -> int:
        poller = SharedPoller.for_connection(CONN)
        async with poller.subscribe(CONVERSATION, conversation_id, 0.05) as subscription:
            await answers(subscription, 1)
            use_connection(monkeypatch, emulator, max_requests_per_minute=1234)
            await asyncio.sleep(0.8)
            await answers(subscription, 1)
            return poller.budget.per_window

    assert asyncio.run(scenario()) == 1234


# -- E: the poller's own context and logs ----------------------------------------------------------


def test_the_poller_task_does_not_run_in_the_first_subscribers_context(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    use_connection(monkeypatch, emulator, max_requests_per_minute=6000)
    conversation_id = start()
    emulator.add_fault(method="GET", path=READS, status=503, times=2)
    trigger_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trigger_id", default=None)
    seen: list[str | None] = []
    read = OpenHandsHook.asettings

    async def spy(self, *args, **kwargs):
        seen.append(trigger_id.get())  # runs inside the poller's task
        return await read(self, *args, **kwargs)

    monkeypatch.setattr(OpenHandsHook, "asettings", spy)

    async def first_trigger() -> None:
        trigger_id.set("trigger-1")
        async with SharedPoller.for_connection(CONN).subscribe(CONVERSATION, conversation_id, 0.02) as sub:
            await answers(sub, 3)

    asyncio.run(first_trigger())
    assert seen and seen == [None] * len(seen)
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("airflow_provider_openhands.triggers.poller") and r.levelno >= logging.INFO
    ]
    assert not [m for m in noisy if conversation_id in m], noisy
