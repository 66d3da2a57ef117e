"""The normalised conversation state: one shape for V0 and V1 answers.

Operators, sensors and triggers only ever look at this shape, so a DAG works unchanged against
the live V1 service and a legacy V0 server. ``session_api_key`` (a sandbox credential) is never
copied into it: the state goes to XCom and to logs.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

log = logging.getLogger(__name__)

V0 = "v0"
V1 = "v1"
API_VERSIONS = (V1, V0)

#: Normalised statuses. ``terminal`` ones never change again without a user acting.
STATUS_STARTING = "starting"
STATUS_IDLE = "idle"
STATUS_RUNNING = "running"
STATUS_PAUSED = "paused"
STATUS_WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"
STATUS_FINISHED = "finished"
STATUS_ERROR = "error"
STATUS_STUCK = "stuck"
STATUS_MISSING = "missing"
STATUS_STOPPED = "stopped"
STATUS_DELETING = "deleting"
STATUS_REJECTED = "rejected"
STATUS_UNKNOWN = "unknown"

KNOWN_STATUSES = frozenset(
    {
        STATUS_STARTING,
        STATUS_IDLE,
        STATUS_RUNNING,
        STATUS_PAUSED,
        STATUS_WAITING_FOR_CONFIRMATION,
        STATUS_FINISHED,
        STATUS_ERROR,
        STATUS_STUCK,
        STATUS_MISSING,
        STATUS_STOPPED,
        STATUS_DELETING,
        STATUS_REJECTED,
        STATUS_UNKNOWN,
    }
)

DEFAULT_SUCCESS_STATUSES = frozenset({STATUS_FINISHED})
#: ``missing`` is V1's sandbox MISSING, ``stopped`` a V0 conversation stopped before the agent
#: finished, ``rejected`` a V0 agent that refused the task: none of them will ever finish.
DEFAULT_FAILURE_STATUSES = frozenset({STATUS_ERROR, STATUS_STUCK, STATUS_MISSING, STATUS_STOPPED, STATUS_REJECTED})

_V1_EXECUTION = {
    "idle": STATUS_IDLE,
    "running": STATUS_RUNNING,
    "paused": STATUS_PAUSED,
    "waiting_for_confirmation": STATUS_WAITING_FOR_CONFIRMATION,
    "finished": STATUS_FINISHED,
    "error": STATUS_ERROR,
    "stuck": STATUS_STUCK,
    "deleting": STATUS_DELETING,
}
_V1_SANDBOX = {
    "STARTING": STATUS_STARTING,
    "PAUSED": STATUS_PAUSED,
    "ERROR": STATUS_ERROR,
    "MISSING": STATUS_MISSING,
}
_V0_AGENT = {
    "loading": STATUS_STARTING,
    "running": STATUS_RUNNING,
    "awaiting_user_input": STATUS_FINISHED,
    "finished": STATUS_FINISHED,
    "paused": STATUS_PAUSED,
    "stopped": STATUS_STOPPED,
    "rejected": STATUS_REJECTED,
    "error": STATUS_ERROR,
    "awaiting_user_confirmation": STATUS_WAITING_FOR_CONFIRMATION,
    "user_confirmed": STATUS_RUNNING,
    "user_rejected": STATUS_RUNNING,
    "rate_limited": STATUS_RUNNING,
}
_V0_CONVERSATION = {
    "STARTING": STATUS_STARTING,
    "STOPPED": STATUS_STOPPED,
    "ERROR": STATUS_ERROR,
    "ARCHIVED": STATUS_STOPPED,
}

START_TASK_READY = "READY"
START_TASK_ERROR = "ERROR"

_unknown_seen: set[tuple[str, str]] = set()


class ResponseShapeError(ValueError):
    """A body that does not have the shape the official schema promises."""


def _unknown(kind: str, value: str) -> str:
    """Log an unknown enum value once per process and treat it as non-terminal."""
    if (kind, value) not in _unknown_seen:
        _unknown_seen.add((kind, value))
        log.warning("OpenHands sent an unknown %s %r; treating it as not terminal.", kind, value)
    return STATUS_UNKNOWN


def canonical_id(value: str) -> str:
    """Compare ids in one form: the service writes UUIDs with or without dashes."""
    try:
        return uuid.UUID(str(value)).hex
    except ValueError:
        return str(value)


def conversation_page_url(base_url: str, conversation_id: str) -> str:
    return f"{base_url.rstrip('/')}/conversations/{conversation_id}"


def _require_mapping(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ResponseShapeError(f"expected a JSON object for {what}, got {type(body).__name__}")
    return body


def _opt_str(body: dict[str, Any], key: str, what: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ResponseShapeError(f"{what}.{key} should be a string, got {type(value).__name__}")
    return value


def _pr_numbers(body: dict[str, Any], what: str) -> list[int]:
    value = body.get("pr_number") or []
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        raise ResponseShapeError(f"{what}.pr_number should be a list of integers")
    return list(value)


#: Where each hosted git provider shows a pull (merge) request. Self-hosted providers have no known host.
_PR_URL = {
    "github": "https://github.com/{repository}/pull/{number}",
    "gitlab": "https://gitlab.com/{repository}/-/merge_requests/{number}",
    "bitbucket": "https://bitbucket.org/{repository}/pull-requests/{number}",
}


def pr_urls(repository: str | None, git_provider: str | None, numbers: list[int]) -> list[str]:
    """Links to the conversation's pull requests, where the provider's host is known (GitHub when
    the service does not say)."""
    template = _PR_URL.get(git_provider or "github")
    if not repository or template is None:
        return []
    return [template.format(repository=repository, number=number) for number in numbers]


def _metrics(raw: Any) -> dict[str, Any] | None:
    """Keep the figures a pipeline reports on: cost and token counts."""
    if not isinstance(raw, dict):
        return None
    usage = raw.get("accumulated_token_usage") if isinstance(raw.get("accumulated_token_usage"), dict) else {}
    return {
        "accumulated_cost": raw.get("accumulated_cost"),
        "max_budget_per_task": raw.get("max_budget_per_task"),
        "model_name": raw.get("model_name"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cache_read_tokens": usage.get("cache_read_tokens"),
        "reasoning_tokens": usage.get("reasoning_tokens"),
    }


def v1_status(sandbox_status: str | None, execution_status: str | None) -> str:
    if sandbox_status == "RUNNING":
        if execution_status is None:
            return STATUS_STARTING
        return _V1_EXECUTION.get(execution_status) or _unknown("execution_status", execution_status)
    if sandbox_status in _V1_SANDBOX:
        return _V1_SANDBOX[sandbox_status]
    return _unknown("sandbox_status", str(sandbox_status))


def normalise_v1(body: Any, base_url: str, fallback_id: str | None = None) -> dict[str, Any]:
    """``AppConversation`` -> normalised state.

    The schema does not require ``id``; in a batch answer the id asked for stands in for it.
    """
    conv = _require_mapping(body, "AppConversation")
    conversation_id = _opt_str(conv, "id", "AppConversation") or fallback_id
    if not conversation_id:
        raise ResponseShapeError("AppConversation has no id")
    sandbox_status = _opt_str(conv, "sandbox_status", "AppConversation") or "MISSING"
    execution_status = _opt_str(conv, "execution_status", "AppConversation")
    return {
        "conversation_id": conversation_id,
        "api_version": V1,
        "status": v1_status(sandbox_status, execution_status),
        "execution_status": execution_status,
        "sandbox_status": sandbox_status,
        "sandbox_id": _opt_str(conv, "sandbox_id", "AppConversation"),
        "title": _opt_str(conv, "title", "AppConversation"),
        "selected_repository": _opt_str(conv, "selected_repository", "AppConversation"),
        "selected_branch": _opt_str(conv, "selected_branch", "AppConversation"),
        "git_provider": _opt_str(conv, "git_provider", "AppConversation"),
        "pr_number": _pr_numbers(conv, "AppConversation"),
        "pr_urls": pr_urls(
            _opt_str(conv, "selected_repository", "AppConversation"),
            _opt_str(conv, "git_provider", "AppConversation"),
            _pr_numbers(conv, "AppConversation"),
        ),
        "url": conversation_page_url(base_url, conversation_id),
        "metrics": _metrics(conv.get("metrics")),
        "created_at": conv.get("created_at"),
        "updated_at": conv.get("updated_at"),
    }


def latest_agent_state(events_body: Any) -> str | None:
    """The agent's state from the newest ``agent_state_changed`` observation of an events page."""
    if events_body is None:
        return None
    page = _require_mapping(events_body, "events page")
    events = page.get("events") or []
    if not isinstance(events, list):
        raise ResponseShapeError("events page .events should be a list")
    newest: tuple[int, str] | None = None
    for position, event in enumerate(events):
        if not isinstance(event, dict) or event.get("observation") != "agent_state_changed":
            continue
        extras = event.get("extras") if isinstance(event.get("extras"), dict) else {}
        state = extras.get("agent_state")
        if not isinstance(state, str):
            continue
        order = event.get("id") if isinstance(event.get("id"), int) else position
        if newest is None or order >= newest[0]:
            newest = (order, state)
    return newest[1] if newest else None


