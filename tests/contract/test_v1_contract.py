"""The V1 API as the real OpenHands server serves it; the emulator must answer the same way.

Each case runs on both backends (``emulator`` in the default run, ``real`` with
``pytest -m real_openhands``), over raw HTTP, every answer checked against the official OpenAPI
document. The expectations are what the real server (``openhands-ai`` 1.11.0, process sandbox) was
seen to do; ``real_samples/`` keeps its answers. Conversations are shared between cases (a real one
costs 5-30 s) and started one at a time.

Task texts carry markers for both backends: ``[fake-llm ...]`` scripts the real server's fake LLM,
``[emulator ...]`` the emulator; each ignores the other's.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from tests.contract.conftest import TERMINAL, Backend, final_answer, new_id

FIRST_ANSWER = "All done: notes/result.txt written"
SECOND_ANSWER = "Second answer"


def same_id(left: str | None, right: str | None) -> bool:
    return left is not None and right is not None and uuid.UUID(left) == uuid.UUID(right)


def first_of(events: list[dict[str, Any]], kind: str, **where: Any) -> dict[str, Any] | None:
    for event in events:
        if event.get("kind") != kind:
            continue
        if all(
            (event.get(key) or {}).get("kind") == value if key in ("action", "observation") else event.get(key) == value
            for key, value in where.items()
        ):
            return event
    return None


def assert_final_answer(backend: Backend, events: list[dict[str, Any]], scripted: str) -> None:
    """The real server's fake LLM says what the task scripted; the emulator's agent has its own words."""
    answer = final_answer(events)
    if backend.real:
        assert answer == scripted
    else:
        assert isinstance(answer, str) and answer


def start_and_watch(backend: Backend, text: str, conversation_id: str | None = None) -> dict[str, Any]:
    """Start one conversation (one boot at a time on the real server) and note what the API says
    before and at READY."""
    api = backend.api
    seen: dict[str, Any] = {"chosen": conversation_id, "text": text}
    with backend.one_start():
        seen["post"] = api.start(text, conversation_id)
        status, task = seen["post"]
        assert status == 200, task
        if conversation_id is not None:
            seen["early_conversations"] = api.get("/api/v1/app-conversations", ids=[conversation_id])
            seen["early_start_task"] = api.start_task(task["id"])
            seen["early_search_by_id"] = api.get(
                "/api/v1/app-conversations/start-tasks/search", conversation_id__eq=conversation_id
            )
            seen["early_search_recent"] = api.get("/api/v1/app-conversations/start-tasks/search", limit=20)
        seen["task"], seen["task_statuses"] = api.wait_start_task(task["id"])
    if conversation_id is not None:
        seen["late_search_by_id"] = api.get(
            "/api/v1/app-conversations/start-tasks/search", conversation_id__eq=conversation_id
        )
    return seen


@pytest.fixture(scope="session")
def main_conversation(backend: Backend) -> dict[str, Any]:
    """Started with a client-chosen id; writes a file through the agent's file tool, then finishes."""
    text = (
        f'[fake-llm write="notes/result.txt:contract ok" finish="{FIRST_ANSWER}"] [emulator duration=1] '
        "Write notes/result.txt, then finish."
    )
    seen = start_and_watch(backend, text, new_id())
    assert seen["task"]["status"] == "READY", seen["task"]
    conversation_id = seen["task"]["app_conversation_id"]
    seen["id"] = conversation_id
    seen["state"], seen["sequence"] = backend.api.wait_conversation(conversation_id)
    seen["events"] = backend.api.wait_events(conversation_id, lambda items: final_answer(items) is not None)
    backend.record("start_task_post_answer", seen["post"][1])
    backend.record("start_task_ready", seen["task"])
    backend.record("conversation_finished", seen["state"])
    backend.record("events_search_finished_turn", seen["events"])
    return seen


