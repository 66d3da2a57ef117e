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
