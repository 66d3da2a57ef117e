"""The contract suite's backends: the bundled emulator and the real open-source OpenHands server.

``backend`` is parametrised ``emulator`` / ``real``. The ``real`` one is marked ``real_openhands``,
which the default ``pytest`` run deselects (pyproject ``addopts``); ``pytest -m real_openhands``
runs it. One real server serves the whole session (``real_openhands``, shared with the DAG tests);
it starts conversations one at a time (``Backend.one_start``). The tests talk raw HTTP and check
every answer against the official OpenAPI document (``Api``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_openhands.testing import Emulator

SAMPLES = Path(__file__).parent / "real_samples"
TERMINAL = ("finished", "error", "stuck")
_summary: dict[str, Any] = {}


@pytest.fixture(scope="session")
def real_openhands() -> Iterator[Any]:
    """The real OpenHands server for the session; fails (never skips) when it cannot run here."""
    from tests.harness.real_openhands import RealOpenHands, RealOpenHandsUnavailable

    try:
        server = RealOpenHands(log=lambda line: print(f"[real-openhands] {line}", flush=True)).start()
    except RealOpenHandsUnavailable as error:
        pytest.fail(f"the real OpenHands server is unavailable: {error}", pytrace=False)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            _summary.update(server.summary())
        server.stop()
        _summary["leftover_processes"] = len(server.live_processes())


@pytest.fixture
def real_connection(real_openhands, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``openhands_default`` pointing at the real server (it has no auth: any key is accepted)."""
    connection = {
        "conn_type": "openhands",
        "host": real_openhands.url,
        "password": "not-checked-by-the-open-source-server",
        "extra": {"api_version": "v1", "max_retries": 3},
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    return real_openhands


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _summary:
        return
    terminalreporter.section("real OpenHands server")
    for key, value in _summary.items():
        terminalreporter.write_line(f"{key}: {value}")
    if os.environ.get("REAL_OPENHANDS_SUMMARY"):
        Path(os.environ["REAL_OPENHANDS_SUMMARY"]).write_text(json.dumps(_summary, indent=1))


class Api:
    """Raw HTTP to a backend; every answer with a documented status is validated against the spec."""

    def __init__(self, url: str, headers: dict[str, str], contract: Any) -> None:
        self.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        self.contract = contract
        #: (method, template, status) answered with a status the spec does not list for that call
        self.undocumented: set[tuple[str, str, int]] = set()

    def call(self, method: str, path: str, *, params: Any = None, json: Any = None) -> tuple[int, Any]:
        answer = self.client.request(method, path, params=params, json=json)
        for _ in range(5):  # the open-source server's own limiter (over 20 requests/s): not a contract case
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("Retry-After") or 1))
            answer = self.client.request(method, path, params=params, json=json)
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        template = self.contract.template_for("v1", method, path)
        assert template, f"{method} {path} is not in the V1 spec"
        if json is not None:
            self.contract.validate_request("v1", method, template, json)
        documented = self.contract.docs["v1"]["paths"][template][method.lower()]["responses"]
        schema = (documented.get(str(answer.status_code)) or {}).get("content", {}).get("application/json")
        if schema is not None:
            self.contract.validate_response("v1", method, template, body, answer.status_code)
        else:
            self.undocumented.add((method, template, answer.status_code))
        return answer.status_code, body

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call("POST", path, json=body)

    # -- the V1 flow, step by step -----------------------------------------------------------------

    def start(self, text: str, conversation_id: str | None = None, **fields: Any) -> tuple[int, Any]:
        body: dict[str, Any] = {"initial_message": {"content": [{"type": "text", "text": text}]}, **fields}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        return self.post("/api/v1/app-conversations", body)

    def start_task(self, task_id: str) -> dict[str, Any] | None:
        status, body = self.get("/api/v1/app-conversations/start-tasks", ids=[task_id])
        assert status == 200, body
        return body[0]

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        status, body = self.get("/api/v1/app-conversations", ids=[conversation_id])
        assert status == 200, body
        return body[0]

    def wait_start_task(self, task_id: str, timeout: float = 240) -> tuple[dict[str, Any], list[str]]:
        seen: list[str] = []
        deadline = time.time() + timeout
        while True:
            task = self.start_task(task_id)
            assert task is not None, f"start task {task_id} vanished"
            if not seen or seen[-1] != task["status"]:
                seen.append(task["status"])
            if task["status"] in ("READY", "ERROR") or time.time() > deadline:
                return task, seen
            time.sleep(0.5)

    def wait_conversation(
        self,
        conversation_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda c: c["execution_status"] in TERMINAL,
        timeout: float = 120,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
        """Poll until ``until``; sandbox ERROR alone never ends the wait. Returns the last answer and
        the sequence of (sandbox_status, execution_status) seen."""
        seen: list[tuple[str, str | None]] = []
        deadline = time.time() + timeout
        while True:
            state = self.conversation(conversation_id)
            assert state is not None, f"conversation {conversation_id} reads null"
            pair = (state["sandbox_status"], state["execution_status"])
            if not seen or seen[-1] != pair:
                seen.append(pair)
            if on_poll is not None:
                on_poll(state)
            if until(state):
                return state, seen
            assert time.time() < deadline, f"conversation {conversation_id} still {seen[-1]} (seen {seen})"
            time.sleep(0.3)

    def events(self, conversation_id: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page: dict[str, Any] = {"limit": 100, **params}
        while True:
            status, body = self.get(f"/api/v1/conversation/{conversation_id}/events/search", **page)
            assert status == 200, body
            items += body["items"]
            if not body.get("next_page_id"):
                return items
            page["page_id"] = body["next_page_id"]

    def wait_events(
        self, conversation_id: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
    ) -> list[dict[str, Any]]:
        """Events reach the real app server through a webhook, a moment after the state changes."""
        deadline = time.time() + timeout
        while True:
            items = self.events(conversation_id)
            if until(items) or time.time() > deadline:
                return items
            time.sleep(0.5)


def final_answer(events: list[dict[str, Any]]) -> str | None:
    """The agent's last word: its ``finish`` action's message, else its last plain message."""
    for event in reversed(events):
        if event.get("source") != "agent":
            continue
        action = event.get("action") or {}
        if event.get("kind") == "ActionEvent" and action.get("kind") == "FinishAction":
            return action.get("message")
        if event.get("kind") == "MessageEvent":
            content = (event.get("llm_message") or {}).get("content") or []
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return None


@dataclass
class Backend:
    name: str
    url: str
    headers: dict[str, str]
    server: Any
    api: Api
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def real(self) -> bool:
        return self.name == "real"

    def one_start(self) -> contextlib.AbstractContextManager:
        """Hold from a start request until its start task ends: the real server boots one at a time."""
        return self.server.one_start() if self.real else contextlib.nullcontext()

    def sandbox_error(self, sandbox_id: str, seconds: float) -> None:
        """A transient sandbox ERROR now (real: its health check fails). The emulator is steered by
        the ``[emulator sandbox_error=N]`` marker instead."""
        if self.real:
            self.server.make_unhealthy(sandbox_id, seconds)

    def record(self, name: str, sample: Any) -> None:
        """Keep a real answer as a reference for the emulator (``OPENHANDS_RECORD_SAMPLES=1``)."""
        if self.real and os.environ.get("OPENHANDS_RECORD_SAMPLES") == "1":
            SAMPLES.mkdir(exist_ok=True)
            (SAMPLES / f"{name}.json").write_text(json.dumps(_scrub(sample), indent=1) + "\n")


def _scrub(value: Any) -> Any:
    """No secrets and no megabytes: session keys replaced, long texts cut."""
    if isinstance(value, dict):
        return {
            key: "<redacted>" if key in ("session_api_key", "api_key") and item else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, str) and len(value) > 300:
        return value[:300] + f"... <{len(value) - 300} more characters>"
    return value


@pytest.fixture(scope="session")
def emulator_backend() -> Iterator[Emulator]:
    with Emulator(conversation_seconds=1.0, start_seconds=0.5) as emulator:
        yield emulator


@pytest.fixture(
    scope="session",
    params=["emulator", pytest.param("real", marks=pytest.mark.real_openhands)],
)
def backend(request: pytest.FixtureRequest, contract: Any) -> Backend:
    if request.param == "emulator":
        server = request.getfixturevalue("emulator_backend")
        headers = {"Authorization": f"Bearer {server.api_key}"}
    else:
        server = request.getfixturevalue("real_openhands")
        # The open-source server has no auth; the header is sent as to the Cloud, and ignored.
        headers = {"Authorization": "Bearer not-checked-by-the-open-source-server"}
    return Backend(request.param, server.url, headers, server, Api(server.url, headers, contract))


def new_id() -> str:
    return str(uuid.uuid4())
