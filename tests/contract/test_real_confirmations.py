"""Confirmation mode (issue 19) on the real OpenHands server, through the provider's own code.

The server's confirmation mode is switched on for each test (``RealOpenHands.confirmation_mode``:
``AlwaysConfirm``, then back off). The task text scripts the fake LLM
(``[fake-llm run="<command>"]``): the agent's first action is a terminal command, so the
conversation stops in ``waiting_for_confirmation``; then it finishes with a message that repeats
what the tool answered. A ``dag.test()`` of ``OpenHandsStartConversationOperator`` answers by
``on_confirmation``. What reached the agent is read three ways: the command's file on disk (the
process sandbox runs it on this machine), the server's events (``TerminalObservation`` or
``UserRejectObservation``), and what the agent sent its LLM next (the tool result it got).

Marked ``real_openhands`` (not in the default run); one conversation per test, one at a time.
"""

from __future__ import annotations

import json
import logging
import runpy
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import final_answer

pytestmark = [pytest.mark.real_openhands, pytest.mark.airflow_e2e]

DAGS = Path(__file__).resolve().parents[1] / "dags_real" / "openhands_real_confirmation_dags.py"
FINISH = "Confirmation round over"


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture
def confirming(real_connection):
    """``openhands_default`` pointing at the real server, its confirmation mode on for this test only."""
    with real_connection.confirmation_mode():
        yield real_connection
    status, settings = real_connection.request("GET", "/api/v1/settings")
    assert status == 200 and settings["conversation_settings"]["confirmation_mode"] is False, settings


class Script:
    """One test's scripted command: it writes a proof file only if it runs."""

    def __init__(self, tmp_path: Path) -> None:
        self.word = f"ran-{uuid.uuid4().hex[:12]}"
        self.proof = tmp_path / "proof.txt"
        self.command = f"echo {self.word} > {self.proof} && cat {self.proof}"
        self.message = f'[fake-llm run="{self.command}" finish="{FINISH}"] Run the command, then report.'


def build(**kwargs: Any):
    return runpy.run_path(str(DAGS))["build"](**kwargs)


def the_ti(dag_run):
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "maintain"]
    return ti


def state_of(dag_run) -> str:
    state = the_ti(dag_run).state
    return str(getattr(state, "value", state))


def result(dag_run) -> Any:
    from tests.test_defects import xcom

    return xcom(dag_run, "maintain")


def logged(capfd, caplog) -> str:
    out, err = capfd.readouterr()
    return out + err + caplog.text


def conversation_of(server, script: Script) -> dict[str, Any]:
    """The conversation the task started, found by its task text among the server's start tasks."""
    status, body = server.request("GET", "/api/v1/app-conversations/start-tasks/search?limit=100")
    assert status == 200, body
    tasks = [
        task
        for task in body["items"]
        if script.word in json.dumps((task.get("request") or {}).get("initial_message") or {})
    ]
    assert len(tasks) == 1, f"expected one start for {script.word}, found {len(tasks)}"
    assert tasks[0]["status"] == "READY", tasks[0]
    conversation_id = tasks[0]["app_conversation_id"]
    status, (conversation,) = server.request("GET", f"/api/v1/app-conversations?ids={conversation_id}")
    assert status == 200 and conversation is not None
    return conversation


def events_of(server, conversation_id: str, until=lambda items: True, timeout: float = 20) -> list[dict[str, Any]]:
    """All its events, oldest first; they reach the app server by webhook, a moment late."""
    deadline = time.time() + timeout
    while True:
        items, page = [], ""
        while True:
            status, body = server.request(
                "GET", f"/api/v1/conversation/{conversation_id}/events/search?limit=100{page}"
            )
            assert status == 200, body
            items += body["items"]
            if not body.get("next_page_id"):
                break
            page = f"&page_id={body['next_page_id']}"
        if until(items) or time.time() > deadline:
            return items


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("kind") == kind]


def the_command_action(events: list[dict[str, Any]], script: Script) -> dict[str, Any]:
    (action,) = [
        e
        for e in of_kind(events, "ActionEvent")
        if e.get("tool_name") == "terminal" and (e.get("action") or {}).get("command") == script.command
    ]
    return action


def statuses(events: list[dict[str, Any]]) -> list[str]:
    """The execution statuses the agent server went through, as its state-update events say."""
    return [e["value"] for e in of_kind(events, "ConversationStateUpdateEvent") if e.get("key") == "execution_status"]