def v0_final_message(events_body: Any) -> str | None:
    """V0: the agent's last word, from an events page: its ``finish`` action's ``final_thought``
    (else the action's message), else its newest ``message`` action."""
    if not isinstance(events_body, dict) or not isinstance(events_body.get("events"), list):
        return None
    agent = [e for e in events_body["events"] if isinstance(e, dict) and e.get("source") == "agent"]
    ordered = sorted(agent, key=lambda e: e.get("id") if isinstance(e.get("id"), int) else -1, reverse=True)
    for event in ordered:
        args = event.get("args") if isinstance(event.get("args"), dict) else {}
        if event.get("action") == "finish":
            return str(args.get("final_thought") or event.get("message") or "")
        if event.get("action") == "message":
            return str(args.get("content") or event.get("message") or "")
    return None


def v0_status(conversation_status: str | None, runtime_status: str | None, agent_state: str | None) -> str:
    """V0 ``status`` tracks the runtime, not the agent: RUNNING can mean done, so read the agent."""
    if runtime_status and runtime_status.startswith("STATUS$ERROR"):
        return STATUS_ERROR
    if conversation_status == "RUNNING" or (conversation_status is None and agent_state):
        if agent_state is None:
            return STATUS_RUNNING
        return _V0_AGENT.get(agent_state) or _unknown("agent_state", agent_state)
    if conversation_status == "STOPPED" and agent_state in ("finished", "awaiting_user_input"):
        return STATUS_FINISHED
    if conversation_status in _V0_CONVERSATION:
        return _V0_CONVERSATION[conversation_status]
    return _unknown("conversation status", str(conversation_status))


