"""The emulator in a process of its own that keeps its state across a stop:
``python -m tests.harness.emulator_process STATE_FILE [openhands-emulator flags]``.

The chaos tier makes the service unreachable by stopping this process and starting it again on the
same port: while it is down, connections are refused (the port is closed), which no fault inside a
running emulator can show. The conversations go on meanwhile, as a real service's sandboxes do: the
emulator's clock is the wall clock. On SIGTERM it stops serving, writes its whole state (every
conversation, the request log, its figures and knobs) to ``STATE_FILE`` and exits; started with a
``STATE_FILE`` that exists, it carries on from it. :func:`load_state` reads that file back as an
:class:`Emulator` (not serving), for a test's checks.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from airflow_provider_openhands.testing.__main__ import emulator_kwargs
from airflow_provider_openhands.testing.emulator import Emulator

#: What is not the emulator's state: the lock and the server (made anew at each start).
NOT_STATE = ("lock", "_server", "_thread", "host", "port")


def save_state(emulator: Emulator, path: Path) -> None:
    """Write the state (the caller holds the emulator's lock, so no request is half-applied)."""
    state = {k: v for k, v in vars(emulator).items() if k not in NOT_STATE}
    partial = path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(state))
    partial.replace(path)


def load_state(path: Path, emulator: Emulator | None = None) -> Emulator:
    """The emulator as saved in ``path`` (into ``emulator`` if given, else a new one, not serving)."""
    emulator = emulator or Emulator()
    state: dict[str, Any] = pickle.loads(path.read_bytes())
    with emulator.lock:
        vars(emulator).update(state)
    return emulator


class EmulatorProcess:
    """Runs this module as a child process on a fixed port: :meth:`start`, :meth:`stop` (its state
    saved), :meth:`start` again (its state back, on the same port), :meth:`state` once stopped."""

    def __init__(self, state_file: Path, port: int, flags: list[str], api_key: str = "emulator-api-key") -> None:
        self.state_file, self.port, self.api_key = state_file, port, api_key
        self.flags = ["--port", str(port), "--api-key", api_key, *flags]
        self.log = state_file.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> EmulatorProcess:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.harness.emulator_process", str(self.state_file), *self.flags],
                cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                self.control("GET", "stats")
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the emulator did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        """SIGTERM: it stops answering (the port closes) and saves its state."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None

    def control(self, method: str, what: str, body: Any = None) -> Any:
        """A control endpoint (``/_emulator/<what>``): ``stats``, ``config``..."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_emulator/{what}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def state(self) -> Emulator:
        """The emulator as it stopped (after :meth:`stop`)."""
        return load_state(self.state_file)


def main(argv: list[str]) -> None:
    state_file = Path(argv[0])
    emulator = Emulator(**emulator_kwargs(argv[1:]))
    if state_file.exists():
        load_state(state_file, emulator)
    emulator.start()
    print(f"emulator (pid {os.getpid()}) listening on {emulator.url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server = emulator._server
    assert server is not None
    server.shutdown()  # no new request is taken
    emulator.lock.acquire()  # never released: a request still in flight is not applied after the save
    save_state(emulator, state_file)
    os._exit(0)  # its client sees the connection drop, as when a server goes away; the port closes


if __name__ == "__main__":
    main(sys.argv[1:])
