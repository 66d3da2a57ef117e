"""The DAGs the README and the docs show, run as written against the emulator in ``dag.test()``:
an example a reader copies must run, not only parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.conftest import README_DAGS, REPO
from tests.test_dag_runs import load_dag


@pytest.fixture
def service(emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, max_requests_per_minute=100_000))
    return emulator


def first_python_block(path: Path, heading: str, name: str) -> Path:
    """The first ```python block under ``heading`` in a Markdown file, as a DAG file of the tests' bundle."""
    section = ("\n" + path.read_text()).split(f"\n{heading}\n", 1)[1]
    dag_file = README_DAGS / name
    dag_file.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    return dag_file


def polling_fast(dag):
    """The DAG as written, but polling every 0.2 s instead of its defaults (10 s, 30 s)."""
    for task in dag.task_dict.values():
        if hasattr(task, "partial_kwargs"):  # mapped
            task.partial_kwargs["poll_interval"] = 0.2
        elif hasattr(task, "poke_interval"):
            task.poke_interval = 0.2
        elif hasattr(task, "poll_interval"):
            task.poll_interval = 0.2
    return dag


def states(dag_run) -> dict[tuple[str, int], str]:
    return {
        (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()
    }


def test_the_readme_s_first_dag_runs(airflow_db, service):
    dag = load_dag(first_python_block(REPO / "README.md", "## A first DAG", "readme_check.py"), "readme_check")
    dag_run = polling_fast(dag).test()
    assert states(dag_run) == {("start", -1): "success", ("wait", -1): "success", ("announce", -1): "success"}
    (conversation,) = service.conversations.values()
    assert conversation.repository == "acme/website"


def test_the_fan_out_page_s_dag_runs_and_reports_every_repository(airflow_db, service):
    page = REPO / "docs" / "guide" / "fan-out.md"
    dag = load_dag(first_python_block(page, "# Fan-out: mapped tasks", "fan_out.py"), "nightly")
    dag_run = polling_fast(dag).test()
    assert set(states(dag_run).values()) == {"success"}, states(dag_run)
    assert sorted(c.repository for c in service.conversations.values()) == ["acme/api", "acme/docs", "acme/web"]
