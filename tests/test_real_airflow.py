"""DAGs in a real Airflow: scheduler, triggerer, DAG processor, API server, pool, LocalExecutor.

``dag.test()`` runs tasks one at a time and triggers inline; this proves the rest:

* the nightly fan-out: the waits really run in the triggerer, the ``openhands`` pool caps a
  fan-out of 25 at the account's limit of 10, and an example DAG works as a user would deploy it;
* faults (Airflow 3, each component a process of its own, DAGs from ``tests/dags_e2e``): the
  triggerer SIGKILLed while tasks wait on start tasks and again while they wait on conversations;
  a worker-side wait's task process SIGKILLed while its start task works and while its
  conversation runs; a task cleared by a person after success. Every task succeeds with exactly
  one conversation per task (two for the cleared one), and no start task reuses an id.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import AIRFLOW_3, REPO, LocalAirflow

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.airflow_processes]

REPOSITORIES = [f"acme/repo-{n:02d}" for n in range(25)]


def test_nightly_fan_out_of_25_with_a_limit_of_10():
    # 8 s conversations: long enough that a trigger rarely fires before its deferring worker has
    # exited (see the race below), short enough for three waves of 10 in well under two minutes.
    with Emulator(concurrency_limit=10, conversation_seconds=8, start_seconds=0.5) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            pool_slots=10,
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "1"},
            log=lambda line: print(f"[e2e] {line}", flush=True),
        )
        try:
            airflow.start()
            airflow.wait_for_dag("openhands_nightly_maintenance")
            started = time.monotonic()
            run_id = airflow.trigger("openhands_nightly_maintenance", {"repositories": REPOSITORIES})
            state = airflow.wait_for_run("openhands_nightly_maintenance", run_id, timeout=600)
            elapsed = time.monotonic() - started
            tasks = airflow.task_states("openhands_nightly_maintenance", run_id)
            retried = airflow.query(
                "SELECT count(*) FROM task_instance WHERE run_id = ? AND task_id = 'maintain' AND try_number > 1",
                run_id,
            )[0][0]
            report = airflow.xcom("openhands_nightly_maintenance", run_id, "report")
        finally:
            airflow.stop()
        stats = emulator.stats()
        deferred = {key for key in airflow.deferred_seen if key[0] == "maintain"}
        print(
            f"\n[e2e] run {state} in {elapsed:.0f}s; emulator {stats}; "
            f"maintain tasks seen deferred: {len(deferred)}; retried: {retried}"
        )
        if state != "success":
            print(airflow.standalone_log(8000))
        airflow.cleanup()

    assert state == "success", tasks
    assert [t for t in tasks if t[2] != "success"] == []
    assert len([t for t in tasks if t[0] == "maintain"]) == 25
    assert len(deferred) == 25  # every wait ran in the triggerer
    assert stats["max_alive"] <= 10  # the pool kept the fan-out within the account's limit
    assert stats["created"] == 25
    # The pool keeps starts within the limit. The one exception is Airflow's own race (3.3): a task
    # whose trigger fired before its worker exited is failed by the scheduler before it could pause
    # its finished conversation; that sandbox holds a slot until the retry (which reconnects to the
    # same conversation) pauses it, so one start may wait for capacity meanwhile, and then succeed.
    # (A refusal counts each start attempt of a task waiting for capacity, so it is no task count.)
    if retried == 0:
        assert stats["refused_for_capacity"] == 0
    assert sorted(row["repository"] for row in report) == REPOSITORIES
    assert {row["status"] for row in report} == {"finished"}


# -- faults: kills and a clear ---------------------------------------------------------------------

FAN_OUT, WORKER, CLEAR = "openhands_e2e_fan_out", "openhands_e2e_worker", "openhands_e2e_clear"
FAN_OUT_REPOSITORIES = [f"acme/fan-{n}" for n in range(6)]
WORKER_REPOSITORIES = ["acme/worker-killed-starting", "acme/worker-killed-running"]
CLEARED_REPOSITORY = "acme/cleared"
#: Long start tasks, so tasks sit deferred on start tasks (the emulator's start task takes this long).
START_SECONDS = 12.0
#: How long the fan-out's conversations run: the second triggerer kill must come while they run.
FAN_OUT_SECONDS = 25
WORKER_SECONDS = 12


@dataclass
class Scenario:
    """One DAG run, what the test did to it and when, and its outcome."""

    name: str
    dag_id: str
    repositories: list[str]
    conf: dict[str, Any]
    run_id: str | None = None
    triggered_at: float = 0.0
    ended_at: float | None = None
    state: str | None = None
    events: list[str] = field(default_factory=list)


class Faults:
    """Drives the three scenarios at once: a poll loop fires each action when its moment comes.

    CLI calls (trigger, clear) run in a background thread, so the loop never misses a moment.
    """

    def __init__(self, airflow: LocalAirflow, emulator: Emulator) -> None:
        self.airflow = airflow
        self.emulator = emulator
        self.background = ThreadPoolExecutor(max_workers=2)
        self.pending: list[tuple[str, Callable[[], bool], Callable[[], None]]] = []
        self.done: list[str] = []
        self.futures: list[Future] = []

    # what Airflow and the emulator show

    def tis(self, scenario: Scenario) -> list[dict[str, Any]]:
        if scenario.run_id is None:
            return []
        rows = self.airflow.query(
            "SELECT ti.map_index, ti.state, ti.try_number, ti.id, t.triggerer_id FROM task_instance ti "
            "LEFT JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = 'converse' ORDER BY ti.map_index",
            scenario.dag_id,
            scenario.run_id,
        )
        keys = ("map_index", "state", "try_number", "id", "triggerer_id")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def conversations(self, repository: str) -> list[Any]:
        """Every start the emulator accepted for a repository (duplicates included)."""
        with self.emulator.lock:
            return [c for c in self.emulator.start_tasks.values() if c.repository == repository]

    def polled(self, path: str, ids: list[str], since: float = 0.0) -> bool:
        """Whether every id was in a GET ``path`` (``?ids=..``) at or after ``since``: its trigger ran."""
        wanted = {i.replace("-", "").lower() for i in ids}
        seen: set[str] = set()
        with self.emulator.lock:
            for entry in self.emulator.requests:
                if entry["method"] == "GET" and entry["path"] == path and entry["at"] >= since:
                    seen.update(i.replace("-", "").lower() for i in entry["query"].get("ids", []))
        return wanted <= seen

    def live_triggerer(self) -> int | None:
        rows = self.airflow.query("SELECT id FROM job WHERE job_type = 'TriggererJob' ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None

    def run_state(self, scenario: Scenario) -> str | None:
        rows = self.airflow.query(
            "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", scenario.dag_id, scenario.run_id
        )
        return rows[0][0] if rows else None

    # actions

    def at(self, name: str, condition: Callable[[], bool], action: Callable[[], None]) -> None:
        self.pending.append((name, condition, action))

    def trigger(self, scenario: Scenario) -> None:
        scenario.triggered_at = time.monotonic()
        scenario.run_id = self.airflow.trigger(scenario.dag_id, scenario.conf)

    def trigger_later(self, scenario: Scenario) -> None:
        self.futures.append(self.background.submit(self.trigger, scenario))

    def note(self, scenario: Scenario, what: str) -> None:
        line = f"{time.monotonic() - scenario.triggered_at:5.1f}s {what}"
        scenario.events.append(line)
        self.airflow.log(f"{scenario.name}: {line}")

    def run(self, scenarios: list[Scenario], finished: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for future in [f for f in self.futures if f.done()]:
                future.result()  # a failed CLI call fails the test here
                self.futures.remove(future)
            for item in list(self.pending):
                name, condition, action = item
                try:
                    ready = condition()
                except sqlite3.Error:  # the DB may be busy for a moment
                    ready = False
                if ready:
                    self.pending.remove(item)
                    action()
                    self.done.append(name)
            for scenario in scenarios:
                if scenario.run_id and scenario.ended_at is None and not self.futures:
                    state = self.run_state(scenario)
                    if state in ("success", "failed") and finished_for(scenario, self):
                        scenario.state, scenario.ended_at = state, time.monotonic()
            if finished() and not self.pending and not self.futures:
                return
            self.airflow.check_alive()
            time.sleep(0.3)
        raise TimeoutError(
            f"still pending after {timeout:.0f}s: {[name for name, _, _ in self.pending]}; "
            + "; ".join(f"{s.name}: {s.run_id} {self.tis(s)}" for s in scenarios)
        )


def missed(late: bool, what: str, knob: float) -> None:
    """Fail at once, not at the timeout, when the moment for a kill has passed (a slow machine)."""
    if late:
        raise AssertionError(f"missed the moment to kill: {what} already; this machine needs more than {knob} s")


def finished_for(scenario: Scenario, faults: Faults) -> bool:
    """A run counts as ended once no action of its scenario is pending (the clear re-runs it)."""
    return not any(name.split("/")[0] == scenario.name.split("/")[0] for name, _, _ in faults.pending)


@pytest.fixture(scope="module")
def faults_airflow():
    if not AIRFLOW_3:
        pytest.skip("the fault scenarios need Airflow 3: separate components and the task process title")
    with Emulator(concurrency_limit=20, start_seconds=START_SECONDS, conversation_seconds=FAN_OUT_SECONDS) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            dags_folder=REPO / "tests" / "dags_e2e",
            mode="components",
            extra_env={"AIRFLOW__CORE__PARALLELISM": "16"},
            log=lambda line: print(f"[e2e] {line}", flush=True),
        )
        outcome = {"passed": False}  # the test sets it: on a failure, the Airflow home stays for its logs
        try:
            started = time.monotonic()
            airflow.start()
            for dag_id in (FAN_OUT, WORKER, CLEAR):
                airflow.wait_for_dag(dag_id)
                airflow.cli("dags", "unpause", dag_id)
            airflow.log(f"Airflow up, DAGs parsed and unpaused in {time.monotonic() - started:.0f}s")
            yield airflow, emulator, outcome
        finally:
            airflow.stop()
            leftovers = airflow.leftovers()
            if not outcome["passed"]:
                print(f"[e2e] kept {airflow.home} (task logs under logs/, component logs *.log)")
            else:
                airflow.cleanup()
        assert leftovers == [], f"Airflow processes left running: {leftovers}"


def test_kills_and_a_clear(faults_airflow):
    """(a) triggerer SIGKILLed twice under a deferred fan-out, (b) a worker-side wait's task process
    SIGKILLed (while starting, while running), (c) a clear after success. All three at once."""
    airflow, emulator, outcome = faults_airflow
    fan_out = Scenario(
        "a/triggerer-kills",
        FAN_OUT,
        FAN_OUT_REPOSITORIES,
        {"repositories": FAN_OUT_REPOSITORIES, "duration": FAN_OUT_SECONDS},
    )
    worker = Scenario(
        "b/task-process-kills",
        WORKER,
        WORKER_REPOSITORIES,
        {"repositories": WORKER_REPOSITORIES, "duration": WORKER_SECONDS},
    )
    clear = Scenario("c/clear", CLEAR, [CLEARED_REPOSITORY], {"repository": CLEARED_REPOSITORY, "duration": 2})
    faults = Faults(airflow, emulator)
    first_triggerer: dict[str, Any] = {}

    # (a) first kill: every mapped task deferred, its trigger running in the triggerer, and every
    # start task still working (not READY).
    def waiting_on_start_tasks() -> bool:
        tis = faults.tis(fan_out)
        if len(tis) != len(FAN_OUT_REPOSITORIES) or any(t["state"] != "deferred" or not t["triggerer_id"] for t in tis):
            return False
        starts = [c for r in FAN_OUT_REPOSITORIES for c in faults.conversations(r)]
        missed(any(time.time() >= c.ready_at - 0.5 for c in starts), "a fan-out start task was READY", START_SECONDS)
        return len(starts) == len(FAN_OUT_REPOSITORIES) and faults.polled(
            "/api/v1/app-conversations/start-tasks", [c.start_task_id for c in starts]
        )

    def kill_triggerer_starting() -> None:
        first_triggerer["job"] = faults.live_triggerer()
        airflow.kill("triggerer", signal.SIGKILL)
        faults.note(fan_out, "SIGKILL triggerer: 6 tasks deferred on start tasks not READY")
        airflow.restart("triggerer")
        first_triggerer["restarted_at"] = time.time()
        # the worker and clear scenarios start now: the fan-out's tasks have started, the CPU is free
        faults.trigger_later(worker)
        faults.trigger_later(clear)

    # (a) second kill: the new triggerer runs every trigger, and every conversation is running.
    def waiting_on_conversations() -> bool:
        if "job" not in first_triggerer:
            return False
        now = time.time()
        convs = [c for r in FAN_OUT_REPOSITORIES for c in faults.conversations(r)]
        missed(any(now >= c.finished_at() - 3 for c in convs), "a fan-out conversation ended", FAN_OUT_SECONDS)
        tis = faults.tis(fan_out)
        live = faults.live_triggerer()
        if live == first_triggerer["job"] or any(t["state"] != "deferred" or t["triggerer_id"] != live for t in tis):
            return False
        return all(c.ready(now) for c in convs) and faults.polled(
            "/api/v1/app-conversations", [c.id for c in convs], since=first_triggerer["restarted_at"]
        )

    def kill_triggerer_running() -> None:
        airflow.kill("triggerer", signal.SIGKILL)
        faults.note(fan_out, "SIGKILL triggerer: 6 tasks deferred on running conversations")
        airflow.restart("triggerer")

    # (b) the worker-side waits: kill one task process while its start task works, the other while
    # its conversation runs.
    def worker_ti(map_index: int) -> dict[str, Any] | None:
        return next((t for t in faults.tis(worker) if t["map_index"] == map_index), None)

    def worker_moment(map_index: int, running: bool) -> bool:
        ti = worker_ti(map_index)
        if ti is None or ti["state"] != "running" or ti["try_number"] != 1 or airflow.task_process(ti["id"]) is None:
            return False
        convs = faults.conversations(WORKER_REPOSITORIES[map_index])
        now = time.time()
        if len(convs) != 1:
            return False
        if running:
            missed(now >= convs[0].finished_at() - 3, "the worker's conversation ended", WORKER_SECONDS)
            return convs[0].ready(now)
        missed(now >= convs[0].ready_at - 1, "the worker's start task was READY", START_SECONDS)
        return True

    def kill_worker(map_index: int, what: str) -> Callable[[], None]:
        def action() -> None:
            airflow.kill_task(worker_ti(map_index)["id"], signal.SIGKILL)
            faults.note(worker, f"SIGKILL task process of map_index {map_index} ({what})")

        return action

    # (c) after the first run's success, a person clears the task.
    def cleared_run_succeeded() -> bool:
        return clear.run_id is not None and not faults.futures and faults.run_state(clear) == "success"

    def clear_task() -> None:
        faults.note(clear, f"run succeeded ({len(faults.conversations(CLEARED_REPOSITORY))} conversation); clearing")

        def run_clear() -> None:
            cleared = airflow.clear(CLEAR, str(clear.run_id), ["converse"])
            faults.note(clear, f"cleared {len(cleared)} task instance (API clearTaskInstances)")

        faults.futures.append(faults.background.submit(run_clear))

    faults.at("a/kill-1", waiting_on_start_tasks, kill_triggerer_starting)
    faults.at("a/kill-2", waiting_on_conversations, kill_triggerer_running)
    faults.at("b/kill-starting", lambda: worker_moment(0, running=False), kill_worker(0, "start task working"))
    faults.at("b/kill-running", lambda: worker_moment(1, running=True), kill_worker(1, "conversation running"))
    faults.at("c/clear", cleared_run_succeeded, clear_task)

    started = time.monotonic()
    faults.trigger(fan_out)
    scenarios = [fan_out, worker, clear]
    try:
        faults.run(scenarios, lambda: all(s.ended_at is not None for s in scenarios), timeout=240)
    finally:
        faults.background.shutdown(wait=True)
        reconnects = [reconnected(airflow, worker, map_index) for map_index in (0, 1)]
        worker.events += [f"retry of map_index {i}: {r or 'no reconnect logged'}" for i, r in enumerate(reconnects)]
        summaries = [summary(faults, s) for s in scenarios]
        print(f"\n[e2e] fault scenarios in {time.monotonic() - started:.0f}s; emulator {emulator.stats()}")
        for line, _ in summaries:
            print(f"[e2e] {line}")

    duplicates = [(c.repository, c.id, c.error_detail) for c in emulator.start_tasks.values() if c.duplicate]
    assert duplicates == [], "a start task reused a conversation id (it ended in ERROR)"
    for scenario, (line, details) in zip(scenarios, summaries, strict=True):
        assert scenario.state == "success", (line, details)
        assert all(t["state"] == "success" for t in details["tis"]), (line, details)
    assert sorted(faults.done) == sorted(["a/kill-1", "a/kill-2", "b/kill-starting", "b/kill-running", "c/clear"])
    assert summaries[0][1]["created"] == dict.fromkeys(FAN_OUT_REPOSITORIES, 1), summaries[0]
    assert summaries[1][1]["created"] == dict.fromkeys(WORKER_REPOSITORIES, 1), summaries[1]
    assert [t["try_number"] for t in summaries[1][1]["tis"]] == [2, 2]  # each killed try was retried
    # each retry reconnected: map 0 to the start task (or to its conversation, if READY by then)
    assert all(r.startswith("Reconnecting to ") for r in reconnects), reconnects
    assert reconnects[1].startswith("Reconnecting to conversation"), reconnects
    assert summaries[2][1]["created"] == {CLEARED_REPOSITORY: 2}, summaries[2]
    first, second = faults.conversations(CLEARED_REPOSITORY)
    assert first.id != second.id
    outcome["passed"] = True


def summary(faults: Faults, scenario: Scenario) -> tuple[str, dict[str, Any]]:
    tis = faults.tis(scenario) if scenario.run_id else []
    created = {r: len(faults.conversations(r)) for r in scenario.repositories}
    retries = sum(max(0, (t["try_number"] or 1) - 1) for t in tis)
    seconds = (scenario.ended_at or time.monotonic()) - scenario.triggered_at if scenario.triggered_at else 0
    states = sorted({t["state"] for t in tis})
    line = (
        f"{scenario.name}: run {scenario.state}; created {sum(created.values())} for {len(tis)} tasks "
        f"({states}); retries {retries}; {seconds:.0f}s; {' | '.join(scenario.events)}"
    )
    return line, {"created": created, "tis": tis, "run_id": scenario.run_id}


def reconnected(airflow: LocalAirflow, scenario: Scenario, map_index: int) -> str:
    """What the second try of a task logged about reconnecting ('' if nothing)."""
    text = airflow.task_log(scenario.dag_id, str(scenario.run_id), "converse", map_index, try_number=2)
    for line in text.splitlines():
        try:
            event = json.loads(line).get("event", "")
        except ValueError:
            continue
        if event.startswith("Reconnecting to "):
            return event
    return ""


# -- issue 29, scenario 13: an unanswered ask, with a scheduler and a triggerer ---------------------------


def test_an_unanswered_ask_is_rejected_by_the_scheduler_at_confirmation_timeout():
    """``dag.test()`` never ends an unanswered ``ask`` (it runs no scheduler: README, "Testing your own
    DAGs offline"). Here the scheduler's sweep answers with the request's default (Reject) once
    ``confirmation_timeout`` (5 s) passed; the rejection reaches the agent, which goes on and ends."""
    if not AIRFLOW_3:
        pytest.skip("Airflow >= 3.3: awaiting_input and the scheduler's sweep")
    dag_id = "openhands_e2e_unanswered_ask"
    with Emulator(conversation_seconds=3, start_seconds=0.5) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            dags_folder=REPO / "tests" / "dags_e2e_confirm",
            log=lambda line: print(f"[e2e] {line}", flush=True),
        )
        try:
            airflow.start()
            airflow.wait_for_dag(dag_id)
            run_id = airflow.trigger(dag_id, {})
            state = airflow.wait_for_run(dag_id, run_id, timeout=300)
            asked = airflow.query("SELECT chosen_options, responded_by FROM hitl_detail")
        finally:
            airflow.stop()
        answers = [r["body"] for r in emulator.requests_to("POST", r"/events/respond_to_confirmation$")]
        if state != "success":
            print(airflow.standalone_log(8000))
        airflow.cleanup()
    assert state == "success"
    assert [(json.loads(chosen), by) for chosen, by in asked] == [(["Reject"], None)]  # the sweep's default
    (answer,) = answers
    assert answer["accept"] is False and "No one answered in Airflow within confirmation_timeout" in answer["reason"]
