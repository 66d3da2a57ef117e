"""One line that ends a task's log, and a conversation's duration (what a status means is the engine's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
