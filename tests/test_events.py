"""How a turn ended and the agent's final message, read from events the real server sent
(``tests/contract/real_samples``, recorded by ``tests/contract`` against ``openhands-ai``)."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_openhands.api.state import final_message_from_events, status_from_events
from tests.conftest import REPO

SAMPLES = REPO / "tests" / "contract" / "real_samples"


def newest_first(name: str) -> dict:
    """A recorded events search (oldest first, as the server answers by default) as a newest-first page."""
    items = json.loads((SAMPLES / name).read_text())
    return {"items": list(reversed(items)), "next_page_id": None}


@pytest.mark.parametrize(
    ("sample", "status", "final_message"),
    [
        ("events_search_finished_turn.json", "finished", "All done: notes/result.txt written"),
        ("events_search_llm_failure.json", "error", None),
        ("events_search_follow_up_turn.json", "finished", "Second answer"),
    ],
)
def test_real_events(sample, status, final_message):
    page = newest_first(sample)
    assert status_from_events(page) == status
    assert final_message_from_events(page) == final_message


def test_a_new_turn_that_has_not_ended_is_not_ended():
    page = newest_first("events_search_finished_turn.json")
    user = {"kind": "MessageEvent", "source": "user", "llm_message": {"role": "user", "content": []}}
    page["items"].insert(0, user)
    assert status_from_events(page) is None and final_message_from_events(page) is None


def test_an_agent_that_ends_with_a_message():
    message = {
        "kind": "MessageEvent",
        "source": "agent",
        "llm_message": {"role": "assistant", "content": [{"type": "text", "text": "Which branch?"}]},
    }
    page = {"items": [message]}
    assert status_from_events(page) == "finished" and final_message_from_events(page) == "Which branch?"


@pytest.mark.parametrize(
    ("sample", "error"),
    [
        (
            "events_search_llm_failure.json",
            "LLMServiceUnavailableError: litellm.InternalServerError: InternalServerError: OpenAIException - "
            "fake_llm: forced failure",
        ),
        ("events_search_finished_turn.json", None),
        ("events_search_follow_up_turn.json", None),
    ],
)
def test_the_agents_own_error(sample, error):
    """Issue 21, item 3: the agent's last error of the newest turn, as the real server records it
    (``ConversationErrorEvent``: ``code: detail``); none for a turn that ended well."""
    from airflow_provider_openhands.api.state import error_from_events

    assert error_from_events(newest_first(sample)) == error


def test_the_agents_error_is_cut_to_one_readable_line():
    """A long error (a traceback) is one line of at most ERROR_CHARS, marked where it was cut; an
    ``AgentErrorEvent`` counts too; an error before the agent's ``finish`` does not."""
    from airflow_provider_openhands.api.state import ERROR_CHARS, error_from_events

    detail = "Traceback (most recent call last):\n" + "  File x.py, line 1, in f\n" * 400
    page = {"items": [{"kind": "ConversationErrorEvent", "code": "AgentStuckError", "detail": detail}]}
    text = error_from_events(page)
    assert text.startswith("AgentStuckError: Traceback (most recent call last): File x.py")
    assert ERROR_CHARS - 5 <= len(text) <= ERROR_CHARS and text.endswith("...") and "\n" not in text
    tool = {"kind": "AgentErrorEvent", "source": "agent", "error": "Tool 'terminal' timed out"}
    assert error_from_events({"items": [tool]}) == "Tool 'terminal' timed out"
    finish = newest_first("events_search_finished_turn.json")["items"]
    finished = [e for e in finish if e.get("kind") == "ActionEvent"][:1]
    assert error_from_events({"items": [*finished, tool]}) is None


# -- pages crowded by state updates ------------------------------------------------------------------
# The real agent server publishes its whole state (``full_state``, a few KB) each time a run stops, and
# more snapshots may follow (a restarted or re-subscribed agent server); ``[emulator state_updates=N]``
# puts N of them right after each stop: after the action the agent waits on, after the turn's end.

CROWD = 120  # more than a page of the newest events (50 for the turn, 100 for pending actions)


