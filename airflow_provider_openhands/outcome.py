"""What a conversation's status means for a task, shared by the sensor, the operator and the trigger."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

SUCCESS = "success"
FAILURE = "failure"
TIMEOUT = "timeout"
ERROR = "error"


def classify(status: str, success_statuses: Collection[str], failure_statuses: Collection[str]) -> str | None:
    """``success``, ``failure``, or None while the conversation is still going."""
    if status in success_statuses:
        return SUCCESS
    if status in failure_statuses:
        return FAILURE
    return None


def describe(state: Mapping[str, Any]) -> str:
    """A short human description of a state, for log lines and error messages."""
    raw = state.get("execution_status") or state.get("agent_state") or state.get("conversation_status")
    sandbox = state.get("sandbox_status")
    parts = [f"status={state.get('status')}"]
    if raw:
        parts.append(f"agent={raw}")
    if sandbox and sandbox != "RUNNING":
        parts.append(f"sandbox={sandbox}")
    return " ".join(parts)


def duration_seconds(state: Mapping[str, Any]) -> float | None:
    """Seconds from the conversation's creation to its last update, when both are known."""
    from datetime import datetime

    try:
        created = datetime.fromisoformat(str(state["created_at"]).replace("Z", "+00:00"))
        updated = datetime.fromisoformat(str(state["updated_at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (updated - created).total_seconds())


def summary_line(state: Mapping[str, Any], duration: float | None = None) -> str:
    """One line that ends a task's log: status, duration, PRs, cost, link."""
    seconds = duration if duration is not None else duration_seconds(state)
    metrics = state.get("metrics") or {}
    cost = metrics.get("accumulated_cost")
    prs = ", ".join(f"#{n}" for n in state.get("pr_number") or []) or "none"
    duration_text = f"{seconds:.0f}s" if seconds is not None else "n/a"
    cost_text = f"${cost:.4f}" if isinstance(cost, (int, float)) else "n/a"
    return (
        f"OpenHands conversation {state.get('conversation_id')}: {state.get('status')} | duration {duration_text} "
        f"| PRs {prs} | cost {cost_text} | {state.get('url')}"
    )


class StatusLogger:
    """Logs a conversation's status when it changes, not at every poll.

    A paused conversation that the task keeps waiting on gets one warning: it only goes on if
    someone resumes it, so the wait may well end at the deadline.
    """

    def __init__(self, log: logging.Logger | Any, conversation_id: str):
        self.log = log
        self.conversation_id = conversation_id
        self.last: str | None = None
        self.warned_paused = False

    def update(self, state: Mapping[str, Any], outcome: str | None = None) -> None:
        """Log ``state`` if it changed; ``outcome`` is what :func:`classify` made of it."""
        text = describe(state)
        if text != self.last:
            self.log.info("Conversation %s: %s", self.conversation_id, text)
            self.last = text
        if outcome is None and state.get("status") == "paused" and not self.warned_paused:
            self.log.warning(
                "Conversation %s is paused (by a user, or by the service for capacity); waiting for it to be "
                "resumed until the deadline.",
                self.conversation_id,
            )
            self.warned_paused = True
