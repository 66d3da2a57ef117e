"""A real, throw-away Airflow on this machine, in a temporary AIRFLOW_HOME (LocalExecutor, SQLite),
pointed at the bundled OpenHands emulator. Used by the demo (``scripts/run_demo.py``), the polling
benchmark and the end-to-end tests.

Three modes:

* ``standalone`` (default): ``airflow standalone`` runs every component under one parent.
* ``components``: each component is a process (group) of its own: ``airflow scheduler``,
  ``triggerer``, ``dag-processor`` and ``api-server`` (Airflow 3; on Airflow 2 the scheduler parses
  the DAGs and tasks need no API server, so ``scheduler`` and ``triggerer``), so a test can
  :meth:`LocalAirflow.kill` one (SIGKILL by default: the component and every process under it, as
  when its host or container dies) and :meth:`LocalAirflow.restart` it, which ``airflow standalone``
  cannot do. :meth:`LocalAirflow.kill_task` kills one task instance's task process.
* ``production`` (Airflow 3): what a deployment runs, on this host: the metadata DB in a fresh
  PostgreSQL database (created at :meth:`LocalAirflow.start`, dropped at :meth:`LocalAirflow.stop`),
  the CeleryExecutor with its broker in a fresh Redis DB number (flushed at stop), two Celery
  workers (``celery-worker``, ``celery-worker-2``), two triggerers (``triggerer``, ``triggerer-2``),
  scheduler, DAG processor and API server, each a process of its own with its log in the home. It
  needs ``pip install -e . -r requirements/production.txt`` and PostgreSQL and Redis reachable
  (``OPENHANDS_PG`` host:port, default 127.0.0.1:5432, user ``postgres``, trust auth;
  ``OPENHANDS_REDIS`` host:port, default 127.0.0.1:6379). :meth:`LocalAirflow.kill` and
  :meth:`LocalAirflow.restart` work on every component; :meth:`LocalAirflow.component_of` tells
  which one a process (a task's) runs under.

It watches the metadata DB directly (read-only SQL; ``?`` placeholders whatever the database;
errors raised as ``sqlite3.Error`` whatever the database) rather than through the CLI, which
costs seconds per call, and it counts every task instance it sees in the ``deferred`` state: the
proof that waits really ran in the triggerer. :meth:`LocalAirflow.stop` stops everything it
started, including task processes a killed component left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_3 = int(importlib.metadata.version("apache-airflow").split(".")[0]) >= 3
FINISHED_RUN_STATES = ("success", "failed")
MODES = ("standalone", "components", "production")
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
COMPONENTS_ENV = {
    # a new triggerer takes over a dead one's triggers once its heartbeat is this old (default 30 s)
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    # what `airflow standalone` forces on its components (the API server's auth manager)
    **({"AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER} if AIRFLOW_3 else {}),
}
#: The separately started components, in start order.
COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server") if AIRFLOW_3 else ("scheduler", "triggerer")
#: The production mode's components, in start order.
PRODUCTION_COMPONENTS = (
    "scheduler",
    "dag-processor",
    "api-server",
    "triggerer",
    "triggerer-2",
    "celery-worker",
    "celery-worker-2",
)
PRODUCTION_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    # a live triggerer takes over a dead one's triggers once its heartbeat is this old (default 30 s)
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
    # a task whose Celery worker died whole is noticed by its missing heartbeats (default 300 s)
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # a Celery worker killed whole takes the messages it had reserved (acks late) with it: those tasks
    # stay queued until the broker's visibility timeout (6 h) unless the scheduler re-queues them
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
    "AIRFLOW__CELERY__SYNC_PARALLELISM": "2",
    "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
}


def _host_port(variable: str, default: str) -> tuple[str, int]:
    host, _, port = os.environ.get(variable, default).rpartition(":")
    return host, int(port)


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
        dags_folder: Path = REPO / "airflow_provider_openhands" / "example_dags",
        extra_env: dict[str, str] | None = None,
        log: Callable[[str], None] = print,
        mode: str = "standalone",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "production" and not AIRFLOW_3:
            raise ValueError("the production mode needs Airflow 3")
        self.mode = mode
        self.home = Path(tempfile.mkdtemp(prefix="openhands-airflow-"))
        self.components = PRODUCTION_COMPONENTS if mode == "production" else COMPONENTS
        self.database: str | None = None  # production: the PostgreSQL database, while it exists
        self.redis_db: int | None = None  # production: the Redis DB number claimed for the broker
        self.pg_host, self.pg_port = _host_port("OPENHANDS_PG", "127.0.0.1:5432")
        self.redis_host, self.redis_port = _host_port("OPENHANDS_REDIS", "127.0.0.1:6379")
        self.port = free_port()
        self.pool_slots = pool_slots
        self.log = log
        self.process: subprocess.Popen | None = None  # standalone mode
        self.processes: dict[str, subprocess.Popen] = {}  # components mode
        self.killed: set[str] = set()  # components killed on purpose and not restarted since
        self.starts: dict[str, int] = {}  # how many times each component was started
        self.triggerer_jobs: dict[str, int] = {}  # production: each triggerer's job id (its latest start)
        self.sessions: set[int] = set()  # every process started here leads a session of its own
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
            # Log servers bind fixed ports by default: never clash with another Airflow on this host.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW_CONN_OPENHANDS_DEFAULT": json.dumps(connection),
            **(COMPONENTS_ENV if mode == "components" else {}),
            **(PRODUCTION_ENV if mode == "production" else {}),
            **(extra_env or {}),
        }
        self.env.pop("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", None)
        if mode == "production":
            # chosen at start (the database and the Redis DB number are made there); never inherited
            for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL"):
                self.env.pop(name, None)
        if mode in ("components", "production") and AIRFLOW_3:
            # `airflow standalone` makes the API server's admin password; here it is ours, for :meth:`api`
            passwords = self.home / "simple_auth_manager_passwords.json"
            passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(16)}))
            self.env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
            self.env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        self._token: str | None = None
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
        if self.mode == "production":
            self._create_services()
        self.log(f"Airflow home {self.home}: migrating the metadata DB ...")
        self.cli("db", "migrate")
        self.cli("pools", "set", "openhands", str(self.pool_slots), "OpenHands conversations", "--include-deferred")
        self.log(f"Pool 'openhands' has {self.pool_slots} slots (deferred tasks included)")
        if self.mode in ("components", "production"):
            self.log(f"Starting {', '.join(self.components)} as separate processes ...")
            for component in self.components:
                self._spawn(component)
            return self
        self.log("Starting airflow standalone (scheduler, triggerer, DAG processor, API server) ...")
        log_file = open(self.home / "standalone.log", "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sessions.add(self.process.pid)
        return self

    # -- production: PostgreSQL and Redis ------------------------------------------------------------

    def _create_services(self) -> None:
        """A fresh PostgreSQL database and a free Redis DB number; raises if either is unreachable."""
        try:
            import psycopg2  # noqa: F401
            import redis
        except ImportError as exc:
            needs = "pip install -e . -r requirements/production.txt"
            raise RuntimeError(f"the production mode needs: {needs} ({exc})") from exc
        name = f"openhands_airflow_{uuid.uuid4().hex[:12]}"
        self._psql("postgres", f'CREATE DATABASE "{name}"')
        self.database = name
        url = f"postgres@{self.pg_host}:{self.pg_port}/{name}"
        client = redis.Redis(host=self.redis_host, port=self.redis_port, socket_timeout=10)
        try:
            databases = int(client.config_get("databases").get("databases", 16))
        except redis.RedisError as exc:
            raise RuntimeError(f"Redis at {self.redis_host}:{self.redis_port} is unreachable: {exc}") from exc
        for number in range(1, databases):  # 0 is everybody's default: never
            candidate = redis.Redis(host=self.redis_host, port=self.redis_port, db=number, socket_timeout=10)
            # claimed atomically: another LocalAirflow (or anything) in that DB makes us look further
            if candidate.dbsize() == 0 and candidate.set("openhands_local_airflow", str(self.home), nx=True):
                self.redis_db = number
                break
        else:
            raise RuntimeError(f"no empty Redis DB number at {self.redis_host}:{self.redis_port}")
        self.env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{url}",
                # the driver named: a bare db+postgresql:// makes SQLAlchemy 2.1 load psycopg 3
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{url}",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}",
            }
        )
        self.log(f"PostgreSQL database {name}; Celery broker Redis DB {self.redis_db}")

    def _psql(self, database: str, sql: str) -> None:
        done = subprocess.run(
            ["psql", "-h", self.pg_host, "-p", str(self.pg_port), "-U", "postgres", "-d", database, "-v",
             "ON_ERROR_STOP=1", "-qc", sql],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL at {self.pg_host}:{self.pg_port}: {sql!r} failed: {done.stderr.strip()}")

    def _drop_services(self) -> None:
        if self.database is not None:
            self._psql("postgres", f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self.log(f"Dropped the PostgreSQL database {self.database}")
            self.database = None
        if self.redis_db is not None:
            import redis

            redis.Redis(host=self.redis_host, port=self.redis_port, db=self.redis_db, socket_timeout=10).flushdb()
            self.log(f"Flushed Redis DB {self.redis_db}")
            self.redis_db = None

    def _command(self, component: str) -> list[str]:
        if self.mode != "production":
            return [component]
        # a second triggerer or worker on this host must not start another log server on the same port;
        # pid files are per process (Airflow refuses a second one whose pid file names a live process)
        second = ["--skip-serve-logs"] if component.endswith("-2") else []
        pid = ["--pid", str(self.home / f"{component}.pid")]
        if component.startswith("triggerer"):
            return ["triggerer", *pid, *second]
        if component.startswith("celery-worker"):
            return ["celery", "worker", "--celery-hostname", f"{component}@%h", *pid, *second]
        return [component]

    def _spawn(self, component: str) -> subprocess.Popen:
        self.starts[component] = self.starts.get(component, 0) + 1
        with open(self.home / f"{component}.log", "a") as log_file:
            log_file.write(f"===== start {self.starts[component]} of {component} at {time.ctime()} =====\n")
            log_file.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "airflow", *self._command(component)],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[component] = process
        self.sessions.add(process.pid)
        self.killed.discard(component)
        if self.mode == "production" and component.startswith("triggerer"):
            self._await_triggerer_job(component, process)
        return process

    def _await_triggerer_job(self, component: str, process: subprocess.Popen, timeout: float = 180) -> None:
        """Wait for a triggerer's job row, so that each triggerer's job id is known (triggers name
        their triggerer by job id): triggerers start one after the other."""
        known = set(self.triggerer_jobs.values())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"airflow {component} exited ({process.returncode}):\n{self.standalone_log()}")
            rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id")
            fresh = [row[0] for row in rows if row[0] not in known and row[0] > max(known, default=0)]
            if fresh:
                self.triggerer_jobs[component] = fresh[0]
                return
            time.sleep(0.5)
        raise TimeoutError(f"the {component} registered no job within {timeout:.0f}s:\n{self.standalone_log()}")

    def triggerer_of_job(self, job_id: int) -> str | None:
        """The triggerer component that runs (or ran) as this job."""
        return next((name for name, job in self.triggerer_jobs.items() if job == job_id), None)

    def kill(self, component: str, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to a component and to every process under it (task and trigger runners put
        themselves in process groups of their own, so the whole tree, not just the group); wait for
        it to exit on SIGKILL or SIGTERM. Returns the pids signalled."""
        if self.mode == "standalone":
            raise RuntimeError("kill() needs LocalAirflow(mode='components') or mode='production'")
        process = self.processes[component]
        pids = [process.pid, *_descendants(process.pid)]
        for pid in pids:  # the parent first, so it cannot start anything new meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.killed.add(component)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_tree(process.pid)
                process.wait()
        self.log(f"Sent {signal.Signals(sig).name} to the {component} ({len(pids)} processes)")
        return pids

    def restart(self, component: str) -> None:
        """Start a component again: after :meth:`kill`, or stop it first (SIGTERM) if it still runs."""
        if self.mode == "standalone":
            raise RuntimeError("restart() needs LocalAirflow(mode='components') or mode='production'")
        process = self.processes.get(component)
        if process is not None and process.poll() is None:
            self._terminate(process)
        self._spawn(component)
        self.log(f"Started the {component} again (start {self.starts[component]})")

    def task_process(self, ti_id: str) -> int | None:
        """The pid of a task instance's task process (Airflow 3 titles it ``airflow worker -- <ti id>``),
        if it runs in this Airflow."""
        return self.task_processes().get(str(uuid.UUID(str(ti_id))))

    def task_processes(self) -> dict[str, int]:
        """Every task process running in this Airflow, by task instance id (the UUID, dashed)."""
        found = {}
        listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            # exactly this title: the LocalExecutor supervisor is "airflow worker -- LocalExecutor: <id>"
            title = re.fullmatch(r"airflow worker -- ([0-9a-f-]{36})", args.strip())
            if title and self._ours(int(pid)):
                found[title.group(1)] = int(pid)
        return found

    @staticmethod
    def parent_of(pid: int) -> int | None:
        """A process's parent (a task process's is its supervisor), if it still runs."""
        fields = _stat(pid)
        return int(fields[1]) if fields else None

    def component_of(self, pid: int) -> str | None:
        """The component a process runs under (e.g. which Celery worker runs a task), if any."""
        roots = {process.pid: name for name, process in self.processes.items()}
        seen: set[int] = set()
        while pid and pid not in seen:
            if pid in roots:
                return roots[pid]
            seen.add(pid)
            fields = _stat(pid)
            if not fields:
                return None
            pid = int(fields[1])
        return None

    def kill_task(self, ti_id: str, sig: int = signal.SIGKILL) -> int:
        """Kill a task instance's task process (not its supervisor, which reports the death)."""
        pid = self.task_process(ti_id)
        if pid is None:
            raise LookupError(f"no task process for task instance {ti_id}")
        os.kill(pid, sig)
        self.log(f"Sent {signal.Signals(sig).name} to the task process {pid} of task instance {ti_id}")
        return pid

    def _ours(self, pid: int) -> bool:
        """Whether a process belongs to this Airflow: it is in the session of a process started here
        (Airflow's task and trigger runners change process group, not session, and stay in it when
        orphaned), or its environment names this AIRFLOW_HOME (``setproctitle`` may clobber it)."""
        if _session(pid) in self.sessions:
            return True
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"AIRFLOW_HOME={self.home}".encode() in environ.split(b"\0")

    def leftovers(self) -> list[int]:
        """Processes of this Airflow still running (none once :meth:`stop` returned); a killed one that
        awaits its parent's reaping (a zombie) no longer runs."""
        return [pid for pid in _pids() if pid != os.getpid() and self._ours(pid) and not _zombie(pid)]

    @staticmethod
    def _terminate(process: subprocess.Popen) -> None:
        """SIGTERM the process group (Airflow stops its children), SIGKILL the tree after 30 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._terminate(self.process)
        self.process = None
        for process in self.processes.values():
            if process.poll() is None:
                self._terminate(process)
        self.processes = {}
        # What a killed component left behind (task processes in groups of their own): nothing may outlive us.
        killed: set[int] = set()
        for _ in range(2):
            leftovers = self.leftovers()
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if leftovers:
                killed.update(leftovers)
                time.sleep(0.5)
        if killed:
            self.log(leftovers_line(len(killed)))
        if self.mode == "production":
            self._drop_services()

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def standalone_log(self, tail: int = 4000) -> str:
        """The end of the Airflow output: ``airflow standalone``'s, or each component's."""
        names = ["standalone"] if self.mode == "standalone" else list(self.components)
        parts = []
        for name in names:
            path = self.home / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace")[-tail:]
                parts.append(text if self.mode == "standalone" else f"----- {name} -----\n{text}")
        return "\n".join(parts)

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """A task try's log file (Airflow 3's default layout), or '' if there is none."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder /= f"map_index={map_index}"
        path = folder / f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        """Raise if Airflow died by itself (not by :meth:`kill`)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited:\n{self.standalone_log()}")
        for component, process in self.processes.items():
            if component not in self.killed and process.poll() is not None:
                raise RuntimeError(f"airflow {component} exited ({process.returncode}):\n{self.standalone_log()}")

    # -- the metadata DB -------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple]:
        if self.mode == "production":
            return self._pg_query(sql, params)
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=10) as db:
            return db.execute(sql, params).fetchall()

    def _pg_query(self, sql: str, params: tuple) -> list[tuple]:
        import psycopg2

        if self.database is None:
            raise sqlite3.OperationalError("no metadata database (not started, or stopped)")
        try:
            db = psycopg2.connect(
                host=self.pg_host, port=self.pg_port, user="postgres", dbname=self.database, connect_timeout=10
            )
        except psycopg2.Error as exc:
            raise sqlite3.OperationalError(str(exc)) from exc
        try:
            db.set_session(readonly=True, autocommit=True)
            with db.cursor() as cursor:
                cursor.execute(sql.replace("%", "%%").replace("?", "%s"), params)
                return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor.fetchall()]
        except psycopg2.Error as exc:
            raise sqlite3.OperationalError(str(exc)) from exc
        finally:
            db.close()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            try:
                if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                    return
            except sqlite3.Error:
                pass
            time.sleep(1)
        raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f}s:\n{self.standalone_log()}")

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id_prefix: str = "openhands_e2e") -> str:
        """Start a run (its id ``<run_id_prefix>_<epoch ms>``). The DAG is unpaused: Airflow runs no run
        of a paused DAG."""
        run_id = f"{run_id_prefix}_{int(time.time() * 1000)}"
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
            self.check_alive()
            time.sleep(0.3)
        raise TimeoutError(f"{dag_id} run {run_id} did not end within {timeout:.0f}s")

    # -- the REST API (Airflow 3) ------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """Call the API server as the admin user (a token from the simple auth manager)."""
        if self._token is None:
            user, password = self.credentials()
            answer = self._http("POST", "/auth/token", {"username": user, "password": password}, None, timeout)
            self._token = answer["access_token"]
        return self._http(method, path, body, self._token, timeout)

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.port}"

    def credentials(self) -> tuple[str, str]:
        """The UI's user name and password: the admin ``airflow standalone`` made (once its API server or
        webserver is up), or the one this class made for the other modes."""
        if not AIRFLOW_3:
            return "admin", (self.home / "standalone_admin_password.txt").read_text().strip()
        password_file = self.env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or str(
            self.home / "simple_auth_manager_passwords.json.generated"
        )
        return "admin", json.loads(Path(password_file).read_text())["admin"]

    def _http(self, method: str, path: str, body: Any, token: str | None, timeout: float) -> Any:
        request = urllib.request.Request(
            f"http://localhost:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
        )
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    payload = answer.read()
                return json.loads(payload) if payload else None
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
            except OSError:  # the API server is not up (yet, or again)
                if time.time() >= deadline:
                    raise
                time.sleep(1)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        """Clear task instances of one run, as a person does with the UI's Clear button.

        The API server answers 500 "Database error" when its clear meets the scheduler's own update
        of the same rows (a PostgreSQL deadlock or serialisation failure, seen once in CI); a person
        presses Clear again, and so does this, twice at most, printing the API server's log line.
        """
        body = {"dry_run": False, "only_failed": False, "dag_run_id": run_id, "task_ids": task_ids}
        for attempt in range(3):
            try:
                answer = self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)
                return list(answer.get("task_instances") or [])
            except RuntimeError as exc:
                if "HTTP 500" not in str(exc) or "Database error" not in str(exc) or attempt == 2:
                    raise
                print(f"[local-airflow] clear met a database error; clearing again: {self._api_server_error(exc)}")
                time.sleep(2)
        raise AssertionError("unreachable")

    def _api_server_error(self, exc: Exception) -> str:
        """The API server's log lines about one error (it hides the cause from the client)."""
        found = re.search(r"look for ID (\w+)", str(exc))
        lines: list[str] = []
        for path in sorted(self.home.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            for index, line in enumerate(text):
                if found and found.group(1) in line:
                    lines.extend(text[index : index + 12])
        return "\n".join(lines[-40:]) or str(exc)

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


def leftovers_line(count: int) -> str:
    """The one line :meth:`LocalAirflow.stop` logs about the processes it had to kill."""
    return f"Stopped {count} Airflow process{'' if count == 1 else 'es'} still running after it exited"


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the name (state, ppid, pgrp, session, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    except (OSError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] == "Z"


def _session(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields else None


def _descendants(root: int) -> list[int]:
    """Every process under ``root`` (from /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat(pid)
        if fields:
            children.setdefault(int(fields[1]), []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _kill_tree(root: int) -> None:
    for pid in [root, *_descendants(root)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``--help`` (or no argument): what this module is. It is a library, not a command."""
    parser = argparse.ArgumentParser(
        prog="scripts/local_airflow.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A library for scripts and tests, not a command: scripts/run_demo.py runs it (see its --help).",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
