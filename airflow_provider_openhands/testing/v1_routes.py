"""The emulator's V1 endpoints, as the service answers them (a mixin of the :class:`Emulator`).

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
  (a test-authoring error, here and in send-message). The ``request`` always holds ``agent_type``
  (``"default"`` unless sent, as the real echo holds the field's default).
* Plan mode: ``agent_type`` ``"default"`` or ``"plan"`` (anything else, ``null`` too, -> 422 like other
  enum fields). It is **not** on the conversation object; it is read back from the start task's
  ``request.agent_type`` only (as on the real server). A plan conversation's agent edits only
  ``<project dir>/.agents_tmp/PLAN.md`` (``model.py``). ``parent_conversation_id`` (a UUID, else 422):
  the new conversation is the parent's **sub-conversation**: it runs in the parent's sandbox (same
  ``sandbox_id``, same workspace: a file one agent writes is seen through the other's git/file
  endpoints; no new sandbox is created), and takes the parent's repository, branch and git provider
  where the request names none; the start task's ``request`` shows ``sandbox_id`` and those fields
  completed, as the server completes them. The parent's ``sub_conversation_ids`` lists the child, the
  child's ``parent_conversation_id`` names the parent (32 hex). A PAUSED parent sandbox is resumed by
  the child's start (as the real start does); ERROR/MISSING -> the child's start task ends ``ERROR``
  ("Sandbox status: ERROR" / "Sandbox not found: <id>"). An unknown (or deleted, or not yet READY)
  parent -> **500** ``text/plain`` "Internal Server Error": the real server raises ``ValueError
  ("Parent conversation not found")`` before the start task exists and nothing handles it (read in
  ``openhands-ai`` 1.11's code, not seen live). *Stricter*: a sub-conversation counts toward the
  account's concurrency (and is refused at the daily sandbox quota) like any start, although it boots
  no sandbox. Pausing or resuming the sandbox pauses or resumes every conversation it runs;
  ``DELETE`` of a parent deletes its sub-conversations too (as in the real server's code).
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
* ``GET /api/v1/app-conversations/search`` (``limit``, ``page_id``, ``include_sub_conversations``):
  conversations past READY only; sub-conversations only with ``include_sub_conversations=true`` (as
  observed; a value that is not a boolean -> 422). The spec's other filters are not modelled.
* ``GET /api/v1/conversation/{id}/events/search`` (``kind__eq``, ``sort_order``
  ``TIMESTAMP``/``TIMESTAMP_DESC``, ``limit``, ``page_id``, ``timestamp__gte``, ``timestamp__lt``)
  -> ``{"items": [...], "next_page_id": ...}``; unknown conversation -> 200, no items. Per turn: the
  user's ``MessageEvent``, a ``ConversationStateUpdateEvent`` (``key: execution_status``) for
  ``running`` and for the end, and at the end either the agent's ``ActionEvent`` (``tool_name:
  finish``, ``FinishAction`` with the final message "Done: <first 40 chars of the task>", or the
  ``finish="..."`` marker's text) then an
  ``ObservationEvent`` (``FinishObservation``), or for outcome ``error`` the state update ``error``
  then a ``ConversationErrorEvent`` (``code``, ``detail``), in the real agent server's order
  (``stuck``: only the state update). A ``confirm=`` command adds
  the agent's terminal ``ActionEvent`` and the state ``waiting_for_confirmation`` when it is asked,
  then ``running`` and a ``TerminalObservation`` (accept) or ``idle`` and a ``UserRejectObservation``
  (reject; ``running`` once the agent goes on), each observation's ``action_id`` naming the action
  (shapes as the real agent writes them); the plan agent's ``confirm_plan=yes`` the same with its
  ``planning_file_editor`` edit of PLAN.md. State updates besides ``execution_status``, as the real
  agent server publishes them: ``full_state`` (the whole state, a few KB, no ``parent_id``) when the
  conversation starts, after each ``waiting_for_confirmation`` and after each turn's closing state
  (1 ms later: a sandbox paused at once loses it, as the real webhook's last batch can be);
  ``last_user_message_id`` after each user message; ``stats`` (the LLM usage so far, consistent with
  ``metrics``) 0.1 ms before each agent ``ActionEvent`` and after the first turn's ``running`` (the
  title's LLM call). ``state_updates=N`` adds N ``full_state``s after each of a turn's stops (a
  page crowded by them). Events stay readable while
  the sandbox is PAUSED, up to the pause. Event timestamps are ISO without time zone, as the SDK
  writes them.
* ``POST /api/v1/app-conversations/{id}/send-message`` -> ``{"success": true, "sandbox_status":
  "RUNNING", "message": null}``; starts a new turn (its own markers apply; after the current turn if
  one runs). **A message (``run`` true) sent while the agent waits for confirmation approves the
  pending action** (as observed), or after a reject runs the agent again; the new turn follows that
  one. For ``turn_lag_seconds`` (0.5 s) polls still show the previous turn's state and
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
* ``GET /api/v1/app-conversations/{id}/download`` -> the trajectory as ``application/zip``:
  ``meta.json`` (the conversation) and ``event_<n>_<event id>.json`` per event on record, as the
  open-source server's export writes it (read in ``openhands-ai`` 1.11); unknown -> 404
  ``{"detail": "Conversation not found: <id>"}``. Served whatever the sandbox's state (the app
  server keeps the events).
* ``POST /api/v1/sandboxes/{id}/pause`` and ``/resume`` -> ``{"success": true}``; unknown -> 404.
  Resume on a full account -> the 429 ``CONCURRENCY_LIMIT_REACHED`` answer.
* ``DELETE /api/v1/app-conversations/{id}`` -> ``{"success": true}``; unknown -> 404.
* ``updated_at`` moves only when the state changes (ready, turn start/end, pause, resume, a
  confirmation asked or answered), not on every read (*stricter*). ``execution_status``,
  ``session_api_key`` and ``conversation_url`` are ``null`` unless the sandbox is RUNNING (PAUSED as
  observed; STARTING/ERROR *stricter*). ``conversation_url`` is
  ``<emulator url>/agent/<sandbox_id>/api/conversations/<conversation id>``: the sandbox's agent
  server is ``conversation_url`` cut before ``/api/conversations`` (keep the path prefix, as the UI's
  ``buildHttpBaseUrl`` does), and ``session_api_key`` is ``session-<sandbox_id>``.

The agent server (``/agent/<sandbox_id>``), as the UI calls it for confirmation mode (the app server
does not proxy these: ``/api/v1/app-conversations/{id}/events/respond_to_confirmation`` -> 404).
**Authorised by ``X-Session-API-Key: <that sandbox's session_api_key>`` only**: no key, the account's
API key (in any header) or another sandbox's session key -> 401 ``{"detail": "Unauthorized"}``; and a
session key never opens an app-server route (401 there). Checked in this order: sandbox not RUNNING
(PAUSED, STARTING, ERROR, MISSING, unknown) -> **503** ``{"detail": "Agent server unavailable"}``
(*stricter*: the real one is simply not reachable); the key -> 401; another path under the agent
server -> 404 (only these two are modelled), another method -> 405; a conversation id that is not a
UUID -> 422; a conversation this sandbox does not run -> 404; a body that does not fit -> 422. The
hex and the dashed id are both accepted. Requests are logged in ``requests`` like the others (never
a header, so never the session key).

* ``POST /agent/<sandbox_id>/api/conversations/{id}/events/respond_to_confirmation`` with
  ``ConfirmationResponseRequest`` ``{"accept": bool, "reason": str}`` (``reason`` optional, default
  "User rejected the action."; *stricter*: ``accept`` must be a JSON boolean, not ``"true"`` or ``1``)
  -> ``200 {"success": true}``. Accept: the pending action runs and the turn goes on; after a reject,
  an accept runs the agent again. Reject: a ``UserRejectObservation`` with the reason, the status
  ``idle``, and it **stays idle** (the agent does not run again by itself). Nothing pending (running,
  finished, idle after a reject for a reject): a harmless 200, as observed. 404 for an unknown
  conversation: ``{"detail": "Conversation not found: <dashed id>"}``.
* ``POST /agent/<sandbox_id>/api/conversations/{id}/run`` (body ignored) -> ``200 {"success":
  true}``: a rejected (idle) turn goes on; a pending action is approved (the real run loop runs it);
  otherwise nothing happens. While the agent runs -> 409 ``{"detail": "Conversation already running.
  Wait for completion or pause first."}`` (as in the agent server's code); unknown -> 404 ``{"detail":
  "Not Found"}``.
* Pausing the sandbox while the agent waits gives ``PAUSED``/``null`` (and 503 from the agent
  server); after resume it waits again (``waiting_for_confirmation``), as observed.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import re
import time
import uuid
import zipfile
from datetime import datetime, timezone
from typing import Any

from airflow_provider_openhands.testing.model import (
    AGENT_TYPES,
    DEFAULT_REJECTION,
    PLAN_EDITOR,
    PLAN_FILE,
    START_STEPS,
    WORKSPACE_ROOT,
    Conversation,
    Turn,
    _directives,
    _hex,
    _marker_problem,
    _naive_iso,
    _now_iso,
    _z_iso,
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
MAX_DIFF_FILE_BYTES = 1024 * 1024  # the agent server's cap for git diff: a bigger file is an error there
TOKENS_PER_DOLLAR = (100_000, 20_000)  # prompt and completion tokens per dollar spent
_EVENT_NAMESPACE = uuid.UUID("6f1b6a3e-0c8e-4d55-9a43-6b0b1c1e0a11")
USER_ID = "emulated-user"
_SEND_ID = re.compile(r"/api/v1/app-conversations/([^/]+)/send-message")
# ``/agent/{sandbox_id}`` (the agent server's base) + ``/api/conversations/{id}/<action>``
_AGENT_PATH = re.compile(r"/agent/([^/]+)(?:/api/conversations/([^/]+)(?:/(.+))?|/.*)?")


class PlainText(str):
    """An answer sent as ``text/plain``, not JSON (e.g. Starlette's bare 500 "Internal Server Error")."""


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

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "t", "yes", "y", "on"):
            return True
        if lowered in ("0", "false", "f", "no", "n", "off"):
            return False
        self._fail(name, "Input should be a valid boolean, unable to interpret input", "bool_parsing", raw)
        return default

    def timestamp(self, name: str) -> float | None:
        return self._parsed(name, _parse_time, "Input should be a valid datetime", "datetime_from_date_parsing")

    def uuid_hex(self, name: str) -> str | None:
        return self._parsed(name, _hex, "Input should be a valid UUID", "uuid_parsing")

    def _parsed(self, name: str, parse: Any, message: str, error_type: str) -> Any:
        """The parameter parsed, or None (absent, or refused with FastAPI's error for its type)."""
        raw = self._raw(name)
        if raw is None:
            return None
        value = parse(raw)
        if value is None:
            self._fail(name, message, error_type, raw)
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


