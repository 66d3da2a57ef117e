"""Concurrency cap, no duplicate conversations, cancellation: the figures of the concurrency issue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger
from tests.test_dag_runs import run_dag, task_states

pytestmark = pytest.mark.parametrize("api_version", ["v1"])


def occupy_slots(emulator, count: int, release_after: float) -> threading.Thread:
    """Other pipelines hold ``count`` slots until the DAG has been refused one, then free them."""
    hook = OpenHandsHook()
    foreign = [hook.start_conversation(f"Other team {n} [emulator duration=600]", "other/repo") for n in range(count)]

    def release() -> None:
        deadline = time.time() + 60
        while emulator.refused_for_capacity == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(release_after)
        for conversation_id in foreign:
            hook.stop_conversation(conversation_id)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_fan_out_of_25_never_trips_the_limit(airflow_db, connection, api_version):
    connection.concurrency_limit = 10
    releaser = occupy_slots(connection, 10, release_after=1.5)
    dag_run = run_dag("oh_test_fan_out")
    releaser.join()
    states = task_states(dag_run)
    assert states == {"run": "success"}, states
    mapped = [ti for ti in dag_run.get_task_instances() if ti.task_id == "run"]
    assert len(mapped) == 25 and all(str(getattr(t.state, "value", t.state)) == "success" for t in mapped)
    stats = connection.stats()
    print(f"\nfan-out figures: {stats}")
    assert stats["max_alive"] <= 10
    assert stats["created"] == 25 + 10
    assert stats["refused_for_capacity"] >= 1  # the first start had to wait for a slot ...
    assert stats["alive"] == 0  # ... and every finished conversation gave its slot back


def test_retry_after_a_crash_reconnects_instead_of_starting_again(airflow_db, connection, api_version):
    # The POST reaches the service, which starts the conversation, but the answer is lost: the task
    # fails as if the worker had crashed before pushing XCom, and Airflow retries it.
    connection.add_fault(method="POST", path="app-conversations$", reset=True, after=True)
    dag_run = run_dag("oh_test_retry_after_crash")
    assert task_states(dag_run) == {"run": "success"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 2
    assert connection.stats()["created"] == 1
    assert len(connection.requests_to("POST", "app-conversations$")) == 1


def test_timeout_stops_the_conversation(airflow_db, connection, api_version):
    dag_run = run_dag("oh_test_timeout")
    assert task_states(dag_run) == {"run": "failed"}
    (conversation,) = connection.conversations.values()
    assert conversation.paused_at is not None
    assert connection.stats()["stops"] == 1


def test_trigger_on_kill_stops_but_a_restart_does_not(connection, api_version):
    hook = OpenHandsHook()
    conversation_id = hook.start_conversation("Long [emulator duration=600]", "acme/web", poll_interval=0.05)
    trigger = OpenHandsConversationTrigger(
        openhands_conn_id="openhands_default",
        conversation_id=conversation_id,
        end_time=time.time() + 60,
        poll_interval=0.05,
        cancel_on_kill=True,
    )

    async def run_then_restart() -> None:
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.2)
        task.cancel()  # what a triggerer shutdown does; cleanup() runs, on_kill() does not
        with pytest.raises(asyncio.CancelledError):
            await task
        await trigger.cleanup()

    asyncio.run(run_then_restart())
    assert connection.stats()["stops"] == 0
    asyncio.run(trigger.on_kill())  # a user marked the deferred task failed (Airflow >= 3.3)
    assert connection.stats()["stops"] == 1
    assert hook.get_conversation(conversation_id)["status"] == "paused"


def test_worker_on_kill_stops_the_conversation(connection, api_version):
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    hook = OpenHandsHook()
    conversation_id = hook.start_conversation("Long [emulator duration=600]", "acme/web", poll_interval=0.05)
    from airflow_provider_openhands.engine.state import PHASE_RUNNING, Lifecycle

    operator = OpenHandsStartConversationOperator(task_id="t", initial_user_msg="x", repository="acme/web")
    # what execute() holds once the conversation exists
    operator._lifecycle = Lifecycle(phase=PHASE_RUNNING, conversation_id=conversation_id)
    operator.on_kill()
    assert connection.stats()["stops"] == 1
    operator.cancel_on_kill = False
    connection.reset()
    operator.on_kill()
    assert connection.requests == []


def test_retry_after_the_end_reads_the_paused_conversation(airflow_db, connection, api_version, tmp_path, monkeypatch):
    """The first try finished and paused the sandbox (pause_when_done), then its worker was lost:
    the retry must find that conversation, learn from its events that it had finished (no resume:
    a resume could itself hit the concurrency limit), and succeed."""
    import json

    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    dag_run = run_dag("oh_test_retry_after_the_end")
    assert task_states(dag_run) == {"run": "success", "record_state": "success"}
    state = json.loads((tmp_path / "oh_test_retry_after_the_end-state.json").read_text())
    assert state["status"] == "finished"
    stats = connection.stats()
    assert stats["created"] == 1 and stats["resumes"] == 0
    assert stats["alive"] == 0
