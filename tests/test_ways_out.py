"""Ways out of a task (issue 29): how each engine failure reaches Airflow, and what it leaves behind."""

from __future__ import annotations

import re
import runpy
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.conftest import REPO
from tests.test_defects import AIRFLOW_3

#: Tests built on Airflow 3's dag bundles (``dag_test``) or its task runner (``tests/harness/airflow_task.py``).
AIRFLOW_3_ONLY = pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's dag bundles and task runner")

BUDGET_DAG_ID, STORE_DAG_ID = "oh_ways_budget", "oh_ways_store"

ENGINE = REPO / "airflow_provider_openhands" / "engine" / "engine.py"
DAGS = REPO / "tests" / "dags" / "openhands_ways_out_dags.py"


@pytest.fixture
def service(emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, max_requests_per_minute=100_000))
    return emulator


def task_instance(dag_run, task_id: str = "run"):
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id]
    return ti


def state_of(ti) -> str:
    return str(getattr(ti.state, "value", ti.state))


def run(dag_id: str, message: str, **operator):
    return runpy.run_path(str(DAGS))["build"](dag_id, message, **operator).test()


def logged(capfd, caplog) -> str:
    """What the run logged: dag.test() prints the task's log, or gives it to ``logging``."""
    out, err = capfd.readouterr()
    return out + err + caplog.text


# -- one table: engine failure kind -> Airflow exception ---------------------------------------------


def emitted_kinds(source: Path = ENGINE) -> set[str]:
    """Every ``Fail`` kind the engine's source can produce (``_fail("kind"``, ``_close("kind"``, ``Fail("kind"``)."""
    return set(re.findall(r'(?:_fail|_close|a\.Fail)\(\s*"([a-z_]+)"', source.read_text()))


def test_every_kind_the_engine_can_fail_with_is_in_the_table():
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_openhands.engine.actions import WAYS_OUT, Fail
    from airflow_provider_openhands.exceptions import OpenHandsError
    from airflow_provider_openhands.operators._waiting import failure

    kinds = emitted_kinds()
    assert {"confirmation", "budget", "timeout", "killed"} <= kinds  # the scan finds them
    assert kinds <= set(WAYS_OUT), f"not in the table: {sorted(kinds - set(WAYS_OUT))}"
    for kind, way in WAYS_OUT.items():
        raised = failure(Fail(kind, f"why {kind}"))
        assert type(raised).__name__ == way.exception and isinstance(raised, OpenHandsError), kind
        assert str(raised) == f"why {kind}"
        assert way.retried is not isinstance(raised, AirflowFailException), (
            f"{kind}: retried says one thing, the class another"
        )


def test_on_confirmation_fail_is_tried_once_though_the_task_has_retries(airflow_db, service):
    """Scenario 10: the README says it is not retried; it ran three tries (no entry in the mapping)."""
    build = runpy.run_path(str(REPO / "tests" / "dags" / "openhands_confirmation_dags.py"))["build"]
    dag_run = build(on_confirmation="fail", retries=2, retry_delay=timedelta(0)).test()
    ti = task_instance(dag_run, "maintain")
    assert state_of(ti) == "failed"
    assert ti.try_number == 1, f"{ti.try_number} tries of a failure a retry cannot change"
    assert len(service.requests_to("POST", r"app-conversations$")) == 1


# -- scenario 9: a budget crossed in the turn's last step --------------------------------------------

PR = "https://github.com/acme/app/pull/7"


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_a_turn_that_finished_over_budget_is_returned_with_the_crossing_reported(
    airflow_db, service, capfd, caplog, deferrable
):
    """Scenario 9: the turn's cost passes ``max_cost_usd`` only at its end (2.5 against 2.4999): the
    task raised ``OpenHandsBudgetExceeded ...: stopped`` and the final message with its PR link was
    lost. A finished turn is the task's result; the crossing is a warning and ``budget_exceeded``."""
    from tests.test_defects import xcom

    message = f'Fix the README [emulator duration=1 cost=2.5 finish="Opened {PR}"]'
    dag_run = run(BUDGET_DAG_ID, message, max_cost_usd=2.4999, deferrable=deferrable, retries=1)
    ti = task_instance(dag_run)
    text = logged(capfd, caplog)
    assert state_of(ti) == "success", text[-3000:]
    result = xcom(dag_run, "run")
    assert result["status"] == "finished" and PR in result["final_message"]
    assert "over max_cost_usd $2.4999" in result["budget_exceeded"]
    assert "cost $2.5000, over max_cost_usd $2.4999" in text and "but the turn had already ended (finished)" in text


