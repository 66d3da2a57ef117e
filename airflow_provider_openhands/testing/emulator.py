"""A local OpenHands server for tests and offline demos: V1 and V0 endpoints on loopback.

It shares no code with the provider's client on purpose: it is written from the official OpenAPI
documents and the service's observed behaviour (``openhands-ai`` 1.11 and OpenHands Cloud), so a
client bug cannot hide behind the same bug here. Standard library only.

The rule: **exactly as strict as the real service, never kinder**. Where the spec and the observed
server are silent, the emulator picks the stricter behaviour (marked *stricter* below).

The emulator in parts, by concern (each module's docstring says what it emulates):

* ``model.py``: the conversation model (turns, timing, outcome, cost, the agent's workspace) and
  the ``[emulator ...]`` markers in a message that script it;
* ``v1_routes.py``: the V1 endpoints, as the service answers them, and each sandbox's agent server
  (``/agent/<sandbox_id>``: ``respond_to_confirmation`` and ``run``, authorised by that sandbox's
  ``X-Session-API-Key`` only; a session key never opens an app-server route);
* ``v0_routes.py``: the V0 endpoints;
* ``faults.py``: injected faults and outages, and the account's limits (concurrency, daily
  sandboxes, rate limit);
* this module: the :class:`Emulator` (the server's lifecycle, its knobs and figures, routing) and
  the HTTP plumbing. Every name the emulator module had before the split is importable from here.

Knobs (constructor keyword arguments; each also ``POST /_emulator/config`` with the same names, and
a flag of ``openhands-emulator`` (``python -m airflow_provider_openhands.testing``) with dashes:
``--turn-lag-seconds 1``; a mapping's flag takes ``owner/repo=value`` and repeats):

* ``concurrency_limit`` (10), ``capacity_error_style``, ``daily_sandbox_limit`` (None),
  ``rate_limit_per_minute`` (None): the account's limits (``faults.py``).
* ``turn_lag_seconds`` (0.5), ``conversation_seconds``, ``start_seconds``, ``latency``.
* ``missing_file_answer``: ``"404"`` (default, *stricter*) or ``"empty"`` (the real server's 200 ``""``)
  for ``GET .../file`` misses and refusals.
* ``outcomes_by_repository``: ``{"owner/repo": "error"}``, how the agent ends the first turn of a
  conversation started on that repository (``finished``, ``error`` or ``stuck``);
  ``seconds_by_repository``: ``{"owner/repo": 600}``, how long that turn runs (instead of
  ``conversation_seconds``). A message's marker wins over both; a POST replaces the whole mapping.
  So one repository of the nightly example fails and another runs for ten minutes, without Python::

      openhands-emulator --outcomes-by-repository acme/web=error --seconds-by-repository acme/api=600
      curl localhost:8123/_emulator/config -d '{"outcomes_by_repository": {"acme/web": "error"}}'
      curl localhost:8123/_emulator/config -d '{"seconds_by_repository": {"acme/api": 600}}'

* Markers in a message: ``[emulator outcome=error duration=3]`` and more (``model.py``).
* Faults (:meth:`Emulator.add_fault`) and outages (:meth:`Emulator.outage`): ``faults.py``.
* Tests may set ``conversation(id).sandbox_override`` (e.g. ``MISSING``) or ``status_override``, and
  :meth:`Emulator.rotate_key` revokes the API key for a new one (every request with the old key: 401).

Every request is logged (``requests``: method, path, query, JSON body, answer); ``stats()`` gives
the peak of live conversations, how many were created and stopped. Control endpoints (no auth):
``GET /_emulator/stats``, ``GET /_emulator/requests``, ``POST /_emulator/faults``, ``/outage``,
``/config``, ``/reset``, ``/seed`` (``{"durations": [...]}``: running conversations at once), and
``GET /_emulator/done/{id}`` (404 until the agent's last turn ended).

"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_openhands.testing.faults import Fault, Faults, max_in_window
from airflow_provider_openhands.testing.model import (
    _MARKER,
    _PAIR,
    CHANGE_STATUSES,
    COST_PER_SECOND,
    OUTPUT_FILE,
    RENAME_STATUSES,
    START_STEPS,
    WORKSPACE_ROOT,
    Conversation,
    FileState,
    Turn,
    _change_spec,
    _directive_pairs,
    _directives,
    _hex,
    _marker_problem,
    _modified_text,
    _naive_iso,
    _now_iso,
    _original_text,
    _z_iso,
)
from airflow_provider_openhands.testing.v0_routes import V0Routes
from airflow_provider_openhands.testing.v1_routes import (
    _EVENT_NAMESPACE,
    _SEND_ID,
    EVENT_KINDS,
    EVENT_SORT_ORDERS,
    MAX_DIFF_FILE_BYTES,
    MAX_IDS,
    MAX_START_TASK_IDS,
    START_TASK_SORT_ORDERS,
    TOKENS_PER_DOLLAR,
    USER_ID,
    PlainText,
    V1Routes,
    _invalid,
    _observability_problem,
    _page,
    _parse_time,
    _Query,
    _scalar,
)

#: Every name the emulator module had before it was split by concern, importable from here as before.
__all__ = [
    "CHANGE_STATUSES",
    "CONFIG_KEYS",
    "COST_PER_SECOND",
    "EVENT_KINDS",
    "EVENT_SORT_ORDERS",
    "MAX_DIFF_FILE_BYTES",
    "MAX_IDS",
    "MAX_START_TASK_IDS",
    "OUTPUT_FILE",
    "RENAME_STATUSES",
    "START_STEPS",
    "START_TASK_SORT_ORDERS",
    "TOKENS_PER_DOLLAR",
    "USER_ID",
    "WORKSPACE_ROOT",
    "_EVENT_NAMESPACE",
    "_MARKER",
    "_PAIR",
    "_SEND_ID",
    "Conversation",
    "Emulator",
    "Fault",
    "FileState",
    "Turn",
    "_Handler",
    "_Query",
    "_Server",
    "_change_spec",
    "_directive_pairs",
    "_directives",
    "_hex",
    "_invalid",
    "_marker_problem",
    "_modified_text",
    "_naive_iso",
    "_now_iso",
    "_observability_problem",
    "_original_text",
    "_page",
    "_parse_time",
    "_scalar",
    "_z_iso",
    "max_in_window",
]

CONFIG_KEYS = (
    "concurrency_limit",
    "conversation_seconds",
    "start_seconds",
    "latency",
    "daily_sandbox_limit",
    "capacity_error_style",
    "rate_limit_per_minute",
    "rate_limit_window",
    "turn_lag_seconds",
    "missing_file_answer",
    "outcomes_by_repository",
    "seconds_by_repository",
)
#: How the agent may end a conversation (``outcomes_by_repository``, ``[emulator outcome=...]``).
OUTCOMES = ("finished", "error", "stuck")


class Emulator(V1Routes, V0Routes, Faults):
    """The emulated service. ``with Emulator() as emu: emu.url`` runs it on a free loopback port.

    Every parameter is also a field of ``POST /_emulator/config`` and a flag of ``openhands-emulator``.

    :param api_key: the key a request's ``X-Access-Token`` (or ``Authorization: Bearer``) must hold.
    :param host: the address to listen on (loopback).
    :param port: the port; 0 picks a free one.
    :param concurrency_limit: conversations the account runs at once; one more start or resume is
        refused with 429 ``CONCURRENCY_LIMIT_REACHED``.
    :param conversation_seconds: how long the agent runs a turn, unless a marker or
        ``seconds_by_repository`` says otherwise.
    :param start_seconds: how long a V1 start task takes to be ready.
    :param latency: seconds before each API answer.
    :param daily_sandbox_limit: sandboxes per UTC day (None: no limit); then 429
        ``DAILY_SANDBOX_LIMIT_REACHED``.
    :param capacity_error_style: the 429's body: ``"nested"`` (under ``detail``) or ``"flat"``.
    :param rate_limit_per_minute: API requests per minute, and 10 a second (None: no limit); then 429
        with ``Retry-After``.
    :param rate_limit_window: seconds of that minute (tests scale it down).
    :param turn_lag_seconds: how long polls still show the previous turn's state after a message.
    :param missing_file_answer: a file read that misses: ``"404"`` (stricter) or ``"empty"`` (the real
        server's 200 ``""``).
    :param outcomes_by_repository: ``{"owner/repo": "error"}``: how the agent ends the first turn on
        that repository (``finished``, ``error``, ``stuck``).
    :param seconds_by_repository: ``{"owner/repo": 600}``: how long that turn runs.
    """

    def __init__(
        self,
        *,
        api_key: str = "emulator-api-key",
        host: str = "127.0.0.1",
        port: int = 0,
        concurrency_limit: int = 10,
        conversation_seconds: float = 1.0,
        start_seconds: float = 0.3,
        latency: float = 0.0,
        daily_sandbox_limit: int | None = None,
        capacity_error_style: str = "nested",
        rate_limit_per_minute: int | None = None,
        rate_limit_window: float = 60.0,
        turn_lag_seconds: float = 0.5,
        missing_file_answer: str = "404",
        outcomes_by_repository: dict[str, str] | None = None,
        seconds_by_repository: dict[str, float] | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.concurrency_limit = concurrency_limit
        self.conversation_seconds = conversation_seconds
        self.start_seconds = start_seconds
        self.latency = latency
        self.daily_sandbox_limit = daily_sandbox_limit
        self.capacity_error_style = capacity_error_style
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_limit_window = rate_limit_window
        self.turn_lag_seconds = turn_lag_seconds
        self.missing_file_answer = missing_file_answer
        #: ``{"owner/repo": "error"}``: the agent's outcome for conversations on that repository.
        self.outcomes_by_repository: dict[str, str] = _outcomes(outcomes_by_repository or {})
        #: ``{"owner/repo": 600}``: how long the agent runs on that repository (``conversation_seconds`` else).
        self.seconds_by_repository: dict[str, float] = _seconds(seconds_by_repository or {})
        self.lock = threading.RLock()
        self.conversations: dict[str, Conversation] = {}
        self.start_tasks: dict[str, Conversation] = {}  # start task id -> its (maybe duplicate) conversation
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.sandbox_creations: list[float] = []
        self.api_request_times: list[float] = []
        self._accepted: deque[float] = deque()
        self.max_alive = 0
        self.created = 0
        self.stops = 0
        self.resumes = 0
        self.refused_for_capacity = 0
        self.refused_for_quota = 0
        self.refused_for_rate = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Emulator:
        handler = type("EmulatorHandler", (_Handler,), {"emulator": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="openhands-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- knobs and figures -----------------------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        unknown = sorted(set(knobs) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown emulator knobs: {unknown}")
        if knobs.get("capacity_error_style", "nested") not in ("nested", "flat"):
            raise ValueError("capacity_error_style must be 'nested' or 'flat'")
        if knobs.get("missing_file_answer", "404") not in ("404", "empty"):
            raise ValueError("missing_file_answer must be '404' or 'empty'")
        if "outcomes_by_repository" in knobs:
            knobs["outcomes_by_repository"] = _outcomes(knobs["outcomes_by_repository"])
        if "seconds_by_repository" in knobs:
            knobs["seconds_by_repository"] = _seconds(knobs["seconds_by_repository"])
        with self.lock:
            for key, value in knobs.items():
                setattr(self, key, value)

    def rotate_key(self, new_key: str) -> None:
        """Revoke the account's API key and take ``new_key`` only, from this request on: a key rotated
        in OpenHands before the Airflow connection holds the new one. No grace for the old key (as
        strict as the service can be); a sandbox's session key is unchanged."""
        if not new_key or new_key.startswith("session-"):
            raise ValueError("an account's API key: not empty, and not a sandbox's session key")
        with self.lock:
            self.api_key = new_key

    def reset(self) -> None:
        with self.lock:
            self.conversations.clear()
            self.start_tasks.clear()
            self.requests.clear()
            self.faults.clear()
            self.sandbox_creations.clear()
            self.api_request_times.clear()
            self._accepted.clear()
            self.max_alive = self.created = self.stops = self.resumes = self.refused_for_capacity = 0
            self.refused_for_quota = self.refused_for_rate = 0

    def _every(self) -> list[Conversation]:
        seen = {id(c): c for c in self.conversations.values()}
        seen.update({id(c): c for c in self.start_tasks.values()})
        return list(seen.values())

    def alive_count(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.lock:
            return sum(1 for c in self._every() if c.alive(now))

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "created": self.created,
                "alive": self.alive_count(),
                "max_alive": self.max_alive,
                "stops": self.stops,
                "resumes": self.resumes,
                "refused_for_capacity": self.refused_for_capacity,
                "refused_for_quota": self.refused_for_quota,
                "refused_for_rate": self.refused_for_rate,
                "requests": len(self.requests),
                "max_requests_per_minute": self.requests_per_minute(),
                "concurrency_limit": self.concurrency_limit,
                "sandboxes_today": self._sandboxes_today(),
            }

    def requests_to(self, method: str, path_pattern: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["method"] == method and re.search(path_pattern, r["path"])]

    def conversation(self, conversation_id: str) -> Conversation:
        return self.conversations[_hex(conversation_id) or conversation_id]

    # -- conversations (V1 and V0) --------------------------------------------------------------

    def _new_conversation(
        self, api_version: str, body: dict[str, Any], message: str, parent: Conversation | None = None
    ) -> Conversation:
        """A new conversation; ``parent`` (V1 ``parent_conversation_id``): it boots no sandbox of its
        own but shares the parent's (its id and workspace)."""
        now = time.time()
        wanted = body.get("conversation_id")
        directives = _directives(message)
        repository = body.get("selected_repository") or body.get("repository")
        conversation_id = (_hex(wanted) if wanted else None) or uuid.uuid4().hex
        request = {k: v for k, v in body.items() if k != "secrets"}
        if api_version == "v1" and wanted:
            request["conversation_id"] = str(uuid.UUID(conversation_id))  # echoed as a UUID: dashed
        if api_version == "v1":
            request.setdefault("agent_type", "default")  # the real echo holds the field's default too
        start = directives.get("start")
        conversation = Conversation(
            id=conversation_id,
            api_version=api_version,
            message=message,
            repository=repository,
            branch=body.get("selected_branch"),
            git_provider=body.get("git_provider"),
            title=body.get("title") or (message[:50] if message else None),
            created=now,
            ready_at=now + self.start_seconds,
            duration=float(
                directives.get("duration", self.seconds_by_repository.get(repository or "", self.conversation_seconds))
            ),
            outcome=directives.get("outcome") or self.outcomes_by_repository.get(repository or "") or "finished",
            start_error=start in ("error", "capacity"),
            request=request,
            seq=self.created,
            agent_type=(body.get("agent_type") or "default") if api_version == "v1" else "default",
            parent_id=parent.id if parent is not None else None,
        )
        if start == "capacity":
            conversation.error_detail = (
                "Sandbox could not start: maximum number of concurrent conversations "
                f"({self.concurrency_limit}) reached"
            )
        if parent is not None:  # a sub-conversation runs in its parent's sandbox: none is created
            conversation.sandbox_id = parent.sandbox_id
        elif api_version == "v1":
            self.sandbox_creations.append(now)
            if wanted:  # as on the real server: a client-chosen conversation id is the sandbox id too
                conversation.sandbox_id = conversation.id
        original = self.conversations.get(conversation.id)
        if original is not None:
            conversation.duplicate = conversation.start_error = True
            conversation.error_step = START_STEPS.index("STARTING_CONVERSATION")
            conversation.error_detail = (
                f"Server error '500 Internal Server Error' for url 'http://localhost:{self.port}/api/conversations'\n"
                "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/500"
            )
            if api_version == "v1" and original.taken_over_at is None:
                original.taken_over_at = now  # the new boot takes the sandbox (its id) over
        else:
            self.conversations[conversation.id] = conversation
            if parent is not None:
                parent.sub_ids.append(conversation.id)
        self.created += 1
        self.max_alive = max(self.max_alive, self.alive_count(now) + (1 if conversation.duplicate else 0))
        return conversation

    # -- benchmarks --------------------------------------------------------------------------------

    def seed(self, durations: list[float]) -> list[dict[str, Any]]:
        """Create running V1 conversations at once (no start phase), for benchmarks and load tests."""
        now = time.time()
        created = []
        with self.lock:
            for duration in durations:
                conversation = self._new_conversation("v1", {}, "seeded [emulator]")
                conversation.set_first_turn(now, float(duration))
                created.append({"id": conversation.id, "finishes_at": conversation.finished_at()})
        return created

    def done(self, conversation_id: str) -> tuple[int, Any]:
        """404 until the agent's last turn ended, then 200: a status endpoint a plain HTTP sensor can poll."""
        conversation = self.conversations.get(_hex(conversation_id) or conversation_id)
        if conversation is None or conversation.agent_status(time.time()) in (None, "running"):
            return 404, {"detail": "not finished"}
        if time.time() < conversation.finished_at():
            return 404, {"detail": "not finished"}
        return 200, {"finished_at": conversation.finished_at()}

    # -- V0 --------------------------------------------------------------------------------------

    # -- routing -----------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self.lock:
            answer = self._route_v1(method, path, query, body) or self._route_v0(method, path, query, body)
            return answer or (404, {"detail": "Not Found"})

    def authorized(self, headers: Any) -> bool:
        """The app server's check: the account's API key (``Authorization: Bearer``, ``X-Access-Token``
        or ``X-Session-API-Key``). A sandbox's session key never opens an app-server route."""
        auth = headers.get("Authorization") or ""
        token = (
            auth[7:]
            if auth.startswith("Bearer ")
            else headers.get("X-Access-Token") or headers.get("X-Session-API-Key")
        )
        if token != self.api_key:
            return False
        if not token.startswith("session-"):
            return True
        with self.lock:
            return not any(token == f"session-{c.sandbox_id}" for c in self._every())

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: Any) -> tuple[int, Any]:
        """The answer to an authenticated request: ``/agent/{sandbox_id}/...`` is that sandbox's agent
        server (its session key only, ``X-Session-API-Key``); every other path is the app server."""
        if path.startswith("/agent/"):
            if headers.get("Authorization") or headers.get("X-Access-Token"):
                # stricter than the real agent server, which ignores it: the account's key must never
                # leave for a sandbox (its agent server runs the agent's code)
                return 401, {"error": "an agent server takes its session key only, never the account's key"}
            with self.lock:
                return self.route_agent(method, path, body, headers.get("X-Session-API-Key"))
        if not self.authorized(headers):
            return 401, {"error": "failed to authenticate"}
        return self.route(method, path, query, body)

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)


