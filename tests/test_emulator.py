"""The emulator on its own, over plain HTTP: as strict as the real service, answers that fit the spec.

No provider client code here: a client bug must not hide an emulator bug.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_openhands.testing import Emulator
from tests.conftest import REPO

CONVERSATIONS = "/api/v1/app-conversations"
START_TASKS = "/api/v1/app-conversations/start-tasks"
TASK_SEARCH = "/api/v1/app-conversations/start-tasks/search"
EVENTS = "/api/v1/conversation/{conversation_id}/events/search"
SEND = "/api/v1/app-conversations/{conversation_id}/send-message"
CHANGES = "/api/v1/app-conversations/{conversation_id}/git/changes"
DIFF = "/api/v1/app-conversations/{conversation_id}/git/diff"
FILE = "/api/v1/app-conversations/{conversation_id}/file"


class Client:
    """Plain ``requests`` against the emulator, checking every answer against the V1 spec."""

    def __init__(self, emu: Emulator, contract: Any) -> None:
        self.emu = emu
        self.contract = contract
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emu.api_key}"

    def call(self, method: str, path: str, template: str | None = None, **kwargs: Any) -> requests.Response:
        answer = self.session.request(method, self.emu.url + path, timeout=10, **kwargs)
        template = template or path.split("?")[0]
        operation = self.contract.docs["v1"]["paths"].get(template, {}).get(method.lower())
        if operation and answer.status_code in (200, 422):
            self.contract.validate_response("v1", method, template, answer.json(), answer.status_code)
        return answer

    def start(self, text: str = "Fix the README", **fields: Any) -> dict[str, Any]:
        body = {"initial_message": {"content": [{"type": "text", "text": text}]}, "selected_repository": "acme/web"}
        self.contract.validate_request("v1", "POST", CONVERSATIONS, {**body, **fields})
        answer = self.call("POST", CONVERSATIONS, json={**body, **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def tasks(self, *task_ids: str) -> list[dict[str, Any] | None]:
        answer = self.call("GET", START_TASKS, params=[("ids", t) for t in task_ids])
        assert answer.status_code == 200, answer.text
        return answer.json()

    def conversations(self, *conversation_ids: str) -> list[dict[str, Any] | None]:
        answer = self.call("GET", CONVERSATIONS, params=[("ids", c) for c in conversation_ids])
        assert answer.status_code == 200, answer.text
        return answer.json()

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return self.conversations(conversation_id)[0]

    def ready(self, task: dict[str, Any], timeout: float = 5) -> str:
        found = wait_for(lambda: (self.tasks(task["id"])[0] or {}).get("status") in ("READY", "ERROR"), timeout)
        assert found
        current = self.tasks(task["id"])[0]
        assert current is not None and current["status"] == "READY", current
        return current["app_conversation_id"]

    def events(self, conversation_id: str, **params: Any) -> dict[str, Any]:
        path = EVENTS.format(conversation_id=conversation_id)
        answer = self.call("GET", path, template=EVENTS, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def send(self, conversation_id: str, text: str, **fields: Any) -> requests.Response:
        body = {"role": "user", "content": [{"type": "text", "text": text}], **fields}
        self.contract.validate_request("v1", "POST", SEND, body)
        return self.call("POST", SEND.format(conversation_id=conversation_id), template=SEND, json=body)

    def read(self, template: str, conversation_id: str, **params: Any) -> requests.Response:
        """GET one of the workspace endpoints (git changes, git diff, file), checked against the spec."""
        return self.call("GET", template.format(conversation_id=conversation_id), template=template, params=params)

    def pause(self, conversation_id: str) -> None:
        sandbox = self.conversation(conversation_id)["sandbox_id"]
        assert self.call("POST", f"/api/v1/sandboxes/{sandbox}/pause").json() == {"success": True}

    def resume(self, conversation_id: str) -> None:
        sandbox = self.conversation(conversation_id)["sandbox_id"]
        assert self.call("POST", f"/api/v1/sandboxes/{sandbox}/resume").json() == {"success": True}

    def control(self, path: str, body: Any = None) -> requests.Response:
        return requests.post(self.emu.url + path, json=body or {}, timeout=10)


def wait_for(check: Callable[[], bool], timeout: float = 5, step: float = 0.02) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(conversation_seconds=0.4, start_seconds=0.2, turn_lag_seconds=0.3) as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator, contract: Any) -> Client:
    return Client(emu, contract)


# -- 1. ids before READY ---------------------------------------------------------------------------


def test_a_conversation_does_not_exist_before_its_start_task_is_ready(api):
    wanted = uuid.uuid4()
    task = api.start(conversation_id=str(wanted))
    assert task["app_conversation_id"] is None and task["sandbox_id"] is None
    assert task["created_at"].endswith("Z")
    assert api.conversations(wanted.hex, str(wanted), uuid.uuid4().hex) == [None, None, None]
    conversation_id = api.ready(task)
    assert conversation_id == wanted.hex
    first, dashed, unknown = api.conversations(wanted.hex, str(wanted), uuid.uuid4().hex)
    assert first["id"] == dashed["id"] == wanted.hex and unknown is None
    assert first["sandbox_status"] == "RUNNING"
    read = api.tasks(task["id"])[0]
    assert "+" not in read["created_at"] and not read["created_at"].endswith("Z")  # no time zone on reads


def test_a_client_chosen_conversation_id_is_the_sandbox_id_too(api):
    wanted = uuid.uuid4()
    task = api.start(conversation_id=wanted.hex)
    assert task["request"]["conversation_id"] == str(wanted)  # echoed as a UUID, dashed
    conversation_id = api.ready(task)
    assert api.tasks(task["id"])[0]["sandbox_id"] == conversation_id == wanted.hex
    assert api.conversation(conversation_id)["sandbox_id"] == wanted.hex
    assert api.call("POST", f"/api/v1/sandboxes/{wanted.hex}/pause").json() == {"success": True}
    assert api.conversation(conversation_id)["sandbox_status"] == "PAUSED"
    chosen_by_server = api.ready(api.start("No id chosen"))
    sandbox = api.conversation(chosen_by_server)["sandbox_id"]
    assert len(sandbox) == 32 and sandbox != chosen_by_server


def test_a_ready_start_task_was_updated_when_it_became_ready(api, emu):
    task = api.start()
    api.ready(task)
    ready_at = datetime.fromtimestamp(emu.start_tasks[task["id"]].ready_at, tz=timezone.utc).replace(tzinfo=None)
    first = api.tasks(task["id"])[0]
    time.sleep(0.3)
    later = api.tasks(task["id"])[0]
    assert first["updated_at"] == later["updated_at"] == ready_at.isoformat()
    assert datetime.fromisoformat(later["updated_at"]) < datetime.now(timezone.utc).replace(tzinfo=None)
    assert datetime.fromisoformat(later["updated_at"]) > datetime.fromisoformat(later["created_at"])


def test_a_start_task_that_fails_never_makes_a_conversation(api, emu):
    task = api.start("Go [emulator start=error]", conversation_id=uuid.uuid4().hex)
    assert wait_for(lambda: api.tasks(task["id"])[0]["status"] == "ERROR")
    assert api.tasks(task["id"])[0]["detail"]
    assert api.conversation(task["request"]["conversation_id"]) is None
    assert emu.alive_count() == 0


# -- 2. ?ids= validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CONVERSATIONS, START_TASKS])
def test_ids_are_validated_as_the_service_does(api, path):
    ids = [uuid.uuid4().hex for _ in range(101)]
    assert api.call("GET", path, params=[("ids", i) for i in ids[:99]]).json() == [None] * 99
    hundred = api.call("GET", path, params=[("ids", i) for i in ids[:100]])
    if path == CONVERSATIONS:  # only the conversation batch stops at 99
        assert hundred.status_code == 400 and "Maximum is 99" in hundred.text
    else:  # the real server answered 100 start task ids; more is refused (stricter)
        assert hundred.status_code == 200 and hundred.json() == [None] * 100
        too_many = api.call("GET", path, params=[("ids", i) for i in ids])
        assert too_many.status_code == 400 and "Maximum is 100" in too_many.text
    assert api.call("GET", path, params={"ids": ",".join(ids[:2])}).status_code == 400
    assert api.call("GET", path, params={"ids": "not-a-uuid"}).status_code == 400
    assert api.call("GET", path + "?ids=").status_code == 400
    missing = api.call("GET", path)  # 422 validated against HTTPValidationError by the client
    assert missing.status_code == 422 and isinstance(missing.json()["detail"], list)


# -- 3. start task search --------------------------------------------------------------------------


def test_start_task_search_by_conversation_id_finds_only_ready_start_tasks(api, emu):
    """As on the real server: ``conversation_id__eq`` filters on ``app_conversation_id``, set at READY."""
    emu.start_seconds = 1.0
    wanted = uuid.uuid4()
    task = api.start(conversation_id=wanted.hex)
    for form in (str(wanted), wanted.hex):
        page = api.call("GET", TASK_SEARCH, params={"conversation_id__eq": form}).json()
        assert page == {"items": [], "next_page_id": None}
    # Before READY a retry finds its start among the recent ones, by the id it asked for.
    since = (datetime.now(timezone.utc) - timedelta(seconds=30)).isoformat()
    recent = api.call(
        "GET", TASK_SEARCH, params={"created_at__gte": since, "sort_order": "CREATED_AT_DESC", "limit": 100}
    ).json()
    mine = [t for t in recent["items"] if uuid.UUID(t["request"]["conversation_id"]) == wanted]
    assert [t["id"] for t in mine] == [task["id"]] and mine[0]["status"] != "READY"
    assert mine[0]["request"]["conversation_id"] == str(wanted)
    api.ready(task)
    for form in (str(wanted), wanted.hex):
        page = api.call("GET", TASK_SEARCH, params={"conversation_id__eq": form}).json()
        assert [t["id"] for t in page["items"]] == [task["id"]] and page["items"][0]["status"] == "READY"


def test_recent_start_tasks_page_by_page(api, emu):
    """More start tasks than ``limit``: a client walks ``next_page_id`` to find its own."""
    emu.concurrency_limit = 20
    began = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    wanted = [uuid.uuid4() for _ in range(5)]
    tasks = [api.start(f"Task {n}", conversation_id=str(w)) for n, w in enumerate(wanted)]
    api.start("Not ours")
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"created_at__gte": began, "sort_order": "CREATED_AT_DESC", "limit": 2}
    for _ in range(10):
        page = api.call("GET", TASK_SEARCH, params=params).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        if not page["next_page_id"]:
            break
        params["page_id"] = page["next_page_id"]
    assert len(seen) == 6 and len({t["id"] for t in seen}) == 6
    asked = [t["request"].get("conversation_id") for t in seen]
    assert asked[0] is None and asked[1:] == [str(w) for w in reversed(wanted)]  # newest first
    assert [t["id"] for t in seen[1:]] == [t["id"] for t in reversed(tasks)]
    oldest_first = api.call("GET", TASK_SEARCH, params={"created_at__gte": began, "sort_order": "CREATED_AT"})
    assert [t["id"] for t in oldest_first.json()["items"]] == [t["id"] for t in reversed(seen)]


def test_start_task_search_orders_and_filters(api):
    task = api.start(conversation_id=uuid.uuid4().hex)
    other = api.start("Other")  # no chosen id: found by its conversation id only once READY
    api.ready(task)
    other_id = api.ready(other)
    assert [
        t["id"] for t in api.call("GET", TASK_SEARCH, params={"conversation_id__eq": other_id}).json()["items"]
    ] == [other["id"]]
    everything = api.call("GET", TASK_SEARCH).json()["items"]
    assert [t["id"] for t in everything] == [other["id"], task["id"]]  # CREATED_AT_DESC by default
    ascending = api.call("GET", TASK_SEARCH, params={"sort_order": "CREATED_AT"}).json()["items"]
    assert [t["id"] for t in ascending] == [task["id"], other["id"]]
    first = api.call("GET", TASK_SEARCH, params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_page_id"]
    second = api.call("GET", TASK_SEARCH, params={"limit": 1, "page_id": first["next_page_id"]}).json()
    assert [t["id"] for t in second["items"]] == [task["id"]] and second["next_page_id"] is None
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    assert api.call("GET", TASK_SEARCH, params={"created_at__gte": later}).json()["items"] == []
    for bad in ({"sort_order": "NEWEST"}, {"conversation_id__eq": "x"}, {"limit": 0}, {"limit": 101}):
        assert api.call("GET", TASK_SEARCH, params=bad).status_code == 422


# -- 4. a reused conversation id -------------------------------------------------------------------


def test_a_reused_conversation_id_is_accepted_then_its_start_task_fails(api, emu):
    """As on the real server: 200, the start task ends in ERROR (a 500 from the agent server), and the
    second boot takes the original's sandbox (its id is the conversation id) over."""
    wanted = uuid.uuid4().hex
    original = api.start("Long enough [emulator duration=30]", conversation_id=wanted)
    conversation_id = api.ready(original)
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "running")
    before = api.conversation(conversation_id)
    events_before = api.events(conversation_id)["items"]
    again = api.start("Again", conversation_id=str(uuid.UUID(wanted)))
    assert again["id"] != original["id"] and again["status"] != "ERROR"
    assert wait_for(lambda: api.tasks(again["id"])[0]["status"] == "ERROR")
    failed = api.tasks(again["id"])[0]
    assert failed["detail"].startswith(
        f"Server error '500 Internal Server Error' for url 'http://localhost:{emu.port}/api/conversations'"
    )
    assert failed["app_conversation_id"] is None and failed["sandbox_id"] == wanted
    after = api.conversation(conversation_id)
    assert (after["id"], after["created_at"], after["updated_at"]) == (
        wanted,
        before["created_at"],
        before["updated_at"],
    )
    assert (after["sandbox_status"], after["execution_status"]) == ("RUNNING", None)
    time.sleep(0.5)
    assert api.conversation(conversation_id)["execution_status"] is None  # never finishes
    assert api.events(conversation_id)["items"] == events_before  # nothing more reaches the record
    refused = api.send(conversation_id, "Are you there?")
    assert refused.status_code == 502 and refused.json() == {"detail": "Agent server error: 404"}
    assert api.tasks(original["id"])[0]["status"] == "READY"
    found = api.call("GET", TASK_SEARCH, params={"conversation_id__eq": wanted}).json()["items"]
    assert [t["id"] for t in found] == [original["id"]]  # the failed one never had app_conversation_id


