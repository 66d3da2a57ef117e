"""Confirmations routed to a person (issue 19), in ``dag.test()`` against the emulator's confirmation mode.

On Airflow >= 3.3 the task asks through Airflow's human-in-the-loop and waits in ``awaiting_input``
(no worker slot); a thread here answers as a person would, through the HITL REST API's handler, or
runs the scheduler's timeout sweep. What reached the agent is read from the emulator's record of
the agent server's ``respond_to_confirmation``. On Airflow 2.11 the default fails naming the action.
"""

from __future__ import annotations

import logging
import os
import re
import runpy
import threading
import time
from typing import Any

import pytest

from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.conftest import EXAMPLE_DAGS, REPO
from tests.test_defects import errors, log

pytestmark = pytest.mark.airflow_e2e

DAGS = REPO / "tests" / "dags" / "openhands_confirmation_dags.py"


def hitl() -> bool:
    try:
        from airflow.sdk.exceptions import TaskAwaitingInput  # noqa: F401
    except ImportError:
        return False
    return True


needs_hitl = pytest.mark.skipif(not hitl(), reason="Airflow >= 3.3: TaskAwaitingInput")


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture
def service(emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, max_requests_per_minute=100_000))
    return emulator


def build(decorated: bool = False, **kwargs: Any):
    return runpy.run_path(str(DAGS))["build_decorated" if decorated else "build"](**kwargs)


def state_of(dag_run) -> str:
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "maintain"]
    return str(getattr(ti.state, "value", ti.state))


def logged(capfd, caplog) -> str:
    """What the run logged: dag.test() prints the task's log, or gives it to ``logging``."""
    out, err = capfd.readouterr()
    return out + err + caplog.text


def responses(emulator) -> list[dict]:
    return [r["body"] for r in emulator.requests_to("POST", r"/events/respond_to_confirmation$")]