# -- scenario 11: the task state store is written when the lifecycle changes ------------------------

HAS_STATE_STORE = __import__("importlib.util").util.find_spec("airflow.models.task_state_store") is not None


@pytest.mark.skipif(not HAS_STATE_STORE, reason="Airflow >= 3.3: the task state store")
def test_a_huge_prompt_is_written_to_the_task_state_store_once(airflow_db, service, monkeypatch):
    """Scenario 11: a 1.2 MB message was rewritten with the lifecycle after every step (26 writes,
    46 MB in a 10 s turn). The store is written when what it holds changed, and the prompt once."""
    import json

    from airflow.sdk.execution_time.context import TaskStateStoreAccessor

    writes: list[tuple[str, str]] = []
    set_value = TaskStateStoreAccessor.set

    def counted(self, key, value, **kwargs):
        writes.append((key, json.dumps(value, sort_keys=True)))
        return set_value(self, key, value, **kwargs)

    monkeypatch.setattr(TaskStateStoreAccessor, "set", counted)
    prompt = "Refactor this module:\n" + "x = 1\n" * 200_000  # 1.2 MB
    dag_run = run(STORE_DAG_ID, prompt + ' [emulator duration=2 finish="Refactored"]', deferrable=False)
    assert state_of(task_instance(dag_run)) == "success"
    written = sum(len(text) for _, text in writes)
    big = [key for key, text in writes if len(text) > len(prompt)]
    assert len(big) == 1, f"the prompt was written {len(big)} times ({written / 1e6:.1f} MB in {len(writes)} writes)"
    assert written < 1.5 * len(prompt), f"{written / 1e6:.1f} MB in {len(writes)} writes"
    last: dict[str, str] = {}
    for key, text in writes:
        assert last.get(key) != text, f"{key} written again unchanged"
        last[key] = text
    assert len(writes) >= 2  # the lifecycle is still kept as it changes


def test_the_stored_lifecycle_reads_back_whole_in_either_layout():
    """A retry (a fresh task instance) reads the lifecycle with its options, whether they were kept
    apart or, by an earlier version, with the rest."""
    from airflow_provider_openhands.engine.state import STATE_STORE_KEY, Lifecycle
    from airflow_provider_openhands.operators._store import OPTIONS_KEY, LifecycleStore
    from tests.harness.airflow_task import TaskStateStore

    lc = Lifecycle(conversation_id="c1", series=1, options={"initial_user_msg": "Fix it"})
    context = {"task_state_store": TaskStateStore()}
    LifecycleStore().save(context, lc)
    assert context["task_state_store"].values[OPTIONS_KEY] == {"initial_user_msg": "Fix it"}
    assert Lifecycle.from_dict(LifecycleStore().load(context)) == lc
    older = {"task_state_store": TaskStateStore()}
    older["task_state_store"].set(STATE_STORE_KEY, lc.to_dict())
    assert Lifecycle.from_dict(LifecycleStore().load(older)) == lc


@pytest.mark.parametrize(
    ("kind", "message", "operator"),
    [
        ("start_failed", "Fix it [emulator start=error]", {}),
        ("timeout", "Fix it [emulator duration=60]", {"timeout": 1}),
        ("confirmation", 'Clean up [emulator confirm="rm -rf build"]', {"on_confirmation": "fail"}),
    ],
)
def test_a_failure_is_retried_as_the_table_says(airflow_db, service, capfd, caplog, kind, message, operator):
    """Through ``dag.test()`` with one retry: a kind the table retries runs two tries, the others
    one; the exception raised is the table's."""
    from airflow_provider_openhands.engine.actions import WAYS_OUT

    dag_run = run(STORE_DAG_ID, message, retries=1, retry_delay=timedelta(0), **operator)
    ti = task_instance(dag_run)
    assert state_of(ti) == "failed"
    assert ti.try_number == (2 if WAYS_OUT[kind].retried else 1), kind
    assert WAYS_OUT[kind].exception in logged(capfd, caplog)


