"""The engine's rules for a conversation that waits for confirmation (issue 19), one per mode.

``waiting_for_confirmation`` was taken as "still running": a task waited, silently, until its
deadline. Now the pending actions are read and the task's ``on_confirmation`` decides.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.engine import Engine
from airflow_provider_openhands.engine.state import PHASE_RUNNING, Lifecycle
from tests.test_engine_model import T0, _engine, _running, _step

RM = {"id": "ev-1", "tool": "terminal", "summary": "rm -rf build", "security_risk": "HIGH"}
PUSH = {"id": "ev-2", "tool": "terminal", "summary": "git push --force", "security_risk": "UNKNOWN"}


def waiting(mode: str, **lc: Any):
    """An engine whose conversation runs; its next read shows it waiting for confirmation."""
    engine = _engine(
        Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600, **lc), on_confirmation=mode
    )
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    return engine, _step(engine, a.Answer(_running("waiting_for_confirmation")), T0)


def logged(engine) -> str:
    return "\n".join(line for _, line in engine.logs)


def test_fail_names_the_pending_action() -> None:
    engine, action = waiting("fail")
    assert action == a.ReadPending("c-1")
    failed = engine.step(a.Answer([RM]), T0)
    assert isinstance(failed, a.Fail) and failed.kind == "confirmation"
    assert "rm -rf build" in failed.message and "HIGH" in failed.message
    assert a.FAILURES["confirmation"] is False  # the same wait again on a retry


@pytest.mark.parametrize("mode", ["approve", "reject"])
def test_approve_and_reject_answer_each_action_once_and_log_it(mode: str) -> None:
    engine, _ = waiting(mode)
    given = engine.step(a.Answer([RM, PUSH]), T0)
    done = "approved" if mode == "approve" else "rejected"
    assert given == a.Confirm("c-1", mode == "approve", f"{done} by on_confirmation={mode!r}")
    after = engine.step(a.Answer(True), T0)
    assert isinstance(after, a.ReadConversation) and after.at > T0  # back to waiting on the turn
    verb = "Approved" if mode == "approve" else "Rejected"
    assert f"{verb} by on_confirmation: terminal `rm -rf build`" in logged(engine)
    assert f"{verb} by on_confirmation: terminal `git push --force`" in logged(engine)
    # the status still reads waiting for a moment: the same actions are not answered again
    assert engine.step(a.Answer(_running("waiting_for_confirmation")), T0 + 10) == a.ReadPending("c-1")
    assert isinstance(engine.step(a.Answer([RM, PUSH]), T0 + 10), a.ReadConversation)


def test_ask_hands_the_actions_to_a_person_and_gives_the_answer_after_a_resume() -> None:
    engine, _ = waiting("ask")
    asked = engine.step(a.Answer([RM]), T0)
    assert asked == a.AskPerson("c-1", (RM,))
    # the task waits for the person (a deferral or awaiting_input): the state goes through JSON
    lc = Lifecycle.from_dict(engine.lc.for_trigger())
    lc.confirmation = {"accept": False, "reason": "not on main", "by": "alice"}
    resumed = _engine(lc, on_confirmation="ask")
    assert resumed.step(a.Continue(), T0 + 600) == a.ReadPending("c-1")  # still waiting for these?
    given = resumed.step(a.Answer([RM]), T0 + 600)
    assert given == a.Confirm("c-1", False, "not on main")
    resumed.step(a.Answer(True), T0 + 600)
    assert "Rejected by alice: terminal `rm -rf build` (security risk HIGH) (reason: not on main)" in logged(resumed)
    assert resumed.lc.pending_actions == [] and resumed.lc.confirmation is None


def _answered_by_alice(accept: bool = True) -> Any:
    """An engine resumed with alice's answer about RM, which it is about to send."""
    engine, _ = waiting("ask")
    engine.step(a.Answer([RM]), T0)
    lc = Lifecycle.from_dict(engine.lc.for_trigger())
    lc.confirmation = {"accept": accept, "reason": "", "by": "alice"}
    resumed = _engine(lc, on_confirmation="ask")
    assert resumed.step(a.Continue(), T0 + 600) == a.ReadPending("c-1")
    assert resumed.step(a.Answer([RM]), T0 + 600) == a.Confirm("c-1", accept, "")
    return resumed


