"""The main job, offline: the bundled OpenHands emulator on loopback, and the example DAG run end to end.

    .venv/bin/python scripts/run_demo.py [--api-version v0] [--repository owner/repo]

It uses a private AIRFLOW_HOME (.airflow-home/ in the repository), migrates its metadata DB on
first use, runs ``openhands_readme_check`` with ``dag.test()`` (deferrable tasks wait in an
in-process triggerer), then prints the conversation id, its final status and its link.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "example_dags" / "openhands_readme_check.py"


def prepare_airflow_env() -> None:
    """Configure Airflow before it is imported: it reads its settings once, at import."""
    home = REPO / ".airflow-home"
    home.mkdir(exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {
                        "name": "openhands_examples",
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(REPO / "example_dags"), "refresh_interval": 0},
                    }
                ]
            ),
            "OPENHANDS_EXAMPLE_POLL_SECONDS": "1",
        }
    )
    print(f"[demo] Airflow home {home}: migrating the metadata DB ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    print("[demo] creating the 'openhands' pool (10 slots, deferred tasks included) ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "pools",
            "set",
            "openhands",
            "10",
            "OpenHands conversations",
            "--include-deferred",
        ],
        check=True,
        capture_output=True,
    )


def final_state(dag_run, task_id: str) -> dict | None:
    """The task's XCom return value (the conversation's final state), as downstream tasks see it."""
    try:
        from airflow.models.xcom import XComModel  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow.models.xcom import XCom

        return XCom.get_one(run_id=dag_run.run_id, dag_id=dag_run.dag_id, task_id=task_id, key="return_value")
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key="return_value")
        row = session.scalars(query).first()
        return XComModel.deserialize_value(row) if row is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-version", choices=["v1", "v0"], default="v1")
    parser.add_argument("--repository", default="acme/website")
    args = parser.parse_args()

    prepare_airflow_env()
    from airflow_provider_openhands.testing import Emulator

    with Emulator(conversation_seconds=4, start_seconds=1.5) as emulator:
        os.environ["AIRFLOW_CONN_OPENHANDS_DEFAULT"] = json.dumps(
            {
                "conn_type": "openhands",
                "host": emulator.url,
                "password": emulator.api_key,
                "extra": {"api_version": args.api_version},
            }
        )
        print(f"[demo] OpenHands emulator ({args.api_version}) on {emulator.url}", flush=True)
        import runpy

        dag = runpy.run_path(str(DAG_FILE))["dag"]
        started = time.monotonic()
        dag_run = dag.test(run_conf={"repository": args.repository})
        elapsed = time.monotonic() - started

        states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}
        print("\n" + "=" * 78)
        print(f"DAG run {dag_run.run_id}: {dag_run.state} in {elapsed:.1f}s  tasks: {states}")
        state = final_state(dag_run, "wait")
        if state:
            prs = ", ".join(f"#{n}" for n in state["pr_number"]) or "none"
            print(f"conversation {state['conversation_id']}")
            print(f"  repository  {state['selected_repository']}")
            print(f"  status      {state['status']}")
            print(f"  PRs         {prs}")
            print(f"  link        {state['url']}")
            print(f"  cost        {(state.get('metrics') or {}).get('accumulated_cost')}")
        print(f"emulator: {emulator.stats()}")
        print("=" * 78)
        ok = str(getattr(dag_run.state, "value", dag_run.state)) == "success"
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
