"""The one place that knows the OpenHands HTTP API.

Each operation is a *flow*: a generator that yields :class:`ApiRequest` objects, receives each
answer's parsed JSON body (or the exception it raised, via ``throw``), and returns a result in
the normalised shape of :mod:`.state`. The flows do no I/O themselves, so the sync transport
(``requests``, in workers) and the async transport (``httpx``, in the triggerer) run exactly the
same request building and answer parsing and cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_provider_openhands.api.options import StartOptions
from airflow_provider_openhands.api.state import (
    START_TASK_ERROR,
    START_TASK_READY,
    V0,
    V1,
    ResponseShapeError,
    agent_server,
    canonical_id,
    error_from_events,
    final_message_from_events,
    is_capacity_error,
    latest_agent_state,
    message_text,
    normalise_v0,
    normalise_v1,
    own_message,
    own_turn_from_events,
    parse_start_task,
    parse_time,
    pending_actions_from_events,
    status_from_events,
    turn_from_events,
    v0_final_message,
)
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsConfigError,
    OpenHandsNotFoundError,
    OpenHandsStartError,
    OpenHandsTransientError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Flow = Generator["ApiRequest", Any, T]

#: ``GET /api/v1/app-conversations?ids=`` takes fewer than 100 ids per call.
MAX_IDS_PER_REQUEST = 99
#: How many of the newest V0 events to read for the agent's state.
V0_EVENTS_PAGE = 20


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request, described without sending it."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    #: False for requests that create something: retried only when the server surely did not act.
    idempotent: bool = True
    #: True for a download: a 2xx answer's body comes back as bytes, not parsed as JSON.
    raw: bool = False
    #: A conversation's agent server (its base URL) instead of the service: the request carries that
    #: sandbox's ``session_key`` only, never the connection's API key.
    server: str | None = None
    session_key: str | None = field(default=None, repr=False)


def chunks(items: Sequence[str], size: int = MAX_IDS_PER_REQUEST) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------


def _merge_extra(body: dict[str, Any], extra_body: Any) -> dict[str, Any]:
    """``extra_body`` passes other documented fields through; it may not override ours."""
    for key, value in dict(extra_body or {}).items():
        if key in body:
            raise OpenHandsConfigError(
                f"extra_body sets {key!r}, which the operator already sets from its own parameter"
            )
        body[key] = value
    return body


def _without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def v1_start_body(options: StartOptions) -> dict[str, Any]:
    """``AppConversationStartRequest``: the seed's vocabulary mapped to V1 field names."""
    body = _without_none(
        initial_message={"content": [{"type": "text", "text": options.initial_user_msg}]},
        selected_repository=options.repository,
        selected_branch=options.selected_branch,
        git_provider=options.git_provider,
        title=options.title,
        conversation_id=options.conversation_id,
        observability_tags=list(options.observability_tags) or None,
        observability_metadata=dict(options.observability_metadata) or None,
    )
    return _merge_extra(body, options.extra_body)


def v0_start_body(options: StartOptions) -> dict[str, Any]:
    """``InitSessionRequest`` (no ``additionalProperties``): ``title`` has no V0 field."""
    if options.title:
        log.warning("V0 servers have no conversation title field; title %r is not sent.", options.title)
    body = _without_none(
        initial_user_msg=options.initial_user_msg,
        repository=options.repository,
        selected_branch=options.selected_branch,
        git_provider=options.git_provider,
        conversation_id=options.conversation_id,
    )
    return _merge_extra(body, options.extra_body)


def start_request(api_version: str, options: StartOptions) -> ApiRequest:
    if api_version == V0:
        return ApiRequest("POST", "/api/conversations", json=v0_start_body(options), idempotent=False)
    return ApiRequest("POST", "/api/v1/app-conversations", json=v1_start_body(options), idempotent=False)


# ---------------------------------------------------------------------------------------------
# Flows
# ---------------------------------------------------------------------------------------------


def _shape_error(request: ApiRequest, exc: ResponseShapeError) -> OpenHandsApiError:
    return OpenHandsApiError(
        f"{request.method} {request.path} answered a body of an unexpected shape: {exc}",
        method=request.method,
        path=request.path,
    )


