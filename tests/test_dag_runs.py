"""Whole DAG runs in a real Airflow with dag.test(): tasks, XCom, the triggerer path (inline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow_e2e


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    return tmp_path


def load_dag(path: Path, dag_id: str):
    """The DAG object defined in a DAG file, loaded as the DAG processor would run the file."""
    import runpy

    found = [v for v in runpy.run_path(str(path)).values() if getattr(v, "dag_id", None) == dag_id]
    assert found, f"{dag_id} not in {path}"
    return found[0]


def run_dag(dag_id: str, conf: dict | None = None):
    from tests.conftest import REPO

    return load_dag(REPO / "tests" / "dags" / "openhands_test_dags.py", dag_id).test(run_conf=conf or {})


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


@pytest.mark.parametrize("dag_id", ["oh_test_split_deferrable", "oh_test_split_poke", "oh_test_split_reschedule"])
def test_start_then_sensor(airflow_db, connection, results, dag_id, api_version):
    dag_run = run_dag(dag_id)
    assert task_states(dag_run) == dict.fromkeys(("start", "wait", "record_id", "record_state"), "success")
    conversation_id = json.loads((results / f"{dag_id}-id.json").read_text())
    state = json.loads((results / f"{dag_id}-state.json").read_text())
    assert state["conversation_id"] == conversation_id and state["status"] == "finished"
    assert state["api_version"] == api_version
    assert connection.stats()["created"] == 1


def test_wait_in_the_operator(airflow_db, connection, results, api_version):
    dag_run = run_dag("oh_test_wait_in_operator", {"suffix": '[emulator finish="Fixed two typos"]'})
    assert task_states(dag_run) == {"run": "success", "record_state": "success"}
    state = json.loads((results / "oh_test_wait_in_operator-state.json").read_text())
    assert state["status"] == "finished" and state["url"].startswith(connection.url)
    assert state["final_message"] == "Fixed two typos"  # the agent's last word, from the events
    if api_version == "v1":  # V1 reads them once after the end; V0 with every poll's state
        assert len(connection.requests_to("GET", "events/search")) == 1


@pytest.mark.parametrize("api_version", ["v1"])
def test_failed_conversation_fails_the_sensor(airflow_db, connection, results):
    dag_run = run_dag("oh_test_split_deferrable", {"suffix": "[emulator outcome=error]"})
    states = task_states(dag_run)
    assert states["start"] == "success" and states["wait"] == "failed"
    assert states["record_state"] == "upstream_failed"


@pytest.mark.parametrize("api_version", ["v1"])
def test_templated_bad_repository_fails_before_any_request(airflow_db, connection, results):
    dag_run = run_dag("oh_test_bad_templated_repo")
    assert task_states(dag_run) == {"start": "failed"}
    assert connection.requests == []


@pytest.mark.parametrize("api_version", ["v1"])
def test_example_dag_runs(airflow_db, connection, results, monkeypatch):
    from tests.conftest import EXAMPLE_DAGS

    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    dag = load_dag(EXAMPLE_DAGS / "openhands_readme_check.py", "openhands_readme_check")
    dag_run = dag.test(run_conf={"repository": "acme/docs"})
    assert set(task_states(dag_run).values()) == {"success"}
    (conversation,) = connection.conversations.values()
    assert conversation.repository == "acme/docs"
