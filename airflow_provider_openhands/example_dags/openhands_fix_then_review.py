"""Schedule a review DAG on the asset the fix DAG updates (asset events with the conversation's outcome).

``openhands_fix`` asks OpenHands to fix a repository and waits for the end; its task has the asset
``openhands://acme/app/fixes`` as an outlet, so each success emits an asset event whose ``extra``
holds the conversation id and URL, status, PR numbers and URLs, cost and repository (Airflow 3).
``openhands_review_fix`` is scheduled on that asset and reads the ``extra`` of the events that
triggered it, e.g. to request a review of the PRs. On Airflow 2.11 the event is emitted without
that ``extra`` (the review DAG then finds no PRs in it).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))
ACME_APP_FIXES = Asset("openhands://acme/app/fixes")

with DAG(
    dag_id="openhands_fix",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openhands", "example", "assets"],
    doc_md=__doc__,
) as fix_dag:
    OpenHandsStartConversationOperator(
        task_id="fix",
        initial_user_msg="Fix the failing unit tests and open a pull request.",
        repository="acme/app",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        outlets=[ACME_APP_FIXES],
        pool="openhands",
    )

with DAG(
    dag_id="openhands_review_fix",
    schedule=[ACME_APP_FIXES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openhands", "example", "assets"],
    doc_md=__doc__,
) as review_dag:

    @task
    def review(**context) -> list[dict]:
        """One line per fix that triggered this run: who to ask to review which PR."""
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        fixes = []
        for asset_events in events.values():
            for event in asset_events:
                extra = dict(event.extra or {})
                fixes.append(extra)
                prs = ", ".join(extra.get("pr_urls") or []) or "no PR"
                link = extra.get("conversation_url")
                print(f"Review {extra.get('repository')}: {extra.get('status')}, {prs} ({link})")
        return fixes

    review()
