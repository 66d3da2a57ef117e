"""Engine rules that a mutation run (``scripts/mutation.py``, docs/mutation.md) found no test checking:
each test here kills the mutant its docstring names."""

from __future__ import annotations

from airflow_provider_openhands.api.state import canonical_id
from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine.engine import still_running
from airflow_provider_openhands.engine.state import (
    MAX_GENERATIONS,
    PHASE_RUNNING,
    Lifecycle,
    client_id,
    series_start,
    unsaved_clock,
)
from tests.test_engine_confirmations import PUSH, RM, _rejected_then, _rejecting, logged, waiting
from tests.test_engine_model import GRACE, T0, _engine, _problem, _running, _step, iso


def test_a_timeout_names_the_last_status_the_agent_state_and_the_sandbox() -> None:
    """A person reads why the task failed: what the conversation last showed (mutants: ``describe``
    dropping the agent's state, the sandbox, or its text)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 100))
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    state = {**_running("running"), "sandbox_status": "STARTING"}
    assert isinstance(engine.step(a.Answer(state), T0), a.ReadConversation)
    stop = engine.step(a.Tick(), T0 + 100)
    assert stop == a.Pause("c-1", "sb-c-1"), stop
    failed = engine.step(a.Answer(None), T0 + 100)
    assert isinstance(failed, a.Fail) and failed.kind == "timeout", failed
    assert "still status=running agent=running sandbox=STARTING at its deadline" in failed.message, failed.message


def test_a_wait_for_a_slot_woken_early_sleeps_on_until_its_wake_time() -> None:
    """A driver may come back before the capacity wait's end (a triggerer restart): the engine sleeps
    on to the same wake time, not to ``now`` (mutant: ``lc.wake_time or now`` -> ``and``, a busy loop)."""
    engine = _engine(Lifecycle(key="k", since="2026-11-30T00:00:00+00:00"))
    start = engine.step(a.Begin(), T0)
    assert isinstance(start, a.PostStart), start
    sleep = engine.step(_problem("capacity"), T0)
    assert isinstance(sleep, a.Sleep) and sleep.until > T0, sleep
    assert engine.step(a.Continue(), T0 + 1) == a.Sleep(sleep.until)
    assert isinstance(_step(engine, a.Continue(), sleep.until), a.PostStart)


def test_a_v1_retry_looks_for_every_id_generation_an_earlier_try_may_have_used() -> None:
    """A start task that failed for capacity spends its id: the next start asks for a new generation.
    A V1 retry looks for all of them; V0 ids have no generations (mutant: ``api_version == V1`` flipped)."""
    lc = {"key": "k", "try_number": 2, "series": 1, "since": "2026-11-30T00:00:00+00:00"}
    v1 = _engine(Lifecycle(**lc)).step(a.Begin(), T0)
    assert isinstance(v1, a.Reconnect), v1
    assert {canonical_id(client_id("k", 1, g)) for g in range(MAX_GENERATIONS)} == set(v1.conversation_ids)
    v0 = _engine(Lifecycle(**lc), api_version="v0").step(a.Begin(), T0)
    assert isinstance(v0, a.Reconnect) and v0.conversation_ids == (canonical_id(client_id("k", 1)),), v0


def test_a_retry_that_adopts_a_conversation_pauses_its_sandbox_on_a_kill() -> None:
    """The sandbox id comes from what the retry found (mutant: ``_found`` not keeping ``sandbox_id``:
    the kill's Pause names no sandbox, and a V1 server cannot pause it)."""
    engine = _engine(Lifecycle(key="k", try_number=2, series=1, since="2026-11-30T00:00:00+00:00"))
    reconnect = engine.step(a.Begin(), T0)
    assert isinstance(reconnect, a.Reconnect), reconnect
    cid = reconnect.conversation_ids[0]
    found = {**_running("running", cid=cid), "sandbox_id": "sb-found"}
    action = engine.step(a.Answer({"conversations": {cid: found}}), T0)
    assert action == a.Publish(cid), action
    assert isinstance(engine.step(a.Answer(None), T0), a.ReadConversation)
    assert engine.step(a.Killed(), T0 + 1) == a.Pause(cid, "sb-found")


def test_a_kill_while_the_start_task_works_pauses_what_it_starts() -> None:
    """``cancel_on_kill``: killed before the sandbox is READY, the task pauses its start task's sandbox and
    remembers it, so the retry resumes it (mutant: ``_killed`` not returning ``PauseStartTask``)."""
    engine = _engine(Lifecycle(key="k", since="2026-11-30T00:00:00+00:00"))
    assert isinstance(engine.step(a.Begin(), T0), a.PostStart)
    task = {"id": "st-1", "status": "WORKING", "created_at": iso(T0)}
    action = _step(engine, a.Answer({"conversation_id": None, "start_task": task}), T0)
    assert isinstance(action, a.ReadStartTask), action
    assert engine.step(a.Killed(), T0 + 1) == a.PauseStartTask("st-1")
    assert engine.lc.killed


def test_a_conversation_first_read_paused_by_someone_else_is_not_resumed() -> None:
    """A conversation a person or the service paused mid-run waits to be resumed by them; only the task's
    own kill makes it resume one (mutant: ``Lifecycle.killed`` true by default)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600))
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    paused = _running("running", sandbox="PAUSED")
    assert engine.step(a.Answer(paused), T0) == a.ReadTurn("c-1")
    action = engine.step(a.Answer({"live": True}), T0)
    assert isinstance(action, a.ReadConversation) and action.at > T0, action


def test_an_answer_is_logged_for_the_actions_that_still_wait_only() -> None:
    """alice answered two actions; one was answered in OpenHands meanwhile: her answer goes to, and the
    log names, the one still waiting (mutant: ``_check_answer`` not narrowing ``pending_actions``)."""
    engine, _ = waiting("ask")
    assert engine.step(a.Answer([RM, PUSH]), T0) == a.AskPerson("c-1", (RM, PUSH))
    lc = Lifecycle.from_dict(engine.lc.for_trigger())
    lc.confirmation = {"accept": True, "reason": "", "by": "alice"}
    resumed = _engine(lc, on_confirmation="ask")
    assert resumed.step(a.Continue(), T0 + 600) == a.ReadPending("c-1")
    assert resumed.step(a.Answer([RM]), T0 + 600) == a.Confirm("c-1", True, "")
    resumed.step(a.Answer(True), T0 + 600)
    assert "Approved by alice: terminal `rm -rf build`" in logged(resumed)
    assert "git push" not in logged(resumed) and resumed.lc.answered_actions == ["ev-1"]


def test_an_outage_that_begins_in_a_trigger_names_the_clock_to_store() -> None:
    """The trigger hands its wait back when a clock started since its kwargs were saved (mutant:
    ``unsaved_clock`` comparing with ``==``): an outage's first failure starts ``failing_since``."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600))
    stored = Lifecycle.from_dict(engine.lc.for_trigger())
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    assert unsaved_clock(stored, engine.lc, GRACE) is None
    assert isinstance(engine.step(_problem("transient"), T0), a.ReadConversation)
    assert unsaved_clock(stored, engine.lc, GRACE) == "failing_since"


def test_a_rejection_that_went_through_still_runs_on_an_agent_left_idle() -> None:
    """The rejection and its ``/run`` were answered, yet the agent sits idle: two idle polls later it is
    run on, once (issue 30's mutation 6: ``_confirmed`` not arming the run-on)."""
    engine = _rejecting()
    after = engine.step(a.Answer(True), T0)
    assert isinstance(after, a.ReadConversation), after
    reads = [engine.step(a.Answer(_running("idle")), T0 + 10 * k) for k in range(1, 5)]
    assert a.RunOn("c-1") in reads, reads


def test_an_outage_at_the_deadline_ends_the_wait_there() -> None:
    """Failures are ridden out until the deadline, not past it to ``unreachable_timeout`` (issue 30's
    mutation 4: the outage path skipping the deadline)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 100))
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    assert isinstance(engine.step(a.Answer(_running("running")), T0), a.ReadConversation)
    assert isinstance(engine.step(_problem("transient"), T0 + 60), a.ReadConversation)  # ridden out
    stop = engine.step(_problem("transient"), T0 + 110)  # past the deadline, 50 s into the outage
    assert stop == a.Pause("c-1", "sb-c-1"), stop
    failed = engine.step(a.Answer(None), T0 + 110)
    assert isinstance(failed, a.Fail) and failed.kind == "timeout", failed


def test_what_still_holds_a_sandbox_or_a_runtime() -> None:
    """``pause_when_done`` pauses only what still runs (the drivers ask this; mutant: the V0 answer removed)."""
    assert still_running({"api_version": "v0", "conversation_status": "RUNNING"})
    assert not still_running({"api_version": "v0", "conversation_status": "STOPPED"})
    assert still_running(_running("finished")) and still_running({**_running(), "sandbox_status": "ERROR"})
    assert not still_running(_running("finished", sandbox="PAUSED"))


def test_a_retry_that_finds_its_start_task_in_error_starts_afresh() -> None:
    """A start task in ERROR started nothing: the retry starts again rather than wait on it (mutant:
    ``_found`` skipping it only when its conversation was also rejected)."""
    engine = _engine(Lifecycle(key="k", try_number=2, series=1, since="2026-11-30T00:00:00+00:00"))
    assert isinstance(engine.step(a.Begin(), T0), a.Reconnect)
    failed = {"id": "st-1", "status": "ERROR", "conversation_id": None, "created_at": iso(T0 - 60)}
    action = engine.step(a.Answer({"conversations": {}, "ended": {}, "start_tasks": [failed]}), T0)
    assert isinstance(action, (a.PostStart, a.Publish)), action


def test_a_start_task_s_status_is_logged_once_each_time_it_changes() -> None:
    """Mutant: ``_start_task`` not remembering the status it logged (a line every poll)."""
    engine = _engine(Lifecycle(key="k", since="2026-11-30T00:00:00+00:00"))
    engine.step(a.Begin(), T0)
    working = {"id": "st-1", "status": "WORKING", "created_at": iso(T0)}
    _step(engine, a.Answer({"conversation_id": None, "start_task": working}), T0)
    for k in range(1, 4):
        assert isinstance(engine.step(a.Answer(working), T0 + 10 * k), a.ReadStartTask)
    assert logged(engine).count("Start task st-1: WORKING") == 1, logged(engine)


def test_a_conversation_paused_again_after_it_ran_is_warned_about_again() -> None:
    """One warning per pause, not one per task (mutant: ``paused_warned`` kept after a read not paused)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600))
    _step(engine, a.Continue(), T0)
    now = T0
    for status in ("paused", "running", "paused"):
        now += 10
        state = _running("running", sandbox="PAUSED") if status == "paused" else _running("running")
        state = {**state, "updated_at": iso(now)}
        action = engine.step(a.Answer(state), now)
        if isinstance(action, a.ReadTurn):
            action = engine.step(a.Answer({"live": True}), now)
        assert isinstance(action, a.ReadConversation), action
    assert logged(engine).count("is paused (by a user, or by the service for capacity)") == 2, logged(engine)


