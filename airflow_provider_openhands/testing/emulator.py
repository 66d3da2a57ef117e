"""A local OpenHands server for tests and offline demos: V1 and V0 endpoints on loopback.

It shares no code with the provider's client on purpose: it is written from the official OpenAPI
documents and the service's observed behaviour (``openhands-ai`` 1.11 and OpenHands Cloud), so a
client bug cannot hide behind the same bug here. Standard library only.

The rule: **exactly as strict as the real service, never kinder**. Where the spec and the observed
server are silent, the emulator picks the stricter behaviour (marked *stricter* below).

V1 endpoints (``Authorization: Bearer <api_key>``; else 401 ``{"error": "failed to authenticate"}``):

* ``POST /api/v1/app-conversations`` -> a start task (timestamps end in ``Z``). Start task ids,
  conversation ids and sandbox ids are 32 hex digits; a client-chosen ``conversation_id`` (dashed or
  not) is honoured, and **the sandbox id then equals the conversation id** (as on the real server;
  without a chosen id the sandbox id is random). The start task's ``request`` echoes the request
  (``secrets`` left out), its ``conversation_id`` written as a dashed UUID whichever form was sent.
  ``observability_tags`` (a list of strings), ``observability_metadata`` (string keys; values a string,
  boolean, integer or number, or a list of one such type) and ``observability_span_name`` are checked
  as ``AppConversationStartRequest`` types them (else 422) and echoed in that ``request``, the only
  place the spec has for them (read them back there or from ``emu.conversation(id).request``;
  ``AppConversation.tags`` stays ``{}``: it holds the server's own tags). The open-source
  ``openhands-ai`` 1.11 model has no such fields and drops them silently. A message whose
  ``[emulator ...]`` markers are malformed is refused with 400 ``{"detail": "emulator marker: ..."}``
  (a test-authoring error, here and in send-message).
* A ``conversation_id`` already used (*stricter*: even by a start that failed or a conversation since
  deleted) is **not** refused: the answer is 200 and that new start task ends in ``ERROR`` with
  ``detail`` "Server error '500 Internal Server Error' for url
  'http://localhost:<port>/api/conversations'..." (as observed), ``app_conversation_id`` null,
  ``sandbox_id`` the conversation id. **The original is not unaffected**: the second boot takes its
  sandbox over (from the POST on, *stricter*): the original then reads sandbox ``RUNNING`` with
  ``execution_status`` null for good (it never finishes), its events and ``pr_number``/metrics stop
  at the takeover (*stricter*), send-message to it answers 502 "Agent server error: 404".
* ``GET /api/v1/app-conversations?ids=..`` and ``GET /api/v1/app-conversations/start-tasks?ids=..``:
  repeated ``ids`` parameters; ``null`` in place for unknown ids. Conversations: 100 ids or more ->
  400 "Maximum is 99". Start tasks: 100 ids -> 200 with 100 answers (as observed); more than 100 ->
  400 (*stricter*: not seen). A value that is not a UUID (comma-separated ids, blank) -> 400; no
  ``ids`` -> 422 ``{"detail": [...]}``. Start task timestamps carry no time zone here (as observed).
  **Before its start task is READY a conversation does not exist**: ``null`` in its place; the start
  task's ``app_conversation_id`` and ``sandbox_id`` are set only at READY (the reused-id ``ERROR``
  above aside). A READY start task's ``updated_at`` is the moment it became READY, not the read.
* ``GET /api/v1/app-conversations/start-tasks/search`` (``conversation_id__eq``, compared canonically
  **with ``app_conversation_id`` only, as on the real server: it finds a start task only once it is
  READY**, ``items: []`` before; ``created_at__gte``; ``sort_order``
  ``CREATED_AT``/``CREATED_AT_DESC`` (default)/``UPDATED_AT``/``UPDATED_AT_DESC``; ``limit`` 1..100;
  ``page_id``) -> ``{"items": [...], "next_page_id": ...}``; ``next_page_id`` is set when more than
  ``limit`` match. Bad values -> 422. A client finds its earlier start before READY by listing the
  recent start tasks (``created_at__gte``, newest first, page by page) and matching
  ``request.conversation_id``.
* ``GET /api/v1/app-conversations/search`` (``limit``, ``page_id``): conversations past READY only.
* ``GET /api/v1/conversation/{id}/events/search`` (``kind__eq``, ``sort_order``
  ``TIMESTAMP``/``TIMESTAMP_DESC``, ``limit``, ``page_id``, ``timestamp__gte``, ``timestamp__lt``)
  -> ``{"items": [...], "next_page_id": ...}``; unknown conversation -> 200, no items. Per turn: the
  user's ``MessageEvent``, a ``ConversationStateUpdateEvent`` (``key: execution_status``) for
  ``running`` and for the end, and at the end either the agent's ``ActionEvent`` (``tool_name:
  finish``, ``FinishAction`` with the final message "Done: <first 40 chars of the task>", or the
  ``finish="..."`` marker's text) then an
  ``ObservationEvent`` (``FinishObservation``), or a ``ConversationErrorEvent`` (``code``,
  ``detail``) for outcome ``error`` (``stuck``: only the state update). Events stay readable while
  the sandbox is PAUSED, up to the pause. Event timestamps are ISO without time zone, as the SDK
  writes them.
* ``POST /api/v1/app-conversations/{id}/send-message`` -> ``{"success": true, "sandbox_status":
  "RUNNING", "message": null}``; starts a new turn (its own markers apply; after the current turn if
  one runs). For ``turn_lag_seconds`` (0.5 s) polls still show the previous turn's state and
  ``updated_at``; the new user ``MessageEvent`` is visible at once. Sandbox PAUSED -> 409 "Sandbox is
  PAUSED. Use POST /api/v1/sandboxes/<id>/resume ..."; unknown (or not yet READY) -> 404; sandbox
  ERROR -> 503, MISSING -> 410 (*stricter*: the spec lists these codes, the real server was not seen
  to use them); sandbox taken over by a reused conversation id -> 502 "Agent server error: 404" (as
  observed); a body not matching ``AppSendMessageRequest`` -> 422.
* ``metrics``: ``accumulated_cost`` grows linearly while each turn runs, from what earlier turns
  cost to that plus the turn's cost (the ``cost=`` marker, else ``COST_PER_SECOND`` = 0.01 per second
  of the turn), so a budget check sees it cross a threshold mid-run; ``accumulated_token_usage``
  grows with it (100 000 prompt and 20 000 completion tokens per dollar). It stops growing at a pause
  (and at a takeover) and resumes with the sandbox.
* The agent's workspace (``/workspace/project``, the Cloud sandbox's working directory; with a
  ``selected_repository`` ``owner/name`` the project and git repository is
  ``/workspace/project/name``, as the server clones it; relative marker paths are relative to it).
  What a turn changed (``change=``/``write=``/``output=`` markers) appears **at once when the turn
  ends, and only if it ended** ``finished`` (*stricter*: the real workspace changes while the agent
  works; a turn that ended ``error``/``stuck`` left nothing). The three endpoints below answer only
  while the sandbox runs, as in the real server's code: unknown (or not yet READY) conversation ->
  404 ``{"detail": "Conversation <uuid> is not reachable"}``; sandbox PAUSED -> **409**
  ``{"detail": "Sandbox is paused; resume it before reading git state."}`` (``... reading files.``
  for ``file``, *stricter*); sandbox STARTING/ERROR (a transient ERROR too)/MISSING -> 404 "not
  reachable"; sandbox taken over by a reused id -> 502 "Agent server error: 404" (*stricter*). A
  client must read them **before it pauses the sandbox** (or resume it first). A conversation id that
  is not a UUID, or a required query parameter missing, -> FastAPI's 422.

  * ``GET /api/v1/app-conversations/{id}/git/changes?path=<repository root>[&ref=]`` -> the agent
    server's ``list[GitChange]``: ``[{"status": "ADDED"|"UPDATED"|"DELETED", "path": "<file>"}]``,
    paths relative to the repository, sorted by path. The real enum is ``MOVED/ADDED/DELETED/UPDATED``
    (no ``MODIFIED``): a change ``M`` is ``UPDATED``, and a rename is listed as the old path
    ``DELETED`` plus the new one ``ADDED`` (as ``git diff --name-status`` is read). Files written
    with ``write=``/``output=`` inside the repository count as ``ADDED`` (untracked files are listed).
    ``path`` required (422 without). Any ``path`` other than the repository root (normalised; a
    relative path, ``/workspace/project`` when a repository is cloned below it) is "not a git
    repository": ``[]``, as the agent server answers. ``ref`` is accepted and changes nothing.
  * ``GET /api/v1/app-conversations/{id}/git/diff?path=<file>[&ref=]`` -> the agent server's
    ``GitDiff``: ``{"modified": "<text now>", "original": "<text at the base ref>"}``; ``modified``
    is read as the agent server does (lines joined by ``\n``: no final newline); an added file's
    ``original`` is ``""``. A file that does not exist (a ``DELETED`` one too) or is over 1 MiB
    (``MAX_DIFF_FILE_BYTES``) -> 502 ``{"detail": "Agent server error: 400"}`` (the agent server's
    400, passed on as the app server does). *Stricter*: ``path`` must be absolute (the agent server
    resolves a relative one against its own working directory), and a file the agent did not touch
    counts as not existing (-> 502). A file written outside the repository -> ``{"modified": null,
    "original": null}`` (not in a git repository, as observed in the code).
  * ``GET /api/v1/app-conversations/{id}/file?file_path=<absolute path>`` (default
    ``/workspace/project/PLAN.md``, as in the spec) -> the file's text as a JSON string. A file the
    agent did not write (or deleted), a relative ``file_path`` (the agent server wants absolute
    paths), or a read before the turn that writes it ended -> **404** (``{"detail": "File not
    found"}`` / ``"Path must be absolute"``): *stricter* than the real server, which answers **200
    ``""``** for every miss and every refusal (unknown conversation, sandbox not running, relative
    path, any error). The knob ``missing_file_answer="empty"`` makes every miss and refusal answer
    200 ``""`` as it does (422s aside), to test a client against that too.
* ``POST /api/v1/sandboxes/{id}/pause`` and ``/resume`` -> ``{"success": true}``; unknown -> 404.
  Resume on a full account -> the 429 ``CONCURRENCY_LIMIT_REACHED`` answer.
* ``DELETE /api/v1/app-conversations/{id}`` -> ``{"success": true}``; unknown -> 404.
* ``updated_at`` moves only when the state changes (ready, turn start/end, pause, resume), not on
  every read (*stricter*). ``execution_status``, ``session_api_key`` and ``conversation_url`` are
  ``null`` unless the sandbox is RUNNING (PAUSED as observed; STARTING/ERROR *stricter*).

Knobs (constructor keyword arguments; also ``POST /_emulator/config`` with the same names):

* ``concurrency_limit`` (10): one start too many, or a resume too many, is refused with 429
  ``CONCURRENCY_LIMIT_REACHED``. A sandbox holds its slot from the POST until it is paused or
  deleted, **even after the agent finished**, as on the service; a start task that ends in ERROR
  holds one until the ERROR shows (*stricter*).
* ``capacity_error_style``: ``"nested"`` (default, ``{"detail": {"error": ..., "message", "limit",
  "current"}}``) or ``"flat"`` (``{"error": "CONCURRENCY_LIMIT_REACHED", ...}``). No Retry-After.
* ``daily_sandbox_limit`` (None): once that many sandboxes were created in the current UTC day
  (every accepted V1 POST and ``seed`` counts; *stricter*: starts that fail count too), the POST
  answers 429 ``{"detail": {"error": "DAILY_SANDBOX_LIMIT_REACHED", "message", "limit", "reset_at"}}``.
* ``rate_limit_per_minute`` (None): over that many API requests (control calls excluded) in any
  60 s window -> 429 ``{"error": "Rate limit exceeded: N per 1 minute"}`` with ``Retry-After``.
  Refused requests do not count against the window. :meth:`Emulator.requests_per_minute` gives the
  peak of API requests seen in any 60 s window (``max_requests_per_minute`` in ``stats()``).
* ``turn_lag_seconds`` (0.5), ``conversation_seconds``, ``start_seconds``, ``latency``.
* ``missing_file_answer``: ``"404"`` (default, *stricter*) or ``"empty"`` (the real server's 200 ``""``)
  for ``GET .../file`` misses and refusals.
* ``outcomes_by_repository``: ``{"owner/repo": "error"}``.
* Markers in a message: ``[emulator outcome=error duration=3]`` (outcome ``finished`` by default;
  also ``error``, ``stuck``), ``start=error`` (the start task fails with a ``detail``),
  ``start=capacity`` (the start task fails with the ``detail`` "Sandbox could not start: maximum
  number of concurrent conversations (<concurrency_limit>) reached": how the service refused a start
  on a full account before it answered 429), ``sandbox_error=2`` (the sandbox reads ``ERROR`` with
  ``execution_status`` null for 2 s in the middle of the run, then ``RUNNING`` again; the run lasts
  that much longer: sandbox ERROR alone is not proof of failure), ``finish="All done: text"`` (the
  agent's final answer, its ``FinishAction`` message, for that turn). Values may be quoted (``"..."``
  or ``'...'``) to hold spaces or ``]``, and a quoted value its own quote escaped with a backslash
  (``"{\\"a\\": 1}"``; other backslashes are kept as written); every ``[emulator ...]`` marker in a
  message counts. What the agent does to its workspace, per turn (applied at the end of a turn that
  ends ``finished``, in order; repeatable keys):

  * ``change=<path>:<STATUS>`` with STATUS ``ADDED``, ``UPDATED`` (or its alias ``MODIFIED``,
    listed as ``UPDATED``) or ``DELETED``; ``change=<old>-><new>:RENAMED`` (or ``MOVED``) deletes the
    old path and adds the new one with the old text. E.g. ``[emulator change=src/app.py:MODIFIED
    change=README.md:ADDED]``. Texts are generated: an updated file's ``original`` is three lines, its
    new text two of them and a line naming the turn.
  * ``diff_bytes=200000``: each file this turn's ``change=`` markers add or update gets a new text of
    exactly that many characters (over 1 MiB its diff is refused, as on the agent server).
  * ``write="<path>:<text>"`` (path before the first colon; quote the value:
    ``[emulator write='report.json:{"a": 1}']``): the agent writes that file (text kept verbatim,
    so invalid JSON can be scripted too); ``output="<text>"`` writes ``openhands_output.json`` (the
    provider's structured-output file) in the project directory. Each write is also on record as the
    real agent's ``file_editor`` ``create`` ``ActionEvent`` (``FileEditorAction``: ``path``,
    ``file_text``) and its ``FileEditorObservation``, before the turn's ``finish``.
  * ``cost=2.5``: what the turn costs in all (``metrics.accumulated_cost`` reaches it at the end).
* Faults (:meth:`Emulator.add_fault`, ``POST /_emulator/faults``): a status code, headers, a raw
  body, a delay (``passthrough``: delay then answer normally), a reset connection, for requests
  matching a method and a path pattern, ``times`` times (1 by default) and/or for ``seconds`` from
  when it was added (an outage window: every matching request in it). :meth:`Emulator.outage`
  (``POST /_emulator/outage``) is the shorthand for a 503 window.
* Tests may set ``conversation(id).sandbox_override`` (e.g. ``MISSING``) or ``status_override``.

Every request is logged (``requests``: method, path, query, JSON body, answer); ``stats()`` gives
the peak of live conversations, how many were created and stopped. Control endpoints (no auth):
``GET /_emulator/stats``, ``GET /_emulator/requests``, ``POST /_emulator/faults``, ``/outage``,
``/config``, ``/reset``, ``/seed`` (``{"durations": [...]}``: running conversations at once), and
``GET /_emulator/done/{id}`` (404 until the agent's last turn ended).

V0 (``/api/conversations``) is kept as it was, including 409 for a reused ``conversation_id``.
"""

