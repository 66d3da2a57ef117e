"""The agent plans, a person approves in Airflow, the agent carries it out and asks before risky steps.

``upgrade`` runs a maintenance task on a repository with ``plan_first=True``: the agent first writes
a plan (OpenHands' plan mode), and the task shows it in Airflow's **Required actions** view for a
person to **Approve**, **Revise** (the comment goes to the agent, which revises the plan, and the
person is asked again) or **Reject** (the task fails). On approval a conversation that shares the
plan's sandbox carries the plan out. With ``on_confirmation="ask"``, each action the agent waits to
have confirmed (where OpenHands' confirmation mode is on: a user or organisation setting) is also
asked in Required actions: **Approve** or **Reject** with a reason the agent reads. The task waits
for each answer without a worker slot; nobody answering within ``confirmation_timeout`` rejects.

On Airflow 2.11 (or 3.0) this file defines no DAG: asking a person needs Airflow 3.1.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_openhands.operators._confirmations import hitl_available
from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))

if hitl_available():
    with DAG(
        dag_id="openhands_plan_and_confirm",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["openhands", "example", "human-in-the-loop"],
        doc_md=__doc__,
        params={
            "repository": Param("acme/app", type="string"),
            "task": Param("Upgrade the pinned dependencies and make the tests pass.", type="string"),
        },
    ) as dag:
        OpenHandsStartConversationOperator(
            task_id="upgrade",
            repository="{{ params.repository }}",
            initial_user_msg="{{ params.task }}",
            plan_first=True,
            on_confirmation="ask",
            confirmation_timeout=8 * 3600,
            wait_for_completion=True,
            poll_interval=POLL_SECONDS,
        )
