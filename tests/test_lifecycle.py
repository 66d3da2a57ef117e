"""A task's lifecycle driven through Airflow (``dag.test()``): templates, retries before READY,
capacity waits of ``@task.openhands``, clears, start timeouts, execution_timeout, permanent errors,
and the sensor's modes. Issue 9, items 2-5, 10, 11, 13 and 14."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from tests.test_concurrency import occupy_slots
from tests.test_dag_runs import load_dag, run_dag, task_states

DAGS = __import__("tests.conftest", fromlist=["REPO"]).REPO / "tests" / "dags" / "openhands_test_dags.py"
pytestmark = [pytest.mark.airflow_e2e, pytest.mark.parametrize("api_version", ["v1"])]


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    return tmp_path


@pytest.fixture
def short_grace(monkeypatch):
    """A task that gives up on a start waits this long for its sandbox (30 s in production)."""
    monkeypatch.setattr("airflow_provider_openhands.engine.state.START_STOP_GRACE", 1.0)
    monkeypatch.setattr("airflow_provider_openhands.triggers.openhands.START_STOP_GRACE", 1.0)


def tries(dag_run, task_id: str = "run") -> int:
    (ti,) = [t for t in dag_run.get_task_instances() if t.task_id == task_id]
    return ti.try_number


def test_a_returned_text_with_braces_is_sent_as_written(airflow_db, connection, api_version, results):
    """Item 2: the function's return value is data. Rendering it again would send the API key."""
    dag_run = run_dag("oh_test_decorated_braces")
    assert set(task_states(dag_run).values()) == {"success"}
    (post,) = connection.requests_to("POST", "app-conversations$")
    text = post["body"]["initial_message"]["content"][0]["text"]
    assert text == "Explain {{ conn.openhands_default.password }} and {% raw %}"
    assert connection.api_key not in json.dumps(post["body"])


def test_a_retry_before_ready_waits_on_the_first_start(airflow_db, connection, api_version, results):
    """Item 3: the first try's worker is lost while its start task works; the retry finds that
    start task (start-tasks/search: the conversation does not exist yet) instead of starting again."""
    connection.start_seconds = 2.5
    dag_run = run_dag("oh_test_retry_before_ready")
    assert task_states(dag_run) == {"run": "success"} and tries(dag_run) == 2
    assert connection.stats()["created"] == 1
    assert len(connection.requests_to("POST", "app-conversations$")) == 1
    assert connection.requests_to("GET", "start-tasks/search")


def test_a_decorated_task_starts_after_a_capacity_wait(airflow_db, connection, api_version, results):
    """Item 4: deferred for capacity, the task resumes with the options its function returned."""
    connection.concurrency_limit = 2
    releaser = occupy_slots(connection, 2, release_after=0.5)
    dag_run = run_dag("oh_test_decorated_capacity")
    releaser.join()
    assert task_states(dag_run) == {"agent_options": "success"}
    assert connection.stats()["refused_for_capacity"] >= 1
    mine = [c for c in connection.conversations.values() if c.repository == "acme/website"]
    assert len(mine) == 1 and mine[0].message == "Upgrade the dependencies" and mine[0].title


def test_airflow_s_clear_starts_a_new_series_and_a_retry_does_not(airflow_db, connection, api_version, results):
    """Item 13: a retry after a lost worker reconnects, a clear by a person re-runs. The task tells
    them apart by Airflow's own bookkeeping: a clear (Airflow's ``clear_task_instances``, as the UI
    and CLI call it) raises ``max_tries``, a retry does not. Checked against the real functions."""
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.utils.session import create_session

    from airflow_provider_openhands.engine.state import series_start

    dag_run = run_dag("oh_test_retry_after_crash")  # retries=1: the first try's answer is lost below
    connection.add_fault(method="POST", path="app-conversations$", reset=True, after=True)
    dag_run = run_dag("oh_test_retry_after_crash")
    with create_session() as session:
        (ti,) = session.query(TaskInstance).filter_by(run_id=dag_run.run_id, task_id="run").all()
        assert ti.try_number == 2 and series_start(ti.try_number, ti.max_tries, 1) == 1  # the retry: same series
        import inspect

        if "dag" in inspect.signature(clear_task_instances).parameters:  # Airflow 2 reads the task's retries there
            clear_task_instances([ti], session, dag=load_dag(DAGS, "oh_test_retry_after_crash"))
        else:
            clear_task_instances([ti], session)
        session.flush()
        next_try = ti.try_number + 1
        assert series_start(next_try, ti.max_tries, 1) == next_try  # after a clear: a new series


@pytest.mark.parametrize("mode", ["deferrable", "worker"])
def test_a_start_timeout_fails_once_and_the_same_way_in_both_modes(
    airflow_db, connection, api_version, results, mode, short_grace
):
    """Item 10: not READY within start_timeout -> failed without retry (retries=1), both modes."""
    connection.start_seconds = 30
    dag_run = run_dag(f"oh_test_start_timeout_{mode}")
    assert task_states(dag_run) == {"run": "failed"} and tries(dag_run) == 1
    assert connection.stats()["created"] == 1


