"""The main job, offline: the bundled OpenHands emulator and a real local Airflow running the
``openhands_nightly_maintenance`` example DAG over a dozen repositories, then a summary table.

    .venv/bin/python scripts/run_demo.py [--repositories 12] [--api-version v0] [--production]

It brings up ``airflow standalone`` (scheduler, triggerer, DAG processor, API server) in a
temporary AIRFLOW_HOME with an ``openhands`` pool of 10 slots, triggers the DAG, shows progress
while the conversations run (at most 10 at once, waiting in the triggerer), prints one row per
repository (status, PRs, duration, link), and stops everything it started. About 2 minutes.

``--production`` runs the same DAG under a production topology instead (``scripts/local_airflow.py``
mode ``production``): a fresh PostgreSQL database, the CeleryExecutor on Redis, two Celery workers,
two triggerers, scheduler, DAG processor and API server as separate processes. It needs the
``production`` extra and PostgreSQL and Redis on this host; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import LocalAirflow

DAG_ID = "openhands_nightly_maintenance"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=12, help="how many repositories to maintain")
    parser.add_argument("--api-version", choices=["v1", "v0"], default="v1")
    parser.add_argument(
        "--production",
        action="store_true",
        help="PostgreSQL, CeleryExecutor on Redis, two workers, two triggerers (needs the production extra)",
    )
    args = parser.parse_args()
    repositories = [f"acme/service-{n:02d}" for n in range(args.repositories)]

    with Emulator(concurrency_limit=10, conversation_seconds=5, start_seconds=1) as emulator:
        say(f"OpenHands emulator ({args.api_version}, limit 10 concurrent conversations) on {emulator.url}")
        airflow = LocalAirflow(
            connection={
                "conn_type": "openhands",
                "host": emulator.url,
                "password": emulator.api_key,
                "extra": {"api_version": args.api_version},
            },
            pool_slots=10,
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "2"},
            log=say,
            mode="production" if args.production else "standalone",
        )
        try:
            airflow.start()
            airflow.wait_for_dag(DAG_ID)
            say(f"Triggering {DAG_ID} over {len(repositories)} repositories")
            started = time.monotonic()
            run_id = airflow.trigger(DAG_ID, {"repositories": repositories})

            def progress(counts: dict[str, int]) -> None:
                stats = emulator.stats()
                say(
                    f"{time.monotonic() - started:5.0f}s  tasks {counts}  "
                    f"conversations: {stats['alive']} running, {stats['created']} started"
                )

            state = airflow.wait_for_run(DAG_ID, run_id, timeout=900, progress=progress)
            elapsed = time.monotonic() - started
            report = airflow.xcom(DAG_ID, run_id, "report") or []
        finally:
            airflow.stop()
            say("Airflow stopped")
        stats = emulator.stats()
    if state != "success":
        print(airflow.standalone_log(8000))
    airflow.cleanup()

    print()
    print(table(report))
    print()
    topology = "PostgreSQL, CeleryExecutor, 2 workers, 2 triggerers: " if args.production else ""
    say(
        f"{topology}DAG run {state} in {elapsed:.0f}s: {len(report)} conversations, "
        f"at most {stats['max_alive']} at once, "
        f"{len(airflow.deferred_seen)} tasks waited in the triggerer{'s' if args.production else ''}"
    )
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
