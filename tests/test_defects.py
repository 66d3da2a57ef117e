"""The 12 defects of issue 17, each as the behaviour it must have once fixed.

They FAIL on the code before the fix (commit 948ef26): each test's docstring names the defect
(issue 17, "Why", item N) it shows. DAG runs go through ``dag.test()`` where it can drive them;
SIGTERM then retry, two deployments, XCom at the moment of deferral and reschedule pokes go
through ``tests/harness/airflow_task.py``, which runs an operator as Airflow's task runner does.
Every wait is bounded (operator timeouts, ``execution_timeout``, harness timeouts): none hangs.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta

import pytest

from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.harness.airflow_task import AirflowTask, Deployment

AIRFLOW_3 = __import__("airflow").__version__.split(".")[0] >= "3"
pytestmark = [
    pytest.mark.parametrize("api_version", ["v1"]),
    # dag.test() of DAGs built here needs Airflow 3's bundles; the harness copies Airflow 3.3's task
    # runner. The engine these tests drive is the same on Airflow 2.11 (tests/test_engine_model.py).
    pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's dag bundles and task runner"),
]

POLL = 0.2
#: A hang guard on every dag.test() task (Airflow's own execution_timeout).
GUARD = timedelta(seconds=45)


# -- helpers --------------------------------------------------------------------------------------


def dag(dag_id: str):
    from airflow.providers.common.compat.sdk import DAG

    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


def dag_test(the_dag, conf: dict | None = None):
    """``dag.test()`` of a DAG built in the test: recorded in the metadata DB first (as the DAG
    processor would from a bundle), as ``dag.test()`` runs only DAGs it finds there."""
    from types import SimpleNamespace

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    bag = SimpleNamespace(
        dags={the_dag.dag_id: the_dag}, import_errors={}, bundle_path=None, file_last_changed={}, dag_warnings=set()
    )
    sync_bag_to_db(bag, "openhands_tests", None)
    return the_dag.test(run_conf=conf or {})


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """A task's XCom as Airflow stored it (3: ``XComModel``; 2: ``XCom.get_one``)."""
    try:
        from airflow.models.xcom import XComModel
    except ImportError:
        from airflow.models.xcom import XCom

        return XCom.get_one(run_id=dag_run.run_id, dag_id=dag_run.dag_id, task_id=task_id, key=key)
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(run_id=dag_run.run_id, key=key, task_ids=task_id, dag_ids=dag_run.dag_id)
        row = session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


def log(capfd) -> str:
    """What the tasks printed (dag.test() logs to stdout or stderr)."""
    out, err = capfd.readouterr()
    return out + err


def errors(output: str) -> str:
    """The exception lines of a task's log (what dag.test() printed), to say why a task failed."""
    pattern = r"^\s*(?:\w+\.)*[A-Z]\w*(?:Error|Exception|Failed|Timeout|Exceeded)\b"
    found = [line.strip() for line in output.splitlines() if re.match(pattern, line)]
    return "\n".join(found[-4:]) or "(no exception in the log)"


def hook():
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    return OpenHandsHook()


def finished_conversation(message: str) -> str:
    """A conversation whose first turn ended (its sandbox still running, as the service leaves it)."""
    conversation_id = hook().start_conversation(message, "acme/web", poll_interval=0.05)
    give_up = time.time() + 20
    while hook().get_conversation(conversation_id)["status"] != "finished":
        assert time.time() < give_up, "the first turn never finished"
        time.sleep(0.05)
    return conversation_id


def pause(conversation_id: str) -> None:
    state = hook().get_conversation(conversation_id)
    hook().stop_conversation(conversation_id, state["sandbox_id"])


def in_background(action) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def polled(emulator) -> bool:
    """A task has polled its conversation (it exists and is running)."""
    return bool(emulator.requests_to("GET", r"/api/v1/app-conversations$"))


def paused_mid_turn(emulator, conversation_id: str) -> bool:
    """Whether the sandbox was paused before its newest turn ended."""
    conversation = emulator.conversation(conversation_id)
    return conversation.paused_at is not None and conversation.paused_at < conversation.turns[-1].end


def start_operator(task_id: str = "run", **kwargs):
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    options = {
        "repository": "acme/web",
        "wait_for_completion": True,
        "poll_interval": POLL,
        "timeout": 20,
        "execution_timeout": GUARD,
        **kwargs,
    }
    return OpenHandsStartConversationOperator(task_id=task_id, **options)


