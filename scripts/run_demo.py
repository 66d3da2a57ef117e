"""The main job, offline: the bundled OpenHands emulator and a real local Airflow running the
``openhands_nightly_maintenance`` example DAG over a dozen repositories, then a summary table.

    .venv/bin/python scripts/run_demo.py [--repositories 12] [--api-version v0] [--production] [--keep]

It brings up ``airflow standalone`` (scheduler, triggerer, DAG processor, API server) in a
temporary AIRFLOW_HOME with an ``openhands`` pool of 10 slots, triggers the DAG, shows progress
while the conversations run (at most 10 at once, waiting in the triggerer), prints one row per
repository (status, PRs, duration, link), and stops everything it started. About 2 minutes.

``--keep`` leaves Airflow and the emulator running after the table, to look at what ran in the UI:
it prints the UI's address, the user name and the password, and stops them on Ctrl-C (or SIGTERM).

``--production`` runs the same DAG under a production topology instead (``scripts/local_airflow.py``
mode ``production``): a fresh PostgreSQL database, the CeleryExecutor on Redis, two Celery workers,
two triggerers, scheduler, DAG processor and API server as separate processes. It needs
``requirements/production.txt`` and PostgreSQL and Redis on this host; the database is dropped at
the end.

The demo's run is the only one: its run id starts with ``openhands_demo``, and its Airflow creates
no scheduled runs (``[scheduler] use_job_schedule = False``), so the daily schedule the DAG is
unpaused with (Airflow runs no run of a paused DAG) adds no second, empty run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import LocalAirflow

DAG_ID = "openhands_nightly_maintenance"
#: The demo's run ids: ``openhands_demo_<epoch ms>`` (the tests' are ``openhands_e2e_...``).
RUN_ID_PREFIX = "openhands_demo"


def say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


def table(rows: list[dict]) -> str:
    header = ("repository", "status", "PRs", "duration", "link")
    lines = [
        (
            str(r.get("repository")),
            str(r.get("status")),
            ", ".join(f"#{n}" for n in r.get("pr_number") or []) or "-",
            f"{r['duration_s']:.0f}s" if isinstance(r.get("duration_s"), (int, float)) else "n/a",
            str(r.get("url")),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    render = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *(render(line) for line in lines)])


def kept_lines(airflow: LocalAirflow, emulator: Emulator) -> list[str]:
    """What ``--keep`` prints: where to look, how to log in, how to stop."""
    user, password = airflow.credentials()
    return [
        "Airflow and the emulator keep running:",
        f"  Airflow UI  {airflow.ui_url}  (user {user}, password {password})",
        f"  emulator    {emulator.url}  (stats: {emulator.url}/_emulator/stats)",
        f"Press Ctrl-C (or: kill {os.getpid()}) to stop them and delete the Airflow home {airflow.home}",
    ]


def wait_for_ctrl_c(airflow: LocalAirflow) -> None:
    """Until Ctrl-C or SIGTERM, or until Airflow exits by itself."""
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(2):
            airflow.check_alive()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        say(str(exc).splitlines()[0])
    finally:
        signal.signal(signal.SIGTERM, previous)


def summarize(airflow: LocalAirflow, state: str, elapsed: float, report: list[dict], stats: dict, production: bool):
    if state != "success":
        print(airflow.standalone_log(8000))
    print()
    print(table(report))
    print()
    topology = "PostgreSQL, CeleryExecutor, 2 workers, 2 triggerers: " if production else ""
    say(
        f"{topology}DAG run {state} in {elapsed:.0f}s: {len(report)} conversations, "
        f"at most {stats['max_alive']} at once, "
        f"{len(airflow.deferred_seen)} tasks waited in the triggerer{'s' if production else ''}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/run_demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repositories", type=int, default=12, help="how many repositories to maintain")
    parser.add_argument("--api-version", choices=["v1", "v0"], default="v1")
    parser.add_argument(
        "--production",
        action="store_true",
        help="PostgreSQL, CeleryExecutor on Redis, two workers, two triggerers (needs requirements/production.txt)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave Airflow and the emulator running at the end (the UI's address and login are printed) until Ctrl-C",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repositories = [f"acme/service-{n:02d}" for n in range(args.repositories)]

    with Emulator(concurrency_limit=10, conversation_seconds=5, start_seconds=1) as emulator:
        say(f"OpenHands emulator ({args.api_version}, limit 10 concurrent conversations) on {emulator.url}")
        airflow = LocalAirflow(
            connection={
                "conn_type": "openhands",
                "host": emulator.url,
                "password": emulator.api_key,
                # v1 is the default: no "v1" in the extra, which Airflow's masker would warn is too short
                "extra": {} if args.api_version == "v1" else {"api_version": args.api_version},
            },
            pool_slots=10,
            # Only the demo's run: no scheduled run of the daily DAG it unpauses.
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "2", "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"},
            log=say,
            mode="production" if args.production else "standalone",
        )
        try:
            airflow.start()
            airflow.wait_for_dag(DAG_ID)
            say(f"Triggering {DAG_ID} over {len(repositories)} repositories")
            started = time.monotonic()
            run_id = airflow.trigger(DAG_ID, {"repositories": repositories}, run_id_prefix=RUN_ID_PREFIX)

            def progress(counts: dict[str, int]) -> None:
                stats = emulator.stats()
                say(
                    f"{time.monotonic() - started:5.0f}s  tasks {counts}  "
                    f"conversations: {stats['alive']} running, {stats['created']} started"
                )

            state = airflow.wait_for_run(DAG_ID, run_id, timeout=900, progress=progress)
            elapsed = time.monotonic() - started
            report = airflow.xcom(DAG_ID, run_id, "report") or []
            if args.keep:
                summarize(airflow, state, elapsed, report, emulator.stats(), args.production)
                for line in kept_lines(airflow, emulator):
                    say(line)
                wait_for_ctrl_c(airflow)
        finally:
            airflow.stop()
            say("Airflow stopped")
        stats = emulator.stats()
    if not args.keep:
        summarize(airflow, state, elapsed, report, stats, args.production)
    airflow.cleanup()
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