def start(api_version: str, options: StartOptions) -> Flow[dict[str, Any]]:
    """Start a conversation. Returns ``{"conversation_id", "start_task"}``.

    V0 answers the conversation id at once. V1 answers a start task; its ``conversation_id`` is
    only known once the task is READY (see :func:`start_tasks`).
    """
    request = start_request(api_version, options)
    body = yield request
    try:
        if api_version == V0:
            if not isinstance(body, dict) or not isinstance(body.get("conversation_id"), str):
                raise ResponseShapeError("ConversationResponse has no conversation_id")
            return {"conversation_id": body["conversation_id"], "start_task": None}
        task = parse_start_task(body)
    except ResponseShapeError as exc:
        raise _shape_error(request, exc) from None
    ready = task["status"] == "READY" and task["conversation_id"]
    return {"conversation_id": task["conversation_id"] if ready else None, "start_task": task}


def start_tasks(task_ids: Sequence[str]) -> Flow[dict[str, dict[str, Any] | None]]:
    """V1 start tasks by id (batched), keyed by canonical id; ``None`` for an unknown id."""
    found: dict[str, dict[str, Any] | None] = {}
    for batch in chunks(list(task_ids)):
        request = ApiRequest("GET", "/api/v1/app-conversations/start-tasks", params=tuple(("ids", i) for i in batch))
        body = yield request
        try:
            found.update(_match_batch(body, batch, parse_start_task))
        except ResponseShapeError as exc:
            raise _shape_error(request, exc) from None
    return found


def start_task(task_id: str) -> Flow[dict[str, Any]]:
    """One start task; :class:`OpenHandsNotFoundError` naming the id if it does not exist."""
    tasks = yield from start_tasks([task_id])
    task = tasks.get(canonical_id(task_id))
    if task is None:
        raise OpenHandsNotFoundError(f"OpenHands has no start task with id {task_id!r}")
    return task


#: Pages of recent start tasks a retry reads, at most, looking for an earlier try's start.
START_TASK_PAGES = 10


def recent_start_tasks(since: str, wanted: Sequence[str]) -> Flow[list[dict[str, Any]]]:
    """V1 start tasks created since ``since`` (ISO time) that asked for one of the ``wanted`` ids,
    newest first.

    Before its start task is READY a conversation does not exist (its id reads ``null``), and the
    server's ``conversation_id__eq`` filter matches only READY tasks: a retry recognises an earlier
    try's start by the id it asked for (``request.conversation_id``) among the recent start tasks.
    """
    wanted_keys = {canonical_id(i) for i in wanted}
    found: list[dict[str, Any]] = []
    page_id = None
    for _ in range(START_TASK_PAGES):
        params = [("created_at__gte", since), ("sort_order", "CREATED_AT_DESC"), ("limit", "100")]
        if page_id:
            params.append(("page_id", page_id))
        request = ApiRequest("GET", "/api/v1/app-conversations/start-tasks/search", params=tuple(params))
        body = yield request
        try:
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise ResponseShapeError("AppConversationStartTaskPage has no items list")
            tasks = [parse_start_task(item) for item in body["items"] if item is not None]
        except ResponseShapeError as exc:
            raise _shape_error(request, exc) from None
        found += [t for t in tasks if t.get("requested_id") and canonical_id(t["requested_id"]) in wanted_keys]
        page_id = body.get("next_page_id")
        if not page_id:
            break
    return found


#: How many of the newest events to read to learn how a paused conversation's last turn ended.
EVENTS_PAGE = 50
#: The most pages of events one read goes back through, past the state updates that crowd them.
EVENTS_MAX_PAGES = 5


def _crowding(event: dict[str, Any]) -> bool:
    """A state update the provider never reads: the agent server's snapshots of the whole state
    (``full_state``, a few KB each, at each start and stop of a run), its LLM usage (``stats``, one
    per LLM call), ``last_user_message_id``... Only ``execution_status`` says how a turn goes."""
    return event.get("kind") == "ConversationStateUpdateEvent" and event.get("key") != "execution_status"


def _turn_boundary(event: dict[str, Any]) -> bool:
    """A message (the user's begins a turn, the agent's may end one) or the agent's ``finish``: no
    event older than it changes how the newest turn ended, its final message or its error."""
    action = event.get("action") if isinstance(event.get("action"), dict) else {}
    finish = event.get("tool_name") == "finish" or action.get("kind") == "FinishAction"
    return event.get("kind") == "MessageEvent" or (event.get("kind") == "ActionEvent" and finish)


def _user_message(event: dict[str, Any]) -> bool:
    """A user's message: it approved whatever waited before it, so no older action waits."""
    return event.get("kind") == "MessageEvent" and event.get("source") == "user"


