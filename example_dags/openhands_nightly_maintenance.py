"""Nightly maintenance over many repositories: one OpenHands conversation per repository.

Shows dynamic task mapping and the ``openhands`` pool: ``maintain`` is mapped over the
repositories (from the ``repositories`` param, else the Airflow Variable
``openhands_nightly_repositories``, a JSON list). Each mapped task starts its conversation and
waits for it in the triggerer (``wait_for_completion=True``), inside the pool, so no more
conversations run at once than the pool has slots (set them to your account's limit). ``report``
runs after all of them ended, whatever their outcome, gathers status, PRs and cost of every
conversation in one batched request, logs one table, and fails the run if any conversation failed.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, TriggerRule, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))
TASK = (
    "Update the repository's dependencies to their latest compatible versions, run its tests, "
    "and open a PR if anything changed."
)

with DAG(
    dag_id="openhands_nightly_maintenance",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"repositories": Param([], type="array", description="owner/repo list; empty: the Variable")},
    tags=["openhands", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def repositories(params: dict | None = None) -> list[str]:
        """The repositories to maintain tonight."""
        from airflow.providers.common.compat.sdk import AirflowSkipException, Variable

        # default passed by position: Airflow 2 calls it default_var, Airflow 3 default
        chosen = (params or {}).get("repositories") or Variable.get(
            "openhands_nightly_repositories", [], deserialize_json=True
        )
        if not chosen:
            raise AirflowSkipException("Nothing to maintain: no 'repositories' param and no Variable")
        return list(chosen)

    maintain = OpenHandsStartConversationOperator.partial(
        task_id="maintain",
        initial_user_msg=TASK,
        title="Nightly maintenance",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=4 * 3600,
        pool="openhands",
        # Retries are safe: a retry finds the conversation its first try started (by its
        # deterministic id) instead of starting another. A conversation that failed is not retried.
        retries=2,
        retry_delay=timedelta(seconds=10),
    ).expand(repository=repositories())

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report(ti=None) -> list[dict]:
        """One row per repository; fails the run if any conversation failed."""
        from airflow_provider_openhands.api.state import canonical_id
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook
        from airflow_provider_openhands.outcome import duration_seconds, summary_line

        ids = [i for i in ti.xcom_pull(task_ids="maintain", key="conversation_id") or [] if i]
        # A task that succeeded returned the conversation's final state; for the others, read the
        # state now (one batched request for up to 99 conversations).
        finals = {canonical_id(s["conversation_id"]): s for s in ti.xcom_pull(task_ids="maintain") or [] if s}
        missing = [i for i in ids if canonical_id(i) not in finals]
        current = OpenHandsHook().get_conversations(missing) if missing else {}
        rows = []
        for conversation_id in ids:
            key = canonical_id(conversation_id)
            state = finals.get(key) or current.get(key) or {"conversation_id": conversation_id, "status": "missing"}
            print(summary_line(state))
            rows.append(
                {
                    "repository": state.get("selected_repository"),
                    "status": state["status"] if key in finals else f"failed ({state['status']})",
                    "pr_number": state.get("pr_number", []),
                    "cost": (state.get("metrics") or {}).get("accumulated_cost"),
                    "duration_s": duration_seconds(state),
                    "url": state.get("url"),
                }
            )
        failed = [r["repository"] for r in rows if r["status"] != "finished"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(rows)} conversation(s) did not finish: {failed}")
        return rows

    maintain >> report()