def normalise_v0(
    info: Any, agent_state: str | None, base_url: str, fallback_id: str | None = None, final_message: str | None = None
) -> dict[str, Any]:
    """``ConversationInfo`` plus the agent state from its events -> normalised state."""
    conv = _require_mapping(info, "ConversationInfo")
    conversation_id = _opt_str(conv, "conversation_id", "ConversationInfo") or fallback_id
    if not conversation_id:
        raise ResponseShapeError("ConversationInfo has no conversation_id")
    conversation_status = _opt_str(conv, "status", "ConversationInfo")
    runtime_status = _opt_str(conv, "runtime_status", "ConversationInfo")
    return {
        "conversation_id": conversation_id,
        "api_version": V0,
        "status": v0_status(conversation_status, runtime_status, agent_state),
        "conversation_status": conversation_status,
        "runtime_status": runtime_status,
        "agent_state": agent_state,
        "title": _opt_str(conv, "title", "ConversationInfo"),
        "selected_repository": _opt_str(conv, "selected_repository", "ConversationInfo"),
        "selected_branch": _opt_str(conv, "selected_branch", "ConversationInfo"),
        "git_provider": _opt_str(conv, "git_provider", "ConversationInfo"),
        "pr_number": _pr_numbers(conv, "ConversationInfo"),
        "pr_urls": pr_urls(
            _opt_str(conv, "selected_repository", "ConversationInfo"),
            _opt_str(conv, "git_provider", "ConversationInfo"),
            _pr_numbers(conv, "ConversationInfo"),
        ),
        "url": conversation_page_url(base_url, conversation_id),
        "metrics": None,
        "final_message": final_message,
        "created_at": conv.get("created_at"),
        "updated_at": conv.get("last_updated_at"),
    }