def events_reads(emulator) -> int:
    return len(emulator.requests_to("GET", r"events/search$"))


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_final_message_is_read_past_a_page_of_state_snapshots(hook, connection):
    conversation_id = hook.start_conversation(
        f'Fix it [emulator state_updates={CROWD} finish="All done: the crowd"]', poll_interval=0.05
    )
    until(lambda: hook.get_conversation(conversation_id)["status"] == "finished")
    until(lambda: len(hook.get_events(conversation_id, limit=100)) == 100)  # the crowd is on record
    assert [e.get("key") for e in hook.get_events(conversation_id)] == ["full_state"] * 50  # the newest page

    before = events_reads(connection)
    outcome = hook.get_turn_outcome(conversation_id)
    assert outcome == {"status": "finished", "live": False, "final_message": "All done: the crowd", "error": None}
    assert events_reads(connection) - before <= 5  # EVENTS_MAX_PAGES
    # paused (as pause_when_done leaves it), only the events tell that it ended
    state = hook.get_conversation(conversation_id)
    hook.stop_conversation(conversation_id, state["sandbox_id"])
    assert hook.get_ended_status(conversation_id) == "finished"


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_pending_action_is_read_past_the_state_snapshots_after_it(hook, connection):
    message = f'Clean [emulator confirm="rm -rf build" risk=HIGH state_updates={CROWD}]'
    conversation_id = hook.start_conversation(message, poll_interval=0.05)
    until(lambda: hook.get_conversation(conversation_id)["status"] == "waiting_for_confirmation")
    # the newest 100 events are the crowd: the action is further back
    until(lambda: {e.get("key") for e in hook.get_events(conversation_id, limit=100)} == {"full_state"})
    (pending,) = hook.get_pending_actions(conversation_id)
    assert (pending["tool"], pending["summary"], pending["security_risk"]) == ("terminal", "rm -rf build", "HIGH")


@pytest.mark.parametrize("api_version", ["v1"])
def test_an_uncrowded_turn_is_read_in_one_request(hook, connection):
    """Paging further costs nothing when state updates do not crowd the newest events: with the real
    rhythm (the usage before each LLM call's action, a snapshot at each stop) a long turn's final answer
    is on the first page, though a third of that page is state updates."""
    writes = " ".join(f'write="notes/{n}.txt:note {n}"' for n in range(20))
    conversation_id = hook.start_conversation(f'Fix it [emulator {writes} finish="Done"]', poll_interval=0.05)
    until(lambda: hook.get_conversation(conversation_id)["status"] == "finished")
    until(lambda: hook.get_events(conversation_id)[0].get("key") == "full_state")  # the closing snapshot
    newest = hook.get_events(conversation_id)
    assert len(newest) == 50 and sum(e["kind"] == "ConversationStateUpdateEvent" for e in newest) > 15
    before = events_reads(connection)
    assert hook.get_turn_outcome(conversation_id)["final_message"] == "Done"
    assert hook.get_pending_actions(conversation_id) == []
    assert events_reads(connection) - before == 2


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_long_turn_paused_mid_run_is_read_no_further_than_a_page_of_its_own_events(hook, connection):
    """Mid-run there is no end to find: the read stops once it holds a page (50) of events besides
    state updates, though the turn's start (the user's message) is further back."""
    writes = " ".join(f'write="notes/{n}.txt:note {n}"' for n in range(80))
    conversation_id = hook.start_conversation(f"Fix it [emulator duration=2 {writes}]", poll_interval=0.05)
    until(lambda: len(hook.get_events(conversation_id, limit=100)) == 100)  # 30 writes on record
    hook.stop_conversation(conversation_id, hook.get_conversation(conversation_id)["sandbox_id"])
    assert len(hook.get_events(conversation_id, limit=100, kind="ActionEvent")) < 75  # paused mid-run
    before = events_reads(connection)
    outcome = hook.get_turn_outcome(conversation_id)
    assert outcome["status"] is None and outcome["final_message"] is None
    assert events_reads(connection) - before == 2


def until(check, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