def newest_events_past_state_updates(
    conversation_id: str, limit: int, boundary: Callable[[dict[str, Any]], bool] = _turn_boundary
) -> Flow[dict[str, Any]]:
    """V1: the newest events, newest first, as one page ``{"items": [...]}`` of at least ``limit``
    events besides the state updates that crowd real pages (see :func:`_crowding`): page after page,
    until that many are read, or an event ``boundary`` accepts (nothing older matters), or the list
    ends, or :data:`EVENTS_MAX_PAGES` pages were read. One request when nothing crowds the page."""
    items: list[dict[str, Any]] = []
    page_id: str | None = None
    for _ in range(EVENTS_MAX_PAGES):
        params = [("sort_order", "TIMESTAMP_DESC"), ("limit", str(limit))]
        if page_id:
            params.append(("page_id", page_id))
        body = yield from _events_page(conversation_id, params)
        page = body["items"]
        items += page
        if (
            not body.get("next_page_id")
            or any(boundary(event) for event in page)
            or sum(1 for event in items if not _crowding(event)) >= limit
        ):
            break
        page_id = str(body["next_page_id"])
    return {"items": items}


def turn_outcome(conversation_id: str, own: tuple[str, float, float] | None = None) -> Flow[dict[str, Any]]:
    """V1, from the events: ``status``, how the newest turn ended (``finished``/``error``/``stuck``,
    None if it did not), ``final_message``, the agent's last word, and ``error``, the agent's own
    last error (cut short; None if it ended well), from the newest events (one page, unless state
    updates crowd it). Readable while the sandbox is paused, when ``execution_status`` is not.

    With ``own`` (a follow-up's message and when it went in): the turn that follows that message,
    read back to it and the end before it, and ``ambiguous`` (why the events cannot tell that turn's
    end: another message went in meanwhile). A message not among the events read (too far back)
    counts only when no other user message is newer: the newest turn is then its."""
    ambiguous = None
    if own is None:
        page = yield from newest_events_past_state_updates(conversation_id, EVENTS_PAGE)
    else:
        page = yield from newest_events_past_state_updates(conversation_id, EVENTS_PAGE, _past_own(own))
        turn, ambiguous = own_turn_from_events(page, own)
        if turn is None and ambiguous is None and any(_user_message(e) for e in page["items"]):
            ambiguous = "this task's message is not among the newest events, and other messages are"
        page = turn if turn is not None else page
    ended, live = turn_from_events(page)
    outcome = {
        "status": None if ambiguous else ended,
        "live": live,
        "final_message": final_message_from_events(page),
        "error": error_from_events(page),
    }
    return outcome if own is None else {**outcome, "ambiguous": ambiguous}


def _past_own(own: tuple[str, float, float]) -> Callable[[dict[str, Any]], bool]:
    """A boundary for :func:`newest_events_past_state_updates`: an end (or a message) older than this
    task's own message (nothing older tells its turn apart). Events come newest first."""
    seen = False

    def boundary(event: dict[str, Any]) -> bool:
        nonlocal seen
        if own_message(event, own):
            seen = True
            return False
        return seen and (_turn_boundary(event) or status_from_events({"items": [event]}) is not None)

    return boundary


def newest_events(
    conversation_id: str, limit: int = EVENTS_PAGE, kind: str | None = None
) -> Flow[list[dict[str, Any]]]:
    """V1: the conversation's newest events (of one ``kind``, if given), newest first."""
    params = [("sort_order", "TIMESTAMP_DESC"), ("limit", str(limit))]
    if kind:
        params.append(("kind__eq", kind))
    body = yield from _events_page(conversation_id, params)
    return body["items"]


def _events_page(conversation_id: str, params: list[tuple[str, str]]) -> Flow[dict[str, Any]]:
    """One page of ``events/search``: ``{"items": [event, ...], "next_page_id"}`` (checked)."""
    request = ApiRequest("GET", f"/api/v1/conversation/{conversation_id}/events/search", params=tuple(params))
    body = yield request
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise _shape_error(request, ResponseShapeError("EventPage has no items list"))
    return {**body, "items": [event for event in body["items"] if isinstance(event, dict)]}