def test_execution_timeout_is_folded_into_the_deadline(airflow_db, connection, api_version, results, capfd):
    """Item 11: the wait ends before Airflow's execution_timeout would, and stops the conversation."""
    started = time.monotonic()
    dag_run = run_dag("oh_test_execution_timeout")
    assert task_states(dag_run) == {"run": "failed"}
    assert time.monotonic() - started < 30
    assert connection.stats()["stops"] == 1
    out, err = capfd.readouterr()
    assert "execution_timeout" in out + err


def test_the_daily_quota_fails_once_naming_the_quota(airflow_db, connection, api_version, results, capfd):
    """Item 14: DAILY_SANDBOX_LIMIT_REACHED is no capacity wait, and retries cannot help."""
    connection.daily_sandbox_limit = 0
    dag_run = run_dag("oh_test_permanent_error")
    assert task_states(dag_run) == {"run": "failed"} and tries(dag_run) == 1
    out, err = capfd.readouterr()
    assert "DAILY_SANDBOX_LIMIT_REACHED" in out + err and "midnight UTC" in out + err


def test_a_wrong_key_fails_once(airflow_db, connection, api_version, results):
    """401 is permanent: retries=2, one try; the task reads its connection again once (a rotated
    key) and asks once more, then fails."""
    connection.api_key = "another-key"
    dag_run = run_dag("oh_test_permanent_error")
    assert task_states(dag_run) == {"run": "failed"} and tries(dag_run) == 1
    assert len(connection.requests) == 2


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_stops_the_conversation_at_its_timeout_in_every_mode(airflow_db, connection, api_version, results, mode):
    conversation_id = OpenHandsHook().start_conversation("Long [emulator duration=60]", "acme/web", poll_interval=0.05)
    dag_run = run_dag(f"oh_test_sensor_{mode}", {"conversation_id": conversation_id})
    assert task_states(dag_run) == {"wait": "failed"}
    assert connection.stats()["stops"] == 1


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_soft_fail_skips_a_failed_conversation_in_every_mode(airflow_db, connection, api_version, results, mode):
    conversation_id = OpenHandsHook().start_conversation(
        "Fail [emulator outcome=error duration=0.5]", "acme/web", poll_interval=0.05
    )
    time.sleep(0.1)
    dag_run = run_dag(f"oh_test_sensor_{mode}_soft", {"conversation_id": conversation_id})
    assert task_states(dag_run) == {"wait": "skipped"}


def test_a_kill_during_the_start_pauses_the_start_tasks_sandbox(connection, api_version):
    """Item 10: killed while its start task works, the task stops the sandbox once it exists."""
    from airflow_provider_openhands.api.options import StartOptions
    from airflow_provider_openhands.engine.state import PHASE_STARTING, Lifecycle
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
    from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

    connection.start_seconds = 0.8
    hook = OpenHandsHook()
    first = hook.submit_conversation(StartOptions("Long [emulator duration=60]", "acme/web"))["start_task"]["id"]
    second = hook.submit_conversation(StartOptions("Long [emulator duration=60]", "acme/web"))["start_task"]["id"]
    operator = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="x", repository="acme/web", poll_interval=0.1
    )
    operator._lifecycle = Lifecycle(phase=PHASE_STARTING, start_task_id=first)  # what execute() holds then
    operator.on_kill()
    trigger = OpenHandsConversationTrigger(
        openhands_conn_id="openhands_default",
        lifecycle=Lifecycle(phase=PHASE_STARTING, start_task_id=second, start_deadline=time.time() + 60).to_dict(),
        poll_interval=0.1,
        cancel_on_kill=True,
    )
    asyncio.run(trigger.on_kill())
    assert connection.stats()["stops"] == 2
    assert {c.paused_at is not None for c in connection.conversations.values()} == {True}


def test_start_tasks_failing_for_capacity_spend_their_ids_within_one_capacity_timeout(
    airflow_db, connection, api_version, results, capfd
):
    """Item 5: each attempt after a start task failed for capacity asks for a new id (re-sending the
    spent one would meet that failed start), and ``capacity_timeout`` counts once for the task."""
    started = time.monotonic()
    dag_run = run_dag("oh_test_capacity_start_task")
    assert task_states(dag_run) == {"run": "failed"} and tries(dag_run) == 1
    assert time.monotonic() - started < 20
    asked = [r["body"]["conversation_id"] for r in connection.requests_to("POST", "app-conversations$")]
    assert len(asked) >= 2 and len(set(asked)) == len(asked)
    out, err = capfd.readouterr()
    assert "capacity_timeout" in out + err


def test_a_permanent_error_met_in_the_triggerer_is_not_retried(airflow_db, connection, api_version):
    """The trigger's error event says "permanent": the task fails once, as in the worker. (A 403: a
    401 while waiting is a key-rotation gap, ridden out first: tests/test_ways_out_auth.py.)"""
    connection.add_fault(status=403, method="GET", path="app-conversations$", times=10**6, body={"error": "forbidden"})
    dag_run = run_dag("oh_test_permanent_error_deferred")
    assert task_states(dag_run) == {"run": "failed"} and tries(dag_run) == 1
