"""The lifecycle's copy in Airflow's task state store (Airflow >= 3.3), written only when it changed.

The driver saves after every step, and most steps change little or nothing; the start options (the
prompt, which may be megabytes) change once. They are kept under a key of their own, so a poll that
moves a timestamp rewrites a small record, never the prompt, and a step that changed nothing writes
nothing.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openhands.engine.state import STATE_STORE_KEY, Lifecycle

#: Key of the lifecycle's start options (the prompt among them), apart from the rest.
OPTIONS_KEY = STATE_STORE_KEY + "_options"


class LifecycleStore:
    """What this task instance last read from or wrote to the store, per key, to skip unchanged writes."""

    def __init__(self) -> None:
        self.written: dict[str, Any] = {}

    def load(self, context: Any) -> dict[str, Any] | None:
        """The stored lifecycle as a dict (its options joined back), or None. Raises what the store raises."""
        store = context.get("task_state_store") if context else None
        if store is None:
            return None
        saved = store.get(STATE_STORE_KEY)
        if not saved:
            return None
        self.written[STATE_STORE_KEY] = saved
        if "options" in saved:  # written whole, by a version that kept the options with the rest
            return saved
        options = store.get(OPTIONS_KEY) or {}
        self.written[OPTIONS_KEY] = options
        return {**saved, "options": options}

    def save(self, context: Any, lc: Lifecycle) -> None:
        """Write what changed since the last read or write: the options first, so that a stored
        lifecycle never goes with options older than its own. Raises what the store raises."""
        store = context.get("task_state_store") if context else None
        if store is None:
            return
        rest = lc.to_dict()
        for key, value in ((OPTIONS_KEY, rest.pop("options")), (STATE_STORE_KEY, rest)):
            if self.written.get(key) != value:
                store.set(key, value)
                self.written[key] = value