def test_an_answer_whose_sending_failed_never_goes_to_an_action_asked_later() -> None:
    """The answer may have reached the agent before the connection broke; the agent then asks for
    something else. Sent again, alice's approval would approve what she never saw."""
    engine = _answered_by_alice()
    retry = engine.step(a.Problem("transient", "read timed out", None), T0 + 601)
    assert not isinstance(retry, a.Confirm)
    while not isinstance(retry, a.ReadPending):  # a sleep, then what waits now
        assert not isinstance(retry, a.Confirm), retry
        retry = engine.step(a.Answer(None), T0 + 620)
    asked = engine.step(a.Answer([PUSH]), T0 + 620)
    assert asked == a.AskPerson("c-1", (PUSH,))  # the new action goes to a person
    assert "no longer waits for terminal `rm -rf build`" in logged(engine)
    assert "Approved by alice" not in logged(engine)


def test_an_answer_whose_sending_failed_goes_again_while_its_actions_still_wait() -> None:
    engine = _answered_by_alice(accept=False)
    retry = engine.step(a.Problem("transient", "502 Bad Gateway", 502), T0 + 601)
    while not isinstance(retry, a.ReadPending):
        assert not isinstance(retry, a.Confirm), retry
        retry = engine.step(a.Answer(None), T0 + 620)
    assert engine.step(a.Answer([RM]), T0 + 620) == a.Confirm("c-1", False, "")


def test_an_answer_for_fewer_actions_than_wait_asks_the_person_again() -> None:
    engine, _ = waiting("ask")
    engine.step(a.Answer([RM]), T0)
    lc = Lifecycle.from_dict(engine.lc.for_trigger())
    lc.confirmation = {"accept": True, "reason": "", "by": "alice"}
    resumed = _engine(lc, on_confirmation="ask")
    resumed.step(a.Continue(), T0 + 600)
    assert resumed.step(a.Answer([RM, PUSH]), T0 + 600) == a.AskPerson("c-1", (RM, PUSH))


def test_wait_logs_the_actions_once_and_keeps_waiting() -> None:
    engine, _ = waiting("wait")
    assert engine.step(a.Answer([RM]), T0) is not None
    assert "waits for a person to confirm: terminal `rm -rf build`" in logged(engine)
    again = engine.step(a.Answer(_running("waiting_for_confirmation")), T0 + 10)
    assert isinstance(again, a.ReadConversation)  # not read again while the same wait lasts


def test_a_follow_up_never_sends_to_a_conversation_that_waits() -> None:
    """The service takes a message sent while actions wait as their approval."""
    lc = Lifecycle(follow_up=True, conversation_id="c-1", key="k", since="2026-01-01T00:00:00", wait_timeout=3600)
    engine = _engine(lc, on_confirmation="reject")
    assert isinstance(_step(engine, a.Begin(), T0), a.ReadConversation)
    assert _step(engine, a.Answer(_running("waiting_for_confirmation")), T0) == a.ReadPending("c-1")
    assert isinstance(engine.step(a.Answer([RM]), T0), a.Confirm)
    assert isinstance(engine.step(a.Answer(True), T0), a.ReadConversation)
    assert isinstance(engine.step(a.Answer(_running("idle")), T0 + 1), a.Send)  # then the message goes


def test_a_follow_up_whose_answered_wait_still_reads_waiting_polls_at_its_interval() -> None:
    """The status may read waiting a moment after the answer: read again at the poll interval, not
    in a tight loop of reads."""
    lc = Lifecycle(follow_up=True, conversation_id="c-1", key="k", since="2026-01-01T00:00:00", wait_timeout=3600)
    engine = _engine(lc, on_confirmation="reject")
    _step(engine, a.Begin(), T0)
    _step(engine, a.Answer(_running("waiting_for_confirmation")), T0)
    engine.step(a.Answer([RM]), T0)
    reads = [engine.step(a.Answer(True), T0)]
    for _ in range(3):
        assert engine.step(a.Answer(_running("waiting_for_confirmation")), T0) == a.ReadPending("c-1")
        reads.append(engine.step(a.Answer([RM]), T0))  # still listed: answered already
    assert all(isinstance(read, a.ReadConversation) and read.at > T0 for read in reads), reads