def finished(events: list[dict[str, Any]]) -> bool:
    """The final answer is in (events reach the app server by webhook, in batches). The state
    update ``finished`` may never come: the task pauses the sandbox as soon as the status reads
    finished, and the agent server's last webhook batch can be lost with it."""
    return final_answer(events) is not None


def went(events: list[dict[str, Any]], *expected: str) -> bool:
    """The execution statuses were ``expected``, the closing ``finished`` perhaps not recorded."""
    seen = statuses(events)
    return seen in (list(expected), [*expected, "finished"])


def waited_for_confirmation(events: list[dict[str, Any]]) -> bool:
    return "waiting_for_confirmation" in statuses(events)


def agent_llm_calls(server, script: Script) -> list[dict[str, Any]]:
    """The agent's calls to the fake LLM for this conversation (with tools: not the title's)."""
    return [
        entry
        for entry in server.llm_requests()
        if entry["tools"] and script.word in json.dumps(entry["body"].get("messages") or [])
    ]


def tool_results(call: dict[str, Any]) -> list[str]:
    texts = []
    for message in call["body"]["messages"]:
        if message.get("role") != "tool":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        texts.append(str(content))
    return texts


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_approve_runs_the_command_and_the_agent_finishes(airflow_db, confirming, tmp_path, capfd, caplog, deferrable):
    script = Script(tmp_path)
    dag_run = build(message=script.message, on_confirmation="approve", deferrable=deferrable).test()

    assert state_of(dag_run) == "success"
    out = result(dag_run)
    assert out["status"] == "finished", out
    assert out["final_message"].startswith(f"{FINISH} | tool: {script.word}"), out["final_message"]
    # the command ran on this machine: the agent server got the accept
    assert script.proof.read_text().strip() == script.word

    conversation = conversation_of(confirming, script)  # paused by the task after its end
    events = events_of(confirming, conversation["id"], finished)
    action = the_command_action(events, script)
    assert went(events, "running", "waiting_for_confirmation", "running"), statuses(events)
    observations = [e for e in of_kind(events, "ObservationEvent") if e.get("action_id") == action["id"]]
    assert len(observations) == 1 and observations[0]["observation"]["kind"] == "TerminalObservation"
    assert not of_kind(events, "UserRejectObservation")
    assert final_answer(events) == out["final_message"]
    # what the agent sent its LLM next: the command's output as the tool's result
    first, second = agent_llm_calls(confirming, script)
    assert tool_results(first) == [] and any(script.word in text for text in tool_results(second))

    text = logged(capfd, caplog)
    assert f"Approved by on_confirmation: terminal `{script.command}` (security risk UNKNOWN)" in text


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_reject_tells_the_agent_which_goes_on_and_finishes(airflow_db, confirming, tmp_path, capfd, caplog, deferrable):
    script = Script(tmp_path)
    dag_run = build(message=script.message, on_confirmation="reject", deferrable=deferrable).test()

    assert state_of(dag_run) == "success"  # the agent went on without the command and finished
    reason = "rejected by on_confirmation='reject'"
    out = result(dag_run)
    assert out["status"] == "finished", out
    assert out["final_message"] == f"{FINISH} | tool: Action rejected: {reason}", out["final_message"]
    assert not script.proof.exists(), "the rejected command ran"

    conversation = conversation_of(confirming, script)
    events = events_of(confirming, conversation["id"], finished)
    action = the_command_action(events, script)
    # rejected -> idle (the agent server does not go on by itself) -> the provider's /run -> running
    assert went(events, "running", "waiting_for_confirmation", "idle", "running"), statuses(events)
    (rejection,) = of_kind(events, "UserRejectObservation")
    assert rejection["action_id"] == action["id"] and rejection["rejection_reason"] == reason, rejection
    assert not [e for e in of_kind(events, "ObservationEvent") if e.get("action_id") == action["id"]]
    # after the reject the agent ran again (the provider's /run) and read the reason
    first, second = agent_llm_calls(confirming, script)
    assert tool_results(first) == [] and tool_results(second) == [f"Action rejected: {reason}"]

    text = logged(capfd, caplog)
    assert f"Rejected by on_confirmation: terminal `{script.command}` (security risk UNKNOWN)" in text


def test_fail_fails_naming_the_command_and_answers_nothing(airflow_db, confirming, tmp_path, capfd, caplog):
    script = Script(tmp_path)
    dag_run = build(message=script.message, on_confirmation="fail", deferrable=False).test()

    assert state_of(dag_run) == "failed"
    text = logged(capfd, caplog)
    assert f"waits for a person to confirm: terminal `{script.command}` (security risk UNKNOWN)" in text
    assert "on_confirmation='fail'" in text
    assert not script.proof.exists()
    conversation = conversation_of(confirming, script)
    events = events_of(confirming, conversation["id"], waited_for_confirmation)
    the_command_action(events, script)
    assert waited_for_confirmation(events)
    assert not of_kind(events, "UserRejectObservation") and not of_kind(events, "ObservationEvent")
    assert len(agent_llm_calls(confirming, script)) == 1  # the agent never got past the command


