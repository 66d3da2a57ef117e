"""Triage an alert with OpenHands and act on a structured answer.

``collect_log`` stands for the step that receives an alert (a monitoring webhook, a failed job's
log). ``triage`` is a ``@task.openhands`` function: it hands the log to the agent with an
``output_schema``, so the agent must write ``openhands_output.json`` with a ``cause``, a
``confidence`` (0 to 1) and a ``suggested_fix``; the task returns that object validated (as
``output`` in its result) or fails saying what is missing. ``decide`` branches on the confidence:
confident -> ``open_fix_ticket`` with the suggested fix; not confident -> ``page_a_human``.
``max_cost_usd`` stops the conversation if triage gets expensive.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param, task

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))

TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "cause": {"type": "string", "description": "the root cause, in one sentence"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "suggested_fix": {"type": "string"},
    },
    "required": ["cause", "confidence", "suggested_fix"],
    "additionalProperties": False,
}

with DAG(
    dag_id="openhands_alert_triage",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "repository": Param("acme/api", type="string"),
        "error_log": Param("ERROR worker.py:88 ConnectionResetError while writing to the queue", type="string"),
        "confidence_needed": Param(0.7, type="number"),
    },
    tags=["openhands", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def collect_log(params: dict | None = None) -> str:
        return (params or {}).get("error_log", "")

    @task.openhands(
        repository="{{ params.repository }}",
        output_schema=TRIAGE_SCHEMA,
        max_cost_usd=2.0,
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        pool="openhands",
    )
    def triage(error_log: str) -> str:
        intro = "This error was logged in production. Find its root cause in the code; do not change anything."
        return f"{intro}\n\n{error_log}"

    @task.branch
    def decide(state: dict, params: dict | None = None) -> str:
        needed = float((params or {}).get("confidence_needed", 0.7))
        return "open_fix_ticket" if state["output"]["confidence"] >= needed else "page_a_human"

    @task
    def open_fix_ticket(state: dict) -> str:
        answer = state["output"]
        return f"Fix ticket: {answer['cause']} -> {answer['suggested_fix']} ({state['url']})"

    @task
    def page_a_human(state: dict) -> str:
        return f"Paging on-call: unsure cause ({state['output']['confidence']:.0%}): {state['output']['cause']}"

    result = triage(collect_log())
    decide(result) >> [open_fix_ticket(result), page_a_human(result)]