class V1Routes:
    """The V1 endpoints (a mixin of :class:`Emulator`, whose state they read and change)."""

    # -- routing -----------------------------------------------------------------------------------

    def _route_v1(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        """The V1 endpoint's answer; None if the request is for none of them (called under the lock)."""
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
        match = re.fullmatch(r"/api/v1/app-conversations/([^/]+)/download", path)
        if method == "GET" and match:
            return self.v1_download(match.group(1))
        match = re.fullmatch(r"/api/v1/sandboxes/([^/]+)/(pause|resume)", path)
        if method == "POST" and match:
            sandbox_id, action = match.groups()
            return self.v1_pause(sandbox_id) if action == "pause" else self.v1_resume(sandbox_id)
        return None

    # -- the agent server (``/agent/{sandbox_id}``): confirmations ------------------------------------

    def route_agent(self, method: str, path: str, body: Any, session_key: str | None) -> tuple[int, Any]:
        """A request to a sandbox's agent server (``conversation_url`` up to ``/api/conversations``),
        authorised by that sandbox's ``X-Session-API-Key`` only (called under the lock)."""
        match = _AGENT_PATH.fullmatch(path)
        if match is None:
            return 404, {"detail": "Not Found"}
        sandbox_id, conversation_id, action = match.groups()
        now = time.time()
        members = [
            c
            for c in self._sandbox_members(sandbox_id)
            if c.sandbox_id == sandbox_id and c.api_version == "v1" and c.ready(now)
        ]
        key = _hex(conversation_id) if conversation_id else None
        target = next((c for c in members if c.id == key), None)
        host = target or (members[0] if members else None)
        if host is None or self._v1_sandbox_status(host, now) != "RUNNING":
            # *Stricter* than "nothing answers": the real agent server of a sandbox that is not
            # running is simply not reachable (refused, or the proxy's error).
            return 503, {"detail": "Agent server unavailable"}
        if session_key != f"session-{sandbox_id}":
            return 401, {"detail": "Unauthorized"}
        if action not in ("events/respond_to_confirmation", "run"):
            return 404, {"detail": "Not Found"}
        if method != "POST":
            return 405, {"detail": "Method Not Allowed"}
        if key is None:
            return _invalid(
                ["path", "conversation_id"], "Input should be a valid UUID", "uuid_parsing", conversation_id
            )
        if target is None or self._taken_over(target, now):
            if action == "run":
                return 404, {"detail": "Not Found"}
            return 404, {"detail": f"Conversation not found: {uuid.UUID(key)}"}
        if action == "run":
            return self.agent_run(target, now)
        return self.agent_respond_to_confirmation(target, body, now)

    def agent_respond_to_confirmation(self, conversation: Conversation, body: Any, now: float) -> tuple[int, Any]:
        """``ConfirmationResponseRequest`` ``{"accept": bool, "reason": str}``: accept runs the pending
        action (and, after a reject, the agent again); reject answers it with a ``UserRejectObservation``
        and leaves the agent ``idle``. Nothing pending: a harmless 200, as observed."""
        if not isinstance(body, dict):
            if body is None:
                return _invalid(["body"], "Field required", "missing")
            return _invalid(["body"], "Input should be a valid dictionary or object", "model_attributes_type", body)
        if "accept" not in body:
            return _invalid(["body", "accept"], "Field required", "missing", body)
        accept = body["accept"]
        if not isinstance(accept, bool):  # *stricter*: pydantic would also take "true", 1, "yes"...
            return _invalid(["body", "accept"], "Input should be a valid boolean", "bool_type", accept)
        reason = body.get("reason", DEFAULT_REJECTION)
        if not isinstance(reason, str):
            return _invalid(["body", "reason"], "Input should be a valid string", "string_type", reason)
        turn = conversation.pending_turn(now)
        if turn is not None:
            turn.respond(now, accept, reason)
        return 200, {"success": True}

    def agent_run(self, conversation: Conversation, now: float) -> tuple[int, Any]:
        """``POST .../run``: 409 while the agent runs; a pending action is approved (the run loop runs
        it), a rejected turn goes on; otherwise nothing to do (200)."""
        if conversation.agent_status(now) == "running":
            return 409, {"detail": "Conversation already running. Wait for completion or pause first."}
        turn = conversation.pending_turn(now)
        if turn is not None:
            turn.go_on(now)
        return 200, {"success": True}

    # -- V1: start -------------------------------------------------------------------------------

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
        agent_type = body.get("agent_type", "default")
        if agent_type not in AGENT_TYPES:
            return _invalid(["body", "agent_type"], "Input should be 'default' or 'plan'", "enum", agent_type)
        parent_id = body.get("parent_conversation_id")
        if parent_id is not None and _hex(parent_id) is None:
            return _invalid(
                ["body", "parent_conversation_id"], "Input should be a valid UUID", "uuid_parsing", parent_id
            )
        problem = _marker_problem(message)
        if problem:
            return 400, {"detail": problem}
        parent = None
        if parent_id is not None:
            # As in the real server's code: an unknown parent raises ValueError before the start task
            # exists, which nothing handles: 500 "Internal Server Error" (read in openhands-ai 1.11).
            parent = self._v1_find(parent_id, time.time())
            if parent is None:
                return 500, PlainText("Internal Server Error")
            body = self._inherit_from_parent(body, parent)
        refusal = self._quota_refusal() or self._capacity_refusal()
        if refusal:
            return refusal
        conversation = self._new_conversation("v1", body, message, parent=parent)
        conversation.start_task_id = uuid.uuid4().hex
        self.start_tasks[conversation.start_task_id] = conversation
        if parent is not None:
            self._boot_in_parent_sandbox(conversation, parent)
        return 200, self._start_task_json(conversation, time.time(), stamp=_z_iso)

    @staticmethod
    def _inherit_from_parent(body: dict[str, Any], parent: Conversation) -> dict[str, Any]:
        """The request as the server completes it from the parent (``_inherit_configuration_from_parent``):
        its sandbox, and its repository, branch and git provider where the request names none."""
        body = dict(body)
        body["sandbox_id"] = body.get("sandbox_id") or parent.sandbox_id
        for key, value in (
            ("selected_repository", parent.repository),
            ("selected_branch", parent.branch),
            ("git_provider", parent.git_provider),
        ):
            if not body.get(key):
                body[key] = value
        return body

    def _boot_in_parent_sandbox(self, conversation: Conversation, parent: Conversation) -> None:
        """The parent's sandbox hosts the sub-conversation: a PAUSED one is resumed (as the real start
        does); one in ERROR or MISSING fails the start task, as ``_wait_for_sandbox_start`` does."""
        now = time.time()
        sandbox = self._v1_sandbox_status(parent, now)
        if sandbox == "PAUSED":
            for member in self._sandbox_members(parent.sandbox_id):
                member.paused_at = None
                member.changes.append(now)
            self.resumes += 1
        elif sandbox == "MISSING":
            conversation.start_error = True
            conversation.error_step = 1
            conversation.error_detail = f"Sandbox not found: {parent.sandbox_id}"
        elif sandbox != "RUNNING":
            conversation.start_error = True
            conversation.error_step = 1
            conversation.error_detail = f"Sandbox status: {sandbox}"

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
                    "prompt_tokens": round(TOKENS_PER_DOLLAR[0] * spent),
                    "completion_tokens": round(TOKENS_PER_DOLLAR[1] * spent),
                },
            },
            "parent_conversation_id": conversation.parent_id,
            "sub_conversation_ids": [child.id for child in self._children(conversation, now)],
            "public": False,
            "tags": {},
            "created_at": _now_iso(conversation.created),
            "updated_at": _now_iso(conversation.updated_at(now)),
            "sandbox_status": sandbox,
            "execution_status": execution,
            "conversation_url": (
                f"{self.url}/agent/{conversation.sandbox_id}/api/conversations/{conversation.id}" if running else None
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

    def v1_download(self, conversation_id: str) -> tuple[int, Any]:
        """The trajectory export, as the open-source server writes it: a zip of ``meta.json`` (the
        conversation) and ``event_<n>_<id>.json`` per event on record; unknown -> 404. Served from
        the app server's records, whatever the sandbox's state. The body is bytes (``application/zip``)."""
        invalid = self._path_parameter(conversation_id, {}, "")
        if invalid:
            return invalid
        now = time.time()
        conversation = self._v1_find(conversation_id, now)
        if conversation is None:
            return 404, {"detail": f"Conversation not found: {uuid.UUID(_hex(conversation_id))}"}
        until = self._on_record_until(conversation, now)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("meta.json", json.dumps(self._v1_conversation_json(conversation, now), indent=2))
            events = [event for at, event in self._v1_events(conversation) if at <= until]
            for number, event in enumerate(events):
                archive.writestr(f"event_{number:06d}_{event['id']}.json", json.dumps(event, indent=2))
        return 200, buffer.getvalue()

    def _children(self, conversation: Conversation, now: float) -> list[Conversation]:
        """The conversation's sub-conversations (``parent_conversation_id``), oldest first."""
        found = (self._v1_visible(self.conversations.get(key), now) for key in conversation.sub_ids)
        return [child for child in found if child is not None]

    def _sandbox_members(self, sandbox_id: str) -> list[Conversation]:
        """The conversations a sandbox runs (a parent and its sub-conversations share one), deleted ones aside."""
        key = _hex(sandbox_id) or sandbox_id
        return [c for c in self.conversations.values() if c.sandbox_id == key and not c.deleted]

    def _sharing(self, conversation: Conversation) -> tuple[Conversation, ...]:
        """The other conversations whose agents changed this one's workspace (the same sandbox)."""
        return tuple(
            c
            for c in self.conversations.values()
            if c.sandbox_id == conversation.sandbox_id and c is not conversation and c.api_version == "v1"
        )

    def v1_search(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        q = _Query(query)
        limit = q.integer("limit", 100)
        offset = q.offset()
        subs = q.boolean("include_sub_conversations", False)
        if q.error:
            return q.error
        now = time.time()
        found = [c for c in self.conversations.values() if self._v1_visible(c, now) and (subs or not c.parent_id)]
        found.sort(key=lambda c: c.created, reverse=True)
        return 200, _page([self._v1_conversation_json(c, now) for c in found], offset, limit)

    def v1_delete(self, conversation_id: str) -> tuple[int, Any]:
        now = time.time()
        conversation = self._v1_find(conversation_id, now)
        if conversation is None:
            return 404, {"detail": "Item not found"}
        for child in self._children(conversation, now):  # the real server deletes the sub-conversations too
            child.deleted = True
            child.changes.append(now)
        conversation.deleted = True
        conversation.changes.append(now)
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
            now = time.time()
            for member in self._sandbox_members(sandbox_id):  # every conversation the sandbox runs
                if member.paused_at is None:
                    member.paused_at = now
                    member.changes.append(now)
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
            now = time.time()
            for member in self._sandbox_members(sandbox_id):
                if member.paused_at is not None:
                    member.paused_at = None
                    member.changes.append(now)
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
        run = body.get("run", True)
        waiting = conversation.pending_turn(now)
        if run and waiting is not None:  # as observed: a message approves the pending action (or, after a
            waiting.go_on(now)  # reject, runs the agent again); the new turn follows
        previous_end = conversation.finished_at()
        start = max(now + self.turn_lag_seconds, previous_end) if run else math.inf
        conversation.turns.append(
            Turn(
                message=text,
                sent_at=now,
                start=start,
                duration=float(directives.get("duration", self.conversation_seconds)) if run else 0.0,
                outcome=directives.get("outcome") or "finished",
                sandbox_error=float(directives.get("sandbox_error", 0) or 0) if run else 0.0,
                agent_type=conversation.agent_type,
            )
        )
        return 200, {"success": True, "sandbox_status": "RUNNING", "message": None}

    # -- V1: events --------------------------------------------------------------------------------

    def _v1_events(self, conversation: Conversation) -> list[tuple[float, dict[str, Any]]]:
        """Every event of the conversation's turns, with its time, whether or not it happened yet."""
        events: list[tuple[float, dict[str, Any]]] = []
        parent: list[str | None] = [None]
        snapshots: dict[str, str] = {}  # ``full_state`` event id -> the execution status it shows

        def add(at: float, turn_no: int, seq: int, kind: str, *, _seed: str = "", **fields: Any) -> str:
            seed = _seed or f"{conversation.id}/{turn_no}/{seq}"
            event_id = str(uuid.uuid5(_EVENT_NAMESPACE, seed))
            if at == math.inf:  # not yet: the turn waits at a confirmation
                return event_id
            if kind == "ActionEvent" and fields.get("source") == "agent":
                # the answer of an LLM call: the agent server publishes its usage just before
                add(at - 0.0001, turn_no, seq, "ConversationStateUpdateEvent", _seed=seed + "/stats", **_STATS)
            orphan = fields.get("key") == "full_state"  # a snapshot has no parent
            event = {"id": event_id, "timestamp": _naive_iso(at), "parent_id": None if orphan else parent[0]}
            events.append((at, {**event, **fields, "kind": kind}))
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

        def snapshot(at: float, turn_no: int, seq: int, status: str, crowd: int = 0) -> None:
            """The agent server's ``full_state`` (a run stopped), then ``crowd`` more (state_updates=)."""
            for number in range(1 + crowd):
                seed = f"{conversation.id}/{turn_no}/{seq}/full_state/{number}"
                event_id = add(
                    at + number * 1e-6,
                    turn_no,
                    seq,
                    "ConversationStateUpdateEvent",
                    _seed=seed,
                    source="environment",
                    key="full_state",
                    value=None,
                )
                snapshots[event_id] = status

        snapshot(conversation.ready_at - 0.0005, 0, 9, "idle")  # the agent server starts the conversation
        for number, turn in enumerate(conversation.turns):
            sent = conversation.ready_at if number == 0 else turn.sent_at
            message_id = add(
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
            add(
                sent,
                number,
                5,
                "ConversationStateUpdateEvent",
                source="environment",
                key="last_user_message_id",
                value=message_id,
            )
            if turn.start == math.inf:
                continue
            state(max(turn.start, sent), number, 1, "running")
            if number == 0:  # the title's LLM call
                add(max(turn.start, sent), number, 7, "ConversationStateUpdateEvent", **_STATS)
            self._confirmation_events(add, state, snapshot, conversation, number, turn)
            end = turn.end
            if turn.outcome == "finished":
                writes = [(path, text) for path, status, text in turn.edits() if status == "WRITE"]
                if any(c.tool == PLAN_EDITOR for c in turn.confirmations):
                    writes = []  # the plan's edit is the action it asked to confirm: on record there
                running = turn.duration + turn.sandbox_error - 0.003  # the turn's running time before its finish
                for index, (path, text) in enumerate(writes):
                    at = turn.at_running(running * (index + 1) / (len(writes) + 1))
                    self._file_editor_events(
                        add, conversation, at, number, 10 + 2 * index, path, text or "", plan=turn.agent_type == "plan"
                    )
                final = turn.final_message()
                finish = {"message": final, "kind": "FinishAction"}
                action_id, call_id = _agent_action(
                    add, end - 0.002, f"{conversation.id}/{number}", (number, 2), "finish", finish, {"message": final}
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
            if turn.outcome == "error":  # as the real agent server: the state update, then the error
                state(end - 0.001, number, 4, turn.outcome)
                add(
                    end - 0.0005,
                    number,
                    2,
                    "ConversationErrorEvent",
                    source="environment",
                    code="LLMServiceUnavailableError",
                    detail="litellm.InternalServerError: the LLM provider answered HTTP 500 (emulated outcome=error)",
                )
            else:
                state(end, number, 4, turn.outcome)
            following = conversation.turns[number + 1].start if number + 1 < len(conversation.turns) else math.inf
            if following > end + 0.001:  # the run stopped (a queued message would keep it going)
                snapshot(end + 0.001, number, 6, turn.outcome, turn.state_updates())
        events.sort(key=lambda pair: pair[0])
        self._fill_state_values(conversation, events, snapshots)
        return events

    def _fill_state_values(
        self, conversation: Conversation, events: list[tuple[float, dict[str, Any]]], snapshots: dict[str, str]
    ) -> None:
        """The ``stats`` and ``full_state`` values, in time order: the LLM usage so far (cost and
        tokens as the conversation's ``metrics`` count them), and the whole state at each snapshot."""
        calls: list[dict[str, Any]] = []
        usage = _token_usage(0.0)
        last_user: str | None = None
        leaf: str | None = None
        for at, event in events:
            if event["kind"] == "MessageEvent" and event.get("source") == "user":
                last_user = event["id"]
            if event["kind"] == "ConversationStateUpdateEvent" and event["key"] == "stats":
                spent = conversation.spent(at)
                before = usage
                usage = _token_usage(spent)
                per_call = usage["prompt_tokens"] + usage["completion_tokens"]
                per_call -= before["prompt_tokens"] + before["completion_tokens"]
                usage["per_turn_token"] = per_call
                calls.append({**usage, "response_id": f"chatcmpl-{event['id'].replace('-', '')[:24]}"})
                event["value"] = {
                    "usage_to_metrics": {"agent": {**_metrics(spent, usage), "max_budget_per_task": None}}
                }
            elif event["kind"] == "ConversationStateUpdateEvent" and event["key"] == "full_state":
                event["value"] = _full_state(
                    conversation,
                    snapshots.get(event["id"], "idle"),
                    conversation.spent(at),
                    usage,
                    calls,
                    last_user,
                    leaf,
                )
            leaf = event["id"]

    def _confirmation_events(
        self, add: Any, state: Any, snapshot: Any, conversation: Conversation, turn_no: int, turn: Turn
    ) -> None:
        """Each ``confirm=`` command the agent reached: its terminal ``ActionEvent`` and the state
        ``waiting_for_confirmation`` (the run stops: a ``full_state``); then on accept ``running`` and
        its ``TerminalObservation``, on reject ``idle`` and a ``UserRejectObservation`` (and ``running``
        once the agent goes on). The plan agent's edit of PLAN.md (``confirm_plan=``) the same way, with
        its ``planning_file_editor`` action and observation."""
        for index, answer in enumerate(turn.confirmations):
            asked = turn.asked_at(index)
            if asked is None:
                break
            seq = 100 + 10 * index
            if answer.tool == PLAN_EDITOR:
                action_id, call_id, observation = self._plan_edit_action(add, conversation, asked, turn_no, seq, turn)
            else:
                summary = f"run {answer.command}"
                action = {"command": answer.command, "is_input": False, "timeout": None, "reset": False}
                arguments = {"command": answer.command, "summary": summary, "security_risk": answer.risk}
                action_id, call_id = _agent_action(
                    add,
                    asked,
                    f"{conversation.id}/{turn_no}/{seq}",
                    (turn_no, seq),
                    "terminal",
                    {**action, "kind": "TerminalAction"},
                    arguments,
                    answer.risk,
                )
                observation = self._terminal_observation(conversation, answer.command)
            state(asked + 0.0001, turn_no, seq + 1, "waiting_for_confirmation")
            answered = answer.answered_at if answer.answered_at is not None else math.inf
            snapshot(min(asked + 0.0002, answered), turn_no, seq + 5, "waiting_for_confirmation", turn.state_updates())
            if answer.answered_at is None:
                continue
            if answer.accepted:
                state(answer.answered_at, turn_no, seq + 2, "running")
                add(
                    answer.answered_at + 0.0001,
                    turn_no,
                    seq + 3,
                    "ObservationEvent",
                    source="environment",
                    tool_name=answer.tool,
                    tool_call_id=call_id,
                    observation=observation,
                    action_id=action_id,
                    extended_content=[],
                )
                continue
            state(answer.answered_at, turn_no, seq + 2, "idle")
            add(
                answer.answered_at + 0.0001,
                turn_no,
                seq + 3,
                "UserRejectObservation",
                source="environment",
                tool_name=answer.tool,
                tool_call_id=call_id,
                rejection_reason=answer.reason,
                rejection_source="user",
                action_id=action_id,
            )
            if answer.resumed_at is not None:
                state(answer.resumed_at, turn_no, seq + 4, "running")

    @staticmethod
    def _terminal_observation(conversation: Conversation, command: str) -> dict[str, Any]:
        """What the terminal answers a command the agent ran (``TerminalObservation``)."""
        return {
            "content": [{"type": "text", "text": f"(emulated) ran: {command}"}],
            "is_error": False,
            "command": command,
            "exit_code": 0,
            "timeout": False,
            "metadata": {
                "exit_code": 0,
                "pid": -1,
                "username": "openhands",
                "hostname": "sandbox",
                "working_dir": conversation.project_dir,
                "py_interpreter_path": None,
                "prefix": "",
                "suffix": "\n[The command completed with exit code 0.]",
            },
            "full_output_save_dir": None,
            "kind": "TerminalObservation",
        }

    @staticmethod
    def _plan_edit_action(
        add: Any, conversation: Conversation, at: float, turn_no: int, seq: int, turn: Turn
    ) -> tuple[str, str, dict[str, Any]]:
        """The plan agent's ``planning_file_editor`` call that writes PLAN.md, as it waits for
        confirmation: ``(action id, tool call id, the observation it gets if it runs)``."""
        where = conversation.absolute(PLAN_FILE)
        text = turn.plan_text()
        risk = turn.confirmations[0].risk if turn.confirmations else "UNKNOWN"
        action_id, call_id = V1Routes._create_call(add, conversation, at, turn_no, seq, where, text, True, risk)
        return action_id, call_id, _created(where, text, plan=True)

    @staticmethod
    def _create_call(
        add: Any,
        conversation: Conversation,
        at: float,
        turn_no: int,
        seq: int,
        where: str,
        text: str,
        plan: bool,
        risk: str | None = None,
    ) -> tuple[str, str]:
        """The agent's ``file_editor`` (``plan``: ``planning_file_editor``) ``create`` call of ``where``:
        ``(action id, tool call id)``; ``risk``: it waits for confirmation with that security risk."""
        tool, prefix = ("planning_file_editor", "PlanningFileEditor") if plan else ("file_editor", "FileEditor")
        action = {"command": "create", "path": where, "file_text": text, "old_str": None, "new_str": None}
        summary = {"command": "create", "path": where, "file_text": text, "summary": f"create {where}"}
        return _agent_action(
            add,
            at,
            f"{conversation.id}/{turn_no}/{seq}",
            (turn_no, seq),
            tool,
            {**action, "insert_line": None, "view_range": None, "kind": f"{prefix}Action"},
            summary if risk is None else {**summary, "security_risk": risk},
            risk or "UNKNOWN",
        )

    @staticmethod
    def _file_editor_events(
        add: Any,
        conversation: Conversation,
        at: float,
        turn_no: int,
        seq: int,
        path: str,
        text: str,
        plan: bool = False,
    ) -> None:
        """The agent's ``file_editor`` ``create`` call and its observation, as the real agent writes a
        file (``plan``: the planning agent's ``planning_file_editor`` writing PLAN.md)."""
        where = conversation.absolute(path)
        tool = "planning_file_editor" if plan else "file_editor"
        action_id, call_id = V1Routes._create_call(add, conversation, at, turn_no, seq, where, text, plan)
        add(
            at + 0.0001,
            turn_no,
            seq + 1,
            "ObservationEvent",
            source="environment",
            tool_name=tool,
            tool_call_id=call_id,
            observation=_created(where, text, plan=plan),
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

    def _git_state(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[Any, float, Any]:
        """The conversation whose git state is asked for (with ``path``), the moment, or a refusal."""
        invalid = self._path_parameter(conversation_id, query, "path")
        if invalid:
            return None, 0.0, invalid
        now = time.time()
        conversation, refusal = self._reachable(conversation_id, now, "git state")
        return conversation, now, refusal

    def v1_git_changes(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        conversation, now, refusal = self._git_state(conversation_id, query)
        if conversation is None:
            return refusal
        root = query["path"][-1]
        # Only the repository root is a git repository; any other path is "not a repo": [] (as the
        # agent server answers). ``ref`` is accepted and changes nothing here.
        if not root.startswith("/") or posixpath.normpath(root) != conversation.project_dir:
            return 200, []
        changes = []
        for where, state in conversation.workspace(now, self._sharing(conversation)).items():
            relative = conversation.in_repository(where)
            if relative is not None:
                changes.append({"status": state.status, "path": relative})
        return 200, sorted(changes, key=lambda change: change["path"])

    def v1_git_diff(self, conversation_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        conversation, now, refusal = self._git_state(conversation_id, query)
        if conversation is None:
            return refusal
        path = query["path"][-1]
        state = (
            conversation.workspace(now, self._sharing(conversation)).get(posixpath.normpath(path))
            if path.startswith("/")
            else None
        )
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
        state = conversation.workspace(now, self._sharing(conversation)).get(posixpath.normpath(path))
        if state is None or state.modified is None:
            return (200, "") if empty else (404, {"detail": "File not found"})
        return 200, state.modified


def _created(where: str, text: str, *, plan: bool = False) -> dict[str, Any]:
    """The observation of a ``file_editor`` (``plan``: ``planning_file_editor``) ``create``."""
    return {
        "content": [{"type": "text", "text": f"File created successfully at: {where}"}],
        "is_error": False,
        "command": "create",
        "path": where,
        "prev_exist": plan,  # the planning tool created PLAN.md (its headers) at the start
        "old_content": None,
        "new_content": text,
        "kind": "PlanningFileEditorObservation" if plan else "FileEditorObservation",
    }


def _agent_action(
    add: Any,
    at: float,
    seed: str,
    place: tuple[int, int],
    tool: str,
    action: dict[str, Any],
    arguments: dict[str, Any],
    risk: str = "UNKNOWN",
) -> tuple[str, str]:
    """The agent's tool-call ``ActionEvent`` as the SDK records it (``finish`` included); ``(event id,
    tool call id)``."""
    call_id = f"call_{uuid.uuid5(_EVENT_NAMESPACE, seed).hex[:24]}"
    action_id = add(
        at,
        *place,
        "ActionEvent",
        source="agent",
        thought=[],
        reasoning_content=None,
        thinking_blocks=[],
        responses_reasoning_item=None,
        action=action,
        tool_name=tool,
        tool_call_id=call_id,
        tool_call={
            "id": call_id,
            "responses_item_id": None,
            "name": tool,
            "arguments": json.dumps(arguments),
            "origin": "completion",
        },
        llm_response_id=f"chatcmpl-{call_id[5:]}",
        security_risk=risk,
        critic_result=None,
        summary=arguments.get("summary"),
    )
    return action_id, call_id


#: The fields of a ``stats`` state update; its value is filled in time order (``_fill_state_values``).
_STATS: dict[str, Any] = {"source": "environment", "key": "stats", "value": None}
MODEL_NAME = "emulated-model"  # the conversation's ``llm_model``, as its metrics and state name it


def _token_usage(spent: float) -> dict[str, Any]:
    """The agent LLM's accumulated ``TokenUsage`` for what the conversation has cost so far."""
    return {
        "model": MODEL_NAME,
        "prompt_tokens": round(TOKENS_PER_DOLLAR[0] * spent),
        "completion_tokens": round(TOKENS_PER_DOLLAR[1] * spent),
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "context_window": 0,
        "per_turn_token": 0,
        "response_id": "",
    }


def _metrics(spent: float, usage: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": MODEL_NAME, "accumulated_cost": round(spent, 6), "accumulated_token_usage": dict(usage)}


#: What the app server adds to the plan agent's system message (shortened from ``openhands-ai`` 1.11's).
_PLANNING_SUFFIX = (
    "<IMPORTANT_PLANNING_BOUNDARIES>\nYou are a Planning Agent that can ONLY create plans - you CANNOT "
    "execute code or make changes.\n\nAfter you finalize the plan in PLAN.md, do not offer to execute it: "
    "the user clicks **Build** (the code agent then executes the plan) or switches to the code agent.\n"
    "</IMPORTANT_PLANNING_BOUNDARIES>"
)
_PLAN_SECTIONS = (
    ("OBJECTIVE", "Summarize the goal of the plan in one or two sentences."),
    ("CONTEXT SUMMARY", "Briefly describe the relevant system components, files, or data involved."),
    ("APPROACH OVERVIEW", "Outline the chosen approach at a high level, with a short rationale."),
    ("IMPLEMENTATION STEPS", "A step-by-step plan: each step's goal, method and, optionally, reference."),
    ("TESTING AND VALIDATION", "How the implementation can be verified: what success looks like."),
)


def _full_state(
    conversation: Conversation,
    status: str,
    spent: float,
    usage: dict[str, Any],
    calls: list[dict[str, Any]],
    last_user: str | None,
    leaf: str | None,
) -> dict[str, Any]:
    """A ``full_state`` snapshot as the agent server publishes it (``ConversationState`` dumped with
    ``exclude_none``; shape of ``openhands-ai`` 1.11 / SDK 1.34): the agent's LLM settings with the key
    masked, its tools, the workspace, the policy, and the usage with one entry per LLM call so far
    (so it grows as the conversation goes on: about 3 KB at the start, 5 KB for a planning agent)."""
    plan = conversation.agent_type == "plan"
    project = conversation.project_dir
    if plan:
        tools = [
            {"name": "glob", "params": {}},
            {"name": "grep", "params": {}},
            {"name": PLAN_EDITOR, "params": {"plan_path": conversation.absolute(PLAN_FILE)}},
        ]
    else:
        tools = [
            {"name": name, "params": {}} for name in ("terminal", "file_editor", "task_tracker", "browser_tool_set")
        ]
    context: dict[str, Any] = {
        "skills": [],
        "load_user_skills": True,
        "load_public_skills": True,
        "marketplace_path": "marketplaces/default.json",
        "registered_marketplaces": [],
        "load_project_skills": True,
        "disabled_skills": [],
        "secrets": {},
        "current_datetime": _z_iso(conversation.ready_at),
    }
    prompt_kwargs: dict[str, Any] = {"cli_mode": False, "llm_security_analyzer": True}
    if plan:
        context["system_message_suffix"] = _PLANNING_SUFFIX
        structure = "\n\n".join(f"{n}. {title}\n   * {text}" for n, (title, text) in enumerate(_PLAN_SECTIONS, 1))
        prompt_kwargs = {
            "plan_structure": "The plan must follow this structure exactly:\n\n" + structure,
            **prompt_kwargs,
        }
    asks = any(turn.confirmations for turn in conversation.turns)
    agent_usage: dict[str, Any] = {
        **_metrics(spent, usage),
        "costs": [],  # not modelled per call: the total is
        "response_latencies": [
            {"model": MODEL_NAME, "latency": 0.5, "response_id": call["response_id"]} for call in calls
        ],
        "token_usages": [dict(call) for call in calls],
    }
    state: dict[str, Any] = {
        "id": str(uuid.UUID(conversation.id)),
        "agent": {
            "llm": {
                "model": MODEL_NAME,
                "api_key": "**********",
                "auth_type": "api_key",
                "openrouter_site_url": "https://docs.all-hands.dev/",
                "openrouter_app_name": "OpenHands",
                "num_retries": 5,
                "retry_multiplier": 8.0,
                "retry_min_wait": 8,
                "retry_max_wait": 64,
                "timeout": 300,
                "max_message_chars": 30000,
                "stream": True,
                "drop_params": True,
                "modify_params": True,
                "disable_stop_word": False,
                "caching_prompt": True,
                "log_completions": False,
                "log_completions_folder": "logs/completions",
                "native_tool_calling": True,
                "reasoning_effort": "high",
                "enable_encrypted_reasoning": True,
                "prompt_cache_retention": "24h",
                "extended_thinking_budget": 200000,
                "usage_id": "agent",
                "litellm_extra_body": {},
                "is_subscription": False,
            },
            "tools": tools,
            "mcp_config": {},
            "include_default_tools": ["FinishTool", "ThinkTool", "SwitchLLMTool"],
            "agent_context": context,
            "system_prompt_filename": "system_prompt_planning.j2" if plan else "system_prompt.j2",
            "security_policy_filename": "security_policy.j2",
            "system_prompt_kwargs": prompt_kwargs,
            "tool_concurrency_limit": 1,
            "kind": "Agent",
        },
        "workspace": {"working_dir": project, "kind": "LocalWorkspace"},
        "persistence_dir": f"workspace/conversations/{conversation.id}",
        "max_iterations": 500,
        "stuck_detection": True,
        "execution_status": status,
        "confirmation_policy": {"kind": "AlwaysConfirm" if asks else "NeverConfirm"},
        "activated_knowledge_skills": [],
        "activated_path_rules": [],
        "invoked_skills": [],
        "blocked_actions": {},
        "blocked_messages": {},
        "head_is_empty": False,
        "stats": {"usage_to_metrics": {"agent": agent_usage} if calls else {}},
        "secret_registry": {"secret_sources": {}},
        "tags": {},
        "agent_state": {},
    }
    if not asks:
        state["security_analyzer"] = {"kind": "LLMSecurityAnalyzer"}
    if last_user:
        state["last_user_message_id"] = last_user
    if leaf:
        state["leaf_event_id"] = leaf
    return state