class Person(threading.Thread):
    """Answers the task's HITL requests in order (``answers``: (option, text) per round), as a person
    in the Required actions view would, through the HITL REST API's handler; with no answer left it
    runs the scheduler's sweep of timed-out requests instead (what a scheduler does). On any error,
    or after ``PATIENCE`` seconds, it fails what waits, so that ``dag.test()`` (which has no timeout
    for a task awaiting input) ends instead of waiting for ever.

    It answers only between ``dag.test()``'s runs of the task: after a run, ``dag.test()`` writes the
    state the run ended in (``awaiting_input``) once more, over an answer given in that moment (which
    moved the task to ``scheduled``), and the run would then wait for ever on an answered request. A
    scheduler does not write a parked task's state again, so a person in Airflow cannot meet this."""

    PATIENCE = float(os.environ.get("OPENHANDS_HITL_PATIENCE", "240"))

    def __init__(self, dag_id: str, answers: list[tuple[str, str]], sweep_after: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.dag_id, self.answers = dag_id, list(answers)
        self.sweep_after = sweep_after  # seconds of no scheduler (only dag.test()) before the sweeps begin
        self.parked_at_sweep: list[str] = []  # what awaited input when the first sweep came
        self.stop, self.errors, self.bodies, self.subjects = threading.Event(), [], [], []
        self.task_running = threading.Lock()  # held by dag.test() while it runs the task
        self.seen_bodies: list[str] = []  # the body of each request seen unanswered
        self.seen: list = []

    @staticmethod
    def describe(session, ti) -> dict:
        """What this thread last saw of a task instance (in the timeout's message)."""
        from airflow.models.hitl import HITLDetail

        detail = session.get(HITLDetail, ti.id)
        return {
            "ti": f"{ti.run_id}/{ti.task_id} try {ti.try_number}: {ti.state}",
            "detail": None if detail is None else {"responded_at": detail.responded_at, "subject": detail.subject},
        }

    def run(self) -> None:
        import time

        from airflow import settings
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import State, TaskInstanceState
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker
        from sqlalchemy.pool import NullPool

        # a connection of its own each time: SQLite's pool keys connections by thread id, and this
        # thread may get the id of an earlier test's (and its stale transaction)
        fresh = sessionmaker(create_engine(settings.SQL_ALCHEMY_CONN, poolclass=NullPool))
        given_up = time.monotonic() + self.PATIENCE
        self.sweeps_from = time.monotonic() + self.sweep_after
        while not self.stop.wait(0.2):
            try:
                assert time.monotonic() < given_up, (
                    f"still waiting for input after {self.PATIENCE:.0f}s; last seen: {self.seen}"
                )
                with self.task_running, fresh() as session, session.begin():
                    tis = session.query(TaskInstance).filter(TaskInstance.dag_id == self.dag_id).all()
                    self.seen = [self.describe(session, ti) for ti in tis]
                    for ti in tis:
                        if ti.state == TaskInstanceState.AWAITING_INPUT:
                            self.answer(session, ti)
            except Exception as error:  # reported by the test
                self.errors.append(error)
                with create_session() as session:  # fail what waits, so that the run ends
                    for ti in session.query(TaskInstance).filter(
                        TaskInstance.dag_id == self.dag_id, TaskInstance.state.not_in(list(State.finished))
                    ):
                        ti.state = TaskInstanceState.FAILED
                return

    def answer(self, session, ti) -> None:
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.models.hitl import HITLDetail

        detail = session.get(HITLDetail, ti.id)
        if detail is None or detail.responded_at is not None:
            return
        if not self.answers:
            import time

            if time.monotonic() < self.sweeps_from:
                return
            if not self.parked_at_sweep:
                self.parked_at_sweep.append(f"{ti.task_id}: {ti.state}, timeout {ti.trigger_timeout}")
            self.seen_bodies.append(detail.body)
            SchedulerJobRunner.__new__(SchedulerJobRunner).check_awaiting_input_timeouts(session=session)
            return
        self.seen_bodies.append(detail.body)
        self.bodies.append(detail.body)
        self.subjects.append(detail.subject)
        option, text = self.answers.pop(0)
        (field,) = detail.params  # "reason" for a confirmation, "comment" for a plan
        update_hitl_detail(
            dag_id=self.dag_id,
            dag_run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index,
            update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option], params_input={field: text}),
            user=SimpleAuthManagerUser(username="reviewer", role="admin"),
            session=session,
        )

    def __enter__(self) -> Person:
        import airflow.sdk.definitions.dag as dag_module

        self._run_task = dag_module._run_task

        def run_task(*args: Any, **kwargs: Any) -> Any:
            with self.task_running:
                return self._run_task(*args, **kwargs)

        dag_module._run_task = run_task
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import airflow.sdk.definitions.dag as dag_module

        self.stop.set()
        self.join(10)
        dag_module._run_task = self._run_task


def run_answered(answers: list[tuple[str, str]], decorated: bool = False, **kwargs: Any):
    dag = build(decorated, **kwargs)
    with Person(dag.dag_id, answers) as person:
        dag_run = dag.test()
    assert not person.errors, "\n".join(map(str, person.errors))
    return dag_run, person


def result(dag_run) -> dict:
    from tests.test_defects import xcom

    return xcom(dag_run, "maintain")


@needs_hitl
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_ask_approved_by_a_person_in_airflow_runs_the_action(airflow_db, service, capfd, caplog, deferrable):
    dag_run, person = run_answered([("Approve", "")], deferrable=deferrable)
    assert state_of(dag_run) == "success"
    assert responses(service) == [{"accept": True}]
    (body,) = person.bodies
    assert "rm -rf build" in body and "HIGH" in body and "/conversations/" in body
    assert "Approved by reviewer: terminal `rm -rf build` (security risk HIGH)" in logged(capfd, caplog)


