"""The test suite cleans up after itself: no private Airflow home is left in the temp dir."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_a_session_leaves_no_airflow_home_behind(tmp_path):
    """A session run by an xdist worker leaves none of the ``openhands-airflow-home-*`` its processes
    made (the controller's and the worker's: tests/conftest.py makes one in each)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "AIRFLOW"))}
    env["TMPDIR"] = str(tmp_path)  # where tempfile.mkdtemp puts the homes
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "pt"),
         "tests/test_emulator.py::test_a_bad_per_repository_flag_is_refused"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("openhands-airflow-home-")) == []