@pytest.mark.parametrize("mode", ["fail", "ask", "approve"])
def test_a_v0_wait_for_confirmation_fails_naming_why(mode: str) -> None:
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600), on_confirmation=mode)
    _step(engine, a.Continue(), T0)
    state = {**_running("waiting_for_confirmation"), "api_version": "v0"}
    failed = _step(engine, a.Answer(state), T0)
    assert isinstance(failed, a.Fail) and failed.kind == "confirmation" and "answer it in OpenHands" in failed.message


def _follow_up(mode: str = "reject") -> Any:
    lc = Lifecycle(follow_up=True, conversation_id="c-1", key="k", since="2026-01-01T00:00:00", wait_timeout=3600)
    engine = _engine(lc, on_confirmation=mode)
    _step(engine, a.Begin(), T0)
    return engine


def test_a_follow_up_stays_paced_long_after_an_answer() -> None:
    engine = _follow_up()
    _step(engine, a.Answer(_running("waiting_for_confirmation")), T0)
    engine.step(a.Answer([RM]), T0)
    engine.step(a.Answer(True), T0)
    now = T0 + 100
    for _ in range(3):
        assert engine.step(a.Answer(_running("waiting_for_confirmation")), now) == a.ReadPending("c-1")
        assert engine.step(a.Answer([RM]), now).at > now


@pytest.mark.parametrize("mode", ["ask", "reject", "approve", "wait"])
def test_a_follow_up_whose_wait_lists_nothing_yet_does_not_spin(mode: str) -> None:
    engine = _follow_up(mode)
    for _ in range(3):
        read = _step(engine, a.Answer(_running("waiting_for_confirmation")), T0)
        if isinstance(read, a.ReadPending):
            read = engine.step(a.Answer([]), T0)
        assert isinstance(read, a.ReadConversation) and read.at > T0, read


def test_a_follow_up_that_waits_for_someone_else_reads_at_its_poll_interval() -> None:
    """on_confirmation="wait": the actions are logged once, then each read that still shows the wait
    was followed by another at once (found by a 3000-example model run: 41 reads without time passing)."""
    engine = _follow_up("wait")
    assert _step(engine, a.Answer(_running("waiting_for_confirmation")), T0) == a.ReadPending("c-1")
    now = T0
    for _ in range(3):
        read = engine.step(a.Answer([RM]) if now == T0 else a.Answer(_running("waiting_for_confirmation")), now)
        assert isinstance(read, a.ReadConversation) and read.at > now, read
        now = read.at


def test_an_answer_that_keeps_failing_meets_unreachable_timeout() -> None:
    """A paused sandbox's agent server cannot take the answer; reading what waits (the app server)
    works. That read does not count as OpenHands answering again."""
    engine = _answered_by_alice()
    now, step = T0 + 601, engine.step(a.Problem("transient", "503 sandbox PAUSED", 503), T0 + 601)
    for _ in range(2000):
        if isinstance(step, (a.Fail, a.Pause)):
            break
        if isinstance(step, a.Confirm):
            step = engine.step(a.Problem("transient", "503 sandbox PAUSED", 503), now)
            continue
        now = max(now, getattr(step, "at", None) or getattr(step, "until", None) or now)
        step = engine.step(a.Answer([RM] if isinstance(step, a.ReadPending) else None), now)
    assert isinstance(step, a.Fail) and step.kind == "unreachable", step
    assert logged(engine).count("is not answering") == 1


def test_no_person_is_asked_after_the_deadline() -> None:
    engine, read = waiting("ask")  # the deadline is T0 + 3600; what waits is read after it
    assert read == a.ReadPending("c-1")
    assert not isinstance(engine.step(a.Answer([RM]), T0 + 4000), a.AskPerson)


def _rejecting(**rules: Any) -> Engine:
    """A running task with ``on_confirmation="reject"`` whose agent waits for ``rm -rf build``: the
    engine's next action sends the rejection (``Confirm``)."""
    engine = _engine(
        Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600, published="c-1"),
        on_confirmation="reject",
        **rules,
    )
    engine.step(a.Continue(), T0)
    assert _step(engine, a.Answer(_running("waiting_for_confirmation")), T0) == a.ReadPending("c-1")
    assert isinstance(engine.step(a.Answer([RM]), T0), a.Confirm)
    return engine


