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
        "add_test": "success",
        "route": "success",
        "announce_pr": "success",
        "nothing_to_merge": "skipped",
    }
    (conversation,) = connection.conversations.values()  # the follow-up went to the same conversation
    assert "a typo" in conversation.message and conversation.repository == "acme/docs"
    (follow_up,) = connection.requests_to("POST", "send-message")
    assert "add a test" in follow_up["body"]["content"][0]["text"]


@pytest.mark.parametrize("api_version", ["v1"])
@pytest.mark.parametrize(("confidence", "branch"), [(0.9, "open_fix_ticket"), (0.3, "page_a_human")])
def test_alert_triage_branches_on_the_structured_answer(airflow_db, connection, monkeypatch, confidence, branch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    answer = f'{{\\"cause\\": \\"queue closed\\", \\"confidence\\": {confidence}, \\"suggested_fix\\": \\"retry\\"}}'
    log = f'ERROR worker.py:88 ConnectionResetError [emulator output="{answer}"]'
    dag = load_dag(EXAMPLES / "openhands_alert_triage.py", "openhands_alert_triage")
    states = task_states(dag.test(run_conf={"error_log": log}))
    assert states["triage"] == "success" and states["decide"] == "success"
    assert states[branch] == "success"
    other = {"open_fix_ticket", "page_a_human"} - {branch}
    assert states[other.pop()] == "skipped"


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


def nightly_run(repositories: list[str]):
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    dag_run = dag.test(run_conf={"repositories": repositories})
    maintain = {
        ti.map_index: str(getattr(ti.state, "value", ti.state))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "maintain"
    }
    return dag_run, maintain


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_report_names_each_failed_repository_and_why(airflow_db, connection, monkeypatch, capfd, caplog):
    """Item 1: one aligned table in the task log, and a failure that names the repository and the reason."""
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.outcomes_by_repository = {"acme/two": "error"}
    dag_run, maintain = nightly_run(["acme/one", "acme/two"])
    assert maintain == {0: "success", 1: "failed"} and task_states(dag_run)["report"] == "failed"
    out, err = capfd.readouterr()
    # the sandbox was paused after the end: the report still reads how the agent ended
    assert "acme/two: the conversation ended in error" in out + err
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "airflow.task" and "Nightly" in r.getMessage()]
    table = [line for line in logged.splitlines() if line.startswith(("#  repository", "0  acme/", "1  acme/"))]
    assert len(table) == 3, table
    header, first, second = table
    assert header.index("task") == first.index("success") == second.index("failed")  # aligned
    assert header.index("conversation") == first.index("finished") == second.index("error")
    assert "XCom not found" not in out + err  # item 5: the link waits quietly for the conversation


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_run_with_a_wrong_key_fails_and_names_the_repository(airflow_db, connection, monkeypatch, capfd):
    """Item 1: maintain[0] fails before any conversation exists; the run must not be green."""
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.api_key = "another-key"
    dag_run, maintain = nightly_run(["acme/one"])
    assert maintain == {0: "failed"}
    assert task_states(dag_run)["report"] == "failed"
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    out, err = capfd.readouterr()
    assert "1 of 1 'maintain' task(s) failed: acme/one: failed before any conversation started" in out + err
    assert "Returned value was: []" not in out + err
    assert "XCom not found" not in out + err  # item 5: no link lookup for a conversation that never existed
    assert connection.stats()["created"] == 0


def test_nightly_trigger_form_does_not_require_repositories():
    """Item 6: empty means "use the Variable", so the form must not mark the field required."""
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    param = dag.params.get_param("repositories")
    assert "null" in param.schema["type"] and "array" in param.schema["type"]
    param.resolve(None)  # validates: no value is allowed
    assert dag.max_active_runs == 1 and "max_active_runs" in dag.doc_md and "unpausing" in dag.doc_md.lower()