def test_a_reused_id_takes_over_a_finished_conversation_too(api):
    wanted = uuid.uuid4().hex
    conversation_id = api.ready(api.start("Quick", conversation_id=wanted))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "finished")
    finished = api.conversation(conversation_id)
    api.start("Again", conversation_id=wanted)
    after = api.conversation(conversation_id)
    assert (after["sandbox_status"], after["execution_status"]) == ("RUNNING", None)
    assert after["pr_number"] == finished["pr_number"]  # what was done stays done
    assert api.events(conversation_id, kind__eq="ActionEvent")["items"][0]["action"]["kind"] == "FinishAction"


# -- 5-7. capacity and quota -----------------------------------------------------------------------


def test_a_start_refused_for_capacity_the_legacy_way(api, emu):
    """Before the service answered 429, a start on a full account ended in ERROR with such a detail."""
    emu.concurrency_limit = 7
    task = api.start("Go [emulator start=capacity]", conversation_id=uuid.uuid4().hex)
    assert task["status"] != "ERROR"
    assert wait_for(lambda: api.tasks(task["id"])[0]["status"] == "ERROR")
    failed = api.tasks(task["id"])[0]
    assert failed["detail"] == "Sandbox could not start: maximum number of concurrent conversations (7) reached"
    assert "concurrent conversations" in failed["detail"].lower()  # what the provider takes for capacity
    assert failed["app_conversation_id"] is None and failed["sandbox_id"] is None
    assert api.conversation(task["request"]["conversation_id"]) is None
    assert emu.alive_count() == 0