def _rejected_then(status: str, reads: int = 4, **rules: Any) -> Any:
    """A rejection given (its ``/run`` failed: the answer came back as an error); what waits is read
    (nothing: the rejection went through), then the conversation reads ``status`` every 10 s, until
    the engine does something else than read."""
    engine = _rejecting(**rules)
    assert isinstance(engine.step(a.Problem("transient", "500 on /run", 500), T0), a.Sleep)
    assert engine.step(a.Continue(), T0 + 10) == a.ReadPending("c-1")
    actions = [engine.step(a.Answer([]), T0 + 10)]
    for k in range(2, 2 + reads):
        if not isinstance(actions[-1], a.ReadConversation):
            break
        actions.append(engine.step(a.Answer(_running(status)), T0 + 10 * k))
    return engine, actions


def test_a_rejection_left_idle_is_run_on_once_after_two_polls() -> None:
    engine, actions = _rejected_then("idle")
    assert [type(x).__name__ for x in actions] == ["ReadConversation"] * 3 + ["RunOn"], actions
    after = engine.step(a.Answer(True), T0 + 40)
    assert isinstance(after, a.ReadConversation) and after.at > T0 + 40
    later = [engine.step(a.Answer(_running("idle")), T0 + 50 + 10 * k) for k in range(10)]
    assert not any(isinstance(x, a.RunOn) for x in later), "once per rejection"
    assert "stayed idle after the rejection: ran the agent on" in logged(engine)


def test_a_run_on_that_meets_an_outage_is_tried_again_while_the_agent_stays_idle() -> None:
    """Transient failures are ridden out: a RunOn refused with a 503 is not the rejection's last
    chance (the agent would sit idle to the deadline). It comes again after two more idle polls, read
    just then; a RunOn refused for good (404) is given up."""
    engine, actions = _rejected_then("idle")
    assert actions[-1] == a.RunOn("c-1")
    now, runs = T0 + 40, 1
    step = engine.step(a.Problem("transient", "503 Service Unavailable", 503), now)
    for _ in range(20):
        if isinstance(step, a.RunOn):
            runs += 1
            assert now - (T0 + 40) >= 2 * engine.rules.poll_interval, "tried again before two more idle polls"
            step = engine.step(a.Answer(True), now)
            break
        assert isinstance(step, a.ReadConversation), step
        now = max(now + 10, step.at or now)
        step = engine.step(a.Answer(_running("idle")), now)
    assert runs == 2, "the RunOn was not tried again after the outage"
    assert "on: 503 Service Unavailable: again if it stays idle" in logged(engine)
    later = [engine.step(a.Answer(_running("idle")), now + 10 * k) for k in range(1, 10)]
    assert not any(isinstance(x, a.RunOn) for x in later), "once it went through: once per rejection"

    engine, actions = _rejected_then("idle")
    engine.step(a.Problem("not_found", "404 Not Found", 404), T0 + 40)
    later = [engine.step(a.Answer(_running("idle")), T0 + 40 + 10 * k) for k in range(1, 10)]
    assert not any(isinstance(x, a.RunOn) for x in later), "a RunOn refused for good is not tried again"


def test_a_wait_between_idle_reads_starts_the_two_idle_polls_again() -> None:
    """Idle, then a read waiting for confirmation (nothing waits by the time what waits is read), then
    idle: the run-on waits for two idle polls after the wait, not counting the idle read before it
    (found by review)."""
    engine, actions = _rejected_then("idle", reads=1)
    assert isinstance(actions[-1], a.ReadConversation), actions  # idle since T0 + 20
    assert engine.step(a.Answer(_running("waiting_for_confirmation")), T0 + 30) == a.ReadPending("c-1")
    assert engine.step(a.Answer([]), T0 + 30) is not None  # nothing waits by now
    now, step = T0 + 30, None
    while not isinstance(step, a.RunOn) and now < T0 + 200:
        now += 10
        step = engine.step(a.Answer(_running("idle")), now)
    assert step == a.RunOn("c-1") and now >= T0 + 60, (now - T0, step)


