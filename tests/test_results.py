"""What a conversation produced, in the task's result (issue 11): final message, changed files and
diffs, files, structured output, usage on success and failure, budget, cost attribution."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_openhands.api.state import normalise_v1
from airflow_provider_openhands.exceptions import OpenHandsConfigError
from tests.test_dag_runs import run_dag, task_states

pytestmark = pytest.mark.airflow_e2e


def xcom_value(dag_run, key: str, task_id: str = "run"):
    """An XCom as stored by Airflow (3: XComModel, JSON; 2: XCom, serialized)."""
    from airflow.utils.session import create_session

    try:
        from airflow.models.xcom import XComModel as Model
    except ImportError:
        from airflow.models.xcom import XCom as Model
    with create_session() as session:
        row = (
            session.query(Model).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key).one()
        )
        value = row.value
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_budget_crossed_mid_run_stops_once_and_fails_with_usage(airflow_db, connection, api_version, capfd):
    dag_run = run_dag("oh_test_budget")
    states = task_states(dag_run)
    assert states == {"run": "failed"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 1  # OpenHandsBudgetExceeded is not retried
    assert connection.stats()["stops"] == 1
    out, err = capfd.readouterr()
    assert "max_cost_usd" in out + err
    usage = xcom_value(dag_run, "usage")
    assert usage["accumulated_cost"] > 0.02 and usage["conversation_id"]


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_start_request_carries_the_attribution_and_a_readable_title(airflow_db, connection, api_version, contract):
    run_dag("oh_test_wait_in_operator")
    (post,) = connection.requests_to("POST", "app-conversations$")
    body = post["body"]
    contract.validate_request("v1", "POST", "/api/v1/app-conversations", body)
    assert "airflow_dag_id:oh_test_wait_in_operator" in body["observability_tags"]
    assert body["observability_metadata"]["airflow_task_id"] == "run"
    assert body["observability_metadata"]["airflow_map_index"] == -1
    assert body["title"].startswith("oh_test_wait_in_operator.run ")


@pytest.mark.parametrize("api_version", ["v1"])
def test_pr_urls_are_built_from_the_repository_and_provider(api_version):
    state = normalise_v1(
        {
            "id": "a" * 32,
            "sandbox_status": "RUNNING",
            "execution_status": "finished",
            "selected_repository": "acme/app",
            "git_provider": "gitlab",
            "pr_number": [7],
        },
        "https://app.all-hands.dev",
    )
    assert state["pr_urls"] == ["https://gitlab.com/acme/app/-/merge_requests/7"]


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_bad_output_schema_fails_at_parse_time(api_version):
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    with pytest.raises(OpenHandsConfigError, match="output_schema"):
        OpenHandsStartConversationOperator(
            task_id="t", initial_user_msg="x", wait_for_completion=True, output_schema={"type": "no-such-type"}
        )


TRIAGE = __import__("tests.dags.openhands_test_dags", fromlist=["TRIAGE_SCHEMA"]).TRIAGE_SCHEMA
GOOD_OUTPUT = '{\\"cause\\": \\"disk full\\", \\"confidence\\": 0.8, \\"suggested_fix\\": \\"rotate the logs\\"}'
WORK = (
    "[emulator change=src/app.py:MODIFIED diff_bytes=5000 "
    'write=\'report.json:{"ok": true}\' finish="Cause found" output="{output}"]'
)


@pytest.mark.parametrize("mode", ["deferrable", "worker"])
@pytest.mark.parametrize("api_version", ["v1"])
def test_the_result_carries_output_files_changes_and_capped_diffs(airflow_db, connection, api_version, mode):
    message = "Triage the alert " + WORK.replace("{output}", GOOD_OUTPUT)
    dag_run = run_dag(f"oh_test_results_{mode}", {"message": message})
    assert task_states(dag_run) == {"run": "success"}
    result = xcom_value(dag_run, "return_value")
    assert result["output"] == {"cause": "disk full", "confidence": 0.8, "suggested_fix": "rotate the logs"}
    assert result["final_message"] == "Cause found"
    assert result["files"] == {"report.json": '{"ok": true}'}
    changed = {c["path"]: c["status"] for c in result["changed_files"]}
    assert changed["src/app.py"] == "UPDATED" and changed["report.json"] == "ADDED"
    modified = result["diff"]["src/app.py"]["modified"]
    assert len(modified) < 1200 and "cut by airflow-provider-openhands: 4000 more characters" in modified
    (post,) = connection.requests_to("POST", "app-conversations$")
    sent = post["body"]["initial_message"]["content"][0]["text"]
    assert '"confidence"' in sent  # the schema went with the task
    # The output file: outside the repository's working tree (never a change, never in a PR), named
    # for this task series (the conversation id the provider chose), so no earlier file passes for it.
    output_path = f"/workspace/project/openhands_output_{result['conversation_id'].replace('-', '')[:12]}.json"
    assert f"to the file `{output_path}`" in sent
    assert not any("openhands_output" in path for path in changed)
    assert xcom_value(dag_run, "usage")["accumulated_cost"] > 0


@pytest.mark.parametrize("api_version", ["v1"])
def test_an_output_that_does_not_match_the_schema_fails_saying_why(airflow_db, connection, api_version, capfd):
    bad = GOOD_OUTPUT.replace("0.8", "3")
    dag_run = run_dag("oh_test_results_deferrable", {"message": "Triage " + WORK.replace("{output}", bad)})
    assert task_states(dag_run) == {"run": "failed"}
    out, err = capfd.readouterr()
    assert "does not match output_schema: confidence: 3 is greater than the maximum of 1" in out + err
    assert "Cause found" in out + err  # the agent's final message is quoted
    assert connection.stats()["alive"] == 0  # the ended conversation's slot is freed though the task failed


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_missing_output_fails(airflow_db, connection, api_version, capfd):
    dag_run = run_dag("oh_test_results_deferrable", {"message": 'Triage [emulator finish="I gave up"]'})
    assert task_states(dag_run) == {"run": "failed"}
    out, err = capfd.readouterr()
    assert "did not write /workspace/project/openhands_output_" in out + err and "I gave up" in out + err


@pytest.mark.parametrize("api_version", ["v1"])
def test_reading_results_adds_two_requests_once_after_the_end(airflow_db, connection, api_version):
    """By default: the events (final message) and git changes, once each, after the end; polling
    (conversation reads) is unchanged."""
    run_dag("oh_test_wait_in_operator")
    assert len(connection.requests_to("GET", "events/search")) == 1
    assert len(connection.requests_to("GET", "git/changes")) == 1
    assert connection.requests_to("GET", "/file") == [] and connection.requests_to("GET", "git/diff") == []


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_follow_up_resumes_the_sandbox_and_waits_for_its_own_turn(
    airflow_db, connection, api_version, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    connection.turn_lag_seconds = 1.0  # polls keep showing the first turn's "finished" for a while
    dag_run = run_dag("oh_test_follow_up")
    assert set(task_states(dag_run).values()) == {"success"}
    first = json.loads((tmp_path / "oh_test_follow_up-first.json").read_text())
    second = json.loads((tmp_path / "oh_test_follow_up-second.json").read_text())
    assert first["final_message"] == "First answer" and second["final_message"] == "Second answer"
    assert second["conversation_id"] == first["conversation_id"]
    assert {c["path"] for c in second["changed_files"]} >= {"tests/test_readme.py"}
    stats = connection.stats()
    assert stats["created"] == 1 and stats["resumes"] == 1
    assert len(connection.requests_to("POST", "send-message")) == 1


@pytest.mark.parametrize("api_version", ["v0"])
def test_v1_only_results_fail_clearly_on_v0_before_any_request(airflow_db, connection, api_version, capfd):
    dag_run = run_dag("oh_test_results_deferrable", {"message": "Triage"})
    assert task_states(dag_run) == {"run": "failed"}
    assert connection.requests == []
    out, err = capfd.readouterr()
    assert "output_schema, output_files, include_diff: not on V0" in out + err


def first_turn(connection, message: str) -> str:
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    hook = OpenHandsHook()
    conversation_id = hook.start_conversation(message, "acme/website", poll_interval=0.05)
    while hook.get_conversation(conversation_id)["status"] != "finished":
        time.sleep(0.05)
    return conversation_id


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_follow_up_never_takes_an_earlier_turns_output(airflow_db, connection, api_version, capfd):
    """The first turn wrote openhands_output.json; the follow-up has a file of its own, which the
    agent did not write this time: the task fails instead of returning the first turn's output."""
    conversation_id = first_turn(connection, 'Triage [emulator output="' + GOOD_OUTPUT + '"]')
    message = 'And the second alert? [emulator finish="I could not finish"]'
    dag_run = run_dag("oh_test_follow_up_output", {"conversation_id": conversation_id, "message": message})
    assert task_states(dag_run) == {"follow_up": "failed"}
    out, err = capfd.readouterr()
    assert "did not write /workspace/project/openhands_output_" in out + err  # its own file, by its turn


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_follow_up_retry_does_not_send_twice(airflow_db, connection, api_version):
    """The first try is lost after its (long: more events than a page) turn ended; the retry finds
    its message among the user messages and waits on that turn instead of sending it again."""
    conversation_id = first_turn(connection, "Go")
    writes = " ".join(f"write='notes/{n}.txt:{n}'" for n in range(15))
    message = f'Now the docs [emulator finish="Docs done" {writes}]'
    dag_run = run_dag("oh_test_follow_up_retry", {"conversation_id": conversation_id, "message": message})
    assert task_states(dag_run) == {"follow_up": "success"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 2
    assert len(connection.requests_to("POST", "send-message")) == 1


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_output_is_read_even_after_the_sandbox_was_paused(airflow_db, connection, api_version):
    """A retry after the end finds the sandbox paused (pause_when_done): it resumes it to read the
    output instead of succeeding without one."""
    conversation_id = first_turn(connection, 'Go [emulator output="' + GOOD_OUTPUT + '"]')
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    OpenHandsHook().stop_conversation(conversation_id)
    waiter = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="x", wait_for_completion=True, output_schema=TRIAGE, poll_interval=0.05
    )
    state = waiter.final_state(
        conversation_id, "finished", output_file="/workspace/project/website/openhands_output.json"
    )
    assert state["output"]["cause"] == "disk full" and connection.stats()["resumes"] == 1