from __future__ import annotations

import contextlib
import json
import math
import posixpath
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
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
START_TASK_SORT_ORDERS = ("CREATED_AT", "CREATED_AT_DESC", "UPDATED_AT", "UPDATED_AT_DESC")
EVENT_SORT_ORDERS = ("TIMESTAMP", "TIMESTAMP_DESC")
EVENT_KINDS = (
    "ServerErrorEvent",
    "ACPToolCallEvent",
    "Condensation",
    "CondensationRequest",
    "CondensationSummaryEvent",
    "ConversationErrorEvent",
    "ConversationStateUpdateEvent",
    "HookExecutionEvent",
    "LLMCompletionLogEvent",
    "ActionEvent",
    "MessageEvent",
    "AgentErrorEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "SystemPromptEvent",
    "StreamingDeltaEvent",
    "TokenEvent",
    "InterruptEvent",
    "PauseEvent",
)
MAX_IDS = 99  # conversations in one batch read
MAX_START_TASK_IDS = 100  # start tasks in one batch read: 100 seen to work; more refused (stricter)
CONFIG_KEYS = (
    "concurrency_limit",
    "conversation_seconds",
    "start_seconds",
    "latency",
    "daily_sandbox_limit",
    "capacity_error_style",
    "rate_limit_per_minute",
    "turn_lag_seconds",
    "missing_file_answer",
)
WORKSPACE_ROOT = "/workspace/project"  # the Cloud sandbox's working_dir; a repository is cloned below it
OUTPUT_FILE = "openhands_output.json"  # what ``[emulator output=...]`` writes, in the project directory
MAX_DIFF_FILE_BYTES = 1024 * 1024  # the agent server's cap for git diff: a bigger file is an error there
CHANGE_STATUSES = {"UPDATED": "UPDATED", "MODIFIED": "UPDATED", "ADDED": "ADDED", "DELETED": "DELETED"}
RENAME_STATUSES = ("RENAMED", "MOVED")
COST_PER_SECOND = 0.01  # a turn's default cost per second of running, when no ``cost=`` marker sets it
TOKENS_PER_DOLLAR = (100_000, 20_000)  # prompt and completion tokens per dollar spent
# ``[emulator key=value key="a quoted value, ] and all"]``: quoted values may hold spaces and ``]``,
# and their own quote escaped with a backslash (``"{\\"a\\": 1}"``); other backslashes stay as written.
_MARKER = re.compile(r"""\[emulator\b((?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\]"'])*)\]""")
_PAIR = re.compile(r"""([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s"']*))""")
_EVENT_NAMESPACE = uuid.UUID("6f1b6a3e-0c8e-4d55-9a43-6b0b1c1e0a11")
USER_ID = "emulated-user"
_SEND_ID = re.compile(r"/api/v1/app-conversations/([^/]+)/send-message")