@pytest.fixture(scope="session")
def failed_conversation(backend: Backend) -> dict[str, Any]:
    """The LLM answers HTTP 500: the conversation ends in ``error``."""
    seen = start_and_watch(backend, "[fake-llm fail] [emulator outcome=error duration=1] Fail, please.", new_id())
    assert seen["task"]["status"] == "READY", seen["task"]
    conversation_id = seen["task"]["app_conversation_id"]
    seen["id"] = conversation_id
    seen["state"], seen["sequence"] = backend.api.wait_conversation(conversation_id)
    seen["events"] = backend.api.wait_events(
        conversation_id, lambda items: first_of(items, "ConversationErrorEvent") is not None
    )
    backend.record("conversation_error", seen["state"])
    backend.record("events_search_llm_failure", seen["events"])
    return seen


# -- start and wait ---------------------------------------------------------------------------------


def test_start_with_a_client_chosen_id_and_wait(main_conversation):
    status, task = main_conversation["post"]
    assert status == 200 and task["status"] not in ("READY", "ERROR")
    assert len(task["id"]) == 32 and task["app_conversation_id"] is None
    assert main_conversation["task"]["status"] == "READY"
    # The id asked for is honoured, written as 32 hex digits; the sandbox id is the same.
    assert main_conversation["id"] == uuid.UUID(main_conversation["chosen"]).hex
    assert same_id(main_conversation["task"]["sandbox_id"], main_conversation["id"])
    state = main_conversation["state"]
    assert (state["sandbox_status"], state["execution_status"]) == ("RUNNING", "finished")
    assert main_conversation["sequence"][-1] == ("RUNNING", "finished")
    assert all(pair[0] in ("STARTING", "RUNNING") for pair in main_conversation["sequence"])


def test_before_ready_the_conversation_reads_null(main_conversation):
    status, body = main_conversation["early_conversations"]
    assert (status, body) == (200, [None])
    early = main_conversation["early_start_task"]
    assert early["status"] != "READY" and early["app_conversation_id"] is None


def test_a_retry_before_ready_finds_the_start_task(backend, main_conversation):
    """Before READY the search by ``conversation_id__eq`` finds nothing on the real server (it
    filters on ``app_conversation_id``, set only at READY); the recent start tasks carry the
    id asked for in ``request.conversation_id``. From READY on, the search by id finds it."""
    task_id = main_conversation["post"][1]["id"]
    status, early = main_conversation["early_search_by_id"]
    assert status == 200 and early["items"] == []
    status, recent = main_conversation["early_search_recent"]
    assert status == 200
    mine = [
        item
        for item in recent["items"]
        if same_id((item.get("request") or {}).get("conversation_id"), main_conversation["chosen"])
    ]
    assert [item["id"] for item in mine] == [task_id]
    status, late = main_conversation["late_search_by_id"]
    assert status == 200 and [item["id"] for item in late["items"]] == [task_id]
    assert late["items"][0]["status"] == "READY"
    # Either form of the id finds it.
    status, hexed = backend.api.get(
        "/api/v1/app-conversations/start-tasks/search", conversation_id__eq=uuid.UUID(main_conversation["id"]).hex
    )
    assert status == 200 and [item["id"] for item in hexed["items"]] == [task_id]
    backend.record("start_task_search_before_ready", early)
    backend.record("start_task_search_after_ready", late)


# -- batches ------------------------------------------------------------------------------------------


def test_unknown_ids_in_a_batch_are_null_in_place(backend, main_conversation):
    api, conversation_id = backend.api, main_conversation["id"]
    unknown = [uuid.uuid4().hex, str(uuid.uuid4())]
    status, body = api.get("/api/v1/app-conversations", ids=[unknown[0], str(uuid.UUID(conversation_id)), unknown[1]])
    assert status == 200 and [item and item["id"] for item in body] == [None, conversation_id, None]
    task_id = main_conversation["post"][1]["id"]
    status, body = api.get("/api/v1/app-conversations/start-tasks", ids=[task_id, unknown[0]])
    assert status == 200 and [item and item["id"] for item in body] == [task_id, None]