@needs_hitl
def test_ask_rejected_with_a_reason_tells_the_agent_and_it_goes_on(airflow_db, service, capfd, caplog):
    dag_run, _ = run_answered([("Reject", "not on the shared runner")])
    assert state_of(dag_run) == "success"  # the agent went on without the action and finished
    assert responses(service) == [{"accept": False, "reason": "not on the shared runner"}]
    assert service.requests_to("POST", r"/api/conversations/[^/]+/run$"), "the agent was not told to go on"
    assert "not on the shared runner" in result(dag_run)["final_message"]
    assert "Rejected by reviewer: terminal `rm -rf build`" in logged(capfd, caplog)


@needs_hitl
def test_two_confirmations_in_one_task_are_two_rounds(airflow_db, service, capfd, caplog):
    message = 'Tidy up [emulator confirm="rm -rf build" confirm="git push --force"]'
    dag_run, person = run_answered([("Approve", ""), ("Reject", "no force pushes")], message=message)
    assert state_of(dag_run) == "success"
    assert responses(service) == [{"accept": True}, {"accept": False, "reason": "no force pushes"}]
    assert len(person.bodies) == 2
    assert "Rejected by reviewer: terminal `git push --force`" in logged(capfd, caplog)


@needs_hitl
def test_no_answer_within_confirmation_timeout_rejects(airflow_db, service, capfd, caplog):
    dag_run, _ = run_answered([], confirmation_timeout=1)
    assert state_of(dag_run) == "success"
    (answer,) = responses(service)
    assert answer["accept"] is False and "No one answered" in answer["reason"]
    assert "Rejected by timeout: terminal `rm -rf build`" in logged(capfd, caplog)


@pytest.mark.parametrize("mode", ["approve", "reject"])
def test_approve_and_reject_answer_without_a_person(airflow_db, service, capfd, caplog, mode):
    dag_run = build(on_confirmation=mode).test()
    assert state_of(dag_run) == "success"
    (answer,) = responses(service)
    assert answer["accept"] is (mode == "approve")
    verb = "Approved" if mode == "approve" else "Rejected"
    assert f"{verb} by on_confirmation: terminal `rm -rf build`" in logged(capfd, caplog)


def test_fail_fails_at_once_naming_the_action(airflow_db, service, capfd, caplog):
    """The default on Airflow before 3.1 (run on 2.11 too); anywhere as on_confirmation="fail"."""
    from airflow_provider_openhands.operators._confirmations import hitl_available

    kwargs = {} if not hitl_available() else {"on_confirmation": "fail"}
    dag_run = build(**kwargs).test()
    assert state_of(dag_run) == "failed"
    text = logged(capfd, caplog)
    assert "waits for a person to confirm: terminal `rm -rf build` (security risk HIGH)" in text
    assert responses(service) == []


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_an_action_behind_a_crowd_of_state_snapshots_is_answered_and_the_final_message_read(
    airflow_db, service, capfd, caplog, deferrable
):
    """The real agent server publishes its whole state each time a run stops (the action waits, the
    turn ends), and more snapshots may follow: ``state_updates=120`` puts more than a page of them
    after the pending action and after the final answer. The task still finds both."""
    message = 'Clean the build directory [emulator confirm="rm -rf build" risk=HIGH state_updates=120 finish="Cleaned"]'
    dag_run = build(message=message, on_confirmation="approve", deferrable=deferrable, timeout=30).test()
    assert state_of(dag_run) == "success"
    assert [answer["accept"] for answer in responses(service)] == [True]
    assert result(dag_run)["final_message"] == "Cleaned"
    assert "Approved by on_confirmation: terminal `rm -rf build` (security risk HIGH)" in logged(capfd, caplog)


# -- plan_first ------------------------------------------------------------------------------------

PLAN_TASK = 'Upgrade requests [emulator plan="1. Bump requests to 2.32" change=requirements.txt:MODIFIED]'


def plan_starts(emulator) -> list[dict]:
    return [r["body"] for r in emulator.requests_to("POST", r"/api/v1/app-conversations$")]