def test_the_two_idle_polls_before_a_run_on_count_from_the_first_idle_read() -> None:
    """After a rejection the agent is run on once it read idle for two poll intervals: a read that was
    not idle does not count (mutant: ``_run_on`` counting from that read, a poll early)."""
    engine, actions = _rejected_then("idle", reads=0)
    assert isinstance(actions[-1], a.ReadConversation), actions
    reads = [engine.step(a.Answer(_running(status)), T0 + 10 * k) for k, status in [(2, "unknown"), (3, "idle")]]
    reads.append(engine.step(a.Answer(_running("idle")), T0 + 40))
    assert not any(isinstance(x, a.RunOn) for x in reads), reads
    assert engine.step(a.Answer(_running("idle")), T0 + 50) == a.RunOn("c-1")


def test_a_wait_without_a_deadline_of_its_own_ends_before_airflow_s_execution_timeout() -> None:
    """``hard_deadline`` (Airflow's execution_timeout) caps every wait, also one with no deadline of
    its own, so the task pauses what it started before Airflow kills it (mutant: ``capped(None)``)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, hard_deadline=T0 + 300))
    assert engine.due() == T0 + 300
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    assert isinstance(engine.step(a.Answer(_running("running")), T0), a.ReadConversation)
    assert engine.step(a.Tick(), T0 + 300) == a.Pause("c-1", "sb-c-1")
    failed = engine.step(a.Answer(None), T0 + 300)
    assert isinstance(failed, a.Fail) and "before Airflow's execution_timeout" in failed.message, failed


def test_a_status_that_disagrees_with_its_events_is_checked_again_after_1_2_4_8_polls() -> None:
    """The same answer (status and ``updated_at``) costs an events read after 1, 2, 4, 8... polls, not
    each poll, nor fewer (issue 28's request bound; mutant: the backoff's base 2 -> 3)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 36000))
    _step(engine, a.Continue(), T0)
    polls = []
    for k in range(20):
        if isinstance(engine.step(a.Answer(_running("finished")), T0 + 10 * k), a.ReadTurn):
            polls.append(k)
            engine.step(a.Answer({"live": True}), T0 + 10 * k)
    assert polls == [0, 1, 3, 7, 15], polls


def test_a_retry_is_of_the_same_series_and_a_clear_begins_a_new_one() -> None:
    """Airflow's ``max_tries`` tells a retry from a clear (mutant: ``max_tries - retries + 2``: the first
    retry taken for a new series, which then never looks for what its first try started)."""
    assert series_start(try_number=2, max_tries=3, retries=3) == 1  # a retry
    assert series_start(try_number=5, max_tries=4 + 3, retries=3) == 5  # cleared after try 4
    assert series_start(try_number=6, max_tries=4 + 3, retries=3) == 5  # that series' retry


def test_a_kill_without_cancel_on_kill_leaves_the_conversation_running() -> None:
    """``cancel_on_kill=False``: the kill stops nothing (mutant: ``_killed`` pausing unless both the
    rule is off and the task is done)."""
    engine = _engine(Lifecycle(conversation_id="c-1", phase=PHASE_RUNNING, deadline=T0 + 3600), cancel_on_kill=False)
    assert isinstance(_step(engine, a.Continue(), T0), a.ReadConversation)
    assert engine.step(a.Killed(), T0 + 1) == a.Fail("killed", "killed")
    assert not engine.lc.killed