def test_a_hundred_ids_are_refused(backend):
    """99 is the most a conversation batch takes: 100 -> 400 "Maximum is 99". The start-task batch
    has no such limit on the real server (100 unknown ids -> 100 nulls)."""
    ids = [uuid.uuid4().hex for _ in range(100)]
    status, body = backend.api.get("/api/v1/app-conversations", ids=ids)
    assert status == 400 and "99" in str(body["detail"])
    status, body = backend.api.get("/api/v1/app-conversations", ids=ids[:99])
    assert status == 200 and body == [None] * 99
    status, body = backend.api.get("/api/v1/app-conversations/start-tasks", ids=ids)
    assert status == 200 and body == [None] * 100
    backend.record("start_tasks_100_unknown_ids", body)


def test_malformed_batches(backend):
    api = backend.api
    status, body = api.get("/api/v1/app-conversations")
    assert status == 422 and isinstance(body["detail"], list)
    for bad in ("not-a-uuid", f"{uuid.uuid4().hex},{uuid.uuid4().hex}"):
        status, _ = api.get("/api/v1/app-conversations", ids=[bad])
        assert status == 400, bad


# -- events and the final answer ---------------------------------------------------------------------


def test_events_and_the_final_answer(backend, main_conversation):
    events = main_conversation["events"]
    assert_final_answer(backend, events, FIRST_ANSWER)
    user = first_of(events, "MessageEvent", source="user")
    assert user is not None and "Write notes/result.txt" in user["llm_message"]["content"][0]["text"]
    finish = first_of(events, "ActionEvent", source="agent", tool_name="finish")
    assert finish is not None and finish["action"] == {**finish["action"], "kind": "FinishAction"}
    observation = first_of(events, "ObservationEvent", action_id=finish["id"])
    assert observation is not None and observation["observation"]["kind"] == "FinishObservation"
    updates = [e for e in events if e["kind"] == "ConversationStateUpdateEvent" and e["key"] == "execution_status"]
    assert "running" in [update["value"] for update in updates]
    stamps = [event["timestamp"] for event in events]
    assert stamps == sorted(stamps)  # ascending by default
    everything = backend.api.events(main_conversation["id"])
    status, newest = backend.api.get(
        f"/api/v1/conversation/{main_conversation['id']}/events/search", sort_order="TIMESTAMP_DESC", limit=1
    )
    assert status == 200 and [event["id"] for event in newest["items"]] == [everything[-1]["id"]]
    only_actions = backend.api.events(main_conversation["id"], kind__eq="ActionEvent")
    assert only_actions and {event["kind"] for event in only_actions} == {"ActionEvent"}
    assert backend.api.events(uuid.uuid4().hex) == []
    if backend.real:
        # The real agent wrote the file through its file tool: read it back from its workspace.
        status, written = backend.api.get(
            f"/api/v1/app-conversations/{main_conversation['id']}/file", file_path="notes/result.txt"
        )
        written_by_tool = first_of(events, "ActionEvent", tool_name="file_editor")
        assert written_by_tool is not None and written_by_tool["action"]["file_text"] == "contract ok"
        backend.record("file_read_back", {"status": status, "body": written})
        for kind, sample in (
            ("MessageEvent", user),
            ("ActionEvent_FinishAction", finish),
            ("ObservationEvent_FinishObservation", observation),
            ("ActionEvent_FileEditorAction", written_by_tool),
            ("ConversationStateUpdateEvent", first_of(events, "ConversationStateUpdateEvent", key="execution_status")),
        ):
            backend.record(f"event_{kind}", sample)


def test_the_provider_downloads_the_trajectory(backend, main_conversation, monkeypatch):
    """Issue 18 (``archive_trajectory``), on both backends: the hook downloads the conversation's
    export, a zip of ``meta.json`` and one ``event_<n>_<id>.json`` per event; an unknown id is 404."""
    import io
    import zipfile

    from airflow_provider_openhands.exceptions import OpenHandsNotFoundError
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    connection = {"conn_type": "openhands", "host": backend.url, "password": backend.headers["Authorization"][7:]}
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(connection))
    data = OpenHandsHook().download_trajectory(main_conversation["id"])
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "meta.json" in names, names
    finish = first_of(main_conversation["events"], "ActionEvent", source="agent", tool_name="finish")
    assert any(name.startswith("event_") and name.endswith(f"_{finish['id']}.json") for name in names), names
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("meta.json"))
    assert meta["id"].replace("-", "") == main_conversation["id"].replace("-", "")
    with pytest.raises(OpenHandsNotFoundError):
        OpenHandsHook().download_trajectory(uuid.uuid4().hex)
    if backend.real:
        backend.record("trajectory_names", sorted(names)[:5])


