"""Chain OpenHands into a pipeline: a step writes the task, the agent works, a branch acts on it.

``describe_task`` stands for any upstream step (a failed check, a ticket, a report) and produces
the task text. ``fix`` is a ``@task.openhands`` function that returns that text; it starts the
conversation and waits for it in the triggerer. ``add_test`` continues the same conversation with a
follow-up turn ("now add a test"): ``@task.openhands(conversation_id=...)`` resumes its paused
sandbox, sends the message and waits for that turn only. ``route`` branches on the outcome: a PR
was opened -> ``announce_pr``, which lists the files the agent changed (``changed_files``); none ->
``nothing_to_merge``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param, task

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))

with DAG(
    dag_id="openhands_pipeline_chain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "repository": Param("acme/website", type="string"),
        "failing_check": Param("broken links in docs/", type="string"),
    },
    tags=["openhands", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def describe_task(params: dict | None = None) -> str:
        check = (params or {}).get("failing_check", "a failing check")
        return f"The nightly check reports {check}. Find the cause, fix it, and open a PR with the fix."

    @task.openhands(
        repository="{{ params.repository }}",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        pool="openhands",
    )
    def fix(task_text: str) -> str:
        return task_text

    @task.openhands(
        conversation_id="{{ ti.xcom_pull(task_ids='fix', key='conversation_id') }}",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        pool="openhands",
    )
    def add_test(state: dict) -> str:
        return "Now add a test that would have caught this problem, and push it to the same PR."

    @task.branch
    def route(state: dict) -> str:
        return "announce_pr" if state.get("pr_number") else "nothing_to_merge"

    @task
    def announce_pr(state: dict) -> str:
        changed = ", ".join(f"{c['path']} ({c['status']})" for c in state.get("changed_files") or []) or "none"
        message = (
            f"OpenHands opened PR(s) {state['pr_urls'] or state['pr_number']} on {state['selected_repository']}: "
            f"{state['url']}; files changed: {changed}"
        )
        print(message)
        return message

    @task
    def nothing_to_merge(state: dict) -> None:
        print(f"No PR from {state['url']} ({state['status']})")

    outcome = add_test(fix(describe_task()))
    route(outcome) >> [announce_pr(outcome), nothing_to_merge(outcome)]