def test_a_finished_conversation_keeps_its_slot_until_paused_or_deleted(api, emu):
    emu.concurrency_limit = 2
    first, second = api.ready(api.start("One")), api.ready(api.start("Two"))
    assert wait_for(lambda: api.conversation(first)["execution_status"] == "finished")
    refused = api.call("POST", CONVERSATIONS, json={"initial_message": {"content": [{"type": "text", "text": "3"}]}})
    assert refused.status_code == 429 and "Retry-After" not in refused.headers
    assert refused.json()["detail"] == {
        "error": "CONCURRENCY_LIMIT_REACHED",
        "message": refused.json()["detail"]["message"],
        "limit": 2,
        "current": 2,
    }
    sandbox = api.conversation(first)["sandbox_id"]
    assert api.call("POST", f"/api/v1/sandboxes/{sandbox}/pause").json() == {"success": True}
    third = api.start("Three")  # the paused one gave its slot back
    resume = api.call("POST", f"/api/v1/sandboxes/{sandbox}/resume")
    assert resume.status_code == 429 and resume.json()["detail"]["error"] == "CONCURRENCY_LIMIT_REACHED"
    assert api.call("DELETE", f"{CONVERSATIONS}/{second}").json() == {"success": True}
    assert api.conversation(second) is None
    assert api.call("DELETE", f"{CONVERSATIONS}/{second}").status_code == 404
    assert api.call("POST", f"/api/v1/sandboxes/{sandbox}/resume").json() == {"success": True}
    api.ready(third)


def test_capacity_refusal_can_be_flat(api, emu):
    assert api.control("/_emulator/config", {"concurrency_limit": 1, "capacity_error_style": "flat"}).ok
    api.start()
    refused = api.call("POST", CONVERSATIONS, json={"initial_message": None})
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "CONCURRENCY_LIMIT_REACHED",
        "message": refused.json()["message"],
        "limit": 1,
        "current": 1,
    }
    assert api.control("/_emulator/config", {"capacity_error_style": "sideways"}).status_code == 400


def test_daily_sandbox_quota(api, emu):
    assert api.control("/_emulator/config", {"daily_sandbox_limit": 2}).ok
    first = api.start("One")
    api.start("Two [emulator start=error]")  # a start that fails still used a sandbox
    api.call("POST", f"/api/v1/sandboxes/{api.conversation(api.ready(first))['sandbox_id']}/pause")
    refused = api.call("POST", CONVERSATIONS, json={"initial_message": None})
    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert detail["error"] == "DAILY_SANDBOX_LIMIT_REACHED" and detail["limit"] == 2 and detail["message"]
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(detail["reset_at"]) == tomorrow
    emu.daily_sandbox_limit = None
    api.start("Three")


# -- 8. faults as outage windows -------------------------------------------------------------------


def test_faults_can_be_outage_windows(api, emu):
    emu.outage(status=503, seconds=0.5, path="app-conversations$", method="GET", headers={"Retry-After": "1"})
    for _ in range(4):
        down = api.call("GET", CONVERSATIONS, params={"ids": uuid.uuid4().hex})
        assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    assert api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code == 200
    assert wait_for(lambda: api.call("GET", CONVERSATIONS, params={"ids": uuid.uuid4().hex}).status_code == 200, 2)

    assert api.control("/_emulator/faults", {"status": 502, "seconds": 0.3, "times": 2}).ok
    assert [api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code for _ in range(3)] == [
        502,
        502,
        200,
    ]
    emu.add_fault(status=500)  # neither times nor seconds: once
    assert [api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code for _ in range(2)] == [500, 200]
    assert api.control("/_emulator/outage", {"seconds": 0.2}).ok
    assert api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code == 503
    assert wait_for(lambda: api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code == 200, 2)
    emu.add_fault(delay=0.2, passthrough=True, seconds=0.5)
    began = time.time()
    assert api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}).status_code == 200
    assert time.time() - began >= 0.2


# -- 9. rate limit ---------------------------------------------------------------------------------


def test_rate_limit_and_requests_per_minute(api, emu):
    began = time.time()
    emu.rate_limit_per_minute = 5
    codes = [api.call("GET", START_TASKS, params={"ids": uuid.uuid4().hex}) for _ in range(7)]
    assert [c.status_code for c in codes] == [200] * 5 + [429] * 2
    assert codes[-1].json() == {"error": "Rate limit exceeded: 5 per 1 minute"}
    assert 1 <= int(codes[-1].headers["Retry-After"]) <= 60
    assert api.control("/_emulator/stats").status_code in (200, 404)  # control calls are never limited
    assert requests.get(emu.url + "/_emulator/stats", timeout=5).json()["max_requests_per_minute"] == 7
    assert emu.requests_per_minute(since=began) == 7 and emu.requests_per_minute(since=time.time() + 1) == 0