@pytest.mark.parametrize("api_version", ["v1"])
def test_an_archived_conversation_fails_a_follow_up_at_once(airflow_db, connection, api_version):
    conversation_id = first_turn(connection, "Go")
    connection.conversation(conversation_id).sandbox_override = "MISSING"
    dag_run = run_dag("oh_test_follow_up_retry", {"conversation_id": conversation_id, "message": "More"})
    assert task_states(dag_run) == {"follow_up": "failed"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 1  # 410 is permanent


def test_the_output_file_is_never_inside_the_repository_s_working_tree():
    """Issue 18: beside the repository's directory, never in it (nor in a ``git_path`` the user
    sets to the workspace itself), and named by its token (the task series and turn)."""
    from airflow_provider_openhands.results import output_file

    assert output_file("0123456789ab") == "/workspace/project/openhands_output_0123456789ab.json"
    assert output_file("t", "/workspace/project/app") == "/workspace/project/openhands_output_t.json"
    assert output_file("t", "/workspace/project") == "/workspace/openhands_output_t.json"
    assert output_file("t", "/workspace/project/") == "/workspace/openhands_output_t.json"
    assert output_file("t", "/") == "/openhands_output_t.json"


def test_a_budget_without_a_wait_is_refused_at_parse_time():
    """Issue 18: nothing would stop the conversation at ``max_cost_usd`` without a wait: refused, never ignored."""
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    with pytest.raises(OpenHandsConfigError, match="max_cost_usd needs wait_for_completion=True"):
        OpenHandsStartConversationOperator(task_id="t", initial_user_msg="x", max_cost_usd=0.01)


@pytest.mark.parametrize("api_version", ["v0"])
def test_a_budget_on_v0_fails_before_any_request(airflow_db, connection, api_version):
    """V0 reports no cost: the operator and the sensor refuse ``max_cost_usd`` there, naming it."""
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

    operator = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="x", wait_for_completion=True, max_cost_usd=1.0
    )
    sensor = OpenHandsConversationSensor(task_id="s", conversation_id="abc", max_cost_usd=1.0)
    for task in (operator, sensor):
        with pytest.raises(
            OpenHandsConfigError, match="max_cost_usd: connection 'openhands_default' uses api_version v0"
        ):
            task.execute({})
    assert connection.requests == []