def follow_up_operator(task_id: str = "follow_up", **kwargs):
    from airflow_provider_openhands.operators.openhands import OpenHandsSendMessageOperator

    options = {
        "conversation_id": "{{ dag_run.conf['conversation_id'] }}",
        "poll_interval": POLL,
        "timeout": 20,
        "execution_timeout": GUARD,
        **kwargs,
    }
    return OpenHandsSendMessageOperator(task_id=task_id, **options)


# -- 1: a transient sandbox ERROR -------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker_mode", "deferrable_mode"])
def test_a_transient_sandbox_error_is_ridden_out(airflow_db, connection, deferrable, capfd):
    """Item 1: the sandbox reads ERROR for 1.5 s mid-run, then RUNNING again (as the real server
    does when a health check fails): the task rides it out (``sandbox_error_grace``), succeeds,
    and pauses the sandbox at the end (``pause_when_done``)."""
    mode = "deferrable" if deferrable else "worker"
    with dag(f"oh_defect_transient_sandbox_error_{mode}") as the_dag:
        start_operator(
            initial_user_msg='Fix the README [emulator duration=2 sandbox_error=1.5 finish="Fixed the README"]',
            deferrable=deferrable,
            sandbox_error_grace=5,
        )
    dag_run = dag_test(the_dag)
    assert states(dag_run) == {"run": "success"}, errors(log(capfd))
    result = xcom(dag_run, "run")
    assert result["status"] == "finished" and result["final_message"] == "Fixed the README"
    assert connection.conversation(result["conversation_id"]).paused_at is not None  # pause_when_done


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker_mode", "deferrable_mode"])
def test_a_sandbox_error_that_outlasts_the_grace_fails_the_task(airflow_db, connection, deferrable, capfd):
    """Item 1, the other side: an ERROR that persists past ``sandbox_error_grace`` fails the task,
    without waiting for the sandbox to come back (it would, 30 s later)."""
    mode = "deferrable" if deferrable else "worker"
    with dag(f"oh_defect_lasting_sandbox_error_{mode}") as the_dag:
        start_operator(
            initial_user_msg="Fix the README [emulator duration=1 sandbox_error=30]",
            deferrable=deferrable,
            sandbox_error_grace=2,
            timeout=60,
        )
    started = time.monotonic()
    dag_run = dag_test(the_dag)
    assert states(dag_run) == {"run": "failed"}
    assert time.monotonic() - started < 20


# -- 2: SIGTERM in worker mode, then the retry --------------------------------------------------------


@pytest.mark.parametrize("events", ["readable", "404"])
def test_a_retry_after_a_sigterm_resumes_the_paused_conversation(connection, events):
    """Item 2: a worker shutdown SIGTERMs the task mid-wait; Airflow calls ``on_kill`` (which pauses
    the conversation's sandbox) and the try fails. The retry (same series) resumes that
    conversation and succeeds with it, instead of waiting on the paused one until its timeout.

    With item 12's server (``events/search`` answers 404; found by the review of issue 17), the
    retry's reconnect read the paused conversation's events to learn whether it ended, and the 404
    failed it for good: events that cannot be read now leave it paused mid-run as far as is known."""
    if events == "404":
        not_found = {"status": 404, "body": {"detail": "Not Found"}, "times": 10**6}
        connection.add_fault(method="GET", path=r"events/search$", **not_found)
    with dag(f"oh_defect_sigterm_{events}"):
        operator = start_operator(
            initial_user_msg='Fix the README [emulator duration=3 finish="Fixed after the restart"]',
            deferrable=False,
            timeout=12,
            retries=1,
        )
    task = AirflowTask(operator)
    first = task.kill_during(lambda: polled(connection))
    assert first.state == "up_for_retry", first
    second = task.retry(timeout=40)
    assert second.state == "success", second
    if events == "readable":  # (404: no final message, with a warning)
        assert second.value["final_message"] == "Fixed after the restart"
    assert connection.stats()["created"] == 1


# -- 3: two deployments, one API key, the same ids -----------------------------------------------------


