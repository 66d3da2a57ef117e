"""A real, throw-away Airflow on this machine: ``airflow standalone`` (scheduler, triggerer, DAG
processor, API server, LocalExecutor, SQLite) in a temporary AIRFLOW_HOME, pointed at the bundled
OpenHands emulator. Used by the demo (``scripts/run_demo.py``) and the end-to-end test.

It watches the metadata DB directly (read-only SQLite queries) rather than through the CLI, which
costs seconds per call, and it counts every task instance it sees in the ``deferred`` state: the
proof that waits really ran in the triggerer.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_3 = int(importlib.metadata.version("apache-airflow").split(".")[0]) >= 3
FINISHED_RUN_STATES = ("success", "failed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalAirflow:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(
        self,
        *,
        connection: dict[str, Any],
        pool_slots: int = 10,
        dags_folder: Path = REPO / "example_dags",
        extra_env: dict[str, str] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="openhands-airflow-"))
        self.port = free_port()
        self.pool_slots = pool_slots
        self.log = log
        self.process: subprocess.Popen | None = None
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Airflow 2 refuses the LocalExecutor on SQLite; deferred tasks free the executor anyway.
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor" if AIRFLOW_3 else "SequentialExecutor",
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{self.port}/execution/",
            "AIRFLOW_CONN_OPENHANDS_DEFAULT": json.dumps(connection),
            **(extra_env or {}),
        }
        self.env.pop("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", None)
        self.deferred_seen: set[tuple[str, str, int]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> LocalAirflow:
        self.log(f"Airflow home {self.home}: migrating the metadata DB ...")
        self.cli("db", "migrate")
        self.cli("pools", "set", "openhands", str(self.pool_slots), "OpenHands conversations", "--include-deferred")
        self.log(f"Pool 'openhands' has {self.pool_slots} slots (deferred tasks included)")
        self.log("Starting airflow standalone (scheduler, triggerer, DAG processor, API server) ...")
        log_file = open(self.home / "standalone.log", "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def standalone_log(self, tail: int = 4000) -> str:
        path = self.home / "standalone.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    # -- the metadata DB -------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=10) as db:
            return db.execute(sql, params).fetchall()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited:\n{self.standalone_log()}")
            try:
                if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                    return
            except sqlite3.Error:
                pass
            time.sleep(1)
        raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f}s:\n{self.standalone_log()}")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run_id = f"openhands_e2e_{int(time.time() * 1000)}"
        self.cli("dags", "unpause", dag_id)
        self.cli("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
        return run_id

    def task_states(self, dag_id: str, run_id: str) -> list[tuple[str, int, str | None]]:
        return self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", dag_id, run_id
        )

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 600, progress: Callable[[dict[str, int]], None] | None = None
    ) -> str:
        """Wait for the run to end; meanwhile record every task instance seen deferred."""
        deadline = time.time() + timeout
        last_report = 0.0
        while time.time() < deadline:
            try:
                states = self.task_states(dag_id, run_id)
                run = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
            except sqlite3.Error:
                time.sleep(0.5)
                continue
            for task_id, map_index, state in states:
                if state == "deferred":
                    self.deferred_seen.add((task_id, run_id, map_index))
            if progress and time.time() - last_report >= 5:
                counts: dict[str, int] = {}
                for _, _, state in states:
                    counts[state or "none"] = counts.get(state or "none", 0) + 1
                progress(counts)
                last_report = time.time()
            if run and run[0][0] in FINISHED_RUN_STATES:
                return run[0][0]
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited:\n{self.standalone_log()}")
            time.sleep(0.3)
        raise TimeoutError(f"{dag_id} run {run_id} did not end within {timeout:.0f}s")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """An XCom value as stored (JSON in the DB on Airflow 3)."""
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            dag_id,
            run_id,
            task_id,
            key,
        )
        if not rows:
            return None
        value = rows[0][0]
        if isinstance(value, bytes):
            value = value.decode()
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return value