# -- 10. transient sandbox ERROR -------------------------------------------------------------------


def test_a_transient_sandbox_error_is_not_the_end(api):
    conversation_id = api.ready(api.start("Slow agent server [emulator duration=0.4 sandbox_error=0.6]"))
    seen: list[tuple[str, str | None]] = []

    def finished() -> bool:
        state = api.conversation(conversation_id)
        pair = (state["sandbox_status"], state["execution_status"])
        if not seen or seen[-1] != pair:
            seen.append(pair)
        if state["sandbox_status"] == "ERROR":
            assert state["session_api_key"] is None and state["conversation_url"] is None
        return pair == ("RUNNING", "finished")

    assert wait_for(finished, 5)
    assert ("ERROR", None) in seen and seen.index(("ERROR", None)) > 0
    assert seen[seen.index(("ERROR", None)) + 1] == ("RUNNING", "running")


# -- 11. events ------------------------------------------------------------------------------------


def kinds(items: list[dict[str, Any]]) -> list[str]:
    """Each event's kind, a state update's with its key (``ConversationStateUpdateEvent:stats``)."""
    return [f"{e['kind']}:{e['key']}" if e["kind"] == "ConversationStateUpdateEvent" else e["kind"] for e in items]


def test_events_of_a_finished_conversation(api):
    text = "Check whether the README is right and send a PR to fix it if not"
    conversation_id = api.ready(api.start(text))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "finished")
    assert wait_for(lambda: len(api.events(conversation_id)["items"]) == 10, 2)  # the closing snapshot, a moment later
    items = api.events(conversation_id)["items"]
    # as the real agent server records a turn: its state snapshots (``full_state``) when the conversation
    # starts and when the run stops, the user's message id, one ``stats`` per LLM call (the title's, the
    # finish's) before what the call answered
    assert kinds(items) == [
        "ConversationStateUpdateEvent:full_state",
        "MessageEvent",
        "ConversationStateUpdateEvent:last_user_message_id",
        "ConversationStateUpdateEvent:execution_status",
        "ConversationStateUpdateEvent:stats",
        "ConversationStateUpdateEvent:stats",
        "ActionEvent",
        "ObservationEvent",
        "ConversationStateUpdateEvent:execution_status",
        "ConversationStateUpdateEvent:full_state",
    ]
    started, message, last_user, running, title_stats, stats, action, observation, finished, stopped = items
    assert message["source"] == "user" and message["llm_message"]["role"] == "user"
    assert message["llm_message"]["content"][0]["text"] == text
    assert (running["key"], running["value"], finished["value"]) == ("execution_status", "running", "finished")
    assert last_user["value"] == message["id"] and last_user["parent_id"] == message["id"]
    assert action["source"] == "agent" and action["tool_name"] == "finish"
    assert action["action"] == {"kind": "FinishAction", "message": f"Done: {text[:40]}"}
    assert observation["observation"]["kind"] == "FinishObservation" and observation["action_id"] == action["id"]
    assert len({e["id"] for e in items}) == 10
    # the snapshots: the whole state (a few KB), no parent, the LLM's key masked, the usage so far
    for snapshot, status in ((started, "idle"), (stopped, "finished")):
        state = snapshot["value"]
        assert snapshot["source"] == "environment" and snapshot["parent_id"] is None
        assert state["execution_status"] == status and state["id"] == str(uuid.UUID(conversation_id))
        assert state["agent"]["llm"]["api_key"] == "**********" and state["agent"]["kind"] == "Agent"
        assert 1500 < len(json.dumps(state)) < 20_000
    assert started["value"]["stats"] == {"usage_to_metrics": {}} and "last_user_message_id" not in started["value"]
    assert stopped["value"]["last_user_message_id"] == message["id"]
    assert stopped["value"]["leaf_event_id"] == finished["id"]
    assert len(stopped["value"]["stats"]["usage_to_metrics"]["agent"]["token_usages"]) == 2
    # stats: the agent LLM's usage so far, as the conversation's metrics count it
    usage = stats["value"]["usage_to_metrics"]["agent"]
    assert set(usage) == {"model_name", "accumulated_cost", "accumulated_token_usage", "max_budget_per_task"}
    assert stats["parent_id"] == title_stats["id"] and action["parent_id"] == stats["id"]
    metrics = api.conversation(conversation_id)["metrics"]
    assert 0 < usage["accumulated_cost"] <= metrics["accumulated_cost"]
    assert 0 < usage["accumulated_token_usage"]["prompt_tokens"] <= metrics["accumulated_token_usage"]["prompt_tokens"]
    assert [e["timestamp"] for e in items] == sorted(e["timestamp"] for e in items)
    assert [e["id"] for e in api.events(uuid.UUID(conversation_id).hex.upper())["items"]] == [e["id"] for e in items]

    newest = api.events(conversation_id, sort_order="TIMESTAMP_DESC")["items"]
    assert [e["id"] for e in newest] == [e["id"] for e in reversed(items)]
    assert [e["id"] for e in api.events(conversation_id, kind__eq="ActionEvent")["items"]] == [action["id"]]
    updates = api.events(conversation_id, kind__eq="ConversationStateUpdateEvent")["items"]
    assert [e["id"] for e in updates] == [e["id"] for e in items if e["kind"] == "ConversationStateUpdateEvent"]
    page = api.events(conversation_id, limit=2)
    assert len(page["items"]) == 2 and page["next_page_id"]
    rest = api.events(conversation_id, limit=100, page_id=page["next_page_id"])
    assert [e["id"] for e in page["items"] + rest["items"]] == [e["id"] for e in items]
    assert api.events(conversation_id, timestamp__gte=action["timestamp"])["items"][0]["id"] == action["id"]
    assert api.events(uuid.uuid4().hex) == {"items": [], "next_page_id": None}
    path = EVENTS.format(conversation_id=conversation_id)
    for bad in ({"kind__eq": "Nope"}, {"sort_order": "NEWEST"}, {"limit": 0}, {"timestamp__gte": "yesterday"}):
        assert api.call("GET", path, template=EVENTS, params=bad).status_code == 422


def test_a_scripted_final_answer(api):
    text = '[emulator finish="All done: the README [v2] is fixed" duration=0.2] Fix the README'
    conversation_id = api.ready(api.start(text))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "finished")
    action = api.events(conversation_id, kind__eq="ActionEvent")["items"][-1]
    assert action["action"] == {"kind": "FinishAction", "message": "All done: the README [v2] is fixed"}
    assert json.loads(action["tool_call"]["arguments"]) == {"message": "All done: the README [v2] is fixed"}
    observation = api.events(conversation_id, kind__eq="ObservationEvent")["items"][-1]
    assert observation["observation"]["content"][0]["text"] == "All done: the README [v2] is fixed"
    api.send(conversation_id, "[emulator duration=0.1 finish='Second answer'] And the CHANGELOG")
    assert wait_for(lambda: len(api.events(conversation_id, kind__eq="ActionEvent")["items"]) == 2, 3)
    assert api.events(conversation_id, kind__eq="ActionEvent")["items"][-1]["action"]["message"] == "Second answer"