def pending_actions(conversation_id: str) -> Flow[list[dict[str, Any]]]:
    """V1: the agent's actions waiting for confirmation (see :func:`pending_actions_from_events`),
    from the newest 100 events past the state updates that follow them (the run stops there: the
    agent server publishes its whole state, and more snapshots may come), back to the user's last
    message at most."""
    page = yield from newest_events_past_state_updates(conversation_id, 100, _user_message)
    return pending_actions_from_events(page)


def _with_agent_server(conversation_id: str) -> Flow[dict[str, Any]]:
    """V1: the conversation as the app server gives it (its agent server's url and session key, its
    ``execution_status``), read just now; :class:`OpenHandsNotFoundError` naming the id if none."""
    body = yield ApiRequest("GET", "/api/v1/app-conversations", params=(("ids", conversation_id),))
    raw = body[0] if isinstance(body, list) and body else None
    if raw is None:
        raise OpenHandsNotFoundError(f"OpenHands has no conversation with id {conversation_id!r}")
    return raw


def _run(conversation_id: str, server: tuple[str, str]) -> Flow[None]:
    """``/run`` on the agent server: never repeated by the transport (a ``/run`` reaching an agent that
    waits for confirmation by then approves what waits). 409: it runs already (someone ran it on)."""
    base, key = server
    path = f"/api/conversations/{conversation_id}/run"
    try:
        yield ApiRequest("POST", path, server=base, session_key=key, idempotent=False)
    except OpenHandsApiError as exc:
        if exc.status_code != 409:
            raise


def respond_to_confirmation(conversation_id: str, accept: bool, reason: str) -> Flow[bool]:
    """V1: accept or reject what the conversation waits to have confirmed, on its agent server, as the
    OpenHands web UI does (the app server does not pass it on). After a rejection the agent would
    stay idle: it is told to run on, and reads the reason. A sandbox that does not run has no agent
    server to answer: a transient error (it may run again)."""
    raw = yield from _with_agent_server(conversation_id)
    server = agent_server(raw)
    if server is None:
        raise OpenHandsTransientError(
            f"Conversation {conversation_id}: its sandbox is {raw.get('sandbox_status')}, so its agent server "
            "cannot take the confirmation answer now",
            request_sent=False,
        )
    base, key = server
    answer: dict[str, Any] = {"accept": bool(accept)}
    if reason:
        answer["reason"] = reason
    # never sent twice by the transport: a second answer would go to whatever waits by then
    respond = f"/api/conversations/{conversation_id}/events/respond_to_confirmation"
    yield ApiRequest("POST", respond, json=answer, server=base, session_key=key, idempotent=False)
    if not accept:
        yield from _run(conversation_id, server)
    return True


def run_on(conversation_id: str) -> Flow[bool]:
    """V1: run an idle agent on (``/run`` on its agent server), as after a rejection whose own ``/run``
    was lost. Only if the conversation, read just now, is ``idle``: a ``/run`` reaching an agent that
    waits for confirmation approves what it waits for. False: it was not idle (nothing was sent)."""
    raw = yield from _with_agent_server(conversation_id)
    server = agent_server(raw)
    if raw.get("execution_status") != "idle" or server is None:
        return False
    yield from _run(conversation_id, server)
    return True


def user_message_sent(conversation_id: str, text: str, since: str | None) -> Flow[str | None]:
    """V1: the time of the newest user message with exactly ``text`` sent since ``since`` (ISO), or
    None. A follow-up's retry asks it before it sends again: an identical message an earlier DAG
    run sent (before ``since``) does not count."""
    params = [("sort_order", "TIMESTAMP_DESC"), ("limit", str(EVENTS_PAGE)), ("kind__eq", "MessageEvent")]
    if since:
        params.append(("timestamp__gte", since.replace("Z", "").replace("+00:00", "")))
    request = ApiRequest("GET", f"/api/v1/conversation/{conversation_id}/events/search", params=tuple(params))
    body = yield request
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise _shape_error(request, ResponseShapeError("EventPage has no items list"))
    floor = parse_time(since) if since else None
    for event in body["items"]:
        if not isinstance(event, dict) or event.get("kind") != "MessageEvent" or event.get("source") != "user":
            continue
        moment = parse_time(event.get("timestamp"))
        if floor is not None and (moment is None or moment < floor):
            continue
        if message_text(event) == text:
            return str(event.get("timestamp"))
    return None


def ended_status(conversation_id: str) -> Flow[str | None]:
    """How the newest turn ended according to the events, or None (see :func:`turn_outcome`)."""
    outcome = yield from turn_outcome(conversation_id)
    return outcome["status"]


