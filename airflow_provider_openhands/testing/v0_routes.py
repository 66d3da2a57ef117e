"""The emulator's V0 endpoints (``/api/conversations``; a mixin of the :class:`Emulator`), kept as
they were, including 409 for a reused ``conversation_id``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from airflow_provider_openhands.testing.model import Conversation, _hex, _now_iso


class V0Routes:
    """The V0 endpoints (a mixin of :class:`Emulator`, whose state they read and change)."""

    # -- routing -----------------------------------------------------------------------------------

    def _route_v0(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        """The V0 endpoint's answer; None if the request is for none of them (called under the lock)."""
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
        return None

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