def _now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), tz=timezone.utc).isoformat()


def _naive_iso(at: float) -> str:
    """UTC, without a time zone: how start-task reads and SDK events write timestamps."""
    return datetime.fromtimestamp(at, tz=timezone.utc).replace(tzinfo=None).isoformat()


def _z_iso(at: float) -> str:
    return _naive_iso(at) + "Z"


def _hex(value: Any) -> str | None:
    try:
        return uuid.UUID(str(value)).hex
    except ValueError:
        return None


def _directive_pairs(message: str) -> list[tuple[str, str]]:
    """Every ``key=value`` pair of every ``[emulator ...]`` marker in a message, in order."""
    found: list[tuple[str, str]] = []
    for match in _MARKER.finditer(message or ""):
        for pair in _PAIR.finditer(match.group(1)):
            key, double, single, bare = pair.groups()
            if double is not None:
                value = double.replace('\\"', '"')
            elif single is not None:
                value = single.replace("\\'", "'")
            else:
                value = bare or ""
            found.append((key, value.strip() if key not in ("write", "output") else value))
    return found


def _directives(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of every ``[emulator ...]`` marker in a message (later ones win)."""
    return dict(_directive_pairs(message))


def _change_spec(spec: str) -> list[tuple[str, str]]:
    """``path:STATUS`` -> [(path, status)]; ``old->new:RENAMED`` -> [(old, DELETED), (new, ADDED)]."""
    path, sep, status = spec.rpartition(":")
    status = status.strip().upper()
    if not sep or not path.strip():
        raise ValueError(f"change={spec!r}: expected change=<path>:<STATUS>")
    if status in RENAME_STATUSES:
        old, arrow, new = path.partition("->")
        if not arrow or not old.strip() or not new.strip():
            raise ValueError(f"change={spec!r}: a rename is change=<old>-><new>:RENAMED")
        return [(old.strip(), "DELETED"), (new.strip(), "RENAMED_TO")]
    if status not in CHANGE_STATUSES:
        raise ValueError(f"change={spec!r}: status must be one of {sorted(CHANGE_STATUSES)} or RENAMED")
    return [(path.strip(), CHANGE_STATUSES[status])]


def _marker_problem(message: str) -> str | None:
    """What is wrong with a message's ``[emulator ...]`` markers, if anything (a test-authoring error)."""
    try:
        for key, value in _directive_pairs(message):
            if key == "change":
                _change_spec(value)
            elif key == "write" and not value.partition(":")[0].strip():
                raise ValueError(f"write={value!r}: expected write=<path>:<text>")
            elif key in ("cost", "diff_bytes", "duration", "sandbox_error") and (
                not value or float(value) < 0 or math.isnan(float(value))
            ):
                raise ValueError(f"{key}={value!r}: expected a number >= 0")
    except ValueError as exc:
        return f"emulator marker: {exc}"
    return None


def _invalid(loc: list[Any], msg: str, kind: str, value: Any = None) -> tuple[int, Any]:
    """FastAPI's 422 answer."""
    return 422, {"detail": [{"type": kind, "loc": loc, "msg": msg, "input": value}]}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int, float)) and not (isinstance(value, float) and math.isnan(value))


