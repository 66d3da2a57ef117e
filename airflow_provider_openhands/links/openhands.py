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
    a run of it ends, and keeps the answer for the UI until the next run ends: a task that defers
    while its V1 start task works (then waits in the triggerer, maybe for hours) has published the
    id it asked for by then, and the link is there at once. A lookup of an XCom that does not exist
    makes Airflow log an ``XCom not found`` error: there the link asks only when this try published
    its conversation (the operator's lifecycle says so), or reads in a way that finds nothing
    without an error.
    """

    name = "OpenHands Conversation"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if _in_the_running_task(ti_key):
            lifecycle = getattr(operator, "_lifecycle", _UNKNOWN)
            if lifecycle is not _UNKNOWN and not getattr(lifecycle, "published", None):
                return ""  # nothing published yet (capacity wait, failed before the start request)
            if getattr(ti_key, "map_index", -1) < 0 and hasattr(XCom, "get_all"):
                # one value at most; an empty answer, not a 404, when there is none
                values = XCom.get_all(
                    key=CONVERSATION_URL_KEY, dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id
                )
                return str(values[0]) if values else ""
        return XCom.get_value(key=CONVERSATION_URL_KEY, ti_key=ti_key) or ""


def push_link(ti: Any, url: str) -> None:
    """Airflow 3: show the link now. Its UI and API read the link from an XCom the task runner writes
    only when a run of the task ends: a task that waits in the worker (or a sensor that pokes) would
    show no link until its end. Written as the task runner writes it (to the metadata DB, whatever
    the XCom backend), and again by it at the end of the run. Airflow 2's webserver asks
    :meth:`OpenHandsConversationLink.get_link`, which reads ``conversation_url``: nothing to do."""
    if not _in_the_running_task(ti):
        return
    key = OpenHandsConversationLink().xcom_key
    write = getattr(XCom, "_set_xcom_in_db", None)
    if write is None:  # pragma: no cover - an Airflow 3 without it: the backend's own write
        ti.xcom_push(key=key, value=url)
        return
    write(key=key, value=url, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index)


def _in_the_running_task(ti_key: Any) -> bool:
    """True when Airflow 3 asks from within the task's own process (the ti is the running one)."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    except ImportError:  # Airflow 2: the webserver asks, reading the database quietly
        return False
    return isinstance(ti_key, RuntimeTaskInstance)