@needs_hitl
@pytest.mark.parametrize("decorated", [False, True], ids=["operator", "task.openhands"])
def test_plan_first_approved_is_carried_out_in_a_conversation_on_the_plan_s_sandbox(
    airflow_db, service, capfd, caplog, decorated
):
    dag_run, person = run_answered([("Approve", "")], decorated, message=PLAN_TASK, plan_first=True)
    assert state_of(dag_run) == "success"
    plan_start, build_start = plan_starts(service)
    assert plan_start["agent_type"] == "plan" and "parent_conversation_id" not in plan_start
    assert build_start.get("agent_type", "default") == "default"
    assert build_start["parent_conversation_id"].replace("-", "") == plan_start["conversation_id"].replace("-", "")
    assert (
        "Execute the plan based on the .agents_tmp/PLAN.md file."
        in build_start["initial_message"]["content"][0]["text"]
    )
    (body,) = person.bodies
    assert "1. Bump requests to 2.32" in body
    out = result(dag_run)
    assert out["plan"]["text"] == "1. Bump requests to 2.32"
    assert out["conversation_id"].replace("-", "") == build_start["conversation_id"].replace("-", "")
    assert "requirements.txt" in [c["path"] for c in out["changed_files"]]  # the build's change


@needs_hitl
@pytest.mark.parametrize(
    "decorated, deferrable",
    [(False, False), (True, False), (False, True)],
    ids=["operator", "task.openhands", "deferrable"],
)
def test_plan_first_revised_then_approved(airflow_db, service, decorated, deferrable):
    """Deferrable: the triggerer sees the plan turn end and hands the plan's reading back to the worker."""
    dag_run, person = run_answered(
        [("Revise", 'Pin it below 3 [emulator plan="1. Bump requests to 2.32, below 3"]'), ("Approve", "")],
        decorated,
        message=PLAN_TASK,
        plan_first=True,
        deferrable=deferrable,
    )
    assert state_of(dag_run) == "success"
    follow_ups = [r["body"] for r in service.requests_to("POST", r"/send-message$")]
    assert len(follow_ups) == 1 and "Revise the plan (round 2): Pin it below 3" in follow_ups[0]["content"][0]["text"]
    assert len(plan_starts(service)) == 2 and len(person.bodies) == 2
    assert result(dag_run)["plan"]["text"] == "1. Bump requests to 2.32, below 3"


@needs_hitl
def test_plan_first_a_retry_whose_revision_was_not_sent_sends_it(airflow_db, service, monkeypatch, capfd, caplog):
    """The try that was to send the person's revision fails before it reached the agent (a 503 on
    the send): the retry continues the revision from the task state store (it used to start over and
    show the person the old plan again), and the revised plan is what gets built."""
    from datetime import timedelta

    no_retries = connection_json(service, max_retries=0, max_requests_per_minute=100_000)
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", no_retries)  # the transport gives up at once
    service.add_fault(method="POST", path=r"/send-message$", status=503, body={"detail": "down"}, times=1)
    dag_run, person = run_answered(
        [("Revise", 'Pin it below 3 [emulator plan="1. Bump requests to 2.32, below 3"]'), ("Approve", "")],
        message=PLAN_TASK,
        plan_first=True,
        retries=1,
        retry_delay=timedelta(0),
    )
    assert state_of(dag_run) == "success"
    sent = [r for r in service.requests_to("POST", r"/send-message$") if r["status"] == 200]
    assert len(sent) == 1 and "Pin it below 3" in sent[0]["body"]["content"][0]["text"]
    assert len(person.bodies) == 2  # (before Airflow 3.4 the second request shows the first's text)
    assert "for review in Airflow:\n1. Bump requests to 2.32, below 3" in logged(capfd, caplog)  # the new plan
    assert result(dag_run)["plan"]["text"] == "1. Bump requests to 2.32, below 3"


