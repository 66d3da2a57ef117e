"""How a turn ended and the agent's final message, read from events the real server sent
(``tests/contract/real_samples``, recorded by ``tests/contract`` against ``openhands-ai``)."""

from __future__ import annotations

import json

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
