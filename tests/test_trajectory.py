"""The trajectory archive for audit (issue 18): ``archive_trajectory=True`` downloads the
conversation's export (V1 ``/download``, a zip of its events and metadata) to ``output_path``."""

from __future__ import annotations

import json
import zipfile

import pytest

from airflow_provider_openhands.exceptions import OpenHandsConfigError
from tests.test_dag_runs import run_dag, task_states
from tests.test_results import xcom_value

pytestmark = pytest.mark.airflow_e2e


def _archive(path) -> dict[str, dict]:
    with zipfile.ZipFile(path) as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_trajectory_is_archived_to_output_path(airflow_db, connection, api_version, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENHANDS_TEST_ARCHIVE", str(tmp_path))
    dag_run = run_dag("oh_test_trajectory", {"message": 'Check the docs [emulator finish="All good"]'})
    assert task_states(dag_run) == {"run": "success"}
    result = xcom_value(dag_run, "return_value")
    conversation_id = result["conversation_id"]
    assert result["trajectory"] == str(tmp_path / conversation_id / "trajectory.zip")
    files = _archive(result["trajectory"])
    assert files["meta.json"]["id"].replace("-", "") == conversation_id.replace("-", "")
    finish = [f for name, f in files.items() if name.startswith("event_") and f.get("tool_name") == "finish"]
    assert finish and finish[0]["action"]["message"] == "All good"
    assert len(connection.requests_to("GET", "/download$")) == 1


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_failed_conversation_s_trajectory_is_archived_too(airflow_db, connection, api_version, tmp_path, monkeypatch):
    """For audit, the failures matter most: the conversation ended in error, the task fails, the zip is there."""
    monkeypatch.setenv("OPENHANDS_TEST_ARCHIVE", str(tmp_path))
    dag_run = run_dag("oh_test_trajectory", {"message": "Check the docs [emulator outcome=error]"})
    assert task_states(dag_run) == {"run": "failed"}
    (archived,) = list(tmp_path.glob("*/trajectory.zip"))
    assert "meta.json" in _archive(archived)


def test_archive_trajectory_needs_an_output_path_at_parse_time():
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    with pytest.raises(OpenHandsConfigError, match="archive_trajectory needs output_path"):
        OpenHandsStartConversationOperator(
            task_id="t", initial_user_msg="x", wait_for_completion=True, archive_trajectory=True
        )


@pytest.mark.parametrize("api_version", ["v0"])
def test_archive_trajectory_on_v0_fails_before_any_request(airflow_db, connection, api_version, tmp_path):
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    operator = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="x", wait_for_completion=True, archive_trajectory=True, output_path=str(tmp_path)
    )
    with pytest.raises(OpenHandsConfigError, match="archive_trajectory: not on V0"):
        operator.execute({})
    assert connection.requests == []


@pytest.mark.parametrize("api_version", ["v1"])
def test_an_archive_that_cannot_be_written_never_changes_how_the_task_ends(
    airflow_db, connection, api_version, tmp_path, monkeypatch
):
    """``output_path`` under a plain file: a warning, ``trajectory`` None, the task succeeds and its
    sandbox is paused (the archive error used to fail the task, and be retried)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("OPENHANDS_TEST_ARCHIVE", str(blocker / "archive"))
    dag_run = run_dag("oh_test_trajectory", {"message": 'Check the docs [emulator finish="All good"]'})
    assert task_states(dag_run) == {"run": "success"}
    assert xcom_value(dag_run, "return_value")["trajectory"] is None
    assert connection.stats()["alive"] == 0
