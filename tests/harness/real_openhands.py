"""The real open-source OpenHands server on loopback, for contract and end-to-end tests.

``with RealOpenHands() as server: server.url`` runs the OpenHands app server (PyPI
``openhands-ai``, pinned below; it serves the same V1 API as OpenHands Cloud) with its "process"
sandbox (each conversation's agent server is a local subprocess, no Docker) and a scripted fake
LLM (``tests/harness/fake_llm.py``: markers such as ``[fake-llm finish="text"]`` in the task text), on
free loopback ports, in a temporary directory. On exit it stops every process it started (agent
servers and their tmux servers included, paused ones too) and removes its temporary files.

``openhands-ai`` needs Python >= 3.12: the first use makes a venv in
``~/.cache/airflow-provider-openhands/real-openhands-<version>`` (about 4 minutes, 1.4 GB) and
later runs reuse it. Without a Python >= 3.12, or when the install fails,
:class:`RealOpenHandsUnavailable` says so (callers fail, they do not skip).

**Start conversations one at a time** on this server: the process sandbox boots each agent server
in 15-55 s on two cores, and booting two at once is slow and, unpatched, can hand both the same
port. Hold :meth:`RealOpenHands.one_start` from the start request until the start task is READY or
ERROR (it is a file lock, so it also serialises threads and processes).

CLI: ``python tests/harness/real_openhands.py --check`` starts it, drives one conversation (a file
written through the agent's file tool, then a final message), prints timings and stops;
``--serve`` runs it until Ctrl-C; ``--install`` only makes the cached venv.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

OPENHANDS_VERSION = "1.11.0"
HERE = Path(__file__).resolve().parent
#: The versions the server's venv is made from (``pip install -c``): the set that worked, not the newest.
CONSTRAINTS = HERE / "real_openhands_constraints.txt"
#: Every process the harness starts carries this variable (value: the run's token), and so do
#: their descendants, which is how :meth:`RealOpenHands.stop` finds them all.
RUN_TOKEN_VARIABLE = "AIRFLOW_PROVIDER_OPENHANDS_REAL_RUN"
PYTHON_MINOR_VERSIONS = ("3.12", "3.13")


class RealOpenHandsUnavailable(RuntimeError):
    """No Python >= 3.12, or ``openhands-ai`` could not be installed, or the server did not start."""


def cache_root() -> Path:
    if os.environ.get("REAL_OPENHANDS_CACHE"):
        return Path(os.environ["REAL_OPENHANDS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "airflow-provider-openhands"


def venv_dir(version: str = OPENHANDS_VERSION) -> Path:
    """The cached venv, named after the constraints it was made from (a venv cached before a pin
    changed, e.g. with cryptography 51, is not used)."""
    digest = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:10]
    return cache_root() / f"real-openhands-{version}-{digest}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _python_candidates() -> list[str]:
    found = [os.environ.get("REAL_OPENHANDS_PYTHON", ""), sys.executable]
    found += [shutil.which(f"python{minor}") or "" for minor in PYTHON_MINOR_VERSIONS]
    if shutil.which("pyenv"):
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        for version in versions:
            minor = ".".join(version.split(".")[:2])
            if minor in PYTHON_MINOR_VERSIONS:
                which = subprocess.run(
                    ["pyenv", "which", f"python{minor}"],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYENV_VERSION": version},
                )
                found.append(which.stdout.strip() if which.returncode == 0 else "")
    return list(dict.fromkeys(path for path in found if path))


def find_python() -> str:
    """A Python >= 3.12 interpreter (``REAL_OPENHANDS_PYTHON``, PATH, then pyenv)."""
    tried = _python_candidates()
    for python in tried:
        check = subprocess.run(
            [python, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 12))"], capture_output=True
        )
        if check.returncode == 0:
            return python
    raise RealOpenHandsUnavailable(
        "The real OpenHands server (openhands-ai) needs Python >= 3.12, and none was found "
        f"(tried: {', '.join(tried) or 'nothing'}; also looked for python3.12/python3.13 on PATH and in pyenv). "
        "Install one (e.g. `pyenv install 3.12`) or point REAL_OPENHANDS_PYTHON at one."
    )


def _venv_ready(venv: Path, version: str) -> bool:
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    check = (
        "import importlib.metadata as m, openhands.app_server, psutil, uvicorn;"
        f"assert m.version('openhands-ai') == {version!r}"
    )
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_venv(version: str = OPENHANDS_VERSION, log: Callable[[str], None] = print) -> Path:
    """The cached venv with ``openhands-ai==version``; made on first use (about 4 minutes)."""
    venv = venv_dir(version)
    with _file_lock(venv.with_name(venv.name + ".lock")):
        if _venv_ready(venv, version):
            return venv
        python = find_python()
        if venv.exists():
            shutil.rmtree(venv)  # an install that did not complete
        log(f"installing openhands-ai=={version} into {venv} with {python} (about 4 minutes, once)")
        started = time.time()
        for command in (
            [python, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                str(CONSTRAINTS),
                f"openhands-ai=={version}",
            ],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise RealOpenHandsUnavailable(
                    f"Could not install the real OpenHands server: `{' '.join(command)}` "
                    f"exited {done.returncode}:\n{tail}"
                )
        if not _venv_ready(venv, version):
            shutil.rmtree(venv, ignore_errors=True)
            raise RealOpenHandsUnavailable(f"openhands-ai=={version} installed into {venv} but does not import")
        log(f"installed in {time.time() - started:.0f} s")
        return venv


def _processes_with_token(token: str) -> list[int]:
    """Live processes whose environment carries this run's token (descendants inherit it)."""
    needle = f"{RUN_TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:  # start tasks read back without a zone are UTC
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class RealOpenHands:
    """The real OpenHands app server, its process sandbox and the fake LLM, on loopback."""

    def __init__(
        self,
        *,
        version: str = OPENHANDS_VERSION,
        start_timeout: float = 300.0,
        agent_start_timeout: int = 300,
        keep_files: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.version = version
        self.start_timeout = start_timeout
        self.agent_start_timeout = agent_start_timeout
        self.keep_files = keep_files
        self.log = log
        self.token = uuid.uuid4().hex
        self.dir: Path | None = None
        self.port = 0
        self.llm_port = 0
        self.processes: list[subprocess.Popen] = []
        self.started_at = 0.0
        self.startup_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> RealOpenHands:
        venv = ensure_venv(self.version, self.log)
        self.started_at = time.time()
        self.dir = Path(tempfile.mkdtemp(prefix="real-openhands-"))
        for name in ("data", "home", "tmp", "sandboxes", "tmux", "logs", "llm_requests", "faults"):
            (self.dir / name).mkdir()
        (self.dir / "logs" / "requests.jsonl").touch()
        self.port, self.llm_port = free_port(), free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        env.update(
            {
                RUN_TOKEN_VARIABLE: self.token,
                "HOME": str(self.dir / "home"),
                "TMPDIR": str(self.dir / "tmp"),
                "APP_PORT": str(self.port),
                "SERVE_FRONTEND": "false",
                "OPENHANDS_SUPPRESS_BANNER": "1",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "OH_PERSISTENCE_DIR": str(self.dir / "data"),
                "RUNTIME": "process",
                "OH_SANDBOX_KIND": "ProcessSandboxServiceInjector",
                "OH_SANDBOX_BASE_PORT": str(free_port()),
                "OH_SANDBOX_BASE_WORKING_DIR": str(self.dir / "sandboxes"),
                # No browser preload in agent servers (Chromium costs CPU; browser-use writes to /tmp).
                "OH_AGENT_SERVER_ENV": json.dumps({"TMUX_TMPDIR": str(self.dir / "tmux"), "OH_PRELOAD_TOOLS": "0"}),
                # Where agent servers post events; without it the events search stays empty.
                "OH_WEBHOOKS_0_BASE_URL": f"{self.url}/api/v1/webhooks",
                "OH_WEBHOOKS_0_FLUSH_DELAY": "1",
                "REAL_OH_AGENT_START_TIMEOUT": str(self.agent_start_timeout),
                "REAL_OH_REQUEST_LOG": str(self.dir / "logs" / "requests.jsonl"),
                "REAL_OH_FAULT_DIR": str(self.dir / "faults"),
            }
        )
        try:
            llm = [sys.executable, str(HERE / "fake_llm.py"), "--port", str(self.llm_port)]
            self._spawn([*llm, "--log-dir", str(self.dir / "llm_requests")], "fake_llm.log", env)
            server = self._spawn(
                [str(venv / "bin" / "python"), str(HERE / "real_openhands_serve.py")], "server.log", env
            )
            self._wait_alive(server)
            self.store_llm_settings()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.time() - self.started_at
        self.log(f"real OpenHands {self.version} up at {self.url} in {self.startup_seconds:.0f} s")
        return self

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen:
        assert self.dir is not None
        with open(self.dir / "logs" / log_name, "ab") as out:
            process = subprocess.Popen(
                command, cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def _wait_alive(self, server: subprocess.Popen) -> None:
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if server.poll() is not None:
                raise RealOpenHandsUnavailable(
                    f"the OpenHands app server exited with {server.returncode}:\n{self.log_tail('server.log')}"
                )
            with contextlib.suppress(OSError, ValueError):
                status, body = self.request("GET", "/alive", timeout=2)
                if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                    return
            time.sleep(0.5)
        raise RealOpenHandsUnavailable(
            f"the OpenHands app server was not alive after {self.start_timeout:.0f} s:\n{self.log_tail('server.log')}"
        )

    def store_llm_settings(self) -> None:
        """Every new conversation's agent uses the fake LLM."""
        llm = {"model": "openai/fake", "base_url": f"{self.llm_url}/v1", "api_key": "sk-fake", "num_retries": 0}
        body = {"agent_settings_diff": {"llm": llm, "condenser": {"enabled": False}}}
        status, answer = self.request("POST", "/api/v1/settings", body)
        if status != 200:
            raise RealOpenHandsUnavailable(f"storing the LLM settings answered {status}: {answer}")

    def set_confirmation_mode(self, on: bool, security_analyzer: str | None = "none") -> None:
        """Confirmation mode for the conversations started from now on (a user setting, read at
        start: running conversations keep theirs). On with analyzer ``"none"``: ``AlwaysConfirm``,
        the agent waits before every action but ``finish``/``think``; ``"llm"``: ``ConfirmRisky``."""
        diff = {"confirmation_mode": on, "security_analyzer": security_analyzer}
        status, answer = self.request("POST", "/api/v1/settings", {"conversation_settings_diff": diff})
        if status != 200:
            raise RealOpenHandsUnavailable(f"storing confirmation_mode={on} answered {status}: {answer}")

    @contextlib.contextmanager
    def confirmation_mode(self, security_analyzer: str = "none") -> Iterator[None]:
        """Confirmation mode on for what starts inside the block, then back as it was."""
        status, settings = self.request("GET", "/api/v1/settings")
        before = (settings.get("conversation_settings") or {}) if status == 200 and isinstance(settings, dict) else {}
        self.set_confirmation_mode(True, security_analyzer)
        try:
            yield
        finally:
            self.set_confirmation_mode(
                bool(before.get("confirmation_mode", False)), before.get("security_analyzer", "llm")
            )

    def stop(self) -> None:
        """Stop every process of this run (paused ones are continued first) and remove its files."""
        pids = _processes_with_token(self.token)
        _signal_all(pids, signal.SIGCONT)  # a SIGSTOPped (paused) agent server cannot act on TERM
        if self.dir is not None:  # tmux servers of the agents' terminals, on sockets of our own
            for socket_path in (self.dir / "tmux").rglob("*"):
                if socket_path.is_socket():
                    subprocess.run(["tmux", "-S", str(socket_path), "kill-server"], capture_output=True, timeout=10)
        for process in self.processes:  # the app server first: it may stop its agent servers
            if process.poll() is None:
                process.terminate()
        self._wait_gone(self.processes, 10)
        pids = _processes_with_token(self.token)
        _signal_all(pids, signal.SIGCONT)
        _signal_all(pids, signal.SIGTERM)
        deadline = time.time() + 5
        while pids and time.time() < deadline:
            time.sleep(0.2)
            pids = _processes_with_token(self.token)
        _signal_all(pids, signal.SIGKILL)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes = []
        if self.dir is not None and not self.keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_browser_dirs()

    def _wait_gone(self, processes: list[subprocess.Popen], seconds: float) -> None:
        deadline = time.time() + seconds
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.time()))

    def _remove_browser_dirs(self) -> None:
        """browser-use makes an empty ``/tmp/browser-use-downloads-<id>`` per agent, a hard-coded path."""
        for path in Path("/tmp").glob("browser-use-downloads-*"):
            with contextlib.suppress(OSError):
                if path.is_dir() and path.stat().st_mtime >= self.started_at - 1 and not any(path.iterdir()):
                    path.rmdir()

    def __enter__(self) -> RealOpenHands:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    def live_processes(self) -> list[int]:
        return _processes_with_token(self.token)

    @contextlib.contextmanager
    def one_start(self) -> Iterator[None]:
        """Hold from a start request until its start task is READY or ERROR: one boot at a time."""
        assert self.dir is not None, "not started"
        with _file_lock(self.dir / "start.lock"):
            yield

    def make_unhealthy(self, sandbox_id: str, seconds: float) -> None:
        """For ``seconds``, the server finds this sandbox's health check failing (sandbox ``ERROR``)."""
        assert self.dir is not None, "not started"
        (self.dir / "faults" / f"unhealthy-{sandbox_id}").write_text(str(time.time() + seconds))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        """One HTTP exchange with the app server: (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def requests(self, *, internal: bool = False) -> list[dict[str, Any]]:
        """The HTTP requests the app server received (``internal``: also the agents' webhooks)."""
        assert self.dir is not None, "not started"
        lines = (self.dir / "logs" / "requests.jsonl").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        return [entry for entry in entries if internal or not entry["internal"]]

    def llm_requests(self) -> list[dict[str, Any]]:
        """What the fake LLM received and answered, in order."""
        assert self.dir is not None, "not started"
        return [json.loads(path.read_text()) for path in sorted((self.dir / "llm_requests").glob("*.json"))]

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = (self.dir or Path("/nonexistent")) / "logs" / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def summary(self) -> dict[str, Any]:
        """Conversations started, seconds per conversation, requests sent (tests' and DAGs')."""
        tasks, conversations, page = [], {}, ""
        while True:
            status, body = self.request("GET", f"/api/v1/app-conversations/start-tasks/search?limit=100{page}")
            if status != 200:
                break
            tasks += body["items"]
            if not body.get("next_page_id"):
                break
            page = f"&page_id={body['next_page_id']}"
        ids = [task["app_conversation_id"] for task in tasks if task.get("app_conversation_id")]
        for start in range(0, len(ids), 90):
            query = "&".join(f"ids={cid}" for cid in ids[start : start + 90])
            status, body = self.request("GET", f"/api/v1/app-conversations?{query}")
            if status == 200:
                conversations.update({item["id"]: item for item in body if item})
        to_ready, total = [], []
        for task in tasks:
            created, updated = _parse_time(task.get("created_at")), _parse_time(task.get("updated_at"))
            if task.get("status") == "READY" and created and updated:
                to_ready.append(updated - created)
                # From the POST to the conversation's last change (its end, or a pause right after it).
                ended = _parse_time((conversations.get(task["app_conversation_id"]) or {}).get("updated_at"))
                if ended:
                    total.append(ended - created)
        requests = self.requests()
        by_endpoint: dict[str, int] = {}
        for entry in requests:
            key = f"{entry['method']} {entry['path']}"
            by_endpoint[key] = by_endpoint.get(key, 0) + 1
        statuses: dict[str, int] = {}
        for task in tasks:
            statuses[task["status"]] = statuses.get(task["status"], 0) + 1

        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 1) if values else None

        return {
            "openhands_ai": self.version,
            "server_startup_seconds": round(self.startup_seconds, 1),
            "wall_seconds": round(time.time() - self.started_at, 1),
            "conversations": len(tasks),
            "start_task_statuses": statuses,
            "seconds_to_ready_mean": mean(to_ready),
            "seconds_to_ready_max": round(max(to_ready), 1) if to_ready else None,
            "seconds_per_conversation_mean": mean(total),
            "seconds_per_conversation_max": round(max(total), 1) if total else None,
            "requests_sent": len(requests),
            "requests_by_endpoint": dict(sorted(by_endpoint.items(), key=lambda item: -item[1])[:12]),
            "llm_calls": len(self.llm_requests()),
        }