@needs_hitl
def test_plan_first_whose_plan_file_cannot_be_read_shows_the_agent_s_final_message(airflow_db, service, capfd, caplog):
    """The plan file's read answers 409 (its sandbox paused): the person is shown the plan agent's
    final message (a warning says why), and the task goes on; the decision is logged with who gave it."""
    service.add_fault(method="GET", path=r"/file$", status=409, body={"detail": "Sandbox is paused"}, times=1)
    dag_run, person = run_answered([("Approve", "")], message=PLAN_TASK, plan_first=True)
    assert state_of(dag_run) == "success"
    assert "1. Bump requests to 2.32" in person.bodies[0]
    text = logged(capfd, caplog)
    assert "Could not read the plan file of conversation" in text and "Approve by reviewer" in text


@needs_hitl
def test_plan_first_revise_without_a_comment_asks_again(airflow_db, service, capfd, caplog):
    dag_run, person = run_answered([("Revise", ""), ("Approve", "")], message=PLAN_TASK, plan_first=True)
    assert state_of(dag_run) == "success"
    assert not service.requests_to("POST", r"/send-message$")  # nothing sent to revise by
    assert len(person.bodies) == 2 and len(plan_starts(service)) == 2  # the plan, then its build
    assert "Revise without a comment: asking again" in logged(capfd, caplog)


@needs_hitl
@pytest.mark.parametrize("answers", [[("Reject", "not this quarter")], []], ids=["rejected", "no-answer"])
def test_plan_first_rejected_or_unanswered_fails_and_builds_nothing(airflow_db, service, capfd, caplog, answers):
    dag_run, _ = run_answered(answers, message=PLAN_TASK, plan_first=True, confirmation_timeout=1)
    assert state_of(dag_run) == "failed"
    (plan_start,) = plan_starts(service)  # the plan only
    plan = service.conversation(plan_start["conversation_id"])
    assert plan.paused_at is not None  # its slot freed
    why = "not this quarter" if answers else "no one answered"
    assert why in logged(capfd, caplog)


@needs_hitl
def test_plan_first_whose_plan_agent_asks_before_writing_the_plan(airflow_db, service, capfd, caplog):
    """Confirmation mode on for every action (``AlwaysConfirm``): the real plan agent waits before its
    own edit of PLAN.md (observed on openhands-ai 1.11; ``confirm_plan=yes`` here). The person approves
    the edit, then the plan; the build runs. Before Airflow 3.4 the plan review keeps the first
    request's form (Approve / Reject, its "reason" field), so the plan cannot be revised there."""
    task = (
        "Upgrade requests "
        '[emulator plan="1. Bump requests to 2.32" confirm_plan=yes risk=LOW change=requirements.txt:MODIFIED]'
    )
    dag_run, person = run_answered([("Approve", ""), ("Approve", "")], message=task, plan_first=True)
    assert state_of(dag_run) == "success"
    plan_start, build_start = plan_starts(service)
    assert plan_start["agent_type"] == "plan" and build_start.get("agent_type", "default") == "default"
    assert build_start["parent_conversation_id"].replace("-", "") == plan_start["conversation_id"].replace("-", "")
    # what reached the agents: the accept of the plan agent's edit (the build asked nothing), then
    # the build's message
    assert responses(service) == [{"accept": True}]
    (plan_turn,) = service.conversation(plan_start["conversation_id"]).turns
    (edit,) = plan_turn.confirmations
    assert edit.tool == "planning_file_editor" and edit.accepted is True
    build_text = build_start["initial_message"]["content"][0]["text"]
    assert "Execute the plan based on the .agents_tmp/PLAN.md file." in build_text
    # two requests: the edit, then the plan, in the first one's form (Airflow < 3.4 keeps it)
    first, second = person.bodies
    assert "planning_file_editor" in first and "/workspace/project/app/.agents_tmp/PLAN.md" in first
    assert second == first
    text = logged(capfd, caplog)
    assert "Approved by reviewer: planning_file_editor `create /workspace/project/app/.agents_tmp/PLAN.md`" in text
    assert f"Plan of conversation {plan_start['conversation_id'].replace('-', '')}: Approve by reviewer" in text
    out = result(dag_run)
    assert out["plan"]["text"] == "1. Bump requests to 2.32"
    assert out["conversation_id"].replace("-", "") == build_start["conversation_id"].replace("-", "")
    assert "requirements.txt" in [c["path"] for c in out["changed_files"]]  # the build's change