def test_a_rejection_whose_run_met_a_401_is_run_on_too() -> None:
    """The rejection reached the agent, its ``/run`` met a 401 (a key rotated that moment): the
    connection is read again, what waits is read (nothing), and the idle agent is run on. Found by the
    review of RunOn: only failures other than 401 armed it."""
    engine = _rejecting()
    assert engine.step(a.Problem("auth", "401 on /run", 401), T0) == a.RereadConnection()
    assert engine.step(a.Answer(None), T0) == a.ReadPending("c-1")
    actions = [engine.step(a.Answer([]), T0 + 1)]
    for k in range(1, 6):
        if not isinstance(actions[-1], a.ReadConversation):
            break
        actions.append(engine.step(a.Answer(_running("idle")), T0 + 1 + 10 * k))
    assert actions[-1] == a.RunOn("c-1"), actions


def test_no_run_on_where_idle_ends_the_turn_or_nothing_was_rejected() -> None:
    _, actions = _rejected_then("idle", success_statuses=frozenset({"finished", "idle"}))
    assert actions[-1] == a.Conclude("c-1", "idle"), actions
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600, published="c-1"))
    engine.step(a.Continue(), T0)
    reads = [engine.step(a.Answer(_running("idle")), T0 + 10 * k) for k in range(10)]
    assert not any(isinstance(x, a.RunOn) for x in reads), "a conversation this task did not reject"
    _, actions = _rejected_then("running", reads=10)
    assert not any(isinstance(x, a.RunOn) for x in actions), "it went on"


def test_a_run_on_decided_in_the_triggerer_is_read_again_by_the_worker() -> None:
    """The trigger hands RunOn back (it carries out reads only): the worker reads the conversation
    itself, and runs the agent on only if that read still shows it idle."""
    engine, actions = _rejected_then("idle")
    assert actions[-1] == a.RunOn("c-1")
    for status, expected in (("idle", a.RunOn("c-1")), ("waiting_for_confirmation", a.ReadPending("c-1"))):
        handed = Lifecycle.from_dict(engine.lc.for_trigger(with_options=False))
        worker = _engine(handed, on_confirmation="reject")
        read = worker.step(a.Continue(), T0 + 40)
        assert read == a.ReadConversation("c-1", 0.0, False), read
        assert worker.step(a.Answer(_running(status)), T0 + 40) == expected


def test_a_follow_up_retry_reads_the_conversation_between_its_search_and_its_send() -> None:
    """A retry looks for its message (FindSend), does not find it, and sent it at once, on the read
    before the search: the agent (still on the earlier turn) may ask meanwhile, and the message would
    approve it. Found by a 3000-example model run ("sends while actions wait", after FindSend)."""
    lc = Lifecycle(follow_up=True, conversation_id="c-1", key="k", since="2026-01-01T00:00:00", try_number=2)
    engine = _engine(lc, on_confirmation="ask")
    _step(engine, a.Begin(), T0)
    assert isinstance(_step(engine, a.Answer(_running("running")), T0), a.FindSend)
    assert isinstance(engine.step(a.Answer(None), T0), a.ReadConversation)
    assert engine.step(a.Answer(_running("waiting_for_confirmation")), T0 + 1) == a.ReadPending("c-1")


def test_a_follow_up_that_waits_for_someone_else_ends_at_its_deadline() -> None:
    """on_confirmation="wait": nobody answers what the conversation waits for; the follow-up had no
    deadline before its send and waited for ever (found by a 3000-example model run: "did not end")."""
    engine = _follow_up("wait")
    _step(engine, a.Answer(_running("waiting_for_confirmation")), T0)
    read = engine.step(a.Answer([RM]), T0)
    assert engine.due() == T0 + 3600, engine.due()
    while isinstance(read, a.ReadConversation) and read.at < T0 + 3600:
        read = engine.step(a.Answer(_running("waiting_for_confirmation")), read.at)
    action = engine.step(a.Tick(), T0 + 3600)
    assert isinstance(action, a.Fail) and action.kind == "timeout", action
    assert "still waits for a confirmation" in action.message
