"""The example DAGs: they load without errors, and they run end to end with dag.test()."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.test_dag_runs import load_dag, task_states

pytestmark = pytest.mark.airflow_e2e
EXAMPLES = REPO / "example_dags"


def dag_bag():
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2

        return DagBag(dag_folder=str(EXAMPLES), include_examples=False)
    return DagBag(dag_folder=str(EXAMPLES))


def test_every_example_loads_without_import_errors(airflow_db):
    bag = dag_bag()
    assert not bag.import_errors, bag.import_errors
    assert {"openhands_readme_check", "openhands_nightly_maintenance", "openhands_pipeline_chain"} <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        assert bag.get_dag(dag_id).doc_md, f"{dag_id} has no docstring saying what it shows"


@pytest.mark.parametrize("api_version", ["v1"])
def test_pipeline_chain_branches_on_the_pr(airflow_db, connection, monkeypatch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    dag = load_dag(EXAMPLES / "openhands_pipeline_chain.py", "openhands_pipeline_chain")
    states = task_states(dag.test(run_conf={"repository": "acme/docs", "failing_check": "a typo"}))
    assert states == {
        "describe_task": "success",
        "fix": "success",
        "route": "success",
        "announce_pr": "success",
        "nothing_to_merge": "skipped",
    }
    (conversation,) = connection.conversations.values()
    assert "a typo" in conversation.message and conversation.repository == "acme/docs"


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_maintenance_reports_and_fails_only_after_all_ended(airflow_db, connection, monkeypatch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.outcomes_by_repository = {"acme/two": "error"}
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    dag_run = dag.test(run_conf={"repositories": ["acme/one", "acme/two", "acme/three"]})
    maintain = {
        ti.map_index: str(getattr(ti.state, "value", ti.state))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "maintain"
    }
    assert maintain == {0: "success", 1: "failed", 2: "success"}
    # the report ran after all of them ended, and failed the run because one conversation failed
    assert task_states(dag_run)["report"] == "failed"
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    assert connection.stats()["created"] == 3


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_maintenance_without_repositories_skips(airflow_db, connection):
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    states = task_states(dag.test(run_conf={"repositories": []}))
    assert states["repositories"] == "skipped" and connection.requests == []
