"""The provider under a production topology: PostgreSQL metadata DB, CeleryExecutor on Redis, two
Celery workers, two triggerers, scheduler, DAG processor and API server as separate processes
(``scripts/local_airflow.py`` mode ``production``), against the emulator with a limit of 10.

The example nightly DAG over 50 repositories, the ``openhands`` pool of 10 slots; while 10 of its
tasks wait in the triggerers, one triggerer is SIGKILLed (its triggers must move to the other), and
a worker-side wait (``deferrable=False``, in the same pool) has its whole Celery worker SIGKILLed
(its retry must reconnect to the same conversation). Nothing is restarted.

Opt-in (marker ``production``; CI runs it as a step of its own): needs the ``production`` extra and
PostgreSQL and Redis on this host. Unreachable services fail the test, never skip it.

The polling bound asserted. Each triggerer runs one shared poller per connection; a round sends,
per kind (conversations, start tasks), one batched request per 99 ids, and rounds come at most
once per poll interval (a newcomer joins the next round; only a poller that had stopped for want
of subscribers starts with a round at once, which happens when a start subscribes). So in any 60 s
window the batched polls number at most::

    2 triggerers x 2 kinds x ceil(N / 99) x (60 / interval + 1)  +  the starts in the window

(N <= 10 waits at once here, so ceil(N/99) = 1). The request budget (``max_requests_per_minute``, set in the
connection's extra) is per triggerer and caps the same polls at 2 x the budget per minute; it is set
above what the interval needs, so the interval is the bound that holds here. The worker-side wait's
own reads (one id, every second, from the Celery worker) are counted apart.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import socket
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import AIRFLOW_3, REPO, LocalAirflow, _host_port

pytestmark = pytest.mark.production

NIGHTLY, WORKER = "openhands_nightly_maintenance", "openhands_production_worker"
REPOSITORIES = [f"acme/prod-{n:02d}" for n in range(50)]
WORKER_REPOSITORY = "acme/worker-side"
LIMIT = 10
POLL_SECONDS = 3.0
MAX_REQUESTS_PER_MINUTE = 60
CONVERSATION_SECONDS = 6.0
START_SECONDS = 1.0
WORKER_SECONDS = 30
CONVERSATION_POLLS = ("/api/v1/app-conversations", "/api/v1/app-conversations/start-tasks")


def say(line: str) -> None:
    print(f"[production] {line}", flush=True)


def require_services() -> None:
    """Fail (never skip) with a clear message when PostgreSQL or Redis is not reachable."""
    problems = []
    for what, variable, default in (
        ("PostgreSQL", "OPENHANDS_PG", "127.0.0.1:5432"),
        ("Redis", "OPENHANDS_REDIS", "127.0.0.1:6379"),
    ):
        host, port = _host_port(variable, default)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            problems.append(f"{what} is not reachable at {host}:{port} ({exc})")
    if shutil.which("psql") is None:
        problems.append("psql (the PostgreSQL client) is not installed")
    for module in ("psycopg2", "asyncpg", "redis", "celery", "airflow.providers.celery"):
        try:
            __import__(module)
        except ImportError:
            problems.append(f"{module} is missing: pip install -e . -r requirements/production.txt")
    if problems:
        pytest.fail("the production topology test cannot run: " + "; ".join(problems), pytrace=False)


def ids_of(entry: dict[str, Any]) -> set[str]:
    return {i.replace("-", "").lower() for i in entry["query"].get("ids", [])}


def most_in_window(times: list[float], window: float = 60.0) -> tuple[int, float]:
    """The most events in any ``window`` seconds, and where that window starts."""
    times = sorted(times)
    best, best_at, first = 0, times[0] if times else 0.0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        if last - first + 1 > best:
            best, best_at = last - first + 1, times[first]
    return best, best_at


def test_nightly_fan_out_of_50_under_celery_postgres_two_triggerers_with_kills():
    if not AIRFLOW_3:
        pytest.skip("the production topology is tested on the Airflow 3 line")
    require_services()
    wall = time.monotonic()
    emulator = Emulator(
        concurrency_limit=LIMIT, conversation_seconds=CONVERSATION_SECONDS, start_seconds=START_SECONDS
    ).start()
    airflow = LocalAirflow(
        connection={
            "conn_type": "openhands",
            "host": emulator.url,
            "password": emulator.api_key,
            "extra": {"max_requests_per_minute": MAX_REQUESTS_PER_MINUTE},
        },
        pool_slots=LIMIT,
        dags_folder=REPO / "tests" / "dags_production",
        mode="production",
        extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": str(POLL_SECONDS)},
        log=say,
    )
    background = ThreadPoolExecutor(max_workers=1)
    events: dict[str, Any] = {}
    passed = False
    try:
        airflow.start()
        for dag_id in (NIGHTLY, WORKER):
            airflow.wait_for_dag(dag_id)
            airflow.cli("dags", "unpause", dag_id)
        say(f"Airflow up, DAGs parsed in {time.monotonic() - wall:.0f}s; triggerer jobs {airflow.triggerer_jobs}")
        started = time.monotonic()
        nightly_run = airflow.trigger(NIGHTLY, {"repositories": REPOSITORIES})
        worker_run: Any = None
        worker_future: Any = None
        deadline = time.monotonic() + 480
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the runs did not end in time; events {events}")
            airflow.check_alive()
            try:
                tis = airflow.query(
                    "SELECT ti.map_index, ti.state, ti.try_number, t.triggerer_id FROM task_instance ti "
                    "LEFT JOIN trigger t ON t.id = ti.trigger_id "
                    "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = 'maintain'",
                    NIGHTLY,
                    nightly_run,
                )
            except sqlite3.Error:
                time.sleep(0.5)
                continue
            waiting = [t for t in tis if t[1] == "deferred" and t[3] is not None]
            now = time.monotonic() - started

            # 1. 10 tasks wait in the triggerers: SIGKILL the triggerer that runs most of their triggers
            if "triggerer_killed" not in events and len(waiting) == LIMIT:
                job, count = Counter(t[3] for t in waiting).most_common(1)[0]
                component = airflow.triggerer_of_job(job)
                assert component is not None, (job, airflow.triggerer_jobs)
                events["moved"] = sorted(t[0] for t in waiting if t[3] == job)
                events["dead_job"] = job
                events["survivor_job"] = next(j for c, j in airflow.triggerer_jobs.items() if c != component)
                airflow.kill(component, signal.SIGKILL)
                events["triggerer_killed"] = now
                say(f"{now:5.1f}s SIGKILL {component} (job {job}) running {count} of the {LIMIT} waiting triggers")
                worker_future = background.submit(
                    airflow.trigger, WORKER, {"repository": WORKER_REPOSITORY, "duration": WORKER_SECONDS}
                )
            if "triggerer_killed" in events and "handover" not in events:
                moved = [t for t in waiting if t[0] in events["moved"] and t[3] == events["survivor_job"]]
                if moved:
                    events["handover"] = now - events["triggerer_killed"]
                    say(f"{now:5.1f}s the surviving triggerer runs a moved trigger")

            # 2. the worker-side wait runs in a Celery worker, its conversation running: SIGKILL that worker
            if worker_run is None and worker_future is not None and worker_future.done():
                worker_run = worker_future.result()
            if worker_run is not None and "worker_killed" not in events:
                rows = airflow.query(
                    "SELECT id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                    WORKER,
                    worker_run,
                )
                if rows and rows[0][1] == "running" and rows[0][2] == 1:
                    pid = airflow.task_process(str(rows[0][0]))
                    with emulator.lock:
                        mine = [c for c in emulator.start_tasks.values() if c.repository == WORKER_REPOSITORY]
                    if pid is not None and len(mine) == 1 and mine[0].ready(time.time()):
                        component = airflow.component_of(pid)
                        assert component and component.startswith("celery-worker"), (pid, component)
                        airflow.kill(component, signal.SIGKILL)
                        events["worker_killed"] = now
                        say(f"{now:5.1f}s SIGKILL {component}, whose task process {pid} waits on its conversation")

            runs = dict(
                airflow.query("SELECT dag_id, state FROM dag_run WHERE run_id IN (?, ?)", nightly_run, worker_run)
            )
            if (
                worker_run
                and "worker_killed" in events
                and {runs.get(NIGHTLY), runs.get(WORKER)} <= {"success", "failed"}
            ):
                break
            if runs.get(NIGHTLY) in ("success", "failed") and "worker_killed" not in events:
                raise AssertionError(f"the nightly run ended ({runs}) before the worker kill; events {events}")
            time.sleep(0.5)
        elapsed = time.monotonic() - started

        # what Airflow recorded
        nightly_tis = airflow.query(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            NIGHTLY,
            nightly_run,
        )
        worker_tis = airflow.query(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            WORKER,
            worker_run,
        )
        report = airflow.xcom(NIGHTLY, nightly_run, "report") or []
        reconnect = reconnected(airflow, worker_run)
        trigger_logs = {
            t[0]: trigger_jobs_of(airflow, nightly_run, t[0]) for t in nightly_tis if t[0] in events.get("moved", [])
        }
    except BaseException:
        say(f"kept {airflow.home} for its logs (component logs *.log, task logs under logs/)")
        print(airflow.standalone_log(6000))
        raise
    else:
        passed = True
    finally:
        background.shutdown(wait=True)
        airflow.stop()
        emulator.stop()
        leftovers = airflow.leftovers()
        if passed:
            airflow.cleanup()

    # -- what the emulator saw -----------------------------------------------------------------------
    stats = emulator.stats()
    with emulator.lock:
        conversations = list({id(c): c for c in emulator.start_tasks.values()}.values())
        requests = list(emulator.requests)
    per_repository = Counter(c.repository for c in conversations)
    worker_ids = {i for c in conversations if c.repository == WORKER_REPOSITORY for i in (c.id, c.start_task_id)}
    polls = [r for r in requests if r["method"] == "GET" and r["path"] in CONVERSATION_POLLS]
    triggerer_polls = [r["at"] for r in polls if not ids_of(r) <= worker_ids]
    starts = sorted(r["at"] for r in requests if r["method"] == "POST" and r["path"] == "/api/v1/app-conversations")
    polls_per_minute, window_at = most_in_window(triggerer_polls)
    starts_in_window = sum(1 for t in starts if window_at - POLL_SECONDS <= t < window_at + 60)
    rounds = 60 / POLL_SECONDS + 1
    poll_bound = 2 * len(CONVERSATION_POLLS) * math.ceil(LIMIT / 99) * rounds
    nightly_retries = sum(max(0, t[3] - 1) for t in nightly_tis if t[0] == "maintain")
    worker_retries = sum(max(0, t[3] - 1) for t in worker_tis)
    by_path = Counter(f"{r['method']} {re.sub('[0-9a-f]{32}', '{id}', r['path'])}" for r in requests)
    summary = (
        f"wall {time.monotonic() - wall:.0f}s (runs {elapsed:.0f}s); created {stats['created']} "
        f"({len(REPOSITORIES)} nightly + {per_repository[WORKER_REPOSITORY]} worker-side); "
        f"max alive {stats['max_alive']}/{LIMIT}; polls/min {polls_per_minute} "
        f"(bound {poll_bound:.0f} + {starts_in_window} starts; all requests/min {stats['max_requests_per_minute']}); "
        f"retries {nightly_retries + worker_retries} (worker-side {worker_retries}); "
        f"triggers moved {len(events.get('moved', []))} in {events.get('handover', float('nan')):.0f}s; "
        f"refused for capacity {stats['refused_for_capacity']}"
    )
    say(f"requests by endpoint: {dict(by_path)}")
    say(f"events: {json.dumps({k: v for k, v in events.items()}, default=str)}")
    print(f"\n[production] SUMMARY: {summary}", flush=True)

    assert leftovers == [], f"Airflow processes left running: {leftovers}"
    assert runs == {NIGHTLY: "success", WORKER: "success"}, (runs, nightly_tis, worker_tis)
    assert all(t[2] == "success" for t in nightly_tis + worker_tis), [t for t in nightly_tis + worker_tis]
    assert len([t for t in nightly_tis if t[0] == "maintain"]) == len(REPOSITORIES)
    # exactly one conversation per repository: 50 nightly + 1 worker-side, retries reconnected
    assert stats["created"] == len(REPOSITORIES) + 1, per_repository
    assert per_repository == Counter({**dict.fromkeys(REPOSITORIES, 1), WORKER_REPOSITORY: 1})
    assert [c for c in conversations if c.duplicate] == []
    assert stats["max_alive"] <= LIMIT
    # no task failed for capacity: every task succeeded (a refused start waits for a slot, it does not fail)
    assert sorted(row["repository"] for row in report) == REPOSITORIES
    assert {row["status"] for row in report} == {"finished"}
    # the killed triggerer's triggers ran to their end on the other triggerer
    assert events.get("moved"), events
    for map_index, jobs in trigger_logs.items():
        assert events["survivor_job"] in jobs, (map_index, jobs, events)
    # the worker-side wait was retried once and reconnected to its conversation
    assert [t[3] for t in worker_tis] == [2], worker_tis
    assert reconnect.startswith("Reconnecting to "), reconnect
    assert polls_per_minute <= poll_bound + starts_in_window, summary
    assert polls_per_minute <= 2 * MAX_REQUESTS_PER_MINUTE, summary


def reconnected(airflow: LocalAirflow, run_id: str) -> str:
    """What the worker-side task's second try logged about reconnecting ('' if nothing)."""
    for line in airflow.task_log(WORKER, run_id, "converse", try_number=2).splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(line).get("event", "")
            if event.startswith("Reconnecting to "):
                return event
    return ""


def trigger_jobs_of(airflow: LocalAirflow, run_id: str, map_index: int) -> set[int]:
    """The triggerer jobs that ran a mapped task's triggers (each writes ``attempt=N.log.trigger.<job>.log``)."""
    folder = Path(airflow.home) / "logs" / f"dag_id={NIGHTLY}" / f"run_id={run_id}" / "task_id=maintain"
    folder /= f"map_index={map_index}"
    jobs = set()
    for path in folder.glob("attempt=*.log.trigger.*.log"):
        with contextlib.suppress(ValueError):
            jobs.add(int(path.name.rsplit(".", 2)[-2]))
    return jobs