def _check(server: RealOpenHands) -> dict[str, Any]:
    """Drive one conversation: a file through the agent's file tool, then a final message."""
    chosen = str(uuid.uuid4())
    text = '[fake-llm write="check.txt:written by the agent" finish="checked"] Write check.txt, then finish.'
    body = {"initial_message": {"content": [{"type": "text", "text": text}]}, "conversation_id": chosen}
    started = time.time()
    with server.one_start():
        status, task = server.request("POST", "/api/v1/app-conversations", body)
        assert status == 200, (status, task)
        while task["status"] not in ("READY", "ERROR"):
            time.sleep(1)
            _, (task,) = server.request("GET", f"/api/v1/app-conversations/start-tasks?ids={task['id']}")
    ready = time.time() - started
    assert task["status"] == "READY", task
    conversation_id = task["app_conversation_id"]
    state = None
    while time.time() - started < 300:
        _, (state,) = server.request("GET", f"/api/v1/app-conversations?ids={conversation_id}")
        if state and state["execution_status"] in ("finished", "error", "stuck"):
            break
        time.sleep(1)
    ended = time.time() - started
    final, events = None, []
    for _ in range(20):  # events reach the app server through a webhook, a moment later
        _, page = server.request("GET", f"/api/v1/conversation/{conversation_id}/events/search?limit=100")
        events = page["items"]
        final = next(
            (e["action"]["message"] for e in events if (e.get("action") or {}).get("kind") == "FinishAction"), None
        )
        if final:
            break
        time.sleep(0.5)
    _, written = server.request("GET", f"/api/v1/app-conversations/{conversation_id}/file?file_path=check.txt")
    return {
        "conversation_id": conversation_id,
        "client_chosen_id_honoured": uuid.UUID(conversation_id) == uuid.UUID(chosen),
        "execution_status": state and state["execution_status"],
        "final_message": final,
        "event_kinds": [event.get("kind") for event in events],
        "file_read_back": written,
        "seconds_to_ready": round(ready, 1),
        "seconds_to_end": round(ended, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The real OpenHands server on loopback, for tests.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="start, drive one conversation, stop")
    action.add_argument("--serve", action="store_true", help="run until Ctrl-C")
    action.add_argument("--install", action="store_true", help="only make the cached venv")
    parser.add_argument("--keep-files", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    try:
        if args.install:
            print(ensure_venv())
            return 0
        with RealOpenHands(keep_files=args.keep_files) as server:
            if args.serve:
                print(f"serving at {server.url} (files in {server.dir}); Ctrl-C stops", flush=True)
                signal.signal(signal.SIGTERM, signal.default_int_handler)  # TERM stops it cleanly too
                signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with &
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
                return 0
            result = _check(server)
            print(json.dumps(result, indent=1))
            print(json.dumps(server.summary(), indent=1))
            leftover = server.dir
        ok = result["execution_status"] == "finished" and result["final_message"] == "checked"
        files = f"kept in {leftover}" if args.keep_files else "removed"
        print(f"check {'passed' if ok else 'FAILED'}; files {files}")
        return 0 if ok else 1
    except RealOpenHandsUnavailable as error:
        print(f"real OpenHands server unavailable: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