def git_changes(conversation_id: str, path: str) -> Flow[list[dict[str, str]]]:
    """V1: the files the agent changed in the workspace directory ``path``: ``[{path, status}]``.
    Read while the sandbox runs (the agent server answers it)."""
    request = ApiRequest("GET", f"/api/v1/app-conversations/{conversation_id}/git/changes", params=(("path", path),))
    body = yield request
    if not isinstance(body, list):
        raise _shape_error(request, ResponseShapeError("git changes should be a JSON list"))
    changes = []
    for item in body:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            changes.append({"path": item["path"], "status": str(item.get("status") or "MODIFIED")})
    return changes


def git_diff(conversation_id: str, path: str) -> Flow[dict[str, str]]:
    """V1: one changed file's ``original`` and ``modified`` text."""
    request = ApiRequest("GET", f"/api/v1/app-conversations/{conversation_id}/git/diff", params=(("path", path),))
    body = yield request
    if not isinstance(body, dict):
        raise _shape_error(request, ResponseShapeError("git diff should be a JSON object"))
    return {"original": str(body.get("original") or ""), "modified": str(body.get("modified") or "")}


def read_file(conversation_id: str, file_path: str) -> Flow[str | None]:
    """V1: a file of the workspace as text; None if the agent did not write it."""
    request = ApiRequest("GET", f"/api/v1/app-conversations/{conversation_id}/file", params=(("file_path", file_path),))
    try:
        body = yield request
    except OpenHandsNotFoundError:
        return None
    if body is not None and not isinstance(body, str):
        raise _shape_error(request, ResponseShapeError("a file should be a JSON string"))
    return body or None


def download_trajectory(conversation_id: str) -> Flow[bytes]:
    """V1: the conversation's trajectory (its events and metadata) as the zip the service exports."""
    request = ApiRequest("GET", f"/api/v1/app-conversations/{conversation_id}/download", raw=True)
    body = yield request
    if not isinstance(body, bytes) or not body.startswith(b"PK"):
        raise _shape_error(request, ResponseShapeError("a trajectory download should be a zip file"))
    return body


def stop_start_task(task_id: str) -> Flow[bool]:
    """Pause the sandbox of a V1 start task, if it has one yet. False when there is nothing to pause
    (no sandbox yet, or the start failed)."""
    tasks = yield from start_tasks([task_id])
    task = tasks.get(canonical_id(task_id))
    # A start task that failed started nothing of its own: the sandbox it names may be another
    # conversation's (a reused id takes the original's sandbox over).
    if task is None or not task.get("sandbox_id") or task["status"] == START_TASK_ERROR:
        return False
    try:
        yield ApiRequest("POST", f"/api/v1/sandboxes/{task['sandbox_id']}/pause")
    except OpenHandsNotFoundError:
        return False
    return True


def started_conversation_id(task: dict[str, Any]) -> str | None:
    """The conversation id once the start task is READY, None while it works.

    Raises :class:`OpenHandsStartError` with the task's ``detail`` when it ended in ERROR.
    """
    if task["status"] == START_TASK_READY and task["conversation_id"]:
        return task["conversation_id"]
    if task["status"] == START_TASK_ERROR:
        detail = task.get("detail") or "no detail given"
        raise OpenHandsStartError(
            f"OpenHands could not start the conversation (start task {task['id']}): {detail}",
            capacity=is_capacity_error(task),
        )
    return None


def _match_batch(body: Any, ids: Sequence[str], parse: Any) -> dict[str, Any]:
    """Pair a batch answer with the ids asked for: by id where given, else by position."""
    if not isinstance(body, list):
        raise ResponseShapeError(f"expected a JSON list, got {type(body).__name__}")
    result: dict[str, Any] = {canonical_id(i): None for i in ids}
    for position, item in enumerate(body):
        if item is None:
            continue
        parsed = parse(item, ids[position] if position < len(ids) else None)
        key = canonical_id(parsed.get("id") or parsed.get("conversation_id"))
        if key not in result and position < len(ids):
            key = canonical_id(ids[position])
        result[key] = parsed
    return result