# -- scenario 1: a lost start answer on a try no retry follows ----------------------------------------


def running(service) -> list[str]:
    """Ids of the emulator's conversations (or start tasks) that still hold a sandbox."""
    return [cid for cid, c in service.conversations.items() if c.alive(time.time())]


def named(cid: str, text: str) -> bool:
    """The id is in the text, as the service spells it or with dashes."""
    return cid in text or str(uuid.UUID(cid)) in text


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retries", "last-try"])
def test_a_lost_start_answer_on_the_last_try_stops_the_conversation_it_chose(
    airflow_db, service, capfd, caplog, retries
):
    """Scenario 1: the service starts the conversation, the answer is lost on the way back (a reset).
    With ``retries=0``, or on the last try (the first try's request was lost before the service acted),
    the task failed, the agent ran on unwatched and no log line named the id the task asked for. No
    retry follows: the task looks its chosen id up, pauses what it finds, and says so with the id."""
    if retries:
        service.add_fault(method="POST", path=r"app-conversations$", reset=True)  # not acted on
    service.add_fault(method="POST", path=r"app-conversations$", reset=True, after=True)
    dag_run = run(STORE_DAG_ID, "Fix it [emulator duration=60]", retries=retries, retry_delay=timedelta(0))
    ti = task_instance(dag_run)
    text = logged(capfd, caplog)
    assert state_of(ti) == "failed" and ti.try_number == retries + 1
    (cid,) = service.conversations  # the last try's start, acted on
    while time.time() < service.conversations[cid].ready_at + 1:
        time.sleep(0.1)  # a start task the task did not see through would run its agent now
    assert running(service) == [], f"left running: {running(service)}\n{text[-3000:]}"
    assert "OpenHandsTransientError" in text
    failed = [line for line in text.splitlines() if "OpenHandsTransientError" in line and named(cid, line)]
    assert failed, f"the exception does not name conversation {cid}:\n{text[-3000:]}"
    assert "paused" in text[text.index("OpenHandsTransientError") :], text[-3000:]


