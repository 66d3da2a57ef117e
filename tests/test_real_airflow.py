"""The nightly fan-out in a real Airflow: scheduler, triggerer, DAG processor, pool, LocalExecutor.

``dag.test()`` runs tasks one at a time and triggers inline; this proves the rest: that the waits
really run in the triggerer, that the ``openhands`` pool caps a fan-out of 25 at the account's
limit of 10, and that an example DAG works as a user would deploy it.
"""

from __future__ import annotations

import time

import pytest

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import LocalAirflow

pytestmark = pytest.mark.airflow_e2e

REPOSITORIES = [f"acme/repo-{n:02d}" for n in range(25)]


def test_nightly_fan_out_of_25_with_a_limit_of_10():
    # 8 s conversations: long enough that a trigger rarely fires before its deferring worker has
    # exited (see the race below), short enough for three waves of 10 in well under two minutes.
    with Emulator(concurrency_limit=10, conversation_seconds=8, start_seconds=0.5) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            pool_slots=10,
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "1"},
            log=lambda line: print(f"[e2e] {line}", flush=True),
        )
        try:
            airflow.start()
            airflow.wait_for_dag("openhands_nightly_maintenance")
            started = time.monotonic()
            run_id = airflow.trigger("openhands_nightly_maintenance", {"repositories": REPOSITORIES})
            state = airflow.wait_for_run("openhands_nightly_maintenance", run_id, timeout=600)
            elapsed = time.monotonic() - started
            tasks = airflow.task_states("openhands_nightly_maintenance", run_id)
            retried = airflow.query(
                "SELECT count(*) FROM task_instance WHERE run_id = ? AND task_id = 'maintain' AND try_number > 1",
                run_id,
            )[0][0]
            report = airflow.xcom("openhands_nightly_maintenance", run_id, "report")
        finally:
            airflow.stop()
        stats = emulator.stats()
        deferred = {key for key in airflow.deferred_seen if key[0] == "maintain"}
        print(
            f"\n[e2e] run {state} in {elapsed:.0f}s; emulator {stats}; "
            f"maintain tasks seen deferred: {len(deferred)}; retried: {retried}"
        )
        if state != "success":
            print(airflow.standalone_log(8000))
        airflow.cleanup()

    assert state == "success", tasks
    assert [t for t in tasks if t[2] != "success"] == []
    assert len([t for t in tasks if t[0] == "maintain"]) == 25
    assert len(deferred) == 25  # every wait ran in the triggerer
    assert stats["max_alive"] <= 10  # the pool kept the fan-out within the account's limit
    assert stats["created"] == 25
    # The pool keeps starts within the limit. The one exception is Airflow's own race (3.3): a task
    # whose trigger fired before its worker exited is failed by the scheduler before it could pause
    # its finished conversation; that sandbox holds a slot until the retry (which reconnects to the
    # same conversation) pauses it, so one start may wait for capacity meanwhile, and then succeed.
    # (A refusal counts each start attempt of a task waiting for capacity, so it is no task count.)
    if retried == 0:
        assert stats["refused_for_capacity"] == 0
    assert sorted(row["repository"] for row in report) == REPOSITORIES
    assert {row["status"] for row in report} == {"finished"}
