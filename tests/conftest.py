"""Test set-up: a private AIRFLOW_HOME, the emulator on loopback, and the official API contract.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The example DAGs, shipped in the package.
EXAMPLE_DAGS = REPO / "airflow_provider_openhands" / "example_dags"
_HOME = Path(tempfile.mkdtemp(prefix="openhands-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
#: DAG files the tests write (the README's examples, as written), in this session's Airflow home.
README_DAGS = _HOME / "readme_dags"
README_DAGS.mkdir()
# Airflow 3 runs dag.test() from a DAG bundle: the examples and the tests' own DAGs are two bundles.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path), "refresh_interval": 0},
        }
        for name, path in (
            ("openhands_examples", EXAMPLE_DAGS),
            ("openhands_tests", REPO / "tests" / "dags"),
            ("openhands_real_tests", REPO / "tests" / "dags_real"),  # DAGs for the real OpenHands server
            ("openhands_readme", README_DAGS),
        )
    ]
)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW_CONN_OPENHANDS_DEFAULT", None)

from airflow_provider_openhands.hooks.transport import RetryPolicy  # noqa: E402
from airflow_provider_openhands.testing import Emulator  # noqa: E402
from airflow_provider_openhands.testing.pytest_plugin import connection_json  # noqa: E402

#: pytester runs a user's pytest of its own (tests/test_pytest_plugin.py). The emulator's fixtures are
#: a plugin a session asks for, not loaded by installing the provider: addopts has ``-p`` for it.
pytest_plugins = ["pytester"]

#: Opt-in tiers (``pytest -m <tier>``): they start servers or Airflow processes of their own, so a
#: run that selects one runs in one process.
SERIAL_TIERS = ("real_openhands", "production", "ecosystem", "airflow_processes", "browser", "chaos")
#: The default run's xdist workers (``-n auto`` in addopts): its tests mostly wait on the emulator's
#: clock, so three share two cores well (13 minutes in one process, about 4 with three).
WORKERS = 3


def pytest_unconfigure(config: pytest.Config) -> None:
    """This process's private AIRFLOW_HOME (the controller's, and each xdist worker's) and the database
    the ``airflow_db`` fixture put in it go when the session ends: nothing is left in the temp dir."""
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    expression = config.getoption("markexpr") or ""
    if any(re.search(rf"(?<!not )\b{tier}\b", expression) for tier in SERIAL_TIERS):
        return 0
    return WORKERS


#: Retries as in production, but with waits short enough for tests.
FAST_RETRIES = RetryPolicy(max_retries=3, initial_wait=0.01, max_wait=0.2)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(conversation_seconds=0.6, start_seconds=0.2) as emu:
        yield emu


@pytest.fixture(params=["v1", "v0"])
def api_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def connection(emulator: Emulator, api_version: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """``openhands_default`` pointing at the emulator, for the parametrised API version."""
    # A budget far above what tests send at 0.05 s intervals: the budget has its own tests.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(emulator, api_version, max_retries=3, max_requests_per_minute=100_000),
    )
    return emulator


@pytest.fixture
def hook(connection: Emulator):
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    return OpenHandsHook(retry_policy=FAST_RETRIES)


def _migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "set", "openhands", "10", "OpenHands", "--include-deferred"],
        check=True,
        capture_output=True,
        env={**os.environ},
    )


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated metadata DB in the private AIRFLOW_HOME, for ``dag.test()``.

    Each xdist worker has a home of its own: the first to get here migrates (some 12 s of CPU), the
    others copy its fresh database instead of migrating again. Then a first ``dag.test()`` here
    takes its one-time cost (some 15 s), which would otherwise fall in whichever test came first.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        _migrate()
    else:
        shared = tmp_path_factory.getbasetemp().parent / "airflow-db"  # one per run, for its workers
        shared.mkdir(exist_ok=True)
        with open(shared / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (shared / "airflow.db").exists():
                shutil.copyfile(shared / "airflow.db", _HOME / "airflow.db")
            else:
                _migrate()
                shutil.copyfile(_HOME / "airflow.db", shared / "airflow.db")
    runpy.run_path(str(REPO / "tests" / "dags" / "openhands_warm_up.py"))["warm_up"].test()
    return _HOME


class Contract:
    """Validates bodies against the official OpenAPI documents (vendored in tests/openapi)."""

    def __init__(self) -> None:
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator
        self.docs = {
            "v1": json.loads((REPO / "tests/openapi/openhands-cloud-v1.openapi.json").read_text()),
            "v0": json.loads((REPO / "tests/openapi/openhands-v0.openapi.json").read_text()),
        }

    def _validate(self, version: str, schema: dict, instance: object) -> None:
        root = {**schema, "components": self.docs[version]["components"]}
        self._validator(root).validate(instance)

    def request_schema(self, version: str, method: str, path: str) -> dict:
        operation = self.docs[version]["paths"][path][method.lower()]
        return operation["requestBody"]["content"]["application/json"]["schema"]

    def response_schema(self, version: str, method: str, path: str, status: int = 200) -> dict:
        operation = self.docs[version]["paths"][path][method.lower()]
        return operation["responses"][str(status)]["content"]["application/json"]["schema"]

    def validate_request(self, version: str, method: str, path: str, body: object) -> None:
        self._validate(version, self.request_schema(version, method, path), body)

    def validate_response(self, version: str, method: str, path: str, body: object, status: int = 200) -> None:
        self._validate(version, self.response_schema(version, method, path, status), body)

    def template_for(self, version: str, method: str, path: str) -> str | None:
        """The spec's path template (``/api/conversations/{conversation_id}``) for a concrete path."""
        if method.lower() in self.docs[version]["paths"].get(path, {}):
            return path
        for template, operations in self.docs[version]["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if method.lower() in operations and re.match(pattern, path):
                return template
        return None


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract()