def test_a_lost_start_answer_the_task_cannot_stop_is_named_in_the_log_and_the_exception(
    airflow_db, emulator, monkeypatch, capfd, caplog
):
    """Scenario 1, the service unreachable after the lost answer for longer than ``unreachable_timeout``
    (the one patience the look-up gets too): the task cannot look its id up; the log and the
    exception say so, with the id (it may be running)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, max_requests_per_minute=100_000, max_retries=0)
    )
    emulator.add_fault(method="POST", path=r"app-conversations$", reset=True, after=True)
    emulator.add_fault(method="GET", path=r"app-conversations", status=503, seconds=60)
    dag_run = run(STORE_DAG_ID, "Fix it [emulator duration=60]", unreachable_timeout=3)
    text = logged(capfd, caplog)
    assert state_of(task_instance(dag_run)) == "failed"
    (cid,) = emulator.conversations
    failed = [line for line in text.splitlines() if "OpenHandsTransientError" in line and named(cid, line)]
    assert failed and "could not" in failed[-1], f"the exception does not say {cid} may run on:\n{text[-3000:]}"


# -- scenario 4: a start task slower than start_timeout and the grace to pause it ----------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_a_start_slower_than_its_timeout_and_grace_is_watched_until_its_sandbox_is_paused(
    airflow_db, service, capfd, caplog, monkeypatch, deferrable
):
    """Scenario 4: the start task outlives ``start_timeout`` and the grace (30 s; 1 s here) the task
    gave it to name its sandbox: the task failed for good and the agent then ran its whole task
    unwatched. The task watches the late start task on (up to another ``start_timeout``) and pauses
    its sandbox once it has one, then fails; the log names the start task and the conversation."""
    monkeypatch.setattr("airflow_provider_openhands.engine.state.START_STOP_GRACE", 1.0)
    monkeypatch.setattr("airflow_provider_openhands.triggers.openhands.START_STOP_GRACE", 1.0)
    service.configure(start_seconds=6.0)  # READY after start_timeout (4 s) + the grace (1 s)
    dag_run = run(STORE_DAG_ID, "Fix it [emulator duration=60]", start_timeout=4, deferrable=deferrable, retries=1)
    ti = task_instance(dag_run)
    text = logged(capfd, caplog)
    assert state_of(ti) == "failed" and ti.try_number == 1
    (cid,) = service.conversations
    conversation = service.conversations[cid]
    while time.time() < conversation.ready_at + 1:
        time.sleep(0.1)  # the agent would run now, unwatched
    assert running(service) == [], f"left running: {running(service)}\n{text[-3000:]}"
    assert "OpenHandsStartTimeout" in text
    assert conversation.start_task_id in text and named(cid, text), text[-3000:]


# -- the engine's part: a retry follows, or the task stops what it chose the id for --------------------


def test_the_engine_stops_what_a_lost_start_left_only_when_no_retry_follows():
    """Pure engine: a retry follows (try 1 of 2) -> the transient failure at once, the retry reconnects;
    the last try looks its id up: a conversation found running is paused, a start task still working
    is watched (another ``start_timeout``), nothing found is said; a kill meanwhile keeps to the grace."""
    from airflow_provider_openhands.api.state import canonical_id
    from airflow_provider_openhands.engine import actions as a
    from airflow_provider_openhands.engine.state import Lifecycle
    from tests.test_engine_model import T0, _engine, _problem, _running

    def lost(max_tries: int, try_number: int = 1):
        since = "2026-11-30T00:00:00+00:00"  # a try after a clear (a series of its own) starts at once
        lc = Lifecycle(key="k", since=since, max_tries=max_tries, start_timeout=120, series=try_number)
        engine = _engine(lc)
        engine.lc.try_number = try_number
        start = engine.step(a.Begin(), T0)
        assert isinstance(start, a.PostStart) and start.client_id, start
        return engine, start.client_id, engine.step(_problem("transient"), T0)

    engine, cid, failed = lost(max_tries=1)
    assert isinstance(failed, a.Fail) and failed.kind == "transient", failed  # the retry reconnects

    engine, cid, lookup = lost(max_tries=1, try_number=2)  # cleared after try 1 with retries=0
    assert lookup == a.Reconnect((cid,), "2026-11-30T00:00:00+00:00", None), lookup
    found = {**_running("running", cid=canonical_id(cid)), "sandbox_id": "sb-1"}
    stop = engine.step(a.Answer({"conversations": {cid: found}}), T0 + 1)
    assert stop == a.Pause(canonical_id(cid), "sb-1"), stop
    failed = engine.step(a.Answer(True), T0 + 2)
    assert isinstance(failed, a.Fail) and failed.kind == "transient", failed
    assert canonical_id(cid) in failed.message and failed.message.endswith("was paused"), failed.message

    engine, cid, lookup = lost(max_tries=0)
    task = {"id": "st-1", "status": "WORKING", "requested_id": cid, "sandbox_id": None}
    watch = engine.step(a.Answer({"conversations": {cid: None}, "start_tasks": [task]}), T0 + 1)
    assert watch == a.PauseStartTask("st-1", T0 + 1 + 120), watch
    assert engine.step(a.Killed(), T0 + 2) == a.PauseStartTask("st-1")  # a kill: the grace only
    failed = engine.step(a.Problem("permanent", "start task st-1 still had no sandbox"), T0 + 121)
    assert "could not be stopped (start task st-1 still had no sandbox): it may still be running" in failed.message

    engine, cid, lookup = lost(max_tries=0)
    failed = engine.step(a.Answer({"conversations": {cid: None}, "start_tasks": []}), T0 + 1)
    assert isinstance(failed, a.Fail) and "nothing was started" in failed.message, failed


# -- decisions on fresh facts, one patience (scenarios 3, 5, 8) ---------------------------------------

EVENTS = r"events/search$"


def until(condition, what: str, seconds: float = 60.0) -> None:
    import time

    give_up = time.time() + seconds
    while not condition():
        assert time.time() < give_up, what
        time.sleep(0.02)


@AIRFLOW_3_ONLY
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_follow_up_on_a_server_without_events_waits_for_its_own_turn(airflow_db, service, capfd, caplog, deferrable):
    """Scenario 3: ``events/search`` answers 404 (supported: the status stands). Right after the
    message the service still reads the previous turn's ``finished``: the task took it as its own
    end (0.4 s, before the agent worked) and paused the sandbox while the new turn was due. Without
    events a follow-up's end needs a change since the send (``updated_at``, or a status that moved)."""
    import time

    from tests.test_defects import dag, dag_test, finished_conversation, follow_up_operator, paused_mid_turn, xcom

    service.add_fault(method="GET", path=EVENTS, status=404, body={"detail": "Not Found"}, times=10**6)
    conversation_id = finished_conversation('Fix the README [emulator finish="First answer"]')
    mode = "deferrable" if deferrable else "worker"
    with dag(f"oh_ways_follow_up_no_events_{mode}") as the_dag:
        follow_up_operator(message="Now add tests [emulator duration=3]", deferrable=deferrable)
    started = time.time()
    dag_run = dag_test(the_dag, {"conversation_id": conversation_id})
    text = logged(capfd, caplog)
    assert state_of(task_instance(dag_run, "follow_up")) == "success", text[-3000:]
    turn = service.conversation(conversation_id).turns[-1]
    assert turn.start > started and turn.end <= time.time(), "the task ended before its own turn did"
    assert not paused_mid_turn(service, conversation_id), "the sandbox was paused while the new turn was due"
    assert xcom(dag_run, "follow_up")["status"] == "finished"


