"""Issue 29, scenario 2: a key-rotation gap (the old key revoked in OpenHands before the Airflow
connection holds the new one), against the emulator's :meth:`~Emulator.rotate_key`.

Before: two 401s during the wait, then a permanent failure that Airflow does not retry; the agent
kept running; once the connection was fixed, a clear started a second conversation beside the
first. Now a wait's 401 reads the connection again each poll within ``unreachable_timeout`` (one
patience for an outage and a refused key); past it the task fails naming the conversation it could
not stop, and a clear waits on that conversation instead of starting another.

``dag.test()`` drives the gap the connection fixed in time (worker and deferrable); the failure and
the clear go through ``tests/harness/airflow_task.py`` (Airflow 3.3's task runner, its task state
store kept across a clear, as Airflow keeps it), which ``dag.test()`` cannot clear.
"""

from __future__ import annotations

import time

import pytest

from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.harness.airflow_task import AirflowTask
from tests.test_defects import AIRFLOW_3, dag, dag_test, errors, in_background, log, polled, start_operator, states
from tests.test_defects import xcom as xcom_of

pytestmark = pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's dag bundles and task runner")


def use_connection(monkeypatch: pytest.MonkeyPatch, emulator) -> None:
    """The Airflow connection holds the key the emulator takes now (an env var, as the fixtures set it)."""
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, max_requests_per_minute=100_000))


@pytest.fixture
def service(emulator, monkeypatch: pytest.MonkeyPatch):
    use_connection(monkeypatch, emulator)
    return emulator


def refused(emulator) -> int:
    return sum(1 for r in emulator.requests if r.get("status") == 401)


def revoke_once_polled(emulator, monkeypatch, fix_after: float | None):
    """In the background: once the task polls, the key is rotated in OpenHands; ``fix_after`` seconds
    later (None: never) the Airflow connection gets the new key."""

    def rotate() -> None:
        give_up = time.time() + 30
        while not polled(emulator) and time.time() < give_up:
            time.sleep(0.02)
        emulator.rotate_key("the-rotated-key")
        if fix_after is not None:
            time.sleep(fix_after)
            use_connection(monkeypatch, emulator)

    return in_background(rotate)


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_key_rotation_gap_inside_unreachable_timeout_is_ridden_out(
    airflow_db, service, monkeypatch, capfd, deferrable
):
    rotating = revoke_once_polled(service, monkeypatch, fix_after=3)
    with dag(f"oh_ways_key_gap_{'deferrable' if deferrable else 'worker'}") as the_dag:
        start_operator(
            initial_user_msg='Fix the README [emulator duration=8 finish="Done across the rotation"]',
            deferrable=deferrable,
            unreachable_timeout=60,
        )
    dag_run = dag_test(the_dag)
    rotating.join(10)
    text = log(capfd)
    assert states(dag_run) == {"run": "success"}, errors(text)
    assert refused(service) >= 3, "the scenario: the old key was refused during the wait"
    assert xcom_of(dag_run, "run")["final_message"] == "Done across the rotation"
    assert service.stats()["created"] == 1
    assert "reading the connection again each poll" in text


def test_a_key_refused_past_the_window_names_what_it_could_not_stop_and_a_clear_waits_on_it(
    service, monkeypatch, capfd
):
    rotating = revoke_once_polled(service, monkeypatch, fix_after=None)
    with dag("oh_ways_key_refused"):
        operator = start_operator(
            initial_user_msg='Fix the README [emulator duration=12 finish="The first agent finished"]',
            deferrable=False,
            unreachable_timeout=2,
            retries=1,
        )
    task = AirflowTask(operator)
    first = task.run(timeout=40)
    rotating.join(5)
    cid = task.ti.xcom()["conversation_id"]
    assert first.state == "failed", first  # not retried: the same key would be refused again
    said = f"Conversation {cid} could not be stopped (the key is refused)"
    assert said in str(first.error), first.error
    text = log(capfd)
    assert f"while waiting on {cid}: reading the connection again" in text  # the log names it (Airflow logs the error)
    assert service.alive_count() == 1, "the scenario: the agent runs on, the task could not stop it"

    use_connection(monkeypatch, service)  # the connection is fixed, then a person clears the task
    cleared = task.clear(timeout=40)
    assert cleared.state == "success", cleared
    assert cleared.value["final_message"] == "The first agent finished"
    assert service.stats()["created"] == 1, "a clear started a second conversation beside the first"
    assert "waiting on it instead of starting another" in log(capfd)