@pytest.mark.parametrize(
    ("message", "directives", "rest"),
    [
        ("Go [emulator outcome=error duration=3]", {"outcome": "error", "duration": "3"}, "Go"),
        (
            '[emulator finish="text with spaces" outcome=stuck] Task',
            {"finish": "text with spaces", "outcome": "stuck"},
            "Task",
        ),
        ("[emulator finish='single ] quoted'] Task", {"finish": "single ] quoted"}, "Task"),
        ("[emulator start=capacity] [emulator duration=2] Two", {"start": "capacity", "duration": "2"}, "Two"),
        ('[fake-llm finish="X"] [emulator duration=1] Mixed', {"duration": "1"}, '[fake-llm finish="X"] Mixed'),
        ("[emulator sandbox_error=0.5] Plain", {"sandbox_error": "0.5"}, "Plain"),
        ("seeded [emulator]", {}, "seeded"),
        (
            '[emulator write="report.json:{\\"a\\": 1}" output=\'{"ok": true}\'] Task',
            {"write": 'report.json:{"a": 1}', "output": '{"ok": true}'},
            "Task",
        ),
        ("No marker at all", {}, "No marker at all"),
    ],
)
def test_markers_are_parsed_with_quoted_values(message, directives, rest):
    from airflow_provider_openhands.testing.emulator import _MARKER, _directives

    assert _directives(message) == directives
    assert " ".join(_MARKER.sub("", message).split()) == rest


def test_events_of_a_failed_conversation(api):
    """Issue 32, item 4: an error turn ends as the real server's does (``events_search_llm_failure.json``,
    recorded by ``tests/contract``): the state update ``execution_status: error``, then the
    ``ConversationErrorEvent``, then the closing snapshot, each with the fields the real one has."""
    real = json.loads((REPO / "tests" / "contract" / "real_samples" / "events_search_llm_failure.json").read_text())
    conversation_id = api.ready(api.start("Go [emulator outcome=error]"))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "error")
    assert wait_for(lambda: api.events(conversation_id)["items"][-1]["key"] == "full_state", 2)
    items = api.events(conversation_id)["items"]
    assert (
        kinds(items)[-3:]
        == kinds(real)[-3:]
        == [
            "ConversationStateUpdateEvent:execution_status",
            "ConversationErrorEvent",
            "ConversationStateUpdateEvent:full_state",
        ]
    )
    for mine, theirs in zip(items[-3:], real[-3:], strict=True):
        assert set(mine) == set(theirs) and mine["source"] == theirs["source"], (mine, theirs)
    assert items[-3]["value"] == real[-3]["value"] == "error"
    assert items[-2]["code"] and items[-2]["detail"]
    assert items[-1]["value"]["execution_status"] == "error"
    assert not api.events(conversation_id, kind__eq="ActionEvent")["items"]


def test_events_stay_readable_while_paused(api):
    done = api.ready(api.start("Quick"))
    midway = api.ready(api.start("Long [emulator duration=30]"))
    assert wait_for(lambda: api.conversation(done)["execution_status"] == "finished")
    for conversation_id in (done, midway):
        sandbox = api.conversation(conversation_id)["sandbox_id"]
        assert api.call("POST", f"/api/v1/sandboxes/{sandbox}/pause").json() == {"success": True}
        paused = api.conversation(conversation_id)
        assert paused["sandbox_status"] == "PAUSED" and paused["execution_status"] is None
        assert paused["session_api_key"] is None and paused["conversation_url"] is None
    assert api.events(done, kind__eq="ActionEvent")["items"][0]["action"]["kind"] == "FinishAction"
    assert api.events(midway, kind__eq="ActionEvent")["items"] == []
    statuses = [e["value"] for e in api.events(midway)["items"] if e.get("key") == "execution_status"]
    assert statuses == ["running"]
    assert api.call("POST", f"/api/v1/sandboxes/{uuid.uuid4().hex}/pause").status_code == 404
    assert api.call("POST", f"/api/v1/sandboxes/{uuid.uuid4().hex}/resume").status_code == 404


# -- 12. send-message ------------------------------------------------------------------------------


def test_send_message_starts_a_new_turn_seen_late(api, emu):
    conversation_id = api.ready(api.start("First"))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "finished")
    before = api.conversation(conversation_id)
    events_before = len(api.events(conversation_id)["items"])
    answer = api.send(conversation_id, "Now the CHANGELOG [emulator outcome=error duration=0.3]")
    assert answer.status_code == 200
    assert answer.json() == {"success": True, "sandbox_status": "RUNNING", "message": None}
    stale = api.conversation(conversation_id)  # for turn_lag_seconds: the previous turn, its old updated_at
    assert stale["execution_status"] == "finished" and stale["updated_at"] == before["updated_at"]
    # the new message is on record at once (and the agent server's note of it)
    assert kinds(api.events(conversation_id)["items"][events_before:]) == [
        "MessageEvent",
        "ConversationStateUpdateEvent:last_user_message_id",
    ]
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "running", 2)
    assert api.conversation(conversation_id)["updated_at"] > before["updated_at"]
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "error", 3)
    assert wait_for(lambda: api.events(conversation_id)["items"][-1]["key"] == "full_state", 2)
    assert kinds(api.events(conversation_id)["items"][events_before:]) == [
        "MessageEvent",
        "ConversationStateUpdateEvent:last_user_message_id",
        "ConversationStateUpdateEvent:execution_status",
        "ConversationStateUpdateEvent:execution_status",
        "ConversationErrorEvent",
        "ConversationStateUpdateEvent:full_state",
    ]


def test_send_message_refusals(api):
    conversation_id = api.ready(api.start("First"))
    assert api.send(uuid.uuid4().hex, "Hello").status_code == 404
    pending = api.start("Not ready yet", conversation_id=uuid.uuid4().hex)
    assert api.send(pending["request"]["conversation_id"], "Hello").status_code == 404
    bad = api.call("POST", SEND.format(conversation_id=conversation_id), template=SEND, json={"content": []})
    assert bad.status_code == 422
    sandbox = api.conversation(conversation_id)["sandbox_id"]
    api.call("POST", f"/api/v1/sandboxes/{sandbox}/pause")
    paused = api.send(conversation_id, "Hello")
    assert paused.status_code == 409
    assert paused.json()["detail"].startswith(f"Sandbox is PAUSED. Use POST /api/v1/sandboxes/{sandbox}/resume")


# -- 13-14. what existed ---------------------------------------------------------------------------


