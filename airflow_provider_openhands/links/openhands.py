"""The "OpenHands Conversation" button on a task: opens the conversation's page."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

CONVERSATION_URL_KEY = "conversation_url"
CONVERSATION_ID_KEY = "conversation_id"

_UNKNOWN = object()


class OpenHandsConversationLink(BaseOperatorLink):
    """Reads the ``conversation_url`` XCom the task pushed as soon as the conversation existed.

    Until then the link is empty, quietly. Airflow 3 asks for the link in the task itself each time
    a run of it ends (also when it defers while its start task still works), and a lookup of an XCom
    that does not exist makes Airflow log an ``XCom not found`` error: there the link asks only when
    the task has a conversation (the operator's lifecycle says so), or reads in a way that finds
    nothing without an error.
    """

    name = "OpenHands Conversation"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if _in_the_running_task(ti_key):
            lifecycle = getattr(operator, "_lifecycle", _UNKNOWN)
            if lifecycle is not _UNKNOWN and not getattr(lifecycle, "conversation_id", None):
                return ""  # no conversation yet (start task pending, capacity wait, failed before start)
            if getattr(ti_key, "map_index", -1) < 0 and hasattr(XCom, "get_all"):
                # one value at most; an empty answer, not a 404, when there is none
                values = XCom.get_all(
                    key=CONVERSATION_URL_KEY, dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id
                )
                return str(values[0]) if values else ""
        return XCom.get_value(key=CONVERSATION_URL_KEY, ti_key=ti_key) or ""


def _in_the_running_task(ti_key: Any) -> bool:
    """True when Airflow 3 asks from within the task's own process (the ti is the running one)."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    except ImportError:  # Airflow 2: the webserver asks, reading the database quietly
        return False
    return isinstance(ti_key, RuntimeTaskInstance)
