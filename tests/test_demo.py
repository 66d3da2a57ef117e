"""``scripts/run_demo.py`` and its local Airflow, the cheap parts: the ``--keep`` option and what it
prints, and the one line the clean-up logs. (The demo itself runs a whole Airflow: not here.)"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time

import pytest

from airflow_provider_openhands.testing import Emulator
from scripts import run_demo
from scripts.local_airflow import AIRFLOW_3, LocalAirflow, leftovers_line
from tests.conftest import REPO


@pytest.fixture
def airflow():
    """A LocalAirflow never started: its home, ports and login exist, no process runs."""
    lines: list[str] = []
    local = LocalAirflow(connection={"conn_type": "openhands"}, log=lines.append)
    local.lines = lines  # type: ignore[attr-defined]
    yield local
    local.cleanup()


def test_keep_is_an_option_off_by_default():
    assert run_demo.parse_args([]).keep is False
    assert run_demo.parse_args(["--keep", "--repositories", "3"]).keep is True


def test_keep_prints_the_ui_address_the_login_and_how_to_stop(airflow):
    # what `airflow standalone` writes once its API server is up (Airflow 2: its admin's password file)
    if AIRFLOW_3:
        (airflow.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "s3cr3t-pw"}))
    else:
        (airflow.home / "standalone_admin_password.txt").write_text("s3cr3t-pw\n")
    with Emulator() as emulator:
        lines = run_demo.kept_lines(airflow, emulator)
    text = "\n".join(lines)
    assert f"http://localhost:{airflow.port}" in text and "user admin, password s3cr3t-pw" in text
    assert emulator.url in text
    assert f"Press Ctrl-C (or: kill {os.getpid()}) to stop them" in text and str(airflow.home) in text


def test_the_clean_up_says_one_line(airflow):
    """Processes of this Airflow that outlive it are killed, and logged once: a killed process stays
    in the process table (a zombie) until reaped, and is no second leftover."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        airflow.sessions.add(leader.pid)  # as if Airflow had started it
        assert len(_wait_for(lambda: airflow.leftovers(), 3)) == 3
        airflow.stop()
        assert airflow.lines == [leftovers_line(3)] == ["Stopped 3 Airflow processes still running after it exited"]
        assert airflow.leftovers() == []
    finally:
        leader.kill()
        leader.wait()
    assert leftovers_line(1) == "Stopped 1 Airflow process still running after it exited"


def _wait_for(read, count: int, timeout: float = 10.0) -> list:
    deadline = time.time() + timeout
    while len(found := read()) < count and time.time() < deadline:
        time.sleep(0.05)
    return found


def test_the_demo_script_answers_help():
    done = subprocess.run([sys.executable, "scripts/run_demo.py", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "--keep" in done.stdout


@pytest.mark.parametrize("script", ["run_demo.py", "local_airflow.py", "release_check.py"])
def test_every_scripts_help_is_whole(script):
    """``--help`` prints the script's whole docstring, every line of it (it stopped mid-sentence, or
    printed nothing), and exits 0."""
    path = REPO / "scripts" / script
    docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = {line.strip() for line in done.stdout.splitlines()}
    missing = [line for line in docstring.splitlines() if line.strip() and line.strip() not in shown]
    assert not missing, f"{script} --help leaves out: {missing}"