def parse_start_task(body: Any, fallback_id: str | None = None) -> dict[str, Any]:
    """``AppConversationStartTask`` -> ``{id, status, detail, conversation_id, sandbox_id}``."""
    task = _require_mapping(body, "AppConversationStartTask")
    task_id = _opt_str(task, "id", "AppConversationStartTask") or fallback_id
    if not task_id:
        raise ResponseShapeError("AppConversationStartTask has no id")
    status = _opt_str(task, "status", "AppConversationStartTask") or "WORKING"
    request = task.get("request") if isinstance(task.get("request"), dict) else {}
    return {
        "id": task_id,
        "status": status,
        "detail": _opt_str(task, "detail", "AppConversationStartTask"),
        "conversation_id": _opt_str(task, "app_conversation_id", "AppConversationStartTask"),
        "sandbox_id": _opt_str(task, "sandbox_id", "AppConversationStartTask"),
        # The id the client asked for: how a retry recognises its own earlier start.
        "requested_id": request.get("conversation_id") if isinstance(request.get("conversation_id"), str) else None,
        "created_at": _opt_str(task, "created_at", "AppConversationStartTask"),
        "updated_at": _opt_str(task, "updated_at", "AppConversationStartTask"),
    }


def parse_time(value: Any) -> float | None:
    """An ISO timestamp as epoch seconds; one without a time zone is UTC (the start-task reads)."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    """Epoch seconds as the ISO timestamp (UTC) the API's ``*__gte`` filters take; ``parse_time``'s inverse."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


#: ``execution_status`` values that end a turn, as the agent reports them in its events.
_ENDED_EXECUTION = {"finished": STATUS_FINISHED, "error": STATUS_ERROR, "stuck": STATUS_STUCK}
_LIVE_EXECUTION = frozenset({"idle", "running", "waiting_for_confirmation"})


def _event_items(page: Any) -> list[dict[str, Any]]:
    body = _require_mapping(page, "EventPage")
    items = body.get("items") or []
    if not isinstance(items, list):
        raise ResponseShapeError("EventPage.items should be a list")
    return [event for event in items if isinstance(event, dict)]


def _is_finish(event: dict[str, Any]) -> bool:
    action = event.get("action") if isinstance(event.get("action"), dict) else {}
    return (
        event.get("kind") == "ActionEvent"
        and event.get("source") == "agent"
        and (event.get("tool_name") == "finish" or action.get("kind") == "FinishAction")
    )


def message_text(event: dict[str, Any]) -> str:
    message = event.get("llm_message") if isinstance(event.get("llm_message"), dict) else {}
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and p.get("type", "text") == "text")


def final_message_from_events(page: Any) -> str | None:
    """The agent's last word in the newest turn, by the OpenHands SDK's ``get_agent_final_response``
    rule: its ``finish`` action's message, else its newest message. Events newest first."""
    for event in _event_items(page):
        if _is_finish(event):
            action = event.get("action") if isinstance(event.get("action"), dict) else {}
            return str(action.get("message") or "")
        if event.get("kind") == "MessageEvent":
            return message_text(event) if event.get("source") == "agent" else None
    return None


#: The most characters of the agent's error a task's failure, log and report show.
ERROR_CHARS = 300