@pytest.mark.parametrize(
    ("late", "deferrable"),
    [("slow", False), ("503", True)],
    ids=["a_slow_answer-worker", "two_503s-deferrable"],
)
def test_a_sandbox_error_is_judged_on_a_reading_newer_than_the_late_events_check(
    airflow_db, service, capfd, caplog, late, deferrable
):
    """Scenario 5: the sandbox reads ERROR past ``sandbox_error_grace``, so the engine checks the
    turn's events; that answer comes late (a slow answer, or two 503s and the transport's retries),
    by when the sandbox has recovered and the agent works on. The engine judged the old ERROR reading:
    it paused a running agent and failed the task. An error verdict needs a reading newer than the
    events check."""
    from tests.test_defects import xcom

    if late == "slow":
        service.add_fault(method="GET", path=EVENTS, passthrough=True, delay=4.0, times=1)
    else:
        service.add_fault(
            method="GET", path=EVENTS, status=503, body={"detail": "Service Unavailable"}, delay=1.0, times=2
        )
    message = 'Fix the README [emulator duration=12 sandbox_error=3 finish="Fixed it"]'
    dag_run = run(STORE_DAG_ID, message, deferrable=deferrable, sandbox_error_grace=1, timeout=60)
    text = logged(capfd, caplog)
    assert len(service.requests_to("GET", EVENTS)) >= 2, "the events were never checked for the ERROR"
    assert state_of(task_instance(dag_run)) == "success", text[-3000:]
    result = xcom(dag_run, "run")
    assert result["status"] == "finished" and result["final_message"] == "Fixed it"
    turn = service.conversation(result["conversation_id"]).turns[-1]
    paused = service.conversation(result["conversation_id"]).paused_at
    assert paused is None or paused >= turn.end, "a running agent was paused"