def conversations(api_version: str, conversation_ids: Sequence[str], base_url: str) -> Flow[dict[str, Any]]:
    """Normalised states by canonical id; ``None`` for an id the server does not know.

    V1 reads up to 99 conversations per request; V0 has no batch endpoint, so it reads each
    conversation and, while its runtime runs, the newest events for the agent's own state.
    """
    found: dict[str, dict[str, Any] | None] = {}
    if api_version == V1:
        for batch in chunks(list(conversation_ids)):
            request = ApiRequest("GET", "/api/v1/app-conversations", params=tuple(("ids", i) for i in batch))
            body = yield request
            try:
                found.update(_match_batch(body, batch, lambda item, asked: normalise_v1(item, base_url, asked)))
            except ResponseShapeError as exc:
                raise _shape_error(request, exc) from None
        return found
    for conversation_id in conversation_ids:
        found[canonical_id(conversation_id)] = yield from _v0_conversation(conversation_id, base_url)
    return found


def _v0_conversation(conversation_id: str, base_url: str) -> Flow[dict[str, Any] | None]:
    request = ApiRequest("GET", f"/api/conversations/{conversation_id}")
    try:
        info = yield request
    except OpenHandsNotFoundError:
        return None
    if info is None:
        return None
    agent_state = final_message = None
    if isinstance(info, dict) and info.get("status") in ("RUNNING", "STOPPED"):
        events_request = ApiRequest(
            "GET",
            f"/api/conversations/{conversation_id}/events",
            params=(("reverse", "true"), ("limit", str(V0_EVENTS_PAGE))),
        )
        events = yield events_request
        try:
            agent_state = latest_agent_state(events)
        except ResponseShapeError as exc:
            raise _shape_error(events_request, exc) from None
        final_message = v0_final_message(events)
    try:
        return normalise_v0(info, agent_state, base_url, conversation_id, final_message)
    except ResponseShapeError as exc:
        raise _shape_error(request, exc) from None


def conversation(api_version: str, conversation_id: str, base_url: str) -> Flow[dict[str, Any]]:
    """One normalised state; :class:`OpenHandsNotFoundError` naming the id if it does not exist."""
    states = yield from conversations(api_version, [conversation_id], base_url)
    state = states.get(canonical_id(conversation_id))
    if state is None:
        raise OpenHandsNotFoundError(f"OpenHands has no conversation with id {conversation_id!r}")
    return state


def stop(api_version: str, conversation_id: str, sandbox_id: str | None = None) -> Flow[bool]:
    """Stop a conversation so it costs nothing more. Returns False if it no longer exists.

    V1 has no "stop": pausing the sandbox stops the agent and frees the account's slot, and the
    conversation stays readable (and resumable).
    """
    if api_version == V0:
        try:
            yield ApiRequest("POST", f"/api/conversations/{conversation_id}/stop")
        except OpenHandsNotFoundError:
            return False
        return True
    if sandbox_id is None:
        states = yield from conversations(V1, [conversation_id], "")
        state = states.get(canonical_id(conversation_id))
        if state is None or not state.get("sandbox_id"):
            return False
        sandbox_id = state["sandbox_id"]
    try:
        yield ApiRequest("POST", f"/api/v1/sandboxes/{sandbox_id}/pause")
    except OpenHandsNotFoundError:
        return False
    return True


def resume(api_version: str, sandbox_id: str) -> Flow[bool]:
    """Resume a paused V1 sandbox, so its agent's state can be read (and go on). False on V0."""
    if api_version != V1:
        return False
    try:
        yield ApiRequest("POST", f"/api/v1/sandboxes/{sandbox_id}/resume")
    except OpenHandsNotFoundError:
        return False
    return True


def send_message(conversation_id: str, text: str, *, run: bool = True) -> Flow[dict[str, Any]]:
    """V1: a follow-up user message (``AppSendMessageRequest``); with ``run`` the agent starts a new
    turn on it. The sandbox must be RUNNING (a PAUSED one answers 409: resume it first). Not retried
    unless the server surely did not act (it creates a turn)."""
    request = ApiRequest(
        "POST",
        f"/api/v1/app-conversations/{conversation_id}/send-message",
        json={"role": "user", "content": [{"type": "text", "text": text}], "run": run},
        idempotent=False,
    )
    body = yield request
    return body if isinstance(body, dict) else {"success": True}


def check_auth(api_version: str) -> Flow[None]:
    """The cheapest authenticated call: list at most one conversation."""
    if api_version == V0:
        yield ApiRequest("GET", "/api/conversations", params=(("limit", "1"),))
    else:
        yield ApiRequest("GET", "/api/v1/app-conversations/search", params=(("limit", "1"),))