def test_markers_stats_done_and_auth(api, emu):
    task = api.start("Go [emulator outcome=stuck duration=0.2]")
    conversation_id = api.ready(task)
    assert requests.get(f"{emu.url}/_emulator/done/{conversation_id}", timeout=5).status_code == 404
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "stuck")
    assert requests.get(f"{emu.url}/_emulator/done/{conversation_id}", timeout=5).status_code == 200
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["created"] == 1 and stats["alive"] == 1
    unauthenticated = requests.get(emu.url + CONVERSATIONS, params={"ids": conversation_id}, timeout=5)
    assert unauthenticated.status_code == 401
    seeded = api.control("/_emulator/seed", {"durations": [0.1, 0.1]}).json()
    assert all(api.conversation(s["id"])["sandbox_status"] == "RUNNING" for s in seeded)
    search = api.call("GET", "/api/v1/app-conversations/search", params={"limit": 2}).json()
    assert len(search["items"]) == 2 and search["next_page_id"]
    assert api.control("/_emulator/reset").ok and emu.stats()["created"] == 0


def test_v0_still_works(emu, contract):
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    body = {"initial_user_msg": "Fix it [emulator duration=0.1]", "repository": "acme/web"}
    started = requests.post(emu.url + "/api/conversations", json=body, headers=headers, timeout=5).json()
    contract.validate_response("v0", "POST", "/api/conversations", started)
    path = f"/api/conversations/{started['conversation_id']}"
    again = requests.post(
        emu.url + "/api/conversations", json={**body, "conversation_id": started["conversation_id"]}, headers=headers
    )
    assert again.status_code == 409
    assert wait_for(lambda: requests.get(emu.url + path, headers=headers, timeout=5).json()["status"] == "RUNNING")
    info = requests.get(emu.url + path, headers=headers, timeout=5).json()
    contract.validate_response("v0", "GET", "/api/conversations/{conversation_id}", info)


# -- 15. what the agent leaves: git changes, diffs, files (issue 11) --------------------------------

CHANGED = (
    "[emulator change=src/app.py:MODIFIED change=README.md:ADDED change=old.py->new.py:RENAMED"
    " change=gone.txt:DELETED duration=0.6] Upgrade the dependency"
)


def finished(api: Client, conversation_id: str, timeout: float = 5) -> bool:
    return wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "finished", timeout)


def test_git_changes_and_diffs_of_a_finished_turn(api, emu):
    conversation_id = api.ready(api.start(CHANGED))  # acme/web: the project is /workspace/project/web
    root = "/workspace/project/web"
    assert api.conversation(conversation_id)["execution_status"] == "running"
    assert api.read(CHANGES, conversation_id, path=root).json() == []  # stricter: nothing before the end
    assert finished(api, conversation_id)
    changes = api.read(CHANGES, conversation_id, path=root)
    assert changes.status_code == 200
    assert changes.json() == [  # the agent server's GitChange: repository-relative, sorted by path
        {"status": "ADDED", "path": "README.md"},
        {"status": "DELETED", "path": "gone.txt"},
        {"status": "ADDED", "path": "new.py"},  # a rename is DELETED + ADDED, as git diff --name-status
        {"status": "DELETED", "path": "old.py"},
        {"status": "UPDATED", "path": "src/app.py"},  # MODIFIED in the marker: the real enum says UPDATED
    ]
    assert api.read(CHANGES, conversation_id, path=root + "/", ref="HEAD").json() == changes.json()
    assert api.read(CHANGES, conversation_id, path="/workspace/project").json() == []  # not the repository
    assert api.read(CHANGES, conversation_id, path="web").json() == []

    updated = api.read(DIFF, conversation_id, path=f"{root}/src/app.py")
    assert updated.status_code == 200 and set(updated.json()) == {"modified", "original"}
    assert updated.json()["original"] and updated.json()["modified"] != updated.json()["original"]
    assert not updated.json()["modified"].endswith("\n")
    added = api.read(DIFF, conversation_id, path=f"{root}/README.md").json()
    assert added["original"] == "" and added["modified"]
    moved = api.read(DIFF, conversation_id, path=f"{root}/new.py").json()
    assert moved["original"] == "" and "old.py" in moved["modified"]
    for missing in (f"{root}/gone.txt", f"{root}/setup.py", "src/app.py"):  # deleted, untouched, relative
        answer = api.read(DIFF, conversation_id, path=missing)
        assert (answer.status_code, answer.json()) == (502, {"detail": "Agent server error: 400"}), missing


def test_git_endpoints_refuse_like_the_real_server(api, emu):
    conversation_id = api.ready(api.start(CHANGED.replace("duration=0.6", "duration=0.1")))
    assert finished(api, conversation_id)
    for template, params in ((CHANGES, {}), (DIFF, {"ref": "HEAD"})):
        answer = api.read(template, conversation_id, **params)  # path is required: FastAPI's 422
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", "path"]
        assert api.read(template, "not-a-uuid", path="/x").status_code == 422
        unknown = api.read(template, uuid.uuid4().hex, path="/workspace/project/web")
        assert unknown.status_code == 404 and "is not reachable" in unknown.json()["detail"]
    pending = api.start("Not ready", conversation_id=uuid.uuid4().hex)
    assert api.read(CHANGES, pending["request"]["conversation_id"], path="/workspace/project/web").status_code == 404
    api.pause(conversation_id)  # a client must read the changes before it pauses the sandbox
    paused = api.read(CHANGES, conversation_id, path="/workspace/project/web")
    assert paused.status_code == 409
    assert paused.json() == {"detail": "Sandbox is paused; resume it before reading git state."}
    assert api.read(DIFF, conversation_id, path="/workspace/project/web/README.md").status_code == 409
    api.resume(conversation_id)
    assert len(api.read(CHANGES, conversation_id, path="/workspace/project/web").json()) == 5
    emu.conversation(conversation_id).sandbox_override = "MISSING"
    assert api.read(CHANGES, conversation_id, path="/workspace/project/web").status_code == 404


def test_a_big_diff(api):
    text = "[emulator change=data.csv:UPDATED change=big.bin:ADDED diff_bytes=200000 duration=0.1] Regenerate"
    conversation_id = api.ready(api.start(text, selected_repository=None))
    assert finished(api, conversation_id)
    assert api.read(CHANGES, conversation_id, path="/workspace/project").json() == [
        {"status": "ADDED", "path": "big.bin"},
        {"status": "UPDATED", "path": "data.csv"},
    ]
    diff = api.read(DIFF, conversation_id, path="/workspace/project/data.csv").json()
    assert len(diff["modified"]) == 200000 and len(diff["original"]) < 1000
    assert len(api.read(FILE, conversation_id, file_path="/workspace/project/big.bin").json()) == 200000
    huge = api.ready(api.start("[emulator change=dump.sql:ADDED diff_bytes=1048577 duration=0.1] Dump"))
    assert finished(api, huge)
    assert api.read(CHANGES, huge, path="/workspace/project/web").json() == [{"status": "ADDED", "path": "dump.sql"}]
    too_big = api.read(DIFF, huge, path="/workspace/project/web/dump.sql")  # over the agent server's 1 MiB
    assert (too_big.status_code, too_big.json()) == (502, {"detail": "Agent server error: 400"})