def test_an_outage_at_the_end_gets_the_same_patience_as_the_wait(airflow_db, emulator, monkeypatch, capfd, caplog):
    """Scenario 8: the wait rides out ``unreachable_timeout`` of failures, but the final read (the
    output file, the conversation) got only the transport's retries: an outage as the agent finished
    failed a task whose agent had finished. The final read and the pause get the same patience
    (``unreachable_timeout``, bounded by the task's deadline). Here the transport retries once
    (``max_retries=1``, some 1-2 s) and the outage lasts 6 s."""
    import threading

    from tests.test_defects import xcom

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(emulator, max_retries=1, max_requests_per_minute=100_000),
    )
    outages = []

    def outage_at_the_end() -> None:  # once the events confirmed the end: the final read meets it
        until(lambda: emulator.requests_to("GET", EVENTS), "the end was never confirmed")
        outages.append(emulator.outage(seconds=6))

    thread = threading.Thread(target=outage_at_the_end, daemon=True)
    thread.start()
    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    message = "Report the README's state [emulator duration=1 output='{\"ok\": true}']"
    dag_run = run(STORE_DAG_ID, message, deferrable=False, output_schema=schema, unreachable_timeout=30, timeout=60)
    thread.join(5)
    text = logged(capfd, caplog)
    assert outages and outages[0].used >= 2, "the outage did not meet the final read"
    assert state_of(task_instance(dag_run)) == "success", text[-3000:]
    result = xcom(dag_run, "run")
    assert result["status"] == "finished" and result["output"] == {"ok": True}
    assert emulator.conversation(result["conversation_id"]).paused_at is not None, "pause_when_done"


def test_an_outage_at_the_end_past_unreachable_timeout_fails_naming_the_conversation(
    airflow_db, emulator, monkeypatch, capfd, caplog
):
    """Scenario 8, past the patience: an outage at the final read that outlasts ``unreachable_timeout``
    (4 s here) fails the task for Airflow's retry (``OpenHandsUnreachableError``), and the failure
    names the conversation whose turn had ended."""
    import threading

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(emulator, max_retries=0, max_requests_per_minute=100_000),
    )

    def outage_at_the_end() -> None:
        until(lambda: emulator.requests_to("GET", EVENTS), "the end was never confirmed")
        emulator.outage(seconds=60)

    threading.Thread(target=outage_at_the_end, daemon=True).start()
    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    message = "Report the README's state [emulator duration=1 output='{\"ok\": true}']"
    dag_run = run(STORE_DAG_ID, message, deferrable=False, output_schema=schema, unreachable_timeout=4, timeout=60)
    text = logged(capfd, caplog)
    assert state_of(task_instance(dag_run)) == "failed", text[-3000:]
    (cid,) = emulator.conversations
    said = re.findall(r"after the turn of conversation (\S+) ended", text)  # not only in a request's path
    assert said and all(named(cid, word) for word in said), f"the failure does not name {cid}:\n{text[-3000:]}"


def test_a_stop_at_the_deadline_gets_the_same_patience_as_the_wait(airflow_db, emulator, monkeypatch, capfd, caplog):
    """Scenario 8, the pause: at its deadline the task pauses what it started, then fails. An outage
    then (6 s, the transport retrying once) left the agent running: the stop gets the wait's patience."""
    import threading
    import time

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(emulator, max_retries=1, max_requests_per_minute=100_000),
    )
    emulator.add_fault(method="POST", path=r"/pause$", status=503, body={"detail": "Service Unavailable"}, seconds=600)
    fault = emulator.faults[-1]

    def outage_from_the_first_pause() -> None:  # 6 s of 503s from the stop's first try
        until(lambda: fault.used, "the task never tried to stop its conversation")
        fault.seconds = time.time() - fault.added_at + 6

    threading.Thread(target=outage_from_the_first_pause, daemon=True).start()
    dag_run = run(STORE_DAG_ID, "Fix it [emulator duration=60]", deferrable=False, timeout=2, unreachable_timeout=30)
    text = logged(capfd, caplog)
    ti = task_instance(dag_run)
    assert state_of(ti) == "failed" and "OpenHandsConversationTimeout" in text, text[-3000:]
    assert fault.used >= 2, "the outage did not meet the stop"
    (conversation,) = emulator.conversations.values()
    assert conversation.paused_at is not None, "the agent was left running: the stop gave up in the outage"


# -- scenario 6: two follow-ups on one conversation from two runs ------------------------------------


