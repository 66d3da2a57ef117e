"""Bounded results and the worker-side request budget (issue 18): what a task returns has one total
cap, each text cut with a marker; every request a worker-side task sends counts against the
connection's ``max_requests_per_minute`` in its process, and a rate-limit 429 holds that budget."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_openhands.testing.emulator import max_in_window
from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.test_dag_runs import run_dag, task_states
from tests.test_results import xcom_value

FILES = 30


def many_changes(size: int) -> str:
    changes = " ".join(f"change=src/module_{n:02d}.py:ADDED" for n in range(FILES))
    return f"Refactor [emulator {changes} diff_bytes={size} write='report.txt:{'r' * 40_000}' finish=\"Done\"]"


@pytest.mark.airflow_e2e
@pytest.mark.parametrize("api_version", ["v1"])
def test_a_large_result_is_cut_to_max_result_bytes_saying_what_was_cut(airflow_db, connection, api_version):
    """30 changed files of 5 000 characters and a 40 000-character file against a 60 000-byte cap:
    every text is cut to one length with a marker, ``cut`` names each, and the whole fits."""
    import json

    dag_run = run_dag("oh_test_results_bounded", {"message": many_changes(5_000)})
    assert task_states(dag_run) == {"run": "success"}
    result = xcom_value(dag_run, "return_value")
    assert len(json.dumps(result).encode()) <= 60_000
    assert len(result["changed_files"]) == FILES + 1  # the list of changes is kept whole (report.txt too)
    modified = result["diff"]["src/module_00.py"]["modified"]
    assert "cut by airflow-provider-openhands" in modified and len(modified) < 5_000
    assert "cut by airflow-provider-openhands" in result["files"]["report.txt"]
    assert any(entry.startswith("files['report.txt']: ") for entry in result["cut"])
    assert sum(entry.startswith("diff[") for entry in result["cut"]) == FILES + 1


@pytest.mark.airflow_e2e
@pytest.mark.parametrize("api_version", ["v1"])
def test_a_worker_task_s_requests_stay_within_the_connection_s_budget(airflow_db, emulator, api_version, monkeypatch):
    """``include_diff`` over 30 changed files sends one ``git/diff`` each: with
    ``max_requests_per_minute`` 10 (over a window shrunk to 2 s), the service never sees more than
    10 requests in any 2 s."""
    from airflow_provider_openhands.hooks.budget import RequestBudget

    monkeypatch.setattr(RequestBudget, "window", 2.0)
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, api_version, max_requests_per_minute=10)
    )
    dag_run = run_dag("oh_test_results_bounded", {"message": many_changes(100)})
    assert task_states(dag_run) == {"run": "success"}
    assert len(emulator.requests_to("GET", "git/diff")) == FILES + 1  # report.txt is a change too
    times = sorted(request["at"] for request in emulator.requests)
    assert max_in_window(times, 2.0) <= 10, times


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_rate_limit_429_holds_every_request_of_the_process(emulator, api_version, monkeypatch):
    """One task's request meets 429 with ``Retry-After: 2``: another task of the same process, asking
    0.3 s later, waits for the hold too instead of sending into the spent window."""
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, api_version))
    emulator.add_fault(
        status=429,
        method="GET",
        path="app-conversations$",
        times=1,
        body={"error": "Rate limit exceeded: 100 per 1 minute"},
        headers={"Retry-After": "2"},
    )
    some_id = "0" * 32
    first = threading.Thread(target=lambda: OpenHandsHook().get_conversations([some_id]))
    first.start()
    time.sleep(0.3)
    OpenHandsHook().get_conversations([some_id])
    first.join()
    times = [request["at"] for request in emulator.requests if request["path"].endswith("app-conversations")]
    assert len(times) == 3, times  # the refused one, its retry, the other task's
    assert min(times[1:]) - times[0] >= 1.9, times  # nobody sent during the hold


def test_paths_in_object_storage_are_never_cut():
    """With ``output_path``, ``files`` holds where each file went: cutting a path would lose it."""
    from airflow_provider_openhands.results import bounded

    state = {
        "conversation_id": "c",
        "files": {"report.md": "s3://bucket/prefix/c/report.md"},
        "final_message": "x" * 50_000,
    }
    result = bounded(state, 20_000, keep_files=True)
    assert result["files"] == {"report.md": "s3://bucket/prefix/c/report.md"}
    assert "cut by airflow-provider-openhands" in result["final_message"]


@pytest.mark.parametrize("changes", [1_500, 34_474])
def test_a_long_list_of_changes_is_cut_to_what_fits_and_never_fails(changes):
    """The list is cut to the most entries that fit, the line saying so included (it used to be added
    after the size check, failing a result that fitted)."""
    import json

    from airflow_provider_openhands.results import bounded

    state = {
        "conversation_id": "c",
        "changed_files": [{"path": f"vendor/pkg_{n:05d}/module.py", "status": "ADDED"} for n in range(changes)],
        "final_message": "Vendored the packages; PR #42",
    }
    every = list(state["changed_files"])
    limit = 40_000 if changes < 30_000 else 1_000_000
    result = bounded(state, limit)
    assert len(json.dumps(result).encode()) <= limit
    kept = len(result["changed_files"])
    assert kept < changes and result["cut"][-1] == f"changed_files: {kept} of {changes} kept"
    one_more = {**result, "changed_files": every[: kept + 1]}
    assert len(json.dumps(one_more).encode()) > limit  # as many as fit, not half of them


def test_a_number_out_of_float_range_in_the_output_is_not_json():
    from airflow_provider_openhands.exceptions import OpenHandsOutputError
    from airflow_provider_openhands.results import parse_output

    with pytest.raises(OpenHandsOutputError, match="out of range"):
        parse_output('{"confidence": 1e400}', {"type": "object"}, None)
