"""The provider end to end on the real OpenHands server: the README's DAG shapes in dag.test().

Marked ``real_openhands`` (not in the default run). One conversation at a time: the DAGs cap their
starting tasks with ``max_active_tis_per_dag=1``, and dag.test() runs one DAG run at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_openhands, pytest.mark.airflow_e2e]

DAG_FILE = Path(__file__).resolve().parents[1] / "dags_real" / "openhands_real_dags.py"


def run_dag(dag_id: str):
    import runpy

    found = [v for v in runpy.run_path(str(DAG_FILE)).values() if getattr(v, "dag_id", None) == dag_id]
    assert found, f"{dag_id} not in {DAG_FILE}"
    return found[0].test()


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


def read_state(tmp_path: Path, dag_id: str) -> dict:
    return json.loads((tmp_path / f"{dag_id}-state.json").read_text())


def check_finished(server, state: dict, answer: str) -> None:
    assert state["status"] == "finished", state
    assert state["api_version"] == "v1"
    conversation = server.request("GET", f"/api/v1/app-conversations?ids={state['conversation_id']}")[1][0]
    assert conversation is not None, "the provider's conversation id is not known to the server"
    # The final message: in the provider's result, and as the server's events say.
    assert state["final_message"] == answer, state
    _, page = server.request("GET", f"/api/v1/conversation/{state['conversation_id']}/events/search?limit=100")
    finishes = [e["action"]["message"] for e in page["items"] if (e.get("action") or {}).get("kind") == "FinishAction"]
    assert finishes[-1:] == [answer]


@pytest.mark.parametrize(
    ("dag_id", "tasks", "answer"),
    [
        (
            "oh_real_start_then_sensor",
            ("start", "wait", "record_id", "record_state"),
            "Real answer: start then sensor",
        ),
        ("oh_real_wait_in_worker", ("run", "record_state"), "Real answer: waited in the worker"),
        ("oh_real_taskflow", ("check_readme", "record_state"), "Real answer: taskflow"),
    ],
)
def test_dag_on_the_real_server(airflow_db, real_connection, tmp_path, dag_id, tasks, answer):
    dag_run = run_dag(dag_id)
    assert task_states(dag_run) == dict.fromkeys(tasks, "success")
    check_finished(real_connection, read_state(tmp_path, dag_id), answer)