@AIRFLOW_3_ONLY
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_two_follow_ups_on_one_conversation_each_report_their_own_turn_or_refuse(service, deferrable):
    """Scenario 6: run A's follow-up turn ended ``error``; run B sent its own while A's still ran, and
    A succeeded with B's final message. Each task reports its own turn, or refuses, saying another
    message was sent meanwhile; neither takes the other's end as its own."""
    from airflow_provider_openhands.operators.openhands import OpenHandsSendMessageOperator
    from tests.harness.airflow_task import AirflowTask, Deployment
    from tests.test_defects import finished_conversation

    conversation_id = finished_conversation("Fix the README [emulator duration=0.5]")
    deployment = Deployment()

    def follow_up(run_id: str, message: str) -> AirflowTask:
        operator = OpenHandsSendMessageOperator(
            task_id="more",
            conversation_id=conversation_id,
            message=message,
            poll_interval=0.2,
            timeout=30,
            deferrable=deferrable,
        )
        return AirflowTask(operator, deployment=deployment, run_id=run_id)

    sends = lambda: len(service.requests_to("POST", r"send-message$"))  # noqa: E731
    a_run = follow_up("manual__run_a", "Add a test [emulator outcome=error duration=3]")
    b_run = follow_up("manual__run_b", 'Update the docs [emulator duration=1 finish="B: docs updated"]')
    a_run.start()
    give_up = time.time() + 20
    while sends() < 1:
        assert time.time() < give_up, "run A never sent its message"
        time.sleep(0.05)
    b_run.start()  # while A's turn still runs
    a, b = a_run.wait(60), b_run.wait(60)
    assert sends() == 2
    refused = "another message was sent"
    assert a.state == "failed", f"run A: {a} {a.value}"  # its own turn ended error
    assert "B: docs updated" not in str(a.value)
    assert refused in str(a.error) or "error" in str(a.error).lower(), a
    if b.state == "success":
        assert b.value["final_message"] == "B: docs updated", b.value
    else:
        assert refused in str(b.error), b


def test_a_follow_up_s_turn_is_the_one_after_its_own_message():
    """The rule behind scenario 6, on events as the service lists them (newest first): the first end
    after this task's message is its end; another user message between them, or one before it whose
    turn had not ended, leaves the end unknowable, and says so."""
    from airflow_provider_openhands.api.state import own_turn_from_events, status_from_events

    def user(text: str, at: float) -> dict:
        content = [{"type": "text", "text": text}]
        return {"kind": "MessageEvent", "source": "user", "llm_message": {"content": content}, "timestamp": at}

    def end(value: str, at: float) -> dict:
        return {"kind": "ConversationStateUpdateEvent", "key": "execution_status", "value": value, "timestamp": at}

    def page(*events: dict) -> dict:
        stamp = lambda e: {**e, "timestamp": f"2026-12-07T00:00:{e['timestamp']:02d}"}  # noqa: E731
        return {"items": [stamp(e) for e in reversed(events)]}

    base = __import__("datetime").datetime(2026, 12, 7, tzinfo=__import__("datetime").timezone.utc).timestamp()
    mine = ("A", base + 9, base + 11)
    alone = page(user("start", 1), end("finished", 5), user("A", 10), end("running", 11), end("error", 20))
    turn, why = own_turn_from_events(alone, mine)
    assert why is None and status_from_events(turn) == "error"
    later = page(user("A", 10), end("running", 11), user("B", 12), end("error", 20), end("running", 21))
    assert "another message was sent meanwhile" in own_turn_from_events(later, mine)[1]
    before = page(user("B", 8), end("running", 9), user("A", 10), end("finished", 20))
    assert "another message was sent before it" in own_turn_from_events(before, mine)[1]
    # the next run's message after this turn's end is not this turn
    after = page(user("A", 10), end("error", 20), user("B", 30), end("running", 31), end("finished", 40))
    turn, why = own_turn_from_events(after, mine)
    assert why is None and status_from_events(turn) == "error"
    assert own_turn_from_events(page(user("start", 1)), mine) == (None, None)