def test_two_deployments_with_the_same_ids_never_share_a_conversation(connection):
    """Item 3: staging and production share one API key, and run the same DAG (same connection id,
    DAG id, task id and ``scheduled__`` run id), each with its own DAG run, XCom and task state store.
    They get two conversations, each task ends with its own conversation's result, and a retry in
    production never adopts (nor pauses) staging's conversation."""
    run_id = "scheduled__2026-11-30T00:00:00+00:00"

    def nightly(deployment: str):
        with dag("oh_defect_nightly"):  # the same DAG file; its text renders per deployment
            return start_operator(
                task_id="fix",
                initial_user_msg=f'Fix the README [emulator duration=3 finish="{deployment} fixed it"]',
                deferrable=False,
                timeout=10,
                retries=1,
            )

    staging = AirflowTask(nightly("staging"), deployment=Deployment("staging"), run_id=run_id)
    production = AirflowTask(nightly("production"), deployment=Deployment("production"), run_id=run_id)
    staging.start()
    give_up = time.time() + 20
    while not polled(connection):
        assert time.time() < give_up, "staging's conversation never started"
        time.sleep(0.05)
    # production's first try loses the answer to its start request (the server did start it)
    connection.add_fault(method="POST", path=r"app-conversations$", reset=True, after=True)
    first = production.run(timeout=30)
    assert first.state == "up_for_retry", first
    retried = production.retry(timeout=40)
    done = staging.wait(timeout=40)
    theirs, mine = staging.ti.xcom().get("conversation_id"), production.ti.xcom().get("conversation_id")
    assert mine != theirs, f"production's retry took staging's conversation {theirs} for its own"
    assert retried.state == "success", retried
    assert done.state == "success", done
    assert retried.value["conversation_id"] != done.value["conversation_id"]
    assert retried.value["final_message"] == "production fixed it"
    assert done.value["final_message"] == "staging fixed it"
    assert not paused_mid_turn(connection, done.value["conversation_id"])


# -- 4: a follow-up whose send meets 409 ---------------------------------------------------------------


def test_a_follow_up_whose_send_meets_a_pause_returns_its_own_turn(airflow_db, connection, capfd):
    """Item 4: the sandbox is paused between the follow-up's read and its send (the send answers
    409). The task resumes, sends, waits for the end of ITS turn and returns that turn's final
    message; the sandbox is not paused while the new turn runs."""
    connection.configure(turn_lag_seconds=2.0)
    conversation_id = finished_conversation('Fix the README [emulator finish="First answer"]')
    sending = connection.add_fault(method="POST", path=r"send-message$", passthrough=True, delay=1.0)

    def pause_during_the_send() -> None:
        give_up = time.time() + 60
        while not sending.used and time.time() < give_up:
            time.sleep(0.02)
        pause(conversation_id)  # the service pauses the idle sandbox while the send is on its way

    pauser = in_background(pause_during_the_send)
    with dag("oh_defect_follow_up_409") as the_dag:
        follow_up_operator(message='Now add tests [emulator duration=2 finish="Added three tests"]')
    dag_run = dag_test(the_dag, {"conversation_id": conversation_id})
    pauser.join(5)
    assert connection.requests_to("POST", r"send-message$")[0]["status"] == 409  # the scenario happened
    assert states(dag_run) == {"follow_up": "success"}, errors(log(capfd))
    assert xcom(dag_run, "follow_up")["final_message"] == "Added three tests"
    assert not paused_mid_turn(connection, conversation_id)


# -- 5: a follow-up without waiting, then the sensor ------------------------------------------------------


def test_the_sensor_after_a_follow_up_returns_the_new_turn(airflow_db, connection, capfd):
    """Item 5: ``OpenHandsSendMessageOperator(wait_for_completion=False)`` then the README's
    ``OpenHandsConversationSensor``: the sensor returns the NEW turn's state, and does not pause the
    sandbox while that turn runs (the service shows the previous turn's ``finished`` for a while)."""
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

    connection.configure(turn_lag_seconds=3.0)
    conversation_id = finished_conversation('Fix the README [emulator finish="First answer"]')
    with dag("oh_defect_follow_up_then_sensor") as the_dag:
        send = follow_up_operator(
            task_id="send",
            message='Now add tests [emulator duration=2 finish="Second answer"]',
            wait_for_completion=False,
        )
        OpenHandsConversationSensor(
            task_id="wait", conversation_id=send.output, poke_interval=POLL, timeout=30, execution_timeout=GUARD
        )
    dag_run = dag_test(the_dag, {"conversation_id": conversation_id})
    assert states(dag_run) == {"send": "success", "wait": "success"}, errors(log(capfd))
    assert xcom(dag_run, "wait")["final_message"] == "Second answer"
    assert not paused_mid_turn(connection, conversation_id)


# -- 6: a follow-up's retry after a failed send ------------------------------------------------------------


