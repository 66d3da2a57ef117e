"""The emulator's confirmation and plan modes, over plain HTTP (no provider client code).

Confirmation mode: the agent stops before a ``confirm=`` command with ``waiting_for_confirmation``;
the answer goes to the sandbox's agent server (``conversation_url`` up to ``/api/conversations``,
``X-Session-API-Key``), as on the real OpenHands 1.11 server. Plan mode: ``agent_type: "plan"``
writes only ``.agents_tmp/PLAN.md``; a sub-conversation (``parent_conversation_id``) shares the
parent's sandbox and workspace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_openhands.testing import Emulator
from airflow_provider_openhands.testing.model import PLAN_HEADERS
from tests import test_emulator as emulator_tests
from tests.test_emulator import CHANGES, CONVERSATIONS, FILE, START_TASKS, wait_for

SEARCH = "/api/v1/app-conversations/search"
PROJECT = "/workspace/project/web"  # the project directory of a conversation on acme/web
PLAN_PATH = f"{PROJECT}/.agents_tmp/PLAN.md"
RESPOND = "events/respond_to_confirmation"


class Client(emulator_tests.Client):
    """The emulator tests' client, with what the confirmation tests read besides."""

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.call("GET", START_TASKS, params={"ids": task_id})
        assert answer.status_code == 200, answer.text
        return answer.json()[0]

    def status(self, conversation_id: str) -> str | None:
        return self.conversation(conversation_id)["execution_status"]

    def wait_status(self, conversation_id: str, wanted: str, timeout: float = 5) -> None:
        assert wait_for(lambda: self.status(conversation_id) == wanted, timeout), self.conversation(conversation_id)

    def events(self, conversation_id: str, **params: Any) -> list[dict[str, Any]]:  # the page's items
        return super().events(conversation_id, **params)["items"]

    def sandbox(self, conversation_id: str, action: str) -> None:
        sandbox = self.conversation(conversation_id)["sandbox_id"]
        assert self.call("POST", f"/api/v1/sandboxes/{sandbox}/{action}").json() == {"success": True}

    def agent(
        self, conversation_id: str, action: str, body: Any = None, key: str | None = "session", base: str | None = None
    ) -> requests.Response:
        """POST to the agent server as the UI does: ``conversation_url`` cut before ``/api/conversations``,
        the conversation's ``session_api_key`` in ``X-Session-API-Key`` (``key="session"``)."""
        state = self.conversation(conversation_id) if base is None or key == "session" else {}
        if base is None:
            assert state["conversation_url"], state
            base = state["conversation_url"].split("/api/conversations")[0]
        headers = {"X-Session-API-Key": state["session_api_key"] if key == "session" else key} if key else {}
        url = f"{base}/api/conversations/{conversation_id}/{action}"
        return requests.post(url, json=body, headers=headers, timeout=10)

    def final_messages(self, conversation_id: str) -> list[str]:
        return [
            e["action"]["message"]
            for e in self.events(conversation_id)
            if e["kind"] == "ActionEvent" and e["tool_name"] == "finish"
        ]


def pending_actions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SDK's rule: agent ActionEvents with no later observation, rejection or error for them."""
    answered = {
        e["action_id"] for e in events if e["kind"] in ("ObservationEvent", "UserRejectObservation", "AgentErrorEvent")
    }
    return [e for e in events if e["kind"] == "ActionEvent" and e["source"] == "agent" and e["id"] not in answered]


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["value"] for e in events if e["kind"] == "ConversationStateUpdateEvent" and e.get("key") == "execution_status"
    ]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(conversation_seconds=0.6, start_seconds=0.2, turn_lag_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator, contract: Any) -> Client:
    return Client(emu, contract)


# -- confirmation mode -----------------------------------------------------------------------------