def test_files_the_agent_wrote(api, emu, contract):
    text = (
        '[emulator write=\'report.json:{"a": 1}\' write="notes/x.txt:line: one" duration=0.6]'
        ' [emulator output="{\\"cause\\": \\"disk full\\", \\"confidence\\": 0.9}"] Triage'
    )
    conversation_id = api.ready(api.start(text))
    root = "/workspace/project/web"
    early = api.read(FILE, conversation_id, file_path=f"{root}/report.json")
    assert early.status_code == 404  # the agent has not finished its turn yet
    assert finished(api, conversation_id)
    report = api.read(FILE, conversation_id, file_path=f"{root}/report.json")
    assert report.status_code == 200 and report.json() == '{"a": 1}'  # the file's text, as a JSON string
    contract.validate_response("v1", "GET", FILE, report.json())
    assert json.loads(api.read(FILE, conversation_id, file_path=f"{root}/openhands_output.json").json()) == {
        "cause": "disk full",
        "confidence": 0.9,
    }
    assert api.read(FILE, conversation_id, file_path=f"{root}/notes/x.txt").json() == "line: one"
    assert api.read(FILE, conversation_id, file_path=f"{root}/./notes/../report.json").json() == '{"a": 1}'
    for missing in (f"{root}/other.json", "report.json"):  # never written; relative (not absolute)
        answer = api.read(FILE, conversation_id, file_path=missing)
        assert answer.status_code == 404, missing
    assert api.read(FILE, conversation_id).status_code == 404  # the default, PLAN.md, was not written
    assert api.read(FILE, uuid.uuid4().hex, file_path=f"{root}/report.json").status_code == 404
    written = [e for e in api.events(conversation_id, kind__eq="ActionEvent")["items"] if e["tool_name"] != "finish"]
    assert [e["action"]["path"] for e in written] == [
        f"{root}/report.json",
        f"{root}/notes/x.txt",
        f"{root}/openhands_output.json",
    ]
    assert {e["action"]["kind"] for e in written} == {"FileEditorAction"}
    newest = api.events(conversation_id, kind__eq="ActionEvent", sort_order="TIMESTAMP_DESC", limit=1)["items"]
    assert newest[0]["tool_name"] == "finish"
    assert {c["path"] for c in api.read(CHANGES, conversation_id, path=root).json()} == {
        "report.json",
        "notes/x.txt",
        "openhands_output.json",
    }
    api.pause(conversation_id)
    assert api.read(FILE, conversation_id, file_path=f"{root}/report.json").status_code == 409
    emu.missing_file_answer = "empty"  # how the real server answers every miss: 200 ""
    for params in ({"file_path": f"{root}/report.json"}, {"file_path": "report.json"}):
        answer = api.read(FILE, conversation_id, **params)
        assert (answer.status_code, answer.json()) == (200, ""), params


def test_a_failed_turn_writes_nothing_and_a_follow_up_adds_files(api):
    conversation_id = api.ready(api.start("[emulator output='{}' outcome=error duration=0.1] Try"))
    assert wait_for(lambda: api.conversation(conversation_id)["execution_status"] == "error")
    output = "/workspace/project/web/openhands_output.json"
    assert api.read(FILE, conversation_id, file_path=output).status_code == 404
    api.send(conversation_id, "[emulator output='{\"ok\": true}' duration=0.1] Again")
    assert finished(api, conversation_id)
    assert api.read(FILE, conversation_id, file_path=output).json() == '{"ok": true}'


def test_a_bad_marker_is_refused(api):
    for bad in ("change=app.py", "change=app.py:CHANGED", "change=a.py:RENAMED", "cost=lots", "write=:x"):
        body = {"initial_message": {"content": [{"type": "text", "text": f"[emulator {bad}] Go"}]}}
        answer = api.call("POST", CONVERSATIONS, json=body)
        assert answer.status_code == 400 and answer.json()["detail"].startswith("emulator marker:"), bad
    conversation_id = api.ready(api.start("Fine"))
    assert api.send(conversation_id, "[emulator diff_bytes=-1] Go").status_code == 400


# -- 16. growing cost --------------------------------------------------------------------------------


def test_cost_grows_while_the_agent_runs(api, emu):
    conversation_id = api.ready(api.start("[emulator cost=2.5 duration=2] Expensive"))
    seen: list[tuple[str, float, int]] = []

    def done() -> bool:
        state = api.conversation(conversation_id)
        usage = state["metrics"]["accumulated_token_usage"]
        seen.append((state["execution_status"], state["metrics"]["accumulated_cost"], usage["prompt_tokens"]))
        return state["execution_status"] == "finished"

    assert wait_for(done, 5, step=0.1)
    running = [cost for status, cost, _ in seen if status == "running"]
    assert running == sorted(running) and running[0] < 0.5
    assert any(cost < 1.0 for cost in running) and any(1.0 <= cost < 2.5 for cost in running)  # crossed mid-run
    assert [tokens for *_, tokens in seen] == sorted(tokens for *_, tokens in seen)
    assert seen[-1][1] == 2.5
    final = api.conversation(conversation_id)["metrics"]
    assert final["accumulated_token_usage"]["completion_tokens"] > 0 and final["accumulated_cost"] == 2.5
    api.send(conversation_id, "[emulator cost=0.5 duration=0.2] And more")  # a turn adds its own cost
    assert wait_for(lambda: api.conversation(conversation_id)["metrics"]["accumulated_cost"] == 3.0, 3)
    plain = api.ready(api.start("[emulator duration=0.3] Default price"))
    assert finished(api, plain)
    assert api.conversation(plain)["metrics"]["accumulated_cost"] == pytest.approx(0.003)


def test_cost_stops_growing_when_paused(api):
    conversation_id = api.ready(api.start("[emulator cost=10 duration=5] Runaway"))
    assert wait_for(lambda: api.conversation(conversation_id)["metrics"]["accumulated_cost"] > 1.0, 3)
    api.pause(conversation_id)
    frozen = api.conversation(conversation_id)["metrics"]["accumulated_cost"]
    time.sleep(0.3)
    assert api.conversation(conversation_id)["metrics"]["accumulated_cost"] == frozen < 10


# -- 17. observability tags and metadata -----------------------------------------------------------


