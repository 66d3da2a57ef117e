"""A 401 on a request: the engine reads the connection again once, then decides again.

A message or a confirmation answer refused with 401 is never sent again as it was: by the time
the connection is read again the conversation may wait for a confirmation (a message would
approve it) or wait for other actions. A request that keeps meeting 401 after the connection was
read again fails the task for good, even when the reads between it succeed (an agent server that
refuses the session key for its answers only).
"""

from __future__ import annotations

import itertools

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


# -- issue 29, scenario 2: a key-rotation gap (the old key revoked before the connection holds the new one) --


def _waiting_on(conversation_id: str = "c-1", **rules) -> tuple:
    """A task that waits on its running conversation (a first try, with its deterministic key)."""
    engine = _engine(Lifecycle(key="k", since="2026-11-30T00:00:00+00:00"), **rules)
    assert isinstance(engine.step(a.Begin(), T0), a.PostStart)
    assert isinstance(engine.step(a.Answer({"conversation_id": conversation_id}), T0), a.Publish)  # the id at once
    action = engine.step(a.Answer(None), T0)
    assert isinstance(action, a.ReadConversation), action
    return engine, action


def _refused_until(engine, action, now: float, fixed_at: float | None) -> tuple:
    """Run the engine while the service refuses the key (until ``fixed_at``); the actions seen."""
    seen = []
    while not isinstance(action, (a.Fail, a.Conclude)) and len(seen) < 500:
        seen.append(action)
        if isinstance(action, a.ReadConversation):
            now = max(now, action.at)
            refused = fixed_at is None or now < fixed_at
            action = engine.step(_problem("auth") if refused else a.Answer(_running("finished")), now)
        elif isinstance(action, a.ReadTurn):
            action = engine.step(a.Answer({"status": "finished", "live": False, "final_message": "done"}), now)
        else:
            action = engine.step(a.Answer(None), now)
    return action, seen, now


def test_a_key_refused_during_a_wait_is_ridden_out_until_the_connection_holds_the_new_key() -> None:
    """Before: two 401s during the wait, then a permanent failure, the agent left running. Now the
    connection is read again each poll, within ``unreachable_timeout``, and the wait goes on."""
    engine, action = _waiting_on(unreachable_timeout=600)
    action, seen, _ = _refused_until(engine, action, T0, fixed_at=T0 + 300)
    assert isinstance(action, a.Conclude) and action.status == "finished", (action, seen[-5:])
    rereads = sum(isinstance(x, a.RereadConnection) for x in seen)
    assert rereads >= 300 / (2 * engine.rules.poll_interval), f"{rereads} rereads in 300 s"
    reads = [x.at for x in seen if isinstance(x, a.ReadConversation)][1:]  # the first reread's repeat is at once
    assert all(later - sooner >= engine.rules.poll_interval for sooner, later in itertools.pairwise(reads)), "unpaced"
    assert engine.lc.refused_since is None and engine.lc.unstopped is None


def test_a_key_refused_past_unreachable_timeout_fails_naming_the_conversation_it_could_not_stop() -> None:
    engine, action = _waiting_on(unreachable_timeout=600)
    action, seen, now = _refused_until(engine, action, T0, fixed_at=None)
    assert isinstance(action, a.Fail) and action.kind == "permanent", action
    assert 600 <= now - T0 < 600 + 3 * engine.rules.poll_interval
    assert "Conversation c-1 could not be stopped (the key is refused)" in action.message, action.message
    assert not any(isinstance(x, a.Pause) for x in seen)  # it would meet the same 401
    assert engine.lc.unstopped == "c-1"  # a clear looks at it first


def _cleared(unstopped: str = "c-1") -> tuple:
    """A clear after that failure: a new series, with what the store kept of the earlier one."""
    lc = Lifecycle(key="k", since="2026-11-30T00:00:00+00:00", series=2, try_number=2, unstopped=unstopped)
    engine = _engine(lc)
    action = _step(engine, a.Begin(), T0 + 900)
    assert isinstance(action, a.Reconnect) and "c-1" in action.conversation_ids, action
    return engine, action


def test_a_clear_waits_on_the_conversation_an_earlier_try_could_not_stop() -> None:
    engine, _ = _cleared()
    action = engine.step(a.Answer({"conversations": {"c-1": _running()}, "ended": {}, "start_tasks": []}), T0 + 900)
    assert action == a.Publish("c-1"), action
    action = engine.step(a.Answer(None), T0 + 900)
    assert isinstance(action, a.ReadConversation) and action.conversation_id == "c-1", action
    assert engine.lc.conversation_id == "c-1" and engine.lc.unstopped is None
    assert engine.lc.deadline == T0 + 900 + engine.lc.wait_timeout  # the clear's own timeout
    assert any("waiting on it instead of starting another" in line for _, line in engine.logs)


def test_a_clear_frees_an_ended_one_it_could_not_stop_and_starts_afresh() -> None:
    engine, _ = _cleared()
    ended = _running("finished", cid="c-1")
    action = _step(engine, a.Answer({"conversations": {"c-1": ended}, "ended": {}, "start_tasks": []}), T0 + 900)
    assert action == a.Pause("c-1", "sb-c-1"), action
    action = _step(engine, a.Answer(True), T0 + 900)
    if isinstance(action, a.Reconnect):  # the series' own ids: none yet
        assert "c-1" not in action.conversation_ids
        action = _step(engine, a.Answer({"conversations": {}, "ended": {}, "start_tasks": []}), T0 + 900)
    assert isinstance(action, a.PostStart), action


def test_a_first_401_on_a_read_reads_the_connection_again_even_past_the_window() -> None:
    """A refused-key clock left from an earlier episode (another kind of read was refused and not
    read again since) does not fail a new 401 at once: the first 401 on a kind of read since it
    worked reads the connection again first (the model found the task failing for good on the first
    401 of a new rotation, without a reread)."""
    from airflow_provider_openhands.engine.state import PHASE_RUNNING

    lc = Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 10_000, key="k", published="c-1")
    lc.auth_reread_for, lc.refused_since = ["ReadTurn"], T0 - 4000.0
    engine = _engine(lc)
    action = engine.step(a.Continue(), T0)
    assert isinstance(action, a.ReadConversation), action
    action = engine.step(a.Answer(_running()), T0)
    assert isinstance(engine.step(_problem("auth"), T0 + 10), a.RereadConnection)