def _observability_problem(body: dict[str, Any]) -> tuple[int, Any] | None:
    """422 for observability fields that do not fit ``AppConversationStartRequest``."""
    tags = body.get("observability_tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        return _invalid(["body", "observability_tags"], "Input should be a valid list of strings", "list_type", tags)
    span = body.get("observability_span_name")
    if span is not None and not isinstance(span, str):
        return _invalid(["body", "observability_span_name"], "Input should be a valid string", "string_type", span)
    metadata = body.get("observability_metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return _invalid(["body", "observability_metadata"], "Input should be a valid dictionary", "dict_type", metadata)
    for key, value in metadata.items():
        homogeneous = (
            isinstance(value, list)
            and all(_scalar(v) for v in value)
            and len({bool if isinstance(v, bool) else float if isinstance(v, int) else type(v) for v in value}) <= 1
        )
        if not (_scalar(value) or homogeneous):
            return _invalid(
                ["body", "observability_metadata", key],
                "Input should be a scalar (string, boolean, integer, number) or a list of one such type",
                "union_tag_invalid",
                value,
            )
    return None


def _parse_time(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class _Query:
    """Typed reads of query parameters, FastAPI-style: a bad value is a 422."""

    def __init__(self, query: dict[str, list[str]]) -> None:
        self.query = query
        self.error: tuple[int, Any] | None = None

    def _raw(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def _fail(self, name: str, msg: str, kind: str, value: Any) -> None:
        if self.error is None:
            self.error = _invalid(["query", name], msg, kind, value)

    def integer(self, name: str, default: int, low: int = 1, high: int = 100) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self._fail(
                name, "Input should be a valid integer, unable to parse string as an integer", "int_parsing", raw
            )
            return default
        if value < low:
            self._fail(name, f"Input should be greater than {low - 1}", "greater_than", raw)
        elif value > high:
            self._fail(name, f"Input should be less than or equal to {high}", "less_than_equal", raw)
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in choices:
            self._fail(name, "Input should be " + ", ".join(repr(c) for c in choices), "enum", raw)
            return default
        return raw

    def timestamp(self, name: str) -> float | None:
        raw = self._raw(name)
        if raw is None:
            return None
        value = _parse_time(raw)
        if value is None:
            self._fail(name, "Input should be a valid datetime", "datetime_from_date_parsing", raw)
        return value

    def uuid_hex(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        value = _hex(raw)
        if value is None:
            self._fail(name, "Input should be a valid UUID", "uuid_parsing", raw)
        return value

    def offset(self) -> int:
        raw = self._raw("page_id")
        if raw is None:
            return 0
        if not raw.isdigit():  # stricter: only the next_page_id this server handed out
            self._fail("page_id", "Invalid page_id", "value_error", raw)
            return 0
        return int(raw)


def _page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    more = len(items) > offset + limit
    return {"items": items[offset : offset + limit], "next_page_id": str(offset + limit) if more else None}


def max_in_window(times: list[float], window: float) -> int:
    """The most of the sorted ``times`` in any half-open window of ``window`` seconds (for rate checks)."""
    most = first = 0
    for last, at in enumerate(times):
        while times[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass
class Fault:
    """Answer matching requests with something other than the normal answer.

    It applies ``times`` times (1 when neither ``times`` nor ``seconds`` is given), and/or to every
    matching request for ``seconds`` from when it was added (an outage window).
    """

    status: int = 500
    method: str | None = None
    path: str | None = None  # a regular expression searched in the path
    times: int | None = None
    body: Any = None  # JSON-encoded unless ``raw`` is given
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection mid-answer
    after: bool = False  # with reset: act on the request first (the client never hears the answer)
    passthrough: bool = False  # only delay, then answer normally
    seconds: float | None = None  # an outage window, from ``added_at``
    added_at: float = field(default_factory=time.time)
    used: int = 0

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.seconds is not None and now >= self.added_at + self.seconds:
            return False
        limit = self.times if self.times is not None else (None if self.seconds is not None else 1)
        return limit is None or self.used < limit

    def matches(self, method: str, path: str, now: float | None = None) -> bool:
        if not self.active(now):
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Turn:
    """One run of the agent: the initial message, or one sent with send-message."""

    message: str
    sent_at: float  # when the user's message is on record
    start: float  # execution_status turns ``running``
    duration: float
    outcome: str
    sandbox_error: float = 0.0  # seconds of transient sandbox ERROR in the middle of the run

    @property
    def end(self) -> float:
        return self.start + self.duration + self.sandbox_error

    def error_window(self) -> tuple[float, float] | None:
        if self.sandbox_error <= 0:
            return None
        begin = self.start + self.duration / 2
        return begin, begin + self.sandbox_error

    def final_message(self) -> str:
        """What the agent's ``finish`` says: the ``finish="..."`` marker's text, else "Done: <task>"."""
        scripted = _directives(self.message).get("finish")
        if scripted:
            return scripted
        text = " ".join(_MARKER.sub("", self.message).split())
        return f"Done: {text[:40]}"

    def cost(self) -> float:
        """What the turn costs once it ended: the ``cost=`` marker, else ``COST_PER_SECOND`` per second."""
        scripted = _directives(self.message).get("cost")
        if scripted:
            return float(scripted)
        return 0.0 if self.start == math.inf else COST_PER_SECOND * (self.end - self.start)

    def spent(self, until: float) -> float:
        """The cost so far: it grows linearly from 0 at the start to :meth:`cost` at the end."""
        if self.start == math.inf or until <= self.start:
            return 0.0
        span = self.end - self.start
        return self.cost() * (1.0 if span <= 0 else min(1.0, (until - self.start) / span))

    def edits(self) -> list[tuple[str, str, str | None]]:
        """The turn's effects on the workspace, in order: (path, status, written text or None).

        ``change=<path>:<STATUS>`` gives (path, ADDED/UPDATED/DELETED, None); a rename gives the old
        path DELETED and the new one ``RENAMED_TO``; ``write=<path>:<text>`` gives (path, WRITE, text);
        ``output=<text>`` gives (openhands_output.json, WRITE, text).
        """
        found: list[tuple[str, str, str | None]] = []
        for key, value in _directive_pairs(self.message):
            if key == "change":
                found += [(path, status, None) for path, status in _change_spec(value)]
            elif key == "write":
                path, _, text = value.partition(":")
                found.append((path.strip(), "WRITE", text))
            elif key == "output":
                found.append((OUTPUT_FILE, "WRITE", value))
        return found

    def diff_bytes(self) -> int | None:
        scripted = _directives(self.message).get("diff_bytes")
        return int(float(scripted)) if scripted else None


def _original_text(path: str) -> str:
    """A file's text before the agent changed it (as ``git show <ref>:<path>`` prints it)."""
    return "\n".join(f"{path}: line {n} as it was in the repository" for n in (1, 2, 3))


def _modified_text(path: str, turn_number: int, size: int | None) -> str:
    """A changed file's new text; exactly ``size`` characters with ``diff_bytes=<size>``."""
    line = f"{path}: changed by the agent in turn {turn_number + 1}"
    if size is None:
        return "\n".join([*_original_text(path).splitlines()[:2], line])
    text = "\n".join([line] * (size // (len(line) + 1) + 1))
    return text[:size]


@dataclass
class FileState:
    """A file the agent touched: its git status, its text at the base ref and now (None: deleted)."""

    status: str  # ADDED, UPDATED or DELETED (the agent server's GitChangeStatus)
    original: str
    modified: str | None


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
    error_step: int = 2  # the start step at which a failing start task turns ERROR
    error_detail: str = "Sandbox failed to start: repository clone failed"
    duplicate: bool = False  # a start task for a conversation id already used: never a conversation
    taken_over_at: float | None = None  # a later start with this id booted over this sandbox
    seq: int = 0  # creation order, to break ties between equal ``created`` times
    turns: list[Turn] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)  # pause / resume / delete times

    def __post_init__(self) -> None:
        if not self.turns:
            directives = _directives(self.message)
            self.turns.append(
                Turn(
                    message=self.message,
                    sent_at=self.ready_at,
                    start=self.ready_at,
                    duration=self.duration,
                    outcome=self.outcome,
                    sandbox_error=float(directives.get("sandbox_error", 0) or 0),
                )
            )

    def set_first_turn(self, ready_at: float, duration: float) -> None:
        self.ready_at = ready_at
        self.duration = duration
        first = self.turns[0]
        first.sent_at = first.start = ready_at
        first.duration = duration

    @property
    def error_at(self) -> float:
        """When a failing start task shows ERROR."""
        return self.created + (self.ready_at - self.created) * self.error_step / (len(START_STEPS) - 1)

    def ready(self, now: float) -> bool:
        return not self.start_error and now >= self.ready_at

    def turn_at(self, now: float) -> Turn | None:
        started = [t for t in self.turns if t.start <= now]
        return started[-1] if started else None

    def agent_status(self, now: float) -> str | None:
        """Execution status of the agent: None before the sandbox runs."""
        if now < self.ready_at:
            return None
        if self.status_override:
            return self.status_override
        turn = self.turn_at(now)
        if turn is None:
            return None
        return "running" if now < turn.end else turn.outcome

    def in_sandbox_error(self, now: float) -> bool:
        for turn in self.turns:
            window = turn.error_window()
            if window and window[0] <= now < window[1]:
                return True
        return False

    def finished_at(self) -> float:
        """When the last turn that runs ends (a message sent with ``run: false`` starts none)."""
        return max(t.end for t in self.turns if t.start != math.inf)

    def updated_at(self, now: float) -> float:
        points = [self.created, self.ready_at, *self.changes]
        for turn in self.turns:
            points += [turn.start, turn.end, *(turn.error_window() or ())]
        return max(p for p in points if p <= now)

    def spent(self, until: float) -> float:
        """The accumulated cost up to ``until``: each turn's grows linearly while it runs."""
        return sum(t.spent(until) for t in self.turns)

    @property
    def project_dir(self) -> str:
        """Where the agent works: ``/workspace/project/<repository name>``, else ``/workspace/project``."""
        if self.repository:
            return f"{WORKSPACE_ROOT}/{self.repository.rstrip('/').split('/')[-1]}"
        return WORKSPACE_ROOT

    def absolute(self, path: str) -> str:
        return posixpath.normpath(path if path.startswith("/") else posixpath.join(self.project_dir, path))

    def in_repository(self, absolute: str) -> str | None:
        """The path relative to the project directory (the git repository), or None if outside it."""
        prefix = self.project_dir + "/"
        return absolute[len(prefix) :] if absolute.startswith(prefix) else None

    def workspace(self, until: float) -> dict[str, FileState]:
        """What the agent's turns left in the workspace by ``until``, by absolute path.

        *Stricter*: a turn's files and changes appear at once when it ends, and only if it ended
        ``finished`` (none mid-run, none from a turn that ended in ``error`` or ``stuck``).
        """
        files: dict[str, FileState] = {}
        for number, turn in enumerate(self.turns):
            if turn.outcome != "finished" or turn.start == math.inf or turn.end > until:
                continue
            size = turn.diff_bytes()
            moved: str | None = None
            for path, status, text in turn.edits():
                where = self.absolute(path)
                before = files.get(where)
                if status == "DELETED":
                    moved = before.modified if before and before.modified is not None else _original_text(path)
                    if before is not None and before.status == "ADDED":
                        del files[where]  # added, then deleted: no change at all
                    else:
                        files[where] = FileState("DELETED", before.original if before else _original_text(path), None)
                    continue
                if status == "RENAMED_TO":
                    text = moved
                elif text is None:
                    text = _modified_text(path, number, size)
                if before is None:
                    existed = status == "UPDATED"
                    files[where] = FileState(
                        "UPDATED" if existed else "ADDED", _original_text(path) if existed else "", text
                    )
                else:
                    kept = "ADDED" if before.status == "ADDED" else "UPDATED"
                    files[where] = FileState(kept, before.original, text)
        return files

    def alive(self, now: float) -> bool:
        """Holds an account slot: the sandbox is starting or running (finished or not)."""
        if self.deleted or self.paused_at is not None or self.stopped_at is not None:
            return False
        if self.start_error and now >= self.error_at:
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
        daily_sandbox_limit: int | None = None,
        capacity_error_style: str = "nested",
        rate_limit_per_minute: int | None = None,
        turn_lag_seconds: float = 0.5,
        missing_file_answer: str = "404",
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
        self.turn_lag_seconds = turn_lag_seconds
        self.missing_file_answer = missing_file_answer
        #: ``{"owner/repo": "error"}``: the agent's outcome for conversations on that repository.
        self.outcomes_by_repository: dict[str, str] = {}
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

    def add_fault(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        fault.added_at = time.time()
        with self.lock:
            self.faults.append(fault)
        return fault

    def outage(
        self,
        status: int = 503,
        seconds: float = 5,
        path: str | None = None,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Every matching API request answers ``status`` for ``seconds`` from now."""
        return self.add_fault(
            status=status,
            seconds=seconds,
            path=path,
            method=method,
            headers=dict(headers or {}),
            body={"detail": HTTPStatus(status).phrase},
        )

    def configure(self, **knobs: Any) -> None:
        unknown = sorted(set(knobs) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown emulator knobs: {unknown}")
        if knobs.get("capacity_error_style", "nested") not in ("nested", "flat"):
            raise ValueError("capacity_error_style must be 'nested' or 'flat'")
        if knobs.get("missing_file_answer", "404") not in ("404", "empty"):
            raise ValueError("missing_file_answer must be '404' or 'empty'")
        with self.lock:
            for key, value in knobs.items():
                setattr(self, key, value)

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

    def requests_per_minute(self, since: float | None = None) -> int:
        """The most API requests (control calls excluded) seen in any 60 s window since ``since``."""
        with self.lock:
            times = sorted(t for t in self.api_request_times if since is None or t >= since)
        return max_in_window(times, 60.0)

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

    # -- V1: start -------------------------------------------------------------------------------

    def _new_conversation(self, api_version: str, body: dict[str, Any], message: str) -> Conversation:
        now = time.time()
        wanted = body.get("conversation_id")
        directives = _directives(message)
        repository = body.get("selected_repository") or body.get("repository")
        conversation_id = (_hex(wanted) if wanted else None) or uuid.uuid4().hex
        request = {k: v for k, v in body.items() if k != "secrets"}
        if api_version == "v1" and wanted:
            request["conversation_id"] = str(uuid.UUID(conversation_id))  # echoed as a UUID: dashed
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
            duration=float(directives.get("duration", self.conversation_seconds)),
            outcome=directives.get("outcome") or self.outcomes_by_repository.get(repository or "") or "finished",
            start_error=start in ("error", "capacity"),
            request=request,
            seq=self.created,
        )
        if start == "capacity":
            conversation.error_detail = (
                "Sandbox could not start: maximum number of concurrent conversations "
                f"({self.concurrency_limit}) reached"
            )
        if api_version == "v1":
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
        self.created += 1
        self.max_alive = max(self.max_alive, self.alive_count(now) + (1 if conversation.duplicate else 0))
        return conversation

    def _capacity_refusal(self) -> tuple[int, Any] | None:
        current = self.alive_count()
        if current < self.concurrency_limit:
            return None
        self.refused_for_capacity += 1
        error = {
            "error": "CONCURRENCY_LIMIT_REACHED",
            "message": f"You have reached the maximum of {self.concurrency_limit} concurrent conversations.",
            "limit": self.concurrency_limit,
            "current": current,
        }
        return 429, (error if self.capacity_error_style == "flat" else {"detail": error})

    def _sandboxes_today(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        midnight = datetime.fromtimestamp(now, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return sum(1 for at in self.sandbox_creations if at >= midnight.timestamp())

    def _quota_refusal(self) -> tuple[int, Any] | None:
        limit = self.daily_sandbox_limit
        if limit is None or self._sandboxes_today() < limit:
            return None
        self.refused_for_quota += 1
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        reset_at = (today + timedelta(days=1)).isoformat()
        return 429, {
            "detail": {
                "error": "DAILY_SANDBOX_LIMIT_REACHED",
                "message": f"You have reached your daily limit of {limit} sandboxes. It resets at {reset_at}.",
                "limit": limit,
                "reset_at": reset_at,
            }
        }

    def v1_start(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}]}
        message = ""
        initial = body.get("initial_message") or {}
        if not isinstance(initial, dict):
            return _invalid(["body", "initial_message"], "Input should be an object", "dict_type", initial)
        for part in initial.get("content") or []:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                message += part.get("text", "")
        wanted = body.get("conversation_id")
        if wanted is not None and _hex(wanted) is None:
            return _invalid(["body", "conversation_id"], "Input should be a valid UUID", "uuid_parsing", wanted)
        invalid = _observability_problem(body)
        if invalid:
            return invalid
        problem = _marker_problem(message)
        if problem:
            return 400, {"detail": problem}
        refusal = self._quota_refusal() or self._capacity_refusal()
        if refusal:
            return refusal
        conversation = self._new_conversation("v1", body, message)
        conversation.start_task_id = uuid.uuid4().hex
        self.start_tasks[conversation.start_task_id] = conversation
        return 200, self._start_task_json(conversation, time.time(), stamp=_z_iso)

    def _start_task_status(self, conversation: Conversation, now: float) -> str:
        if conversation.start_error and now >= conversation.error_at:
            return "ERROR"
        if now >= conversation.ready_at:
            return "READY"
        span = max(conversation.ready_at - conversation.created, 1e-9)
        step = int((now - conversation.created) / span * (len(START_STEPS) - 1))
        return START_STEPS[min(step, len(START_STEPS) - 2)]

    def _start_task_updated(self, conversation: Conversation, now: float) -> float:
        status = self._start_task_status(conversation, now)
        if status == "ERROR":
            return conversation.error_at
        if status == "READY":
            return conversation.ready_at
        span = conversation.ready_at - conversation.created
        return conversation.created + span * START_STEPS.index(status) / (len(START_STEPS) - 1)

    def _start_task_json(self, conversation: Conversation, now: float, stamp: Any = _naive_iso) -> dict[str, Any]:
        status = self._start_task_status(conversation, now)
        ready = status == "READY"
        # A reused id fails after its sandbox booted: that start task names the sandbox, as observed.
        booted = ready or (status == "ERROR" and conversation.duplicate)
        return {
            "id": conversation.start_task_id,
            "created_by_user_id": USER_ID,
            "status": status,
            "detail": conversation.error_detail if status == "ERROR" else None,
            "app_conversation_id": conversation.id if ready else None,
            "sandbox_id": conversation.sandbox_id if booted else None,
            "agent_server_url": f"{self.url}/agent/{conversation.sandbox_id}" if booted else None,
            "request": conversation.request,
            "created_at": stamp(conversation.created),
            "updated_at": stamp(self._start_task_updated(conversation, now)),
        }

    @staticmethod
    def _ids(query: dict[str, list[str]], most: int = MAX_IDS) -> tuple[list[str], tuple[int, Any] | None]:
        ids = query.get("ids") or []
        if not ids:
            return [], _invalid(["query", "ids"], "Field required", "missing")
        if len(ids) > most:
            return [], (400, {"detail": f"Too many ids requested: {len(ids)}. Maximum is {most}."})
        keys = []
        for value in ids:
            key = _hex(value)
            if key is None:
                return [], (400, {"detail": f"Invalid UUID: {value!r}"})
            keys.append(key)
        return keys, None

    def v1_start_tasks(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        keys, error = self._ids(query, MAX_START_TASK_IDS)
        if error:
            return error
        now = time.time()
        answer = []
        for key in keys:
            conversation = self.start_tasks.get(key)
            answer.append(self._start_task_json(conversation, now) if conversation else None)
        return 200, answer

    def v1_start_task_search(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        q = _Query(query)
        wanted = q.uuid_hex("conversation_id__eq")
        since = q.timestamp("created_at__gte")
        order = q.choice("sort_order", START_TASK_SORT_ORDERS, "CREATED_AT_DESC")
        limit = q.integer("limit", 100)
        offset = q.offset()
        if q.error:
            return q.error
        now = time.time()
        tasks = []
        for conversation in self.start_tasks.values():
            if since is not None and conversation.created < since:
                continue
            # As on the real server: the filter is on ``app_conversation_id``, set only at READY.
            if wanted is not None and not (
                self._start_task_status(conversation, now) == "READY" and conversation.id == wanted
            ):
                continue
            tasks.append(conversation)
        by_update = order.startswith("UPDATED")  # type: ignore[union-attr]
        tasks.sort(
            key=lambda c: (self._start_task_updated(c, now) if by_update else c.created, c.seq),
            reverse=order.endswith("_DESC"),  # type: ignore[union-attr]
        )
        items = [self._start_task_json(c, now) for c in tasks]
        return 200, _page(items, offset, limit)

    # -- V1: conversations -------------------------------------------------------------------------

    def _v1_sandbox_status(self, conversation: Conversation, now: float) -> str:
        if conversation.sandbox_override:
            return conversation.sandbox_override
        if conversation.paused_at is not None:
            return "PAUSED"
        if conversation.start_error:
            return "ERROR"
        if now < conversation.ready_at:
            return "STARTING"
        if self._taken_over(conversation, now):
            return "RUNNING"  # the new boot's sandbox: up, but not running this conversation
        return "ERROR" if conversation.in_sandbox_error(now) else "RUNNING"

    @staticmethod
    def _taken_over(conversation: Conversation, now: float) -> bool:
        return conversation.taken_over_at is not None and now >= conversation.taken_over_at

    @staticmethod
    def _on_record_until(conversation: Conversation, now: float) -> float:
        """What the agent did stays on record up to a pause, or up to a takeover (*stricter*)."""
        return min(t for t in (now, conversation.paused_at, conversation.taken_over_at) if t is not None)

    def _v1_visible(self, conversation: Conversation | None, now: float) -> Conversation | None:
        if conversation is None or conversation.api_version != "v1" or conversation.deleted:
            return None
        return conversation if conversation.ready(now) else None

    def _v1_find(self, conversation_id: str, now: float) -> Conversation | None:
        key = _hex(conversation_id)
        return self._v1_visible(self.conversations.get(key), now) if key else None

    def _v1_conversation_json(self, conversation: Conversation, now: float) -> dict[str, Any]:
        sandbox = self._v1_sandbox_status(conversation, now)
        running = sandbox == "RUNNING"
        execution = conversation.agent_status(now) if running and not self._taken_over(conversation, now) else None
        # What the agent did stays on record when the sandbox is paused afterwards.
        done_by = self._on_record_until(conversation, now)
        done = conversation.agent_status(done_by) == "finished"
        spent = conversation.spent(done_by)
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
                "accumulated_cost": round(spent, 6),
                "max_budget_per_task": None,
                "accumulated_token_usage": {
                    "model": "emulated-model",
                    "prompt_tokens": int(TOKENS_PER_DOLLAR[0] * spent),
                    "completion_tokens": int(TOKENS_PER_DOLLAR[1] * spent),
                },
            },
            "parent_conversation_id": None,
            "sub_conversation_ids": [],
            "public": False,
            "tags": {},
            "created_at": _now_iso(conversation.created),
            "updated_at": _now_iso(conversation.updated_at(now)),
            "sandbox_status": sandbox,
            "execution_status": execution,
            "conversation_url": (
                f"{self.url}/agent/{conversation.sandbox_id}/conversations/{conversation.id}" if running else None
            ),
            "session_api_key": f"session-{conversation.sandbox_id}" if running else None,
            "acp_server": None,
            "launched_agent_profile": None,
        }

    def v1_conversations(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        keys, error = self._ids(query)
        if error:
            return error
        now = time.time()
        answer = []
        for key in keys:
            conversation = self._v1_visible(self.conversations.get(key), now)
            answer.append(self._v1_conversation_json(conversation, now) if conversation else None)
        return 200, answer

    def v1_search(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        q = _Query(query)
        limit = q.integer("limit", 100)
        offset = q.offset()
        if q.error:
            return q.error
        now = time.time()
        found = [c for c in self.conversations.values() if self._v1_visible(c, now)]
        found.sort(key=lambda c: c.created, reverse=True)
        return 200, _page([self._v1_conversation_json(c, now) for c in found], offset, limit)

    def v1_delete(self, conversation_id: str) -> tuple[int, Any]:
        conversation = self._v1_find(conversation_id, time.time())
        if conversation is None:
            return 404, {"detail": "Item not found"}
        conversation.deleted = True
        conversation.changes.append(time.time())
        self.stops += 1
        return 200, {"success": True}

    def _by_sandbox(self, sandbox_id: str) -> Conversation | None:
        key = _hex(sandbox_id) or sandbox_id
        for conversation in self.conversations.values():
            if conversation.sandbox_id == key and not conversation.deleted:
                return conversation
        return None

    def v1_pause(self, sandbox_id: str) -> tuple[int, Any]:
        conversation = self._by_sandbox(sandbox_id)
        if conversation is None:
            return 404, {"detail": "Item not found"}
        if conversation.paused_at is None:
            conversation.paused_at = time.time()
            conversation.changes.append(conversation.paused_at)
            self.stops += 1
        return 200, {"success": True}

    def v1_resume(self, sandbox_id: str) -> tuple[int, Any]:
        conversation = self._by_sandbox(sandbox_id)
        if conversation is None:
            return 404, {"detail": "Item not found"}
        if conversation.paused_at is not None:
            refusal = self._capacity_refusal()
            if refusal:
                return refusal
            conversation.paused_at = None
            conversation.changes.append(time.time())
            self.resumes += 1
            self.max_alive = max(self.max_alive, self.alive_count())
        return 200, {"success": True}

    def v1_send_message(self, conversation_id: str, body: Any) -> tuple[int, Any]:
        if _hex(conversation_id) is None:
            return _invalid(
                ["path", "conversation_id"], "Input should be a valid UUID", "uuid_parsing", conversation_id
            )
        if not isinstance(body, dict):
            return _invalid(["body"], "Input should be a valid dictionary or object", "model_attributes_type", body)
        if body.get("role", "user") != "user":
            return _invalid(["body", "role"], "Input should be 'user'", "literal_error", body.get("role"))
        if not isinstance(body.get("run", True), bool):
            return _invalid(["body", "run"], "Input should be a valid boolean", "bool_type", body.get("run"))
        content = body.get("content")
        if not isinstance(content, list) or not content:
            return _invalid(["body", "content"], "List should have at least 1 item", "too_short", content)
        text = ""
        for number, part in enumerate(content):
            is_text = (
                isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
            )
            is_image = (
                isinstance(part, dict) and part.get("type") == "image" and isinstance(part.get("image_urls"), list)
            )
            if not (is_text or is_image):
                return _invalid(["body", "content", number], "Input should be text or image content", "union", part)
            if is_text and set(part) - {"type", "text", "cache_prompt"}:
                return _invalid(["body", "content", number], "Extra inputs are not permitted", "extra_forbidden", part)
            if is_text:
                text += part["text"]
        now = time.time()
        conversation = self._v1_find(conversation_id, now)
        if conversation is None:
            return 404, {"detail": f"Conversation {conversation_id} not found"}
        sandbox = self._v1_sandbox_status(conversation, now)
        if sandbox == "PAUSED":
            return 409, {
                "detail": f"Sandbox is PAUSED. Use POST /api/v1/sandboxes/{conversation.sandbox_id}/resume "
                "to resume the sandbox before sending messages."
            }
        if sandbox == "MISSING":
            return 410, {"detail": "Conversation is archived: its sandbox no longer exists."}
        if sandbox != "RUNNING":
            return 503, {"detail": f"Sandbox is in {sandbox} state or the agent server is unavailable."}
        if self._taken_over(conversation, now):  # the sandbox's agent server knows no such conversation
            return 502, {"detail": "Agent server error: 404"}
        problem = _marker_problem(text)
        if problem:
            return 400, {"detail": problem}
        directives = _directives(text)
        previous_end = conversation.finished_at()
        run = body.get("run", True)
        start = max(now + self.turn_lag_seconds, previous_end) if run else math.inf
        conversation.turns.append(
            Turn(
                message=text,
                sent_at=now,
                start=start,
                duration=float(directives.get("duration", self.conversation_seconds)) if run else 0.0,
                outcome=directives.get("outcome") or "finished",
                sandbox_error=float(directives.get("sandbox_error", 0) or 0) if run else 0.0,
            )
        )
        return 200, {"success": True, "sandbox_status": "RUNNING", "message": None}

    # -- V1: events --------------------------------------------------------------------------------

    def _v1_events(self, conversation: Conversation) -> list[tuple[float, dict[str, Any]]]:
        """Every event of the conversation's turns, with its time, whether or not it happened yet."""
        events: list[tuple[float, dict[str, Any]]] = []
        parent: list[str | None] = [None]

        def add(at: float, turn_no: int, seq: int, kind: str, **fields: Any) -> str:
            event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"{conversation.id}/{turn_no}/{seq}"))
            event = {"id": event_id, "timestamp": _naive_iso(at), "parent_id": parent[0], **fields, "kind": kind}
            events.append((at, event))
            parent[0] = event_id
            return event_id

        def state(at: float, turn_no: int, seq: int, value: str) -> None:
            add(
                at,
                turn_no,
                seq,
                "ConversationStateUpdateEvent",
                source="environment",
                key="execution_status",
                value=value,
            )

        for number, turn in enumerate(conversation.turns):
            sent = conversation.ready_at if number == 0 else turn.sent_at
            add(
                sent,
                number,
                0,
                "MessageEvent",
                source="user",
                llm_message={"role": "user", "content": [{"type": "text", "text": turn.message}], "tool_calls": None},
                llm_response_id=None,
                activated_skills=[],
                extended_content=[],
                sender=None,
                critic_result=None,
            )
            if turn.start == math.inf:
                continue
            state(max(turn.start, sent), number, 1, "running")
            end = turn.end
            if turn.outcome == "finished":
                writes = [(path, text) for path, status, text in turn.edits() if status == "WRITE"]
                for index, (path, text) in enumerate(writes):
                    at = turn.start + (end - 0.003 - turn.start) * (index + 1) / (len(writes) + 1)
                    self._file_editor_events(add, conversation, at, number, 10 + 2 * index, path, text or "")
                final = turn.final_message()
                call_id = f"call_{uuid.uuid5(_EVENT_NAMESPACE, f'{conversation.id}/{number}').hex[:24]}"
                action_id = add(
                    end - 0.002,
                    number,
                    2,
                    "ActionEvent",
                    source="agent",
                    thought=[],
                    reasoning_content=None,
                    thinking_blocks=[],
                    responses_reasoning_item=None,
                    action={"message": final, "kind": "FinishAction"},
                    tool_name="finish",
                    tool_call_id=call_id,
                    tool_call={
                        "id": call_id,
                        "name": "finish",
                        "arguments": json.dumps({"message": final}),
                        "origin": "completion",
                    },
                    llm_response_id=f"chatcmpl-{call_id[5:]}",
                    security_risk="UNKNOWN",
                    critic_result=None,
                    summary=None,
                )
                add(
                    end - 0.001,
                    number,
                    3,
                    "ObservationEvent",
                    source="environment",
                    tool_name="finish",
                    tool_call_id=call_id,
                    observation={
                        "content": [{"type": "text", "text": final}],
                        "is_error": False,
                        "kind": "FinishObservation",
                    },
                    action_id=action_id,
                    extended_content=[],
                )
            elif turn.outcome == "error":
                add(
                    end - 0.001,
                    number,
                    2,
                    "ConversationErrorEvent",
                    source="environment",
                    code="LLMServiceUnavailableError",
                    detail="litellm.InternalServerError: the LLM provider answered HTTP 500 (emulated outcome=error)",
                )
            state(end, number, 4, turn.outcome)
        events.sort(key=lambda pair: pair[0])
        return events

    @staticmethod
    def _file_editor_events(
        add: Any, conversation: Conversation, at: float, turn_no: int, seq: int, path: str, text: str
    ) -> None:
        """The agent's ``file_editor`` ``create`` call and its observation, as the real agent writes a file."""
        where = conversation.absolute(path)
        call_id = f"call_{uuid.uuid5(_EVENT_NAMESPACE, f'{conversation.id}/{turn_no}/{seq}').hex[:24]}"
        summary = f"create {where}"
        action_id = add(
            at,
            turn_no,
            seq,
            "ActionEvent",
            source="agent",
            thought=[],
            reasoning_content=None,
            thinking_blocks=[],
            responses_reasoning_item=None,
            action={
                "command": "create",
                "path": where,
                "file_text": text,
                "old_str": None,
                "new_str": None,
                "insert_line": None,
                "view_range": None,
                "kind": "FileEditorAction",
            },
            tool_name="file_editor",
            tool_call_id=call_id,
            tool_call={
                "id": call_id,
                "responses_item_id": None,
                "name": "file_editor",
                "arguments": json.dumps({"command": "create", "path": where, "file_text": text, "summary": summary}),
                "origin": "completion",
            },
            llm_response_id=f"chatcmpl-{call_id[5:]}",
            security_risk="UNKNOWN",
            critic_result=None,
            summary=summary,
        )
        add(
            at + 0.0001,
            turn_no,
            seq + 1,
            "ObservationEvent",
            source="environment",
            tool_name="file_editor",
            tool_call_id=call_id,
            observation={
                "content": [{"type": "text", "text": f"File created successfully at: {where}"}],
                "is_error": False,
                "command": "create",
                "path": where,
                "prev_exist": False,
                "old_content": None,
                "new_content": text,
                "kind": "FileEditorObservation",
            },
            action_id=action_id,
            extended_content=[],
        )

    def v1_events_search(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        q = _Query(query)
        kind = q.choice("kind__eq", EVENT_KINDS, None)
        order = q.choice("sort_order", EVENT_SORT_ORDERS, "TIMESTAMP")
        since = q.timestamp("timestamp__gte")
        before = q.timestamp("timestamp__lt")
        limit = q.integer("limit", 100)
        offset = q.offset()
        if q.error:
            return q.error
        now = time.time()
        conversation = self._v1_find(conversation_id, now)
        if conversation is None:
            return 200, {"items": [], "next_page_id": None}
        until = self._on_record_until(conversation, now)
        items = [
            event
            for at, event in self._v1_events(conversation)
            if at <= until
            and (kind is None or event["kind"] == kind)
            and (since is None or at >= since - 1e-6)
            and (before is None or at < before - 1e-6)
        ]
        if order == "TIMESTAMP_DESC":
            items.reverse()
        return 200, _page(items, offset, limit)

    # -- V1: the agent's workspace (git changes, diffs, files) -------------------------------------

    def _reachable(self, conversation_id: str, now: float, reading: str) -> tuple[Conversation | None, Any]:
        """The conversation whose sandbox's agent server answers now, else the refusal (as observed in
        the real server's code: unknown -> 404, PAUSED -> 409, other non-RUNNING states -> 404)."""
        conversation = self._v1_find(conversation_id, now)
        if conversation is None:
            return None, (404, {"detail": f"Conversation {uuid.UUID(_hex(conversation_id))} is not reachable"})
        sandbox = self._v1_sandbox_status(conversation, now)
        if sandbox == "PAUSED":
            return None, (409, {"detail": f"Sandbox is paused; resume it before reading {reading}."})
        if sandbox != "RUNNING":
            return None, (404, {"detail": f"Conversation {uuid.UUID(conversation.id)} is not reachable"})
        if self._taken_over(conversation, now):  # another boot's agent server (*stricter*)
            return None, (502, {"detail": "Agent server error: 404"})
        return conversation, None

    @staticmethod
    def _path_parameter(conversation_id: str, query: dict[str, list[str]], name: str) -> Any:
        """FastAPI's 422s: a conversation id that is no UUID, a required query parameter missing."""
        if _hex(conversation_id) is None:
            return _invalid(
                ["path", "conversation_id"], "Input should be a valid UUID", "uuid_parsing", conversation_id
            )
        if name and not query.get(name):
            return _invalid(["query", name], "Field required", "missing")
        return None

    def v1_git_changes(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        invalid = self._path_parameter(conversation_id, query, "path")
        if invalid:
            return invalid
        now = time.time()
        conversation, refusal = self._reachable(conversation_id, now, "git state")
        if conversation is None:
            return refusal
        root = query["path"][-1]
        # Only the repository root is a git repository; any other path is "not a repo": [] (as the
        # agent server answers). ``ref`` is accepted and changes nothing here.
        if not root.startswith("/") or posixpath.normpath(root) != conversation.project_dir:
            return 200, []
        changes = []
        for where, state in conversation.workspace(now).items():
            relative = conversation.in_repository(where)
            if relative is not None:
                changes.append({"status": state.status, "path": relative})
        return 200, sorted(changes, key=lambda change: change["path"])

    def v1_git_diff(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        invalid = self._path_parameter(conversation_id, query, "path")
        if invalid:
            return invalid
        now = time.time()
        conversation, refusal = self._reachable(conversation_id, now, "git state")
        if conversation is None:
            return refusal
        path = query["path"][-1]
        state = conversation.workspace(now).get(posixpath.normpath(path)) if path.startswith("/") else None
        # The agent server answers 400 (which the app server passes on as 502) for a file that does
        # not exist (a deleted one too) or is over 1 MiB. *Stricter*: relative paths, and files the
        # agent did not touch, count as not existing.
        if state is None or state.modified is None:
            return 502, {"detail": "Agent server error: 400"}
        if len(state.modified.encode()) > MAX_DIFF_FILE_BYTES:
            return 502, {"detail": "Agent server error: 400"}
        if conversation.in_repository(posixpath.normpath(path)) is None:
            return 200, {"modified": None, "original": None}  # not in a git repository
        return 200, {"modified": "\n".join(state.modified.splitlines()), "original": state.original}

    def v1_file(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        invalid = self._path_parameter(conversation_id, query, "")
        if invalid:
            return invalid
        now = time.time()
        empty = self.missing_file_answer == "empty"
        conversation, refusal = self._reachable(conversation_id, now, "files")
        if conversation is None:
            return (200, "") if empty else refusal
        path = (query.get("file_path") or [f"{WORKSPACE_ROOT}/PLAN.md"])[-1]
        if not path.startswith("/"):
            return (200, "") if empty else (404, {"detail": "Path must be absolute"})
        state = conversation.workspace(now).get(posixpath.normpath(path))
        if state is None or state.modified is None:
            return (200, "") if empty else (404, {"detail": "File not found"})
        return 200, state.modified

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
            if state == "awaiting_user_input":  # the agent's finish action comes just before it
                final = conversation.turns[0].final_message()
                events.append(
                    {
                        "id": number * 2,
                        "timestamp": _now_iso(at),
                        "source": "agent",
                        "action": "finish",
                        "args": {"final_thought": final, "task_completed": "true", "outputs": {}},
                        "message": final,
                    }
                )
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
            if path == "/api/v1/app-conversations":
                if method == "POST":
                    return self.v1_start(body)
                if method == "GET":
                    return self.v1_conversations(query)
            if method == "GET" and path == "/api/v1/app-conversations/start-tasks":
                return self.v1_start_tasks(query)
            if method == "GET" and path == "/api/v1/app-conversations/start-tasks/search":
                return self.v1_start_task_search(query)
            if method == "GET" and path == "/api/v1/app-conversations/search":
                return self.v1_search(query)
            match = _SEND_ID.fullmatch(path)
            if method == "POST" and match:
                return self.v1_send_message(match.group(1), body)
            match = re.fullmatch(r"/api/v1/app-conversations/([^/]+)", path)
            if method == "DELETE" and match:
                return self.v1_delete(match.group(1))
            match = re.fullmatch(r"/api/v1/conversation/([^/]+)/events/search", path)
            if method == "GET" and match:
                return self.v1_events_search(match.group(1), query)
            match = re.fullmatch(r"/api/v1/app-conversations/([^/]+)/(git/changes|git/diff|file)", path)
            if method == "GET" and match:
                conversation_id, what = match.groups()
                if what == "file":
                    return self.v1_file(conversation_id, query)
                if what == "git/changes":
                    return self.v1_git_changes(conversation_id, query)
                return self.v1_git_diff(conversation_id, query)
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

    def admit(self, now: float | None = None) -> float | None:
        """Count an API request against the rate limit: None if admitted, else seconds to wait."""
        now = time.time() if now is None else now
        with self.lock:
            self.api_request_times.append(now)
            limit = self.rate_limit_per_minute
            while self._accepted and now - self._accepted[0] >= 60.0:
                self._accepted.popleft()
            if limit is not None and len(self._accepted) >= limit:
                self.refused_for_rate += 1
                return max(0.0, self._accepted[0] + 60.0 - now)
            self._accepted.append(now)
        return None

    def take_fault(self, method: str, path: str) -> Fault | None:
        now = time.time()
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, now):
                    fault.used += 1
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