# -- a follow-up turn -------------------------------------------------------------------------------


def test_a_follow_up_is_a_new_turn(backend, main_conversation):
    api, conversation_id = backend.api, main_conversation["id"]
    before = api.conversation(conversation_id)
    assert before["execution_status"] == "finished"
    events_before = api.events(conversation_id)
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": f'[fake-llm finish="{SECOND_ANSWER}"] [emulator duration=1] And a follow-up.'}
        ],
        "run": True,
    }
    status, body = api.post(f"/api/v1/app-conversations/{conversation_id}/send-message", message)
    assert status == 200 and body["success"] is True and body["sandbox_status"] == "RUNNING"
    backend.record("send_message_answer", body)

    # Polls may still read the old turn's ``finished``: the new turn shows as a newer updated_at
    # or new events, and it is over when its own final answer is there.
    def new_turn_over(state: dict[str, Any]) -> bool:
        return state["updated_at"] > before["updated_at"] and state["execution_status"] in TERMINAL

    state, sequence = api.wait_conversation(conversation_id, until=new_turn_over, timeout=60)
    assert state["execution_status"] == "finished", sequence
    events = api.wait_events(conversation_id, lambda items: final_answer(items[len(events_before) :]) is not None)
    assert len(events) > len(events_before)
    assert_final_answer(backend, events[len(events_before) :], SECOND_ANSWER)
    assert [event["id"] for event in events[: len(events_before)]] == [event["id"] for event in events_before]
    backend.record("events_search_follow_up_turn", events[len(events_before) :])


def test_send_message_to_an_unknown_conversation(backend):
    message = {"role": "user", "content": [{"type": "text", "text": "hello?"}]}
    status, _ = backend.api.post(f"/api/v1/app-conversations/{uuid.uuid4().hex}/send-message", message)
    assert status == 404


# -- pause, read, resume ------------------------------------------------------------------------------


def test_pause_read_resume(backend, main_conversation):
    api, conversation_id = backend.api, main_conversation["id"]
    sandbox_id = api.conversation(conversation_id)["sandbox_id"]
    status, body = api.post(f"/api/v1/sandboxes/{sandbox_id}/pause")
    assert (status, body) == (200, {"success": True})
    paused, _ = api.wait_conversation(conversation_id, until=lambda c: c["sandbox_status"] == "PAUSED", timeout=30)
    assert paused["execution_status"] is None
    assert paused["session_api_key"] is None and paused["conversation_url"] is None
    backend.record("conversation_paused", paused)
    message = {"role": "user", "content": [{"type": "text", "text": "are you there?"}]}
    status, body = api.post(f"/api/v1/app-conversations/{conversation_id}/send-message", message)
    assert status == 409 and "PAUSED" in str(body["detail"])
    backend.record("send_message_while_paused_409", body)
    assert api.events(conversation_id), "events stay readable while paused"
    status, body = api.post(f"/api/v1/sandboxes/{sandbox_id}/resume")
    assert (status, body) == (200, {"success": True})
    resumed, _ = api.wait_conversation(
        conversation_id, until=lambda c: c["sandbox_status"] == "RUNNING" and c["execution_status"], timeout=60
    )
    assert resumed["execution_status"] == "finished"
    for action in ("pause", "resume"):
        status, _ = api.post(f"/api/v1/sandboxes/{uuid.uuid4().hex}/{action}")
        assert status == 404


# -- failures -----------------------------------------------------------------------------------------


