"""A local OpenHands server for tests and offline demos: V1 and V0 endpoints on loopback.

It shares no code with the provider's client on purpose: it is written from the official OpenAPI
documents and the service's observed behaviour, so a client bug cannot hide behind the same bug
here. Standard library only.

Behaviour a test can steer:

* The agent's outcome and run time come from a marker in the message,
  ``[emulator outcome=error duration=3]`` (outcome ``finished`` by default; also ``error``,
  ``stuck``; ``start=error`` makes a V1 start task fail with a ``detail``), else from the
  emulator's ``conversation_seconds``.
* ``concurrency_limit``: one V1 conversation too many is refused with 429
  ``CONCURRENCY_LIMIT_REACHED``; a conversation holds a slot while its sandbox runs, even after the
  agent finished, until it is paused or deleted, as on the service.
* Faults (:meth:`Emulator.add_fault`): a status code, headers, a raw body, a delay, a reset
  connection, for requests matching a method and path pattern, a given number of times.
* Every request is logged (method, path, query, JSON body, answer); ``stats()`` gives the peak of
  live conversations, how many were created and stopped.
* Control endpoints (no auth, loopback only): ``GET /_emulator/stats``, ``GET /_emulator/requests``,
  ``POST /_emulator/faults``, ``/config``, ``/reset``, ``/seed`` (``{"durations": [...]}``: running
  conversations at once), and ``GET /_emulator/done/{id}`` (404 until the agent finished).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

START_STEPS = (
    "WORKING",
    "WAITING_FOR_SANDBOX",
    "PREPARING_REPOSITORY",
    "RUNNING_SETUP_SCRIPT",
    "SETTING_UP_GIT_HOOKS",
    "SETTING_UP_SKILLS",
    "STARTING_CONVERSATION",
    "READY",
)
_MARKER = re.compile(r"\[emulator ([^\]]*)\]")
USER_ID = "emulated-user"


def _now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), tz=timezone.utc).isoformat()


def _hex(value: str) -> str | None:
    try:
        return uuid.UUID(str(value)).hex
    except ValueError:
        return None


def _directives(message: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _MARKER.finditer(message or ""):
        for pair in match.group(1).split():
            key, _, value = pair.partition("=")
            found[key.strip()] = value.strip()
    return found


@dataclass
class Fault:
    """Answer matching requests with something other than the normal answer."""

    status: int = 500
    method: str | None = None
    path: str | None = None  # a regular expression searched in the path
    times: int = 1
    body: Any = None  # JSON-encoded unless ``raw`` is given
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection mid-answer
    after: bool = False  # with reset: act on the request first (the client never hears the answer)
    passthrough: bool = False  # only delay, then answer normally

    def matches(self, method: str, path: str) -> bool:
        if self.times <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Conversation:
    id: str
    api_version: str
    message: str
    repository: str | None
    branch: str | None
    git_provider: str | None
    title: str | None
    created: float
    ready_at: float  # V1: start task READY / V0: runtime RUNNING
    duration: float
    outcome: str
    start_error: bool = False
    start_task_id: str | None = None
    sandbox_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    paused_at: float | None = None
    stopped_at: float | None = None
    deleted: bool = False
    sandbox_override: str | None = None  # e.g. MISSING, set by a test
    status_override: str | None = None  # an execution status (even unknown), set by a test
    request: dict[str, Any] = field(default_factory=dict)

    def agent_status(self, now: float) -> str | None:
        """Execution status of the agent: None before the sandbox runs."""
        if now < self.ready_at:
            return None
        if self.status_override:
            return self.status_override
        if now < self.ready_at + self.duration:
            return "running"
        return self.outcome

    def finished_at(self) -> float:
        return self.ready_at + self.duration

    def alive(self, now: float) -> bool:
        """Holds an account slot: the sandbox is starting or running."""
        if self.deleted or self.paused_at is not None or self.stopped_at is not None or self.start_error:
            return False
        return self.sandbox_override not in ("MISSING", "ERROR")


class Emulator:
    """The emulated service. ``with Emulator() as emu: emu.url`` runs it on a free loopback port."""

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
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.concurrency_limit = concurrency_limit
        self.conversation_seconds = conversation_seconds
        self.start_seconds = start_seconds
        self.latency = latency
        #: ``{"owner/repo": "error"}``: the agent's outcome for conversations on that repository.
        self.outcomes_by_repository: dict[str, str] = {}
        self.lock = threading.RLock()
        self.conversations: dict[str, Conversation] = {}
        self.start_tasks: dict[str, str] = {}  # start task id -> conversation id
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.max_alive = 0
        self.created = 0
        self.stops = 0
        self.resumes = 0
        self.refused_for_capacity = 0
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

    def add_fault(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self.lock:
            self.conversations.clear()
            self.start_tasks.clear()
            self.requests.clear()
            self.faults.clear()
            self.max_alive = self.created = self.stops = self.resumes = self.refused_for_capacity = 0

    def alive_count(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(1 for c in self.conversations.values() if c.alive(now))

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "created": self.created,
                "alive": self.alive_count(),
                "max_alive": self.max_alive,
                "stops": self.stops,
                "resumes": self.resumes,
                "refused_for_capacity": self.refused_for_capacity,
                "requests": len(self.requests),
                "concurrency_limit": self.concurrency_limit,
            }

    def requests_to(self, method: str, path_pattern: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["method"] == method and re.search(path_pattern, r["path"])]

    def conversation(self, conversation_id: str) -> Conversation:
        return self.conversations[_hex(conversation_id) or conversation_id]

    # -- V1 --------------------------------------------------------------------------------------

    def _new_conversation(self, api_version: str, body: dict[str, Any], message: str) -> Conversation:
        now = time.time()
        wanted = body.get("conversation_id")
        directives = _directives(message)
        conversation = Conversation(
            id=(_hex(wanted) if wanted else None) or uuid.uuid4().hex,
            api_version=api_version,
            message=message,
            repository=body.get("selected_repository") or body.get("repository"),
            branch=body.get("selected_branch"),
            git_provider=body.get("git_provider"),
            title=body.get("title") or (message[:50] if message else None),
            created=now,
            ready_at=now + self.start_seconds,
            duration=float(directives.get("duration", self.conversation_seconds)),
            outcome=directives.get("outcome")
            or self.outcomes_by_repository.get(body.get("selected_repository") or body.get("repository") or "")
            or "finished",
            start_error=directives.get("start") == "error",
            request={k: v for k, v in body.items() if k != "secrets"},
        )
        self.conversations[conversation.id] = conversation
        self.created += 1
        self.max_alive = max(self.max_alive, self.alive_count(now))
        return conversation

    def _capacity_refusal(self) -> tuple[int, Any] | None:
        current = self.alive_count()
        if current < self.concurrency_limit:
            return None
        self.refused_for_capacity += 1
        return 429, {
            "detail": {
                "error": "CONCURRENCY_LIMIT_REACHED",
                "message": f"You have reached the maximum of {self.concurrency_limit} concurrent conversations.",
                "limit": self.concurrency_limit,
                "current": current,
            }
        }

    def v1_start(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}]}
        message = ""
        initial = body.get("initial_message") or {}
        for part in initial.get("content") or []:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                message += part.get("text", "")
        wanted = body.get("conversation_id")
        if wanted is not None and _hex(wanted) is None:
            return 422, {"detail": [{"loc": ["body", "conversation_id"], "msg": "Input should be a valid UUID"}]}
        if wanted and _hex(wanted) in self.conversations:
            return 409, {"detail": f"Conversation {wanted} already exists"}
        refusal = self._capacity_refusal()
        if refusal:
            return refusal
        conversation = self._new_conversation("v1", body, message)
        conversation.start_task_id = uuid.uuid4().hex
        self.start_tasks[conversation.start_task_id] = conversation.id
        return 200, self._start_task_json(conversation, time.time())

    def _start_task_status(self, conversation: Conversation, now: float) -> str:
        elapsed = now - conversation.created
        step = int(elapsed / max(self.start_seconds, 1e-9) * (len(START_STEPS) - 1))
        if conversation.start_error and step >= 2:
            return "ERROR"
        return START_STEPS[min(step, len(START_STEPS) - 1)] if now < conversation.ready_at else "READY"

    def _start_task_json(self, conversation: Conversation, now: float) -> dict[str, Any]:
        status = self._start_task_status(conversation, now)
        ready = status == "READY"
        return {
            "id": conversation.start_task_id,
            "created_by_user_id": USER_ID,
            "status": status,
            "detail": "Sandbox failed to start: repository clone failed" if status == "ERROR" else None,
            "app_conversation_id": conversation.id if ready else None,
            "sandbox_id": conversation.sandbox_id if ready else None,
            "agent_server_url": f"{self.url}/agent/{conversation.sandbox_id}" if ready else None,
            "request": conversation.request,
            "created_at": _now_iso(conversation.created),
            "updated_at": _now_iso(now),
        }

    def v1_start_tasks(self, ids: list[str]) -> tuple[int, Any]:
        now = time.time()
        answer = []
        for task_id in ids:
            conversation_id = self.start_tasks.get(_hex(task_id) or task_id)
            conversation = self.conversations.get(conversation_id) if conversation_id else None
            answer.append(self._start_task_json(conversation, now) if conversation else None)
        return 200, answer

    def _v1_sandbox_status(self, conversation: Conversation, now: float) -> str:
        if conversation.sandbox_override:
            return conversation.sandbox_override
        if conversation.paused_at is not None:
            return "PAUSED"
        if conversation.start_error:
            return "ERROR"
        return "RUNNING" if now >= conversation.ready_at else "STARTING"

    def _v1_conversation_json(self, conversation: Conversation, now: float) -> dict[str, Any]:
        sandbox = self._v1_sandbox_status(conversation, now)
        execution = conversation.agent_status(now) if sandbox == "RUNNING" else None
        # What the agent did stays on record when the sandbox is paused afterwards.
        done_by = conversation.paused_at if conversation.paused_at is not None else now
        done = conversation.agent_status(done_by) == "finished"
        ran = max(0.0, min(done_by, conversation.finished_at()) - conversation.ready_at)
        return {
            "id": conversation.id,
            "created_by_user_id": USER_ID,
            "sandbox_id": conversation.sandbox_id,
            "selected_repository": conversation.repository,
            "selected_branch": conversation.branch,
            "git_provider": conversation.git_provider,
            "title": conversation.title,
            "trigger": "openhands_api",
            "pr_number": [1000 + int(conversation.id[:4], 16) % 9000] if done else [],
            "llm_model": "emulated-model",
            "agent_kind": "openhands",
            "metrics": {
                "model_name": "emulated-model",
                "accumulated_cost": round(0.01 * ran, 4),
                "max_budget_per_task": None,
                "accumulated_token_usage": {
                    "model": "emulated-model",
                    "prompt_tokens": int(1000 * ran),
                    "completion_tokens": int(200 * ran),
                },
            },
            "parent_conversation_id": None,
            "sub_conversation_ids": [],
            "public": False,
            "tags": {},
            "created_at": _now_iso(conversation.created),
            "updated_at": _now_iso(now),
            "sandbox_status": sandbox,
            "execution_status": execution,
            "conversation_url": f"{self.url}/agent/{conversation.sandbox_id}/conversations/{conversation.id}",
            "session_api_key": f"session-{conversation.sandbox_id}" if sandbox == "RUNNING" else None,
            "acp_server": None,
            "launched_agent_profile": None,
        }

    def v1_conversations(self, ids: list[str]) -> tuple[int, Any]:
        now = time.time()
        answer = []
        for conversation_id in ids:
            key = _hex(conversation_id)
            if key is None:
                return 400, {"detail": f"Invalid UUID: {conversation_id}"}
            conversation = self.conversations.get(key)
            visible = conversation and conversation.api_version == "v1" and not conversation.deleted
            answer.append(self._v1_conversation_json(conversation, now) if visible else None)
        return 200, answer

    def v1_search(self, limit: int) -> tuple[int, Any]:
        now = time.time()
        items = [
            self._v1_conversation_json(c, now)
            for c in self.conversations.values()
            if c.api_version == "v1" and not c.deleted
        ]
        return 200, {"items": items[:limit], "next_page_id": None}

    def v1_pause(self, sandbox_id: str) -> tuple[int, Any]:
        for conversation in self.conversations.values():
            if conversation.sandbox_id == sandbox_id:
                if conversation.paused_at is None:
                    conversation.paused_at = time.time()
                    self.stops += 1
                return 200, {"success": True}
        return 404, {"detail": "Item not found"}

    def seed(self, durations: list[float]) -> list[dict[str, Any]]:
        """Create running V1 conversations at once (no start phase), for benchmarks and load tests."""
        now = time.time()
        created = []
        with self.lock:
            for duration in durations:
                conversation = self._new_conversation("v1", {}, "seeded [emulator]")
                conversation.ready_at = now
                conversation.duration = float(duration)
                created.append({"id": conversation.id, "finishes_at": conversation.finished_at()})
        return created

    def done(self, conversation_id: str) -> tuple[int, Any]:
        """404 until the agent finished, then 200: a status endpoint a plain HTTP sensor can poll."""
        conversation = self.conversations.get(_hex(conversation_id) or conversation_id)
        if conversation is None or conversation.agent_status(time.time()) in (None, "running"):
            return 404, {"detail": "not finished"}
        return 200, {"finished_at": conversation.finished_at()}

    def v1_resume(self, sandbox_id: str) -> tuple[int, Any]:
        for conversation in self.conversations.values():
            if conversation.sandbox_id == sandbox_id:
                if conversation.paused_at is not None:
                    refusal = self._capacity_refusal()
                    if refusal:
                        return refusal
                    conversation.paused_at = None
                    self.resumes += 1
                    self.max_alive = max(self.max_alive, self.alive_count())
                return 200, {"success": True}
        return 404, {"detail": "Item not found"}

    # -- V0 --------------------------------------------------------------------------------------

    def v0_start(self, body: Any) -> tuple[int, Any]:
        allowed = {
            "repository",
            "git_provider",
            "selected_branch",
            "initial_user_msg",
            "image_urls",
            "replay_json",
            "suggested_task",
            "create_microagent",
            "conversation_instructions",
            "mcp_config",
            "conversation_id",
        }
        if not isinstance(body, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}]}
        extra = sorted(set(body) - allowed)
        if extra:
            return 422, {"detail": [{"loc": ["body", k], "msg": "Extra inputs are not permitted"} for k in extra]}
        wanted = body.get("conversation_id")
        if wanted and (_hex(wanted) or wanted) in self.conversations:
            return 409, {"detail": f"Conversation {wanted} already exists"}
        conversation = self._new_conversation("v0", body, body.get("initial_user_msg") or "")
        return 200, {
            "status": "ok",
            "conversation_id": conversation.id,
            "message": None,
            "conversation_status": "STARTING",
        }

    def _v0_info(self, conversation: Conversation, now: float) -> dict[str, Any]:
        if conversation.stopped_at is not None:
            status, runtime = "STOPPED", "STATUS$STOPPED"
        elif now < conversation.ready_at:
            status, runtime = "STARTING", "STATUS$STARTING_RUNTIME"
        else:
            status, runtime = "RUNNING", "STATUS$READY"
        return {
            "conversation_id": conversation.id,
            "title": conversation.title or "",
            "last_updated_at": _now_iso(now),
            "status": status,
            "runtime_status": runtime,
            "selected_repository": conversation.repository,
            "selected_branch": conversation.branch,
            "git_provider": conversation.git_provider,
            "trigger": "openhands_api",
            "num_connections": 0,
            "url": f"{self.url}/agent/{conversation.sandbox_id}",
            "session_api_key": f"session-{conversation.sandbox_id}",
            "created_at": _now_iso(conversation.created),
            "pr_number": [],
        }

    def _v0_events(self, conversation: Conversation, now: float) -> list[dict[str, Any]]:
        """``agent_state_changed`` observations, oldest first, as far as time has come."""
        end = conversation.stopped_at or now
        steps = [(conversation.ready_at, "loading"), (conversation.ready_at + 0.01, "running")]
        final = {"finished": "awaiting_user_input", "error": "error", "stuck": "error"}.get(conversation.outcome)
        steps.append((conversation.finished_at(), final or conversation.outcome))
        if conversation.stopped_at is not None:
            steps.append((conversation.stopped_at, "stopped"))
        events = []
        for number, (at, state) in enumerate(s for s in steps if s[0] <= end):
            events.append(
                {
                    "id": number * 2 + 1,
                    "timestamp": _now_iso(at),
                    "source": "agent",
                    "observation": "agent_state_changed",
                    "content": "",
                    "extras": {"agent_state": state, "reason": ""},
                    "message": f"Agent state changed to {state}",
                }
            )
        return events

    def v0_get(self, conversation_id: str) -> tuple[int, Any]:
        conversation = self.conversations.get(_hex(conversation_id) or conversation_id)
        if conversation is None or conversation.api_version != "v0":
            return 200, None
        return 200, self._v0_info(conversation, time.time())

    def v0_events(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        conversation = self.conversations.get(_hex(conversation_id) or conversation_id)
        if conversation is None:
            return 404, {"detail": "Conversation not found"}
        events = self._v0_events(conversation, time.time())
        if (query.get("reverse") or ["false"])[0].lower() == "true":
            events.reverse()
        limit = int((query.get("limit") or ["20"])[0])
        return 200, {"events": events[:limit], "has_more": len(events) > limit}

    def v0_stop(self, conversation_id: str) -> tuple[int, Any]:
        conversation = self.conversations.get(_hex(conversation_id) or conversation_id)
        if conversation is None:
            return 404, {"detail": "Conversation not found"}
        if conversation.stopped_at is None:
            conversation.stopped_at = time.time()
            self.stops += 1
        return 200, {"status": "ok", "conversation_id": conversation.id, "conversation_status": "STOPPED"}

    def v0_list(self) -> tuple[int, Any]:
        now = time.time()
        results = [self._v0_info(c, now) for c in self.conversations.values() if c.api_version == "v0"]
        return 200, {"results": results, "next_page_id": None}

    # -- routing -----------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self.lock:
            if method == "POST" and path == "/api/v1/app-conversations":
                return self.v1_start(body)
            if method == "GET" and path == "/api/v1/app-conversations":
                return self.v1_conversations(query.get("ids", []))
            if method == "GET" and path == "/api/v1/app-conversations/start-tasks":
                return self.v1_start_tasks(query.get("ids", []))
            if method == "GET" and path == "/api/v1/app-conversations/search":
                return self.v1_search(int((query.get("limit") or ["100"])[0]))
            match = re.fullmatch(r"/api/v1/sandboxes/([^/]+)/(pause|resume)", path)
            if method == "POST" and match:
                sandbox_id, action = match.groups()
                return self.v1_pause(sandbox_id) if action == "pause" else self.v1_resume(sandbox_id)
            if method == "POST" and path == "/api/conversations":
                return self.v0_start(body)
            if method == "GET" and path == "/api/conversations":
                return self.v0_list()
            match = re.fullmatch(r"/api/conversations/([^/]+)(/events|/stop)?", path)
            if match:
                conversation_id, tail = match.groups()
                if method == "GET" and tail is None:
                    return self.v0_get(conversation_id)
                if method == "GET" and tail == "/events":
                    return self.v0_events(conversation_id, query)
                if method == "POST" and tail == "/stop":
                    return self.v0_stop(conversation_id)
            return 404, {"detail": "Not Found"}

    def authorized(self, headers: Any) -> bool:
        auth = headers.get("Authorization") or ""
        token = (
            auth[7:]
            if auth.startswith("Bearer ")
            else headers.get("X-Access-Token") or headers.get("X-Session-API-Key")
        )
        return token == self.api_key

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)


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
        path, query = parts.path, parse_qs(parts.query)
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
        fault = emu.take_fault(self.command, path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                if fault.after and emu.authorized(self.headers):
                    emu.route(self.command, path, query, body)
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
        if not emu.authorized(self.headers):
            status, answer = 401, {"error": "failed to authenticate"}
        else:
            status, answer = emu.route(self.command, path, query, body)
        entry.update(status=status, response=answer)
        emu.log_request(entry)
        self._send(status, json.dumps(answer), {})

    def _control(self, path: str, body: Any) -> None:
        emu = self.emulator
        if path == "/_emulator/stats":
            self._send(200, json.dumps(emu.stats()), {})
        elif path == "/_emulator/requests":
            with emu.lock:
                self._send(200, json.dumps(emu.requests), {})
        elif path == "/_emulator/faults" and self.command == "POST":
            emu.add_fault(**(body or {}))
            self._send(200, json.dumps({"ok": True}), {})
        elif path == "/_emulator/config" and self.command == "POST":
            for key in ("concurrency_limit", "conversation_seconds", "start_seconds", "latency"):
                if key in (body or {}):
                    setattr(emu, key, body[key])
            self._send(200, json.dumps({"ok": True}), {})
        elif path == "/_emulator/seed" and self.command == "POST":
            self._send(200, json.dumps(emu.seed(list((body or {}).get("durations", [])))), {})
        elif path == "/_emulator/reset" and self.command == "POST":
            emu.reset()
            self._send(200, json.dumps({"ok": True}), {})
        else:
            self._send(404, json.dumps({"detail": "unknown control path"}), {})

    def _send(self, status: int, payload: str, headers: dict[str, str]) -> None:
        data = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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