@needs_hitl
def test_the_example_dag_plans_asks_and_carries_out(airflow_db, service, monkeypatch, capfd, caplog):
    """example_dags/openhands_plan_and_confirm.py: the plan approved, then the build's risky command
    rejected with a reason (the form is the plan review's: Airflow < 3.4 keeps a task's first form)."""
    from tests.test_dag_runs import load_dag

    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    dag = load_dag(EXAMPLE_DAGS / "openhands_plan_and_confirm.py", "openhands_plan_and_confirm")
    task = (
        'Upgrade requests [emulator plan="1. Bump requests" confirm="pip install -U requests" change=req.txt:MODIFIED]'
    )
    with Person(dag.dag_id, [("Approve", ""), ("Reject", "use the lock file")]) as person:
        dag_run = dag.test(run_conf={"repository": "acme/app", "task": task})
    assert not person.errors, "\n".join(map(str, person.errors))
    (ti,) = dag_run.get_task_instances()
    assert str(getattr(ti.state, "value", ti.state)) == "success"
    assert responses(service) == [{"accept": False, "reason": "use the lock file"}]
    assert "Rejected by reviewer: terminal `pip install -U requests`" in logged(capfd, caplog)


@needs_hitl
def test_an_answer_lost_on_the_way_back_is_not_sent_again_to_the_next_action(airflow_db, service, capfd, caplog):
    """The agent server took the approval but the connection broke before its answer: the task reads
    what waits before answering again, and the agent's next action goes to the person."""
    service.add_fault(method="POST", path=r"/respond_to_confirmation$", reset=True, after=True)
    message = 'Tidy up [emulator confirm="rm -rf build" confirm="git push --force"]'
    dag_run, person = run_answered([("Approve", ""), ("Reject", "no force pushes")], message=message)
    assert state_of(dag_run) == "success"
    assert responses(service) == [{"accept": True}, {"accept": False, "reason": "no force pushes"}]
    assert len(person.bodies) == 2 and "git push --force" in logged(capfd, caplog)


def test_a_run_whose_answer_was_lost_after_a_reject_is_not_sent_again(airflow_db, service, capfd, caplog):
    """The ``/run`` after a reject reached the agent but its answer was lost: sent again, it would
    approve whatever the agent waits for by then. The task reads what waits instead, and goes on."""
    service.add_fault(method="POST", path=r"/run$", reset=True, after=True)
    dag_run = build(on_confirmation="reject").test()
    assert state_of(dag_run) == "success"
    assert len(service.requests_to("POST", r"/api/conversations/[^/]+/run$")) == 1


@pytest.mark.parametrize("failed_runs", [1, 2], ids=["rejection-run", "and-the-run-on"])
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_rejection_whose_run_failed_runs_the_agent_on_once_it_stays_idle(
    airflow_db, service, capfd, caplog, deferrable, failed_runs
):
    """The rejection reached the agent, the ``/run`` after it failed (a 500, not acted on): the agent
    stays idle, and the task waited until its timeout. Now the task, reading it idle with nothing
    waiting after its own rejection, runs it on (deferrable: the triggerer hands that to the worker);
    a run-on that meets the outage too is tried again while the agent stays idle."""
    service.add_fault(method="POST", path=r"/run$", status=500, times=failed_runs)
    dag_run = build(on_confirmation="reject", deferrable=deferrable, timeout=60).test()
    assert state_of(dag_run) == "success"
    assert len(service.requests_to("POST", r"/api/conversations/[^/]+/run$")) == failed_runs + 1
    out, err = capfd.readouterr()
    sources = (out + err, caplog.text)  # dag.test() logs to one of them, or (Airflow 2) to both
    ran = "stayed idle after the rejection: ran the agent on"
    assert max(text.count(ran) for text in sources) == 1, "logged once, when it was run on"
    assert any("answered HTTP 500: 'null': again if it stays idle" in text for text in sources) is (failed_runs == 2)