def test_an_llm_failure_ends_in_error(failed_conversation):
    state = failed_conversation["state"]
    assert (state["sandbox_status"], state["execution_status"]) == ("RUNNING", "error")
    error = first_of(failed_conversation["events"], "ConversationErrorEvent")
    assert error is not None and error["code"] and error["detail"]
    assert final_answer(failed_conversation["events"]) is None


def test_a_reused_id_is_accepted_and_its_start_task_fails(backend, failed_conversation):
    """No 409: the POST answers 200 and that start task ends in ERROR. (On the real process
    sandbox the second boot takes over the sandbox id, which equals the conversation id: the
    original then reads RUNNING with no execution status. The original still exists.)"""
    api, original = backend.api, failed_conversation["id"]
    before = api.conversation(original)
    seen = start_and_watch(backend, "[emulator duration=1] Same id again.", str(uuid.UUID(original)))
    status, task = seen["post"]
    assert status == 200 and task["status"] not in ("READY", "ERROR")
    assert seen["task"]["status"] == "ERROR" and seen["task"]["detail"], seen["task"]
    assert seen["task"]["app_conversation_id"] is None
    after = api.conversation(original)
    assert after is not None and after["id"] == before["id"] and after["created_at"] == before["created_at"]
    backend.record("start_task_error_reused_id", seen["task"])
    backend.record("conversation_after_its_id_was_reused", after)


def test_the_server_shows_a_transient_sandbox_error_then_running(backend):
    text = "[fake-llm seconds=6] [emulator duration=4 sandbox_error=2] Take your time."
    seen = start_and_watch(backend, text)
    assert seen["task"]["status"] == "READY", seen["task"]
    conversation_id = seen["task"]["app_conversation_id"]
    injected: list[float] = []

    def inject(state: dict[str, Any]) -> None:
        if state["sandbox_status"] == "ERROR":
            backend.record("conversation_sandbox_error_transient", state)
        if not injected and state["execution_status"] == "running":
            backend.sandbox_error(state["sandbox_id"], 2.5)
            injected.append(time.time())

    _, sequence = backend.api.wait_conversation(conversation_id, on_poll=inject, timeout=90)
    assert ("ERROR", None) in sequence, sequence
    assert sequence.index(("ERROR", None)) < len(sequence) - 1
    assert sequence[-1] == ("RUNNING", "finished"), sequence
    erroring = [pair for pair in sequence if pair[0] == "ERROR"]
    assert all(execution is None for _, execution in erroring)


@pytest.mark.skipif(
    __import__("airflow").__version__.split(".")[0] < "3", reason="the harness copies Airflow 3.3's task runner"
)
def test_the_provider_s_wait_rides_out_a_transient_sandbox_error(backend, monkeypatch):
    """Issue 17 item 1, on both backends: the provider's own wait (the sensor in poke mode, run as
    Airflow's task runner runs it: engine, worker driver, hook) meets a sandbox that reads ERROR for
    a moment and ends with the conversation's success, not a failure."""
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor
    from tests.harness.airflow_task import AirflowTask

    connection = {"conn_type": "openhands", "host": backend.url, "password": backend.headers["Authorization"][7:]}
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(connection))
    text = "[fake-llm seconds=8] [emulator duration=4 sandbox_error=2] Take your time."
    seen = start_and_watch(backend, text)
    assert seen["task"]["status"] == "READY", seen["task"]
    conversation_id = seen["task"]["app_conversation_id"]
    sandbox_id = seen["task"]["sandbox_id"]
    errors: list[str] = []

    def inject() -> None:
        while not errors and (state := backend.api.conversation(conversation_id)):
            if state["execution_status"] == "running":
                backend.sandbox_error(sandbox_id, 2.5)
                errors.append("injected")
            time.sleep(0.2)

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    sensor = OpenHandsConversationSensor(
        task_id="wait",
        conversation_id=conversation_id,
        poke_interval=0.3,
        timeout=90,
        sandbox_error_grace=30,
    )
    result = AirflowTask(sensor).run(timeout=120)
    injector.join(5)
    assert result.state == "success", result
    assert result.value["status"] == "finished"