def test_observability_tags_and_metadata_are_kept(api, emu):
    tags = ["dag_id:nightly", "task_id:fix"]
    metadata = {"dag_id": "nightly", "map_index": 3, "retry": False, "score": 0.5, "repos": ["a", "b"]}
    task = api.start(observability_tags=tags, observability_metadata=metadata)  # request checked by the spec
    assert task["request"]["observability_tags"] == tags  # the start task's request echoes them
    assert task["request"]["observability_metadata"] == metadata
    conversation_id = api.ready(task)
    assert api.tasks(task["id"])[0]["request"]["observability_metadata"] == metadata
    assert emu.conversation(conversation_id).request["observability_tags"] == tags
    assert emu.conversation(conversation_id).request["observability_metadata"] == metadata
    assert api.conversation(conversation_id)["tags"] == {}  # AppConversation has no place for them
    body = {"initial_message": {"content": [{"type": "text", "text": "Go"}]}}
    for bad in (
        {"observability_tags": "dag_id:nightly"},
        {"observability_tags": ["ok", 3]},
        {"observability_metadata": ["a"]},
        {"observability_metadata": {"nested": {"a": 1}}},
        {"observability_metadata": {"mixed": ["a", 1]}},
        {"observability_metadata": {"none": None}},
    ):
        answer = api.call("POST", CONVERSATIONS, json={**body, **bad})
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["loc"][:2] == ["body", next(iter(bad))]


# -- knobs: the constructor, POST /_emulator/config and the command line ----------------------------------

#: A value other than the default for every knob.
KNOB_SAMPLES = {
    "concurrency_limit": 3,
    "conversation_seconds": 2.5,
    "start_seconds": 0.1,
    "latency": 0.01,
    "daily_sandbox_limit": 7,
    "capacity_error_style": "flat",
    "rate_limit_per_minute": 500,
    "rate_limit_window": 6.0,
    "turn_lag_seconds": 0.2,
    "missing_file_answer": "empty",
    "outcomes_by_repository": {"acme/web": "error", "acme/docs": "stuck"},
    "seconds_by_repository": {"acme/api": 600.0},
}


def test_every_knob_is_settable_by_config_and_the_command_line(emu):
    """Every keyword argument of the Emulator but its address and key is a knob of POST /_emulator/config
    and a flag of the command line (the per-repository ones as repeatable ``owner/repo=value``)."""
    import inspect

    from airflow_provider_openhands.testing.__main__ import emulator_kwargs
    from airflow_provider_openhands.testing.emulator import CONFIG_KEYS

    arguments = set(inspect.signature(Emulator).parameters)
    assert set(CONFIG_KEYS) == set(KNOB_SAMPLES) == arguments - {"api_key", "host", "port"}
    assert set(emulator_kwargs([])) == arguments
    answer = requests.post(emu.url + "/_emulator/config", json=KNOB_SAMPLES, timeout=10)
    assert answer.status_code == 200, answer.text
    assert {knob: getattr(emu, knob) for knob in KNOB_SAMPLES} == KNOB_SAMPLES
    flags = [
        "--concurrency-limit=3", "--conversation-seconds=2.5", "--start-seconds=0.1", "--latency=0.01",
        "--daily-sandbox-limit=7", "--capacity-error-style=flat", "--rate-limit-per-minute=500",
        "--rate-limit-window=6",
        "--turn-lag-seconds=0.2", "--missing-file-answer=empty", "--outcomes-by-repository", "acme/web=error",
        "--outcomes-by-repository=acme/docs=stuck", "--seconds-by-repository", "acme/api=600",
    ]  # fmt: skip
    assert {knob: emulator_kwargs(flags)[knob] for knob in KNOB_SAMPLES} == KNOB_SAMPLES
    built = Emulator(**emulator_kwargs(flags))
    assert {knob: getattr(built, knob) for knob in KNOB_SAMPLES} == KNOB_SAMPLES


@pytest.mark.parametrize(
    "flag",
    [
        "--outcomes-by-repository=acme/web=exploded",
        "--outcomes-by-repository=acme/web",
        "--seconds-by-repository=acme/web=soon",
    ],
)
def test_a_bad_per_repository_flag_is_refused(flag, capsys):
    from airflow_provider_openhands.testing.__main__ import emulator_kwargs

    with pytest.raises(SystemExit):
        emulator_kwargs([flag])
    assert flag.split("=", 1)[1] in capsys.readouterr().err


@pytest.mark.parametrize(
    "knobs",
    [
        {"outcomes_by_repository": {"acme/web": "exploded"}},
        {"outcomes_by_repository": ["acme/web"]},
        {"seconds_by_repository": {"acme/web": -1}},
        {"seconds_by_repository": {"acme/web": "600"}},
        {"seconds_by_repository": {"": 3}},
    ],
)
def test_bad_per_repository_knobs_are_refused(api, emu, knobs):
    answer = api.control("/_emulator/config", knobs)
    assert answer.status_code == 400 and next(iter(knobs)) in answer.json()["detail"]
    assert emu.outcomes_by_repository == {} and emu.seconds_by_repository == {}


def test_one_repository_fails_and_another_runs_long_over_http(api, emu):
    """What a user does to the nightly example without Python: POST the per-repository knobs."""
    knobs = {"outcomes_by_repository": {"acme/web": "error"}, "seconds_by_repository": {"acme/api": 30}}
    assert api.control("/_emulator/config", knobs).ok
    failing = api.ready(api.start("Fix it", selected_repository="acme/web"))
    slow = api.ready(api.start("Fix it", selected_repository="acme/api"))
    fine = api.ready(api.start("Fix it", selected_repository="acme/docs"))
    scripted = api.ready(api.start("Fix it [emulator outcome=finished duration=0.1]", selected_repository="acme/web"))
    assert wait_for(lambda: api.conversation(fine)["execution_status"] == "finished")
    assert wait_for(lambda: api.conversation(failing)["execution_status"] == "error")
    assert api.conversation(scripted)["execution_status"] == "finished"  # a marker wins over the knobs
    assert api.conversation(slow)["execution_status"] == "running"
    assert requests.get(f"{emu.url}/_emulator/done/{slow}", timeout=5).status_code == 404


def test_the_command_line_emulator_takes_per_repository_knobs(contract):
    """``python -m airflow_provider_openhands.testing`` with the flags, over HTTP, then SIGTERM."""
    import subprocess
    import sys
    from types import SimpleNamespace

    command = [
        sys.executable, "-m", "airflow_provider_openhands.testing", "--port", "0", "--start-seconds", "0.1",
        "--conversation-seconds", "0.3", "--outcomes-by-repository", "acme/web=error",
        "--seconds-by-repository", "acme/api=30",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split(" listening on ")[1].split()[0]
        api = Client(SimpleNamespace(url=url, api_key="emulator-api-key"), contract)
        failing = api.ready(api.start("Fix it", selected_repository="acme/web"))
        slow = api.ready(api.start("Fix it", selected_repository="acme/api"))
        fine = api.ready(api.start("Fix it", selected_repository="acme/docs"))  # started last, ends first
        assert wait_for(lambda: api.conversation(fine)["execution_status"] == "finished")
        assert api.conversation(failing)["execution_status"] == "error"
        assert api.conversation(slow)["execution_status"] == "running"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