def test_a_follow_up_retry_sends_the_message_an_earlier_run_also_sent(airflow_db, connection, capfd):
    """Item 6: yesterday's run sent the same follow-up text to the same conversation. Today's first
    try fails to send (HTTP 500); its retry sends the message (it is not "already sent": that was
    another run) and returns today's turn, not yesterday's answer."""
    message = 'Run the nightly checks [emulator duration=1 finish="All checks pass"]'
    conversation_id = finished_conversation("Set up the nightly checks")
    with dag("oh_defect_follow_up_retry") as the_dag:
        follow_up_operator(message=message, retries=1, retry_delay=timedelta(0))
    yesterday = dag_test(the_dag, {"conversation_id": conversation_id})
    assert states(yesterday) == {"follow_up": "success"}  # the scenario: an earlier run sent it
    connection.add_fault(method="POST", path=r"send-message$", status=500, body={"detail": "Internal Server Error"})
    today = dag_test(the_dag, {"conversation_id": conversation_id})
    turns = [turn for turn in connection.conversation(conversation_id).turns if turn.message == message]
    assert len(turns) == 2, "today's message was never delivered: the retry took yesterday's for it"
    assert states(today) == {"follow_up": "success"}, errors(log(capfd))
    ended = datetime.fromisoformat(xcom(today, "follow_up")["updated_at"]).timestamp()
    assert ended >= turns[-1].end - 0.01  # today's turn, not yesterday's


# -- 7: a follow-up whose conversation_id renders to "" -------------------------------------------------------


def test_a_follow_up_whose_conversation_id_renders_empty_fails_without_starting_one(airflow_db, connection, capfd):
    """Item 7: ``conversation_id`` renders to "": a clear OpenHandsConfigError naming
    ``conversation_id``, and no request starts a conversation."""
    with dag("oh_defect_empty_conversation_id") as the_dag:
        follow_up_operator(
            conversation_id="{{ dag_run.conf.get('conversation_id', '') }}", message="Continue with the next step"
        )
    dag_run = dag_test(the_dag)
    output = log(capfd)
    started = connection.requests_to("POST", r"app-conversations$")
    assert started == [], f"a new conversation was started: {[r['body']['initial_message'] for r in started]}"
    assert states(dag_run) == {"follow_up": "failed"}
    assert re.search(r"OpenHandsConfigError.*conversation_id", output), errors(output)


# -- 8: a follow-up that must resume on a full account ---------------------------------------------------------


def test_a_follow_up_waits_for_capacity_to_resume_its_sandbox(airflow_db, connection, capfd):
    """Item 8: the follow-up must resume a paused sandbox while the account runs as many conversations
    as it may: it waits for a free slot (within ``capacity_timeout``), as a start does, and succeeds
    once one frees, instead of failing with OpenHandsConcurrencyLimitError."""
    conversation_id = finished_conversation('Fix the README [emulator finish="First answer"]')
    pause(conversation_id)
    connection.configure(concurrency_limit=2)
    others = [hook().start_conversation(f"Other team {n} [emulator duration=600]", "other/repo") for n in range(2)]

    def free_a_slot() -> None:
        time.sleep(4)
        hook().stop_conversation(others[0])

    freeing = in_background(free_a_slot)
    with dag("oh_defect_follow_up_capacity") as the_dag:
        follow_up_operator(
            message='Now add tests [emulator duration=0.5 finish="Resumed and done"]', capacity_timeout=30
        )
    dag_run = dag_test(the_dag, {"conversation_id": conversation_id})
    freeing.join(10)
    assert connection.stats()["refused_for_capacity"] >= 1  # the scenario: the account was full
    assert states(dag_run) == {"follow_up": "success"}, errors(log(capfd))
    assert xcom(dag_run, "follow_up")["final_message"] == "Resumed and done"


# -- 9: the API key is rotated mid-wait (worker mode) --------------------------------------------------------------


def test_a_key_rotated_mid_wait_is_read_again_in_worker_mode(airflow_db, connection, monkeypatch, capfd):
    """Item 9: the connection gets a new API key while a worker-mode task waits, and the service
    accepts only the new one: on the 401 the task reads the connection again once and succeeds."""

    def rotate() -> None:
        give_up = time.time() + 30
        while not polled(connection) and time.time() < give_up:
            time.sleep(0.02)
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPENHANDS_DEFAULT",
            connection_json(connection, "v1", max_retries=3, max_requests_per_minute=100_000).replace(
                connection.api_key, "the-rotated-key"
            ),
        )
        try:
            connection.configure(api_key="the-rotated-key")
        except ValueError:  # configure() has no api_key knob: the constructor's attribute then
            connection.api_key = "the-rotated-key"

    rotating = in_background(rotate)
    with dag("oh_defect_key_rotation") as the_dag:
        start_operator(
            initial_user_msg='Fix the README [emulator duration=3 finish="Done with the new key"]', deferrable=False
        )
    dag_run = dag_test(the_dag)
    rotating.join(5)
    assert connection.api_key == "the-rotated-key"  # the scenario: rotated while the task waited
    assert states(dag_run) == {"run": "success"}, errors(log(capfd))
    assert xcom(dag_run, "run")["final_message"] == "Done with the new key"