def test_a_409_from_run_after_a_reject_counts_as_running():
    """Someone ran the agent on meanwhile (in OpenHands): the agent server answers 409."""
    from airflow_provider_openhands.api import endpoints
    from airflow_provider_openhands.exceptions import OpenHandsApiError

    flow = endpoints.respond_to_confirmation("c1", False, "no")
    flow.send(None)  # the conversation, for its agent server
    raw = {
        "id": "c1",
        "sandbox_status": "RUNNING",
        "session_api_key": "k",
        "conversation_url": "http://a/api/conversations/c1",
    }
    respond = flow.send([raw])
    assert respond.path.endswith("/respond_to_confirmation") and respond.idempotent is False
    run = flow.send({"success": True})
    assert run.path.endswith("/run") and run.idempotent is False
    with pytest.raises(StopIteration) as done:
        flow.throw(OpenHandsApiError("409 Conflict", status_code=409, method="POST", path=run.path))
    assert done.value.value is True


def test_running_an_agent_on_reads_it_idle_first():
    """RunOn's /run goes only to an agent read idle just before: one that waits for confirmation
    would take it as an approval. 409 (it runs already) counts as run on."""
    from airflow_provider_openhands.api import endpoints
    from airflow_provider_openhands.exceptions import OpenHandsApiError

    raw = {"id": "c1", "session_api_key": "k", "conversation_url": "http://a/api/conversations/c1"}
    for status in ("waiting_for_confirmation", "running", None):
        flow = endpoints.run_on("c1")
        flow.send(None)
        with pytest.raises(StopIteration) as done:
            flow.send([{**raw, "execution_status": status}])
        assert done.value.value is False, status
    flow = endpoints.run_on("c1")
    flow.send(None)
    run = flow.send([{**raw, "execution_status": "idle"}])
    assert run.method == "POST" and run.path == "/api/conversations/c1/run" and run.idempotent is False
    with pytest.raises(StopIteration) as done:
        flow.throw(OpenHandsApiError("409 Conflict", status_code=409, method="POST", path=run.path))
    assert done.value.value is True


@needs_hitl
def test_a_person_s_time_to_answer_ends_with_the_task_s_timeout(airflow_db, service, capfd, caplog):
    """``confirmation_timeout`` (24 h) longer than what is left of ``timeout``: the request times out
    by the wait's deadline, it does not keep the task for a day; the task then fails with its timeout
    and sends the agent no answer past it."""
    dag_run, person = run_answered([], timeout=15)
    assert state_of(dag_run) == "failed"
    assert responses(service) == []
    (body,) = set(person.seen_bodies)
    # the window left of the 15 s, not confirmation_timeout's 1440 min
    assert re.search(r"No answer within \d+ s rejects", body), body


# -- bad input: a clear error naming the parameter, when the DAG is parsed (before any request) ----


@pytest.mark.parametrize("value", ["Ask", "wait", "", "yes"])
def test_an_unknown_on_confirmation_is_refused_naming_it(value):
    from airflow_provider_openhands.exceptions import OpenHandsConfigError

    with pytest.raises(OpenHandsConfigError, match="on_confirmation must be one of"):
        build(on_confirmation=value)