def test_the_agent_waits_for_confirmation_with_its_pending_action_on_record(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='mkdir -p notes && pwd' risk=HIGH] Make notes"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    state = api.conversation(conversation_id)
    assert state["sandbox_status"] == "RUNNING"
    sandbox = state["sandbox_id"]
    assert state["conversation_url"] == f"{emu.url}/agent/{sandbox}/api/conversations/{conversation_id}"
    assert state["session_api_key"] == f"session-{sandbox}"
    events = api.events(conversation_id)
    (pending,) = pending_actions(events)
    assert pending["tool_name"] == "terminal" and pending["security_risk"] == "HIGH"
    assert pending["action"] == {
        "command": "mkdir -p notes && pwd",
        "is_input": False,
        "timeout": None,
        "reset": False,
        "kind": "TerminalAction",
    }
    assert pending["tool_call_id"].startswith("call_") and pending["thought"] == []
    # the LLM call's usage, the action, the status, then the run stops: the state's snapshot
    stats, _, waiting, snapshot = events[events.index(pending) - 1 :]
    assert stats["key"] == "stats" and stats["value"]["usage_to_metrics"]["agent"]["accumulated_cost"] > 0
    assert waiting["kind"] == "ConversationStateUpdateEvent" and waiting["key"] == "execution_status"
    assert waiting["value"] == "waiting_for_confirmation" and waiting["parent_id"] == pending["id"]
    assert snapshot["key"] == "full_state" and snapshot["parent_id"] is None
    assert snapshot["value"]["execution_status"] == "waiting_for_confirmation"
    assert snapshot["value"]["confirmation_policy"] == {"kind": "AlwaysConfirm"}
    cost = state["metrics"]["accumulated_cost"]
    time.sleep(1.0)  # longer than the whole turn: the clock stands still while it waits
    later = api.conversation(conversation_id)
    assert later["execution_status"] == "waiting_for_confirmation"
    assert later["metrics"]["accumulated_cost"] == cost > 0
    assert later["updated_at"] == state["updated_at"]
    assert requests.get(f"{emu.url}/_emulator/done/{conversation_id}", timeout=5).status_code == 404


def test_an_accept_runs_the_command_and_the_turn_finishes(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='make test'] Run the tests"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    answer = api.agent(conversation_id, RESPOND, {"accept": True})
    assert answer.status_code == 200 and answer.json() == {"success": True}
    assert api.status(conversation_id) == "running"
    api.wait_status(conversation_id, "finished")
    events = api.events(conversation_id)
    (action,) = [e for e in events if e["kind"] == "ActionEvent" and e["tool_name"] == "terminal"]
    (observation,) = [e for e in events if e["kind"] == "ObservationEvent" and e["tool_name"] == "terminal"]
    assert observation["action_id"] == action["id"] and observation["tool_call_id"] == action["tool_call_id"]
    assert observation["observation"]["kind"] == "TerminalObservation"
    assert observation["observation"]["command"] == "make test"
    assert not pending_actions(events)
    assert statuses(events) == ["running", "waiting_for_confirmation", "running", "finished"]
    assert api.final_messages(conversation_id) == ["Done: Run the tests"]  # an accept adds nothing
    (logged,) = emu.requests_to("POST", "respond_to_confirmation")
    assert logged["status"] == 200 and logged["body"] == {"accept": True}
    sandbox = api.conversation(conversation_id)["sandbox_id"]
    assert logged["path"] == f"/agent/{sandbox}/api/conversations/{conversation_id}/{RESPOND}"
    assert "session-" not in json.dumps(emu.requests_to("POST", "^/agent/"))  # no session key on record
    again = api.agent(conversation_id, RESPOND, {"accept": False, "reason": "late"})  # nothing pending
    assert again.status_code == 200 and again.json() == {"success": True}
    assert api.status(conversation_id) == "finished" and not any(
        e["kind"] == "UserRejectObservation" for e in api.events(conversation_id)
    )