def cut_error(text: str, limit: int = ERROR_CHARS) -> str:
    """One line of at most ``limit`` characters (whitespace folded; ``...`` where it was cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def error_from_events(page: Any) -> str | None:
    """The agent's own last error in the newest turn, cut to :data:`ERROR_CHARS`; None when the turn
    ended well or shows none. Events newest first. A ``ConversationErrorEvent`` (the run loop
    failed: ``code: detail``, e.g. ``LLMServiceUnavailableError: ...``) or an ``AgentErrorEvent``
    (a tool call the agent could not make: its ``error``); the agent's ``finish`` or closing
    message, or the user's message that began the turn, comes first when there is none."""
    for event in _event_items(page):
        kind = event.get("kind")
        if kind == "ConversationErrorEvent":
            code, detail = str(event.get("code") or "").strip(), str(event.get("detail") or "").strip()
            text = f"{code}: {detail}" if code and detail else code or detail
            return cut_error(text) if text else None
        if kind == "AgentErrorEvent" and event.get("error"):
            return cut_error(str(event["error"]))
        if _is_finish(event) or kind == "MessageEvent":
            return None
    return None


def turn_from_events(page: Any) -> tuple[str | None, bool]:
    """``(ended, live)`` of the newest turn: how it ended (None if it did not), and whether the events
    show it still going (a user message or a live state update newer than any end). Both empty:
    the events say nothing decisive (a server that records none), and only the status can tell."""
    ended = status_from_events(page)
    if ended is not None:
        return ended, False
    for event in _event_items(page):
        kind = event.get("kind")
        if kind == "ConversationStateUpdateEvent" and event.get("key") == "execution_status":
            return None, event.get("value") in _LIVE_EXECUTION
        if kind == "MessageEvent" and event.get("source") == "user":
            return None, True
    return None, False


def _user(event: dict[str, Any]) -> bool:
    return event.get("kind") == "MessageEvent" and event.get("source") == "user"


def _an_end(event: dict[str, Any]) -> bool:
    return _user(event) is False and status_from_events({"items": [event]}) is not None


def own_message(event: dict[str, Any], own: tuple[str, float, float]) -> bool:
    """Whether ``event`` is this task's message: its text, sent within ``[from, until]``."""
    text, since, until = own
    moment = parse_time(event.get("timestamp"))
    return _user(event) and message_text(event) == text and moment is not None and since <= moment <= until


def own_turn_from_events(page: Any, own: tuple[str, float, float]) -> tuple[dict[str, Any] | None, str | None]:
    """The events of the turn that follows this task's own message (events newest first), as a page,
    and why the events cannot tell that turn's end (None: they can). Its end is the first end after
    the message; it is not told apart when another user message went in between (after ours, or
    before it with its turn still going: a service may take both in one run, or one after the
    other). ``(None, None)``: the message is not among the events read."""
    events = list(reversed(_event_items(page)))  # oldest first
    mine = [i for i, event in enumerate(events) if own_message(event, own)]
    if not mine:
        return None, None
    if len(mine) > 1:
        return None, "another message with the same text was sent at about the same time"
    first = mine[0]
    for event in reversed(events[:first]):
        if _an_end(event):
            break
        if _user(event):
            return None, (
                f"another message was sent before it ({event.get('timestamp')}) and its turn had not ended "
                "when this task's message went in"
            )
    last, ended = len(events), False
    for index in range(first + 1, len(events)):
        event = events[index]
        if _user(event) and not ended:
            return None, f"another message was sent meanwhile ({event.get('timestamp')}), before this turn ended"
        live = event.get("key") == "execution_status" and event.get("value") in _LIVE_EXECUTION
        if ended and (_user(event) or live):
            last = index
            break
        ended = ended or _an_end(event)
    return {"items": list(reversed(events[first:last]))}, None


#: Events that answer an agent action (by its ``action_id``): it ran, or a person rejected it.
_ANSWERS = ("ObservationEvent", "UserRejectObservation")
#: The most characters of an action a log line, an error and a person's question show.
ACTION_CHARS = 400