# -- 10: the link and XCom as soon as the start request is answered ----------------------------------------------


def test_the_conversation_id_and_link_are_published_before_the_task_defers(connection, capfd):
    """Item 10: a deferrable start: when the task defers (the V1 start task not READY yet), XCom
    already holds ``conversation_id`` (the id the task chose) and ``conversation_url``, and the log
    has the URL, so the UI links to a run that may last hours."""
    from airflow_provider_openhands.api.state import canonical_id

    connection.configure(start_seconds=3)
    at_deferral: dict[str, str] = {}
    with dag("oh_defect_link_at_deferral"):
        operator = start_operator(initial_user_msg="Fix the README", deferrable=True)
    task = AirflowTask(operator, on_defer=lambda deferral: at_deferral.update(log=log(capfd)))
    result = task.run(timeout=40)
    assert result.state == "success", result
    deferral = task.deferrals[0]
    (post,) = connection.requests_to("POST", r"app-conversations$")
    chosen = post["body"]["conversation_id"]
    assert connection.conversation(chosen).ready_at > deferral.at  # the scenario: deferred before READY
    assert deferral.xcom.get("conversation_id"), f"XCom when the task deferred: {deferral.xcom}"
    assert canonical_id(deferral.xcom["conversation_id"]) == canonical_id(chosen)
    url = deferral.xcom.get("conversation_url")
    assert url and canonical_id(chosen) in url.replace("-", "")
    assert url in at_deferral["log"]


# -- 11: the sensor's unreachable_timeout in reschedule mode -------------------------------------------------------


def test_the_unreachable_clock_survives_reschedules(connection, monkeypatch):
    """Item 11: the service is down (503). A sensor in reschedule mode (each poke a new operator;
    Airflow 3.3's task state store is the same across pokes) fails once ``unreachable_timeout``
    (3 s) of failures passed, within 10 pokes of 1 s, not at its own timeout."""
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

    conversation_id = hook().start_conversation("A long task [emulator duration=120]", "acme/web", poll_interval=0.05)
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(connection, "v1", max_retries=0))
    connection.outage(seconds=60)
    with dag("oh_defect_reschedule_unreachable"):
        sensor = OpenHandsConversationSensor(
            task_id="wait",
            conversation_id=conversation_id,
            mode="reschedule",
            poke_interval=1,
            timeout=120,
            unreachable_timeout=3,
        )
    result = AirflowTask(sensor, max_pokes=10).run(timeout=40)
    assert result.state == "failed", f"{result}: still rescheduling, the unreachable clock restarts at each poke"
    assert "unreachable" in f"{type(result.error).__name__}: {result.error}".lower(), result


# -- 12: a finished conversation whose events cannot be read --------------------------------------------------------


def test_unreadable_events_are_a_warning_and_the_output_is_still_read(airflow_db, connection, capfd):
    """Item 12: the conversation finished but ``events/search`` answers 404 (an older or partial V1
    server): the task succeeds with ``final_message`` None and a warning in its log; with
    ``output_schema`` the output is still read from the task's own file (no events needed)."""
    connection.add_fault(method="GET", path=r"events/search$", status=404, body={"detail": "Not Found"}, times=10**6)
    with dag("oh_defect_unreadable_events") as the_dag:
        start_operator(initial_user_msg="Fix the README", deferrable=False)
        start_operator(
            task_id="run_with_output",
            initial_user_msg="Report the README's state [emulator output='{\"ok\": true}']",
            deferrable=False,
            output_schema={"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
        )
    dag_run = dag_test(the_dag)
    output = log(capfd)
    assert states(dag_run) == {"run": "success", "run_with_output": "success"}, errors(output)
    assert xcom(dag_run, "run")["final_message"] is None
    assert xcom(dag_run, "run_with_output")["output"] == {"ok": True}  # its own file: no events needed
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert any(re.search(r"final message|events", line, re.IGNORECASE) for line in warnings), warnings