def test_a_reject_leaves_the_agent_idle_until_run(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='rm -rf build'] Clean up"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    answer = api.agent(conversation_id, RESPOND, {"accept": False, "reason": "not allowed by the DAG"})
    assert answer.status_code == 200 and answer.json() == {"success": True}
    api.wait_status(conversation_id, "idle", timeout=1)
    time.sleep(1.0)  # longer than the turn: idle stays idle, the agent does not run again by itself
    assert api.status(conversation_id) == "idle"
    events = api.events(conversation_id)
    (rejection,) = [e for e in events if e["kind"] == "UserRejectObservation"]
    (action,) = pending_actions(events) or [e for e in events if e["id"] == rejection["action_id"]]
    assert rejection["action_id"] == action["id"] and rejection["tool_call_id"] == action["tool_call_id"]
    assert rejection["tool_name"] == "terminal" and rejection["rejection_reason"] == "not allowed by the DAG"
    assert rejection["rejection_source"] == "user" and not pending_actions(events)
    assert statuses(events)[-1] == "idle" and not api.final_messages(conversation_id)
    run = api.agent(conversation_id, "run", {})
    assert run.status_code == 200 and run.json() == {"success": True}
    assert api.status(conversation_id) == "running"
    busy = api.agent(conversation_id, "run", {})
    assert busy.status_code == 409 and "already running" in busy.json()["detail"]
    api.wait_status(conversation_id, "finished")
    events = api.events(conversation_id)
    assert not any(e["kind"] == "ObservationEvent" and e["tool_name"] == "terminal" for e in events)  # never run
    assert statuses(events) == ["running", "waiting_for_confirmation", "idle", "running", "finished"]
    assert api.final_messages(conversation_id) == ["Done: Clean up (rejected: rm -rf build: not allowed by the DAG)"]


def test_two_confirmations_in_one_turn_are_asked_in_order(api, emu):
    conversation_id = api.ready(
        api.start("[emulator confirm='git pull' confirm='git push --force' risk=HIGH] Sync the branch")
    )
    api.wait_status(conversation_id, "waiting_for_confirmation")
    (first,) = pending_actions(api.events(conversation_id))
    assert first["action"]["command"] == "git pull" and first["security_risk"] == "UNKNOWN"
    assert api.agent(conversation_id, RESPOND, {"accept": True}).status_code == 200
    assert wait_for(
        lambda: [a["action"]["command"] for a in pending_actions(api.events(conversation_id))] == ["git push --force"]
    )
    assert api.status(conversation_id) == "waiting_for_confirmation"
    (second,) = pending_actions(api.events(conversation_id))
    assert second["security_risk"] == "HIGH" and second["timestamp"] > first["timestamp"]
    assert api.agent(conversation_id, RESPOND, {"accept": False}).status_code == 200  # the default reason
    api.wait_status(conversation_id, "idle", timeout=1)
    assert api.agent(conversation_id, RESPOND, {"accept": False}).status_code == 200  # idle: nothing to reject
    assert api.status(conversation_id) == "idle"
    assert api.agent(conversation_id, RESPOND, {"accept": True}).status_code == 200  # another accept: it goes on
    api.wait_status(conversation_id, "finished")
    events = api.events(conversation_id)
    assert [e["kind"] for e in events if e["kind"] in ("ObservationEvent", "UserRejectObservation")] == [
        "ObservationEvent",
        "UserRejectObservation",
        "ObservationEvent",  # the finish
    ]
    assert statuses(events) == [
        "running",
        "waiting_for_confirmation",
        "running",
        "waiting_for_confirmation",
        "idle",
        "running",
        "finished",
    ]
    assert api.final_messages(conversation_id) == [
        "Done: Sync the branch (rejected: git push --force: User rejected the action.)"
    ]


