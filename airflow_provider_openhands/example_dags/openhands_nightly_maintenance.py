"""Nightly maintenance over many repositories: one OpenHands conversation per repository.

Shows dynamic task mapping and the ``openhands`` pool: ``maintain`` is mapped over the
repositories (from the ``repositories`` param, else the Airflow Variable
``openhands_nightly_repositories``, a JSON list). Each mapped task starts its conversation and
waits for it in the triggerer (``wait_for_completion=True``), inside the pool, so no more
conversations run at once than the pool has slots (set them to your account's limit); the grid names
each mapped task after its repository (the operator's default ``map_index_template``). ``report``
runs after all of them ended, whatever their outcome: it accounts for every mapped task (also one
that failed before its conversation existed, e.g. with a wrong API key), gathers status, PRs and cost
of the conversations in one batched request, logs one table, and fails the run naming each repository
that did not finish and why.

``max_active_runs=1``: a night that is still running when the next one is due makes the next wait, so
two runs never work on the same repositories at once. ``catchup=False``: unpausing the DAG creates one
scheduled run at once (for the latest complete day), not one per day since ``start_date``; trigger it
by hand (with ``repositories`` to try a few) to run it on demand.
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
    params={
        "repositories": Param(
            [],
            type=["null", "array"],  # optional in the trigger form: empty means "use the Variable"
            items={"type": "string"},
            title="Repositories",
            description="owner/repo, one per line; empty: the Variable openhands_nightly_repositories",
        )
    },
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
    def report(**context) -> list[dict]:
        """One row per repository, whatever became of its task; fails the run if any did not finish."""
        import logging

        from airflow_provider_openhands.report import collect

        # Every mapped task instance counts, also one that failed before its conversation existed
        # (a wrong API key, a start error): the report starts from their states, not from the XComs.
        chosen = context["ti"].xcom_pull(task_ids="repositories")
        summary = collect(context, "maintain", chosen)
        logging.getLogger("airflow.task").info("Nightly maintenance:\n%s", summary.table())
        summary.raise_if_failed()
        return [row.as_dict() for row in summary.rows]

    maintain >> report()