def test_ask_is_refused_where_airflow_cannot_ask_a_person(monkeypatch):
    """Before Airflow 3.1 (no human-in-the-loop) ``ask`` is refused and the default is ``fail``."""
    from airflow_provider_openhands.exceptions import OpenHandsConfigError
    from airflow_provider_openhands.operators import _confirmations

    monkeypatch.setattr(_confirmations, "hitl_available", lambda: False)
    with pytest.raises(OpenHandsConfigError, match=r"on_confirmation='ask' needs Airflow >= 3.1"):
        build(on_confirmation="ask")
    with pytest.raises(OpenHandsConfigError, match=r"plan_first needs Airflow >= 3.1"):
        build(plan_first=True)
    assert build().get_task("maintain").on_confirmation == "fail"


@needs_hitl
@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"wait_for_completion": False}, "needs wait_for_completion=True"),
        ({"output_schema": {"type": "object"}}, "does not take output_schema yet"),
        ({"extra_body": {"agent_type": "plan"}}, "sets agent_type and parent_conversation_id itself"),
    ],
)
def test_plan_first_refuses_what_it_cannot_do_naming_it(given, problem):
    from airflow_provider_openhands.exceptions import OpenHandsConfigError

    with pytest.raises(OpenHandsConfigError, match=re.escape(f"plan_first {problem}")):
        build(plan_first=True, **given)


def test_an_agent_server_refusing_its_session_key_is_not_blamed_on_the_connection(airflow_db, service, capfd, caplog):
    service.add_fault(method="POST", path=r"^/agent/.*/respond_to_confirmation$", status=401, times=5)
    dag_run = build(on_confirmation="approve").test()
    assert state_of(dag_run) == "failed"
    text = logged(capfd, caplog)
    assert "refused with HTTP 401 by the conversation's agent server" in text
    assert "the API key of connection" not in text


# -- issue 29, scenario 13: nobody answers, outside dag.test() ------------------------------------------------


@needs_hitl
def test_dag_test_alone_never_ends_an_unanswered_ask(airflow_db, service):
    """What the README says ("Testing your own DAGs offline"): ``dag.test()`` of Airflow 3.3 runs no
    scheduler, so nothing resolves a request past its timeout; the task stays awaiting input (here
    8 s past a 1 s ``confirmation_timeout``) until the scheduler's sweep, run from here, rejects it."""
    dag = build(confirmation_timeout=1)
    with Person(dag.dag_id, [], sweep_after=9) as person:
        dag_run = dag.test()
    assert not person.errors, "\n".join(map(str, person.errors))
    assert person.parked_at_sweep and "awaiting_input" in person.parked_at_sweep[0], person.parked_at_sweep
    assert responses(service)[0]["accept"] is False and state_of(dag_run) == "success"


@needs_hitl
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_an_unanswered_ask_is_rejected_at_confirmation_timeout_as_airflow_runs_it(service, capfd, deferrable):
    """Scenario 13: with ``on_confirmation="ask"``, ``confirmation_timeout=5`` and nobody answering,
    ``dag.test()`` of Airflow 3.3 never ended: it parks a task awaiting input and waits for an answer
    from outside, and it does not run the scheduler's sweep of timed-out requests (README, "Testing
    your own DAGs offline"). Run as Airflow's task runner and scheduler run it (tests/harness): the
    task parks with a 5 s timeout and Reject as the default; at the timeout the sweep's answer resumes
    it, the rejection reaches the agent (which goes on without the action) and the task ends."""
    from tests.harness.airflow_task import AirflowTask

    dag = build(on_confirmation="ask", confirmation_timeout=5, deferrable=deferrable, timeout=60)
    task = AirflowTask(dag.get_task("maintain"))
    began = time.time()
    done = task.run(timeout=60)
    (request,) = task.hitl_requests
    assert request.defaults == ["Reject"] and "rm -rf build" in request.body
    assert done.state == "success", (done, errors(log(capfd)))
    assert 5 <= time.time() - began < 30
    (answer,) = responses(service)
    assert answer["accept"] is False and "No one answered in Airflow within confirmation_timeout" in answer["reason"]
    assert service.requests_to("POST", r"/api/conversations/[^/]+/run$"), "the agent was not told to go on"
    assert "Rejected by timeout: terminal `rm -rf build`" in log(capfd)