def pending_actions_from_events(page: Any) -> list[dict[str, Any]]:
    """The agent's actions waiting for confirmation, oldest first: its ``ActionEvent``s that nothing
    answered (no observation or rejection with their ``action_id``, no agent error with their
    ``tool_call_id``). Events newest first: whatever answers an action on the page is on it too.
    Each as ``{"id", "tool", "summary", "security_risk"}``; ``summary`` is the command, or the file
    action and path, or the action's fields."""
    answered: set[str] = set()
    failed_calls: set[str] = set()
    pending = []
    for event in _event_items(page):
        kind = event.get("kind")
        if kind in _ANSWERS and event.get("action_id"):
            answered.add(str(event["action_id"]))
        elif kind == "AgentErrorEvent" and event.get("tool_call_id"):
            failed_calls.add(str(event["tool_call_id"]))
        elif kind == "ActionEvent" and event.get("source", "agent") == "agent" and not _is_finish(event):
            if str(event.get("id")) in answered or str(event.get("tool_call_id")) in failed_calls:
                continue
            action = event.get("action") if isinstance(event.get("action"), dict) else {}
            pending.append(
                {
                    "id": str(event.get("id")),
                    "tool": str(event.get("tool_name") or action.get("kind") or "tool"),
                    "summary": cut_error(_action_summary(action), ACTION_CHARS),
                    "security_risk": str(event.get("security_risk") or "UNKNOWN"),
                }
            )
    return list(reversed(pending))


def _action_summary(action: dict[str, Any]) -> str:
    if isinstance(action.get("command"), str) and action.get("kind") == "TerminalAction":
        return action["command"]
    if isinstance(action.get("path"), str):
        return " ".join(str(action[k]) for k in ("command", "path") if action.get(k))
    fields = {k: v for k, v in action.items() if k != "kind" and v not in (None, "", [], {})}
    return " ".join(f"{k}={v}" for k, v in fields.items()) or str(action.get("kind") or "")


def agent_server(conversation: Any) -> tuple[str, str] | None:
    """``(base URL, session key)`` of a running V1 conversation's agent server, from a raw
    ``AppConversation``: its ``conversation_url`` cut before ``/api/conversations`` (a path prefix
    stays), and its ``session_api_key``. None while the sandbox does not run (both are null then)."""
    if not isinstance(conversation, dict):
        return None
    url, key = conversation.get("conversation_url"), conversation.get("session_api_key")
    if not isinstance(url, str) or not isinstance(key, str) or not key or "/api/conversations" not in url:
        return None
    return url.split("/api/conversations", 1)[0], key


def is_capacity_error(task: dict[str, Any]) -> bool:
    """A start task that failed because the account already runs as many conversations as it may."""
    detail = str(task.get("detail") or "").lower()
    return "concurrency" in detail or "concurrent conversations" in detail


def status_from_events(page: Any) -> str | None:
    """How the newest turn ended, from an events page sorted newest first; None if it did not.

    A paused sandbox hides ``execution_status``, but the events stay readable: the newest decisive
    event tells a conversation that had ended (then was paused to free its slot) from one paused
    mid-run. Decisive: a state update of ``execution_status``, a conversation error, the agent's
    ``finish`` action or its closing message (ended), a user message (a new turn began).
    """
    for event in _event_items(page):
        kind, source = event.get("kind"), event.get("source")
        if kind == "ConversationStateUpdateEvent" and event.get("key") == "execution_status":
            value = event.get("value")
            if value in _ENDED_EXECUTION:
                return _ENDED_EXECUTION[value]
            if value in _LIVE_EXECUTION:
                return None
        elif kind == "ConversationErrorEvent":
            return STATUS_ERROR
        elif _is_finish(event):
            return STATUS_FINISHED
        elif kind == "MessageEvent":
            return STATUS_FINISHED if source == "agent" else None
    return None