def test_the_agent_server_takes_the_session_key_only_and_app_routes_never_take_it(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='ls'] Look around"))
    other = api.ready(api.start("[emulator confirm='ls'] Elsewhere"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    session_key = api.conversation(conversation_id)["session_api_key"]
    url = api.conversation(conversation_id)["conversation_url"]
    body = {"accept": True}
    assert api.agent(conversation_id, RESPOND, body, key=None).status_code == 401
    refused = api.agent(conversation_id, RESPOND, body, key=emu.api_key)  # the account's API key
    assert refused.status_code == 401 and refused.json() == {"detail": "Unauthorized"}
    bearer = requests.post(f"{url}/{RESPOND}", json=body, headers={"Authorization": f"Bearer {emu.api_key}"})
    assert bearer.status_code == 401
    assert api.agent(conversation_id, RESPOND, body, key=api.conversation(other)["session_api_key"]).status_code == 401
    assert api.status(conversation_id) == "waiting_for_confirmation"  # none of them answered it
    # The session key opens no app-server route, whichever header carries it.
    for headers in ({"X-Session-API-Key": session_key}, {"Authorization": f"Bearer {session_key}"}):
        app = requests.get(f"{emu.url}{CONVERSATIONS}", params={"ids": conversation_id}, headers=headers, timeout=5)
        assert app.status_code == 401
    # The app server does not proxy the agent server's routes.
    proxied = api.call("POST", f"{CONVERSATIONS}/{conversation_id}/{RESPOND}", json=body)
    assert proxied.status_code == 404
    # What the agent server checks, in order, once the key is right.
    base = url.split("/api/conversations")[0]
    unknown = uuid.uuid4()
    missing = api.agent(str(unknown), RESPOND, body, key=session_key, base=base)
    assert missing.status_code == 404 and missing.json() == {"detail": f"Conversation not found: {unknown}"}
    elsewhere = api.agent(other, RESPOND, body, key=session_key, base=base)  # not this sandbox's conversation
    assert elsewhere.status_code == 404
    assert api.agent("not-a-uuid", RESPOND, body, key=session_key, base=base).status_code == 422
    for wrong in (None, {}, {"accept": "yes"}, {"accept": 1}, {"accept": False, "reason": None}, [True]):
        assert api.agent(conversation_id, RESPOND, wrong).status_code == 422, wrong
    dashed = api.agent(str(uuid.UUID(conversation_id)), RESPOND, body, key=session_key, base=base)
    assert dashed.status_code == 200  # the dashed id names the same conversation
    api.wait_status(conversation_id, "finished")
    assert all(r["status"] in (401, 404, 422, 200) for r in emu.requests_to("POST", "respond_to_confirmation"))
    assert session_key not in json.dumps(emu.requests_to("POST", "^/agent/"))  # never the header's value


def test_the_agent_server_is_unreachable_while_paused_and_waits_again_after_resume(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='npm install'] Install"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    state = api.conversation(conversation_id)
    base = state["conversation_url"].split("/api/conversations")[0]
    api.sandbox(conversation_id, "pause")
    paused = api.conversation(conversation_id)
    assert paused["sandbox_status"] == "PAUSED" and paused["execution_status"] is None
    assert paused["conversation_url"] is None and paused["session_api_key"] is None
    for action in (RESPOND, "run"):
        down = api.agent(conversation_id, action, {"accept": True}, key=state["session_api_key"], base=base)
        assert down.status_code == 503 and down.json() == {"detail": "Agent server unavailable"}
    time.sleep(0.8)
    api.sandbox(conversation_id, "resume")
    resumed = api.conversation(conversation_id)
    assert resumed["sandbox_status"] == "RUNNING" and resumed["execution_status"] == "waiting_for_confirmation"
    assert resumed["conversation_url"] == state["conversation_url"]
    assert api.agent(conversation_id, "run", {}).status_code == 200  # /run while waiting approves too
    api.wait_status(conversation_id, "finished")
    assert any(e["kind"] == "ObservationEvent" and e["tool_name"] == "terminal" for e in api.events(conversation_id))
    unknown_sandbox = requests.post(
        f"{emu.url}/agent/{uuid.uuid4().hex}/api/conversations/{conversation_id}/run", json={}, timeout=5
    )
    assert unknown_sandbox.status_code == 503


def test_a_message_sent_while_waiting_approves_the_pending_action(api, emu):
    conversation_id = api.ready(api.start("[emulator confirm='pip install -e .'] Set up"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    sent = api.send(conversation_id, "[emulator finish='after message'] and then stop")
    assert sent.status_code == 200 and sent.json()["success"] is True
    events = api.events(conversation_id)
    (observation,) = [e for e in events if e["kind"] == "ObservationEvent" and e["tool_name"] == "terminal"]
    assert observation["observation"]["command"] == "pip install -e ." and not pending_actions(events)
    assert api.status(conversation_id) == "running"
    assert wait_for(lambda: len(api.final_messages(conversation_id)) == 2)
    api.wait_status(conversation_id, "finished")
    assert api.final_messages(conversation_id) == ["Done: Set up", "after message"]


def test_confirm_markers_are_checked(api):
    for text in ("[emulator risk=HIGH] no confirm before it", "[emulator confirm=ls risk=EXTREME] bad risk"):
        body = {"initial_message": {"content": [{"type": "text", "text": text}]}}
        answer = api.call("POST", CONVERSATIONS, json=body)
        assert answer.status_code == 400 and "risk=" in answer.json()["detail"]


# -- plan mode -------------------------------------------------------------------------------------


def test_a_plan_conversation_writes_plan_md_and_nothing_else(api, emu):
    text = (
        "[emulator plan='# Plan\n\n1. Add a cache\n2. Test it' change=src/app.py:MODIFIED "
        "write='notes/x.txt:hi' output='{}' confirm='rm -rf /' duration=1] Plan the cache"
    )
    task = api.start(text, agent_type="plan")
    assert task["request"]["agent_type"] == "plan"
    conversation_id = api.ready(task)
    assert api.task(task["id"])["request"]["agent_type"] == "plan"  # the only place it can be read back
    assert "agent_type" not in api.conversation(conversation_id)
    running = api.read(FILE, conversation_id, file_path=PLAN_PATH)  # the tool created it at the start
    assert running.status_code == 200 and running.json() == PLAN_HEADERS
    seen = set()
    assert wait_for(lambda: seen.add(api.status(conversation_id)) or api.status(conversation_id) == "finished")
    assert "waiting_for_confirmation" not in seen  # the plan agent has no terminal: it asks nothing
    changes = api.read(CHANGES, conversation_id, path=PROJECT).json()
    assert changes == [{"status": "ADDED", "path": ".agents_tmp/PLAN.md"}]
    assert api.read(FILE, conversation_id, file_path=PLAN_PATH).json() == "# Plan\n\n1. Add a cache\n2. Test it"
    events = api.events(conversation_id)
    (edit,) = [e for e in events if e["kind"] == "ActionEvent" and e["tool_name"] != "finish"]
    assert edit["tool_name"] == "planning_file_editor" and edit["action"]["kind"] == "PlanningFileEditorAction"
    assert edit["action"]["path"] == PLAN_PATH
    assert api.final_messages(conversation_id) == ["# Plan\n\n1. Add a cache\n2. Test it"]
    default = api.ready(api.start("[emulator duration=0.2] Plan the cache", agent_type="plan"))
    api.wait_status(default, "finished")
    assert api.read(FILE, default, file_path=PLAN_PATH).json() == "# Plan\n\n1. Plan the cache"
    assert api.final_messages(default) == ["# Plan\n\n1. Plan the cache"]


@pytest.mark.parametrize("accept", [True, False], ids=["accepted", "rejected"])
def test_the_plan_agent_asks_before_writing_the_plan_with_confirm_plan(api, emu, accept):
    """``confirm_plan=yes`` (confirmation mode, as seen on the real server with ``AlwaysConfirm``): the
    plan agent waits before its ``planning_file_editor`` edit of PLAN.md; accepted, the plan is
    written; rejected, PLAN.md keeps its headers. The default agent ignores the marker."""
    text = "[emulator plan='1. Add a cache' confirm_plan=yes risk=LOW duration=0.4] Plan the cache"
    conversation_id = api.ready(api.start(text, agent_type="plan"))
    api.wait_status(conversation_id, "waiting_for_confirmation")
    (pending,) = pending_actions(api.events(conversation_id))
    assert pending["tool_name"] == "planning_file_editor" and pending["security_risk"] == "LOW"
    assert pending["action"]["kind"] == "PlanningFileEditorAction" and pending["action"]["path"] == PLAN_PATH
    assert api.read(FILE, conversation_id, file_path=PLAN_PATH).json() == PLAN_HEADERS  # not written yet
    answer = {"accept": True} if accept else {"accept": False, "reason": "not now"}
    assert api.agent(conversation_id, RESPOND, answer).status_code == 200
    if not accept:
        api.wait_status(conversation_id, "idle")
        (rejection,) = [e for e in api.events(conversation_id) if e["kind"] == "UserRejectObservation"]
        assert rejection["action_id"] == pending["id"] and rejection["tool_name"] == "planning_file_editor"
        assert api.agent(conversation_id, "run").status_code == 200
    api.wait_status(conversation_id, "finished")
    plan = api.read(FILE, conversation_id, file_path=PLAN_PATH).json()
    if accept:
        observations = [e for e in api.events(conversation_id) if e.get("action_id") == pending["id"]]
        assert [e["observation"]["kind"] for e in observations] == ["PlanningFileEditorObservation"]
        assert plan == "1. Add a cache" and api.final_messages(conversation_id) == ["1. Add a cache"]
    else:
        assert plan == PLAN_HEADERS
        assert api.final_messages(conversation_id) == [
            "No plan written (rejected: create .agents_tmp/PLAN.md: not now)"
        ]
    builder = api.ready(api.start("[emulator confirm_plan=yes duration=0.3] Build it"))
    seen = set()
    assert wait_for(lambda: seen.add(api.status(builder)) or api.status(builder) == "finished")
    assert "waiting_for_confirmation" not in seen


def test_a_sub_conversation_shares_the_parent_s_sandbox_and_sees_the_plan(api, emu):
    planner = api.ready(api.start("[emulator plan='# Plan\n\n1. Write done.txt' duration=0.2] Plan", agent_type="plan"))
    api.wait_status(planner, "finished")
    parent = api.conversation(planner)
    task = api.start(
        "Execute the plan based on the .agents_tmp/PLAN.md file. [emulator write='notes/done.txt:ok' duration=0.4]",
        parent_conversation_id=planner,
        selected_repository=None,
    )
    assert task["request"]["parent_conversation_id"] == planner
    assert task["request"]["sandbox_id"] == parent["sandbox_id"]  # as the server completes the request
    assert task["request"]["selected_repository"] == "acme/web" and task["request"]["agent_type"] == "default"
    child = api.ready(task)
    assert api.task(task["id"])["sandbox_id"] == parent["sandbox_id"]
    state = api.conversation(child)
    assert state["sandbox_id"] == parent["sandbox_id"] and state["parent_conversation_id"] == planner
    assert state["selected_repository"] == "acme/web"
    assert api.conversation(planner)["sub_conversation_ids"] == [child]
    plan = api.read(FILE, child, file_path=PLAN_PATH)  # the same workspace
    assert plan.status_code == 200 and plan.json() == "# Plan\n\n1. Write done.txt"
    api.wait_status(child, "finished")
    for either in (planner, child):  # a change in one is seen in the other
        paths = [c["path"] for c in api.read(CHANGES, either, path=PROJECT).json()]
        assert paths == [".agents_tmp/PLAN.md", "notes/done.txt"]
    assert api.read(FILE, planner, file_path=f"{PROJECT}/notes/done.txt").json() == "ok"
    # Children are hidden from the search unless asked for.
    listed = [c["id"] for c in api.call("GET", SEARCH).json()["items"]]
    assert planner in listed and child not in listed
    everything = api.call("GET", SEARCH, params={"include_sub_conversations": "true"}).json()["items"]
    assert child in [c["id"] for c in everything]
    assert api.call("GET", SEARCH, params={"include_sub_conversations": "maybe"}).status_code == 422
    # One sandbox: pausing it pauses both.
    api.sandbox(child, "pause")
    assert api.conversation(planner)["sandbox_status"] == api.conversation(child)["sandbox_status"] == "PAUSED"
    api.sandbox(planner, "resume")
    assert api.conversation(child)["sandbox_status"] == "RUNNING"


def test_start_request_fields_of_plan_mode_are_validated(api, emu):
    for fields in ({"agent_type": "planner"}, {"agent_type": None}, {"parent_conversation_id": "nope"}):
        body = {"initial_message": {"content": [{"type": "text", "text": "x"}]}, **fields}
        answer = api.call("POST", CONVERSATIONS, json=body)
        assert answer.status_code == 422, fields
        assert answer.json()["detail"][0]["loc"] == ["body", next(iter(fields))]
    # An unknown parent: the real server's ValueError goes unhandled (500, as read in its code).
    body = {"initial_message": {"content": [{"type": "text", "text": "x"}]}, "parent_conversation_id": uuid.uuid4().hex}
    unknown = api.call("POST", CONVERSATIONS, json=body)
    assert unknown.status_code == 500 and unknown.text == "Internal Server Error"
    assert not emu.start_tasks
