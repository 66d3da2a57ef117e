"""A 401 on a request: the engine reads the connection again once, then decides again.

A message or a confirmation answer refused with 401 is never sent again as it was: by the time
the connection is read again the conversation may wait for a confirmation (a message would
approve it) or wait for other actions. A request that keeps meeting 401 after the connection was
read again fails the task for good, even when the reads between it succeed (an agent server that
refuses the session key for its answers only).
"""

from __future__ import annotations

from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.state import Lifecycle
from tests.test_engine_confirmations import RM, waiting
from tests.test_engine_model import T0, _engine, _problem, _running, _step


def _follow_up_sending() -> tuple:
    engine = _engine(Lifecycle(follow_up=True, conversation_id="c-1", key="k", since="2026-11-30T00:00:00+00:00"))
    assert isinstance(_step(engine, a.Begin(), T0), a.ReadConversation)
    assert _step(engine, a.Answer(_running("finished")), T0) == a.Send("c-1")
    return engine


def test_a_send_refused_with_401_reads_the_conversation_before_sending_again() -> None:
    engine = _follow_up_sending()
    assert isinstance(engine.step(_problem("auth"), T0), a.RereadConnection)
    action = engine.step(a.Answer(None), T0)
    assert isinstance(action, a.ReadConversation) and action.conversation_id == "c-1", action
    # meanwhile the agent went on and waits for confirmation: no message (it would approve)
    assert engine.step(a.Answer(_running("waiting_for_confirmation")), T0 + 1) == a.ReadPending("c-1")


def test_a_send_that_keeps_meeting_401_fails_after_one_reread() -> None:
    """An agent server that reads fine but refuses the message with 401, every time: one reread, a
    fresh read of the conversation, then a permanent failure (not reread, read, send, 401, ...)."""
    engine, now, done = _follow_up_sending(), T0, []
    action = engine.step(_problem("auth"), now)
    while not isinstance(action, (a.Fail, a.Conclude)) and len(done) < 40:
        done.append(action)
        now += 1
        if isinstance(action, a.ReadConversation):
            action = engine.step(a.Answer(_running("finished")), now)
        elif isinstance(action, a.Send):
            action = engine.step(_problem("auth"), now)
        else:
            action = engine.step(a.Answer(None), now)
    assert isinstance(action, a.Fail) and action.kind == "permanent" and "401" in action.message, done
    assert [type(x).__name__ for x in done] == ["RereadConnection", "ReadConversation", "Send"]


def test_a_send_that_works_after_the_reread_gives_a_later_401_its_own_reread() -> None:
    engine = _follow_up_sending()
    engine.step(_problem("auth"), T0)
    engine.step(a.Answer(None), T0)
    assert engine.step(a.Answer(_running("finished")), T0 + 1) == a.Send("c-1")
    assert isinstance(engine.step(a.Answer({"success": True}), T0 + 1), a.ReadConversation)
    assert engine.lc.auth_reread_for == []
    assert isinstance(engine.step(_problem("auth"), T0 + 20), a.RereadConnection)  # the key rotated again


def test_a_confirmation_answer_refused_with_401_reads_what_waits_before_answering_again() -> None:
    engine, action = waiting("reject")
    assert isinstance(engine.step(a.Answer([RM]), T0), a.Confirm)
    assert isinstance(engine.step(_problem("auth"), T0), a.RereadConnection)
    assert engine.step(a.Answer(None), T0) == a.ReadPending("c-1")
    action = engine.step(a.Answer([RM]), T0 + 1)  # still waits for the same action: the answer goes
    assert isinstance(action, a.Confirm) and not action.accept, action
    action = engine.step(_problem("auth"), T0 + 1)  # the agent server keeps refusing its session key
    assert isinstance(action, a.Fail) and action.kind == "permanent", action


def test_a_confirmation_answer_refused_with_401_is_not_given_to_another_action() -> None:
    engine, _ = waiting("approve")
    assert isinstance(engine.step(a.Answer([RM]), T0), a.Confirm)
    engine.step(_problem("auth"), T0)
    assert engine.step(a.Answer(None), T0) == a.ReadPending("c-1")
    other = {**RM, "id": "ev-9", "summary": "git push --force"}
    action = engine.step(a.Answer([other]), T0 + 1)  # someone answered RM; the agent asks anew
    assert isinstance(action, a.Confirm) and engine.lc.pending_actions == [other], action