def test_ask_a_person_who_rejects_with_a_reason(airflow_db, confirming, tmp_path, capfd, caplog):
    """``on_confirmation="ask"``: the task waits in Airflow's human-in-the-loop; a person (a thread,
    through the HITL REST handler) rejects with a reason, which the agent reads."""
    from tests.test_confirmations import Person, hitl

    if not hitl():
        pytest.skip("Airflow >= 3.3: TaskAwaitingInput")
    script = Script(tmp_path)
    dag = build(message=script.message, on_confirmation="ask", deferrable=False)
    with Person(dag.dag_id, [("Reject", "not on the shared runner")]) as person:
        dag_run = dag.test()
    assert not person.errors, person.errors

    assert state_of(dag_run) == "success"
    (body,) = person.bodies
    assert script.command in body and "/conversations/" in body
    out = result(dag_run)
    assert out["final_message"] == f"{FINISH} | tool: Action rejected: not on the shared runner", out
    assert not script.proof.exists()
    conversation = conversation_of(confirming, script)
    events = events_of(confirming, conversation["id"], finished)
    (rejection,) = of_kind(events, "UserRejectObservation")
    assert rejection["rejection_reason"] == "not on the shared runner"
    assert f"Rejected by reviewer: terminal `{script.command}`" in logged(capfd, caplog)


def test_the_plan_agent_asks_before_writing_its_plan(airflow_db, confirming, capfd, caplog):
    """Observed here (``AlwaysConfirm``): the plan agent (``agent_type: "plan"``) waits for
    confirmation before its own ``planning_file_editor`` edit of PLAN.md, as the default agent does
    before a command. ``plan_first=True`` with ``on_confirmation="ask"``: a person approves the edit,
    then the plan (in the first request's form before Airflow 3.4); the edit ran, and the build (a
    default-agent conversation on the plan's sandbox) ran and finished."""
    from tests.test_confirmations import Person, hitl

    if not hitl():
        pytest.skip("Airflow >= 3.3: TaskAwaitingInput")
    word = f"step-{uuid.uuid4().hex[:12]}"
    message = f'[fake-llm plan="1. Write {word}" finish="Plan written"] Plan the change.'
    dag = build(message=message, on_confirmation="ask", plan_first=True, deferrable=False)
    with Person(dag.dag_id, [("Approve", ""), ("Approve", "")]) as person:
        dag_run = dag.test()
    assert not person.errors, person.errors
    assert state_of(dag_run) == "success"
    first, second = person.bodies
    assert "planning_file_editor" in first and ".agents_tmp/PLAN.md" in first
    assert second == first  # Airflow < 3.4 keeps the task's first request

    status, body = confirming.request("GET", "/api/v1/app-conversations/start-tasks/search?limit=100")
    assert status == 200, body
    starts = [t for t in body["items"] if word in json.dumps((t.get("request") or {}).get("initial_message") or {})]
    (plan,) = [t for t in starts if (t.get("request") or {}).get("agent_type") == "plan"]
    (built,) = [t for t in starts if t is not plan]
    assert plan["status"] == built["status"] == "READY", starts
    assert built["request"]["parent_conversation_id"].replace("-", "") == plan["app_conversation_id"]
    events = events_of(confirming, plan["app_conversation_id"], finished)
    (edit,) = [e for e in of_kind(events, "ActionEvent") if e.get("tool_name") == "planning_file_editor"]
    assert edit["action"]["kind"] == "PlanningFileEditorAction" and edit["security_risk"] == "UNKNOWN"
    assert went(events, "running", "waiting_for_confirmation", "running"), statuses(events)
    (ran,) = [e for e in of_kind(events, "ObservationEvent") if e.get("action_id") == edit["id"]]
    assert not ran["observation"]["is_error"] and not of_kind(events, "UserRejectObservation")
    assert word in Path(edit["action"]["path"]).read_text()  # the process sandbox's PLAN.md, on this machine
    text = logged(capfd, caplog)
    assert "Approved by reviewer: planning_file_editor `str_replace " in text
    out = result(dag_run)
    assert (
        out["status"] == "finished" and out["plan"]["conversation_id"].replace("-", "") == plan["app_conversation_id"]
    )