def _by_repository(knob: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) and key for key in value):
        raise ValueError(f'{knob} must map repositories to values: {{"owner/repo": ...}}')
    return dict(value)


def _outcomes(value: Any) -> dict[str, str]:
    outcomes = _by_repository("outcomes_by_repository", value)
    wrong = sorted(repo for repo, outcome in outcomes.items() if outcome not in OUTCOMES)
    if wrong:
        raise ValueError(f"outcomes_by_repository: {wrong}: an outcome is one of {list(OUTCOMES)}")
    return outcomes


def _seconds(value: Any) -> dict[str, float]:
    seconds = _by_repository("seconds_by_repository", value)
    for repo, number in seconds.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number < math.inf:
            raise ValueError(f"seconds_by_repository: {repo!r}: expected a number of seconds >= 0")
    return {repo: float(number) for repo, number in seconds.items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # load tests open hundreds of connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is no error of the server's: stay quiet about it."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log
        return

    def _handle(self) -> None:
        emu = self.emulator
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if path.startswith("/_emulator/done/"):
            emu.log_request({"method": self.command, "path": path, "query": query, "body": None, "at": time.time()})
            status, answer = emu.done(path.rsplit("/", 1)[-1])
            self._send(status, json.dumps(answer), {})
            return
        if path.startswith("/_emulator/"):
            self._control(path, body)
            return
        entry: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "query": query,
            "body": body,
            "at": time.time(),
        }
        if emu.latency:
            time.sleep(emu.latency)
        wait = emu.admit(entry["at"])
        if wait is not None:
            answer = {"error": f"Rate limit exceeded: {emu.rate_limit_per_minute} per 1 minute"}
            entry.update(status=429, response=answer)
            emu.log_request(entry)
            self._send(429, json.dumps(answer), {"Retry-After": str(max(1, math.ceil(wait)))})
            return
        fault = emu.take_fault(self.command, path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                if fault.after:
                    emu.answer(self.command, path, query, body, self.headers)
                entry.update(status=None, response=None, fault="reset")
                emu.log_request(entry)
                self._reset()
                return
            if not fault.passthrough:
                payload = fault.raw if fault.raw is not None else json.dumps(fault.body)
                entry.update(status=fault.status, response=fault.body, fault=True)
                emu.log_request(entry)
                self._send(fault.status, payload, fault.headers)
                return
        # The log holds no header: the API key and a sandbox's session key are never on record.
        status, answer = emu.answer(self.command, path, query, body, self.headers)
        if isinstance(answer, bytes):  # a download (the trajectory zip)
            entry.update(status=status, response=f"<{len(answer)} bytes>")
            emu.log_request(entry)
            self._send(status, answer, {}, content_type="application/zip")
            return
        if isinstance(answer, PlainText):  # e.g. an unhandled server error's bare text
            entry.update(status=status, response=str(answer))
            emu.log_request(entry)
            self._send(status, str(answer), {}, content_type="text/plain; charset=utf-8")
            return
        entry.update(status=status, response=answer)
        emu.log_request(entry)
        self._send(status, json.dumps(answer), {})

    def _control(self, path: str, body: Any) -> None:
        emu = self.emulator
        body = body or {}
        try:
            if path == "/_emulator/stats":
                self._send(200, json.dumps(emu.stats()), {})
            elif path == "/_emulator/requests":
                with emu.lock:
                    self._send(200, json.dumps(emu.requests), {})
            elif path == "/_emulator/faults" and self.command == "POST":
                emu.add_fault(**body)
                self._send(200, json.dumps({"ok": True}), {})
            elif path == "/_emulator/outage" and self.command == "POST":
                emu.outage(**body)
                self._send(200, json.dumps({"ok": True}), {})
            elif path == "/_emulator/config" and self.command == "POST":
                emu.configure(**body)
                self._send(200, json.dumps({"ok": True}), {})
            elif path == "/_emulator/seed" and self.command == "POST":
                self._send(200, json.dumps(emu.seed(list(body.get("durations", [])))), {})
            elif path == "/_emulator/reset" and self.command == "POST":
                emu.reset()
                self._send(200, json.dumps({"ok": True}), {})
            else:
                self._send(404, json.dumps({"detail": "unknown control path"}), {})
        except (TypeError, ValueError) as exc:
            self._send(400, json.dumps({"detail": str(exc)}), {})

    def _send(
        self, status: int, payload: str | bytes, headers: dict[str, str], content_type: str = "application/json"
    ) -> None:
        data = payload if isinstance(payload, bytes) else payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Promise a body, send part of it, and drop the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"partial": ')
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = _handle
