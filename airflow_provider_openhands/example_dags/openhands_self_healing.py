"""Self-healing pipeline: a failed task opens one OpenHands conversation to fix it.

``load_orders`` fails on a number written with a thousands separator (``"1,234.50"``), a bug in the
parsing code. Its ``on_failure_callback`` is an ``OpenHandsNotifier``: when the task fails for good
(after its retries), the notifier starts a conversation on the DAGs' repository telling the agent the
exception, its traceback, the end of the task's log, the DAG file's path and the operator's rendered
fields (all through Airflow's secrets masker), and asks for a pull request with a fix and a test.

The callback only sends the start request (it never waits) and never fails: with OpenHands down the
task's failure is as it was, with one warning in its log. The same failure again within 24 hours (50
mapped instances, tomorrow's run before the fix is merged) shares the first conversation; at most 10
start per day. Set ``on_failure_callback`` in the DAG's ``default_args`` to cover every task.

No task waits on a fix conversation, so its ``max_cost_usd`` is enforced by a follow-up check: each
failure the notifier handles runs it first, and ``openhands_fix_budget_guard`` runs it hourly,
pausing a fix conversation whose cost passed $5.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openhands.notifiers.openhands import OpenHandsNotifier

fix_failures = OpenHandsNotifier(
    repository="acme/airflow-dags",  # default: the git repository the DAG file is in
    max_conversations_per_day=10,
    max_cost_usd=5.0,
)

with DAG(
    dag_id="openhands_self_healing",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openhands", "example", "notifier"],
    doc_md=__doc__,
) as dag:

    @task(on_failure_callback=fix_failures)
    def load_orders() -> float:
        """Sum the order amounts of a CSV extract (the bug: ``float`` does not read ``1,234.50``)."""
        rows = ["19.99", "5.00", "1,234.50"]
        return sum(float(amount) for amount in rows)

    load_orders()


with DAG(
    dag_id="openhands_fix_budget_guard",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openhands", "example", "notifier"],
    doc_md="The follow-up check of the fix conversations' `max_cost_usd`: hourly, pause those over it.",
) as guard_dag:

    @task
    def check_fix_budgets() -> list[str]:
        """Pause the fix conversations whose cost passed ``max_cost_usd``; their ids."""
        return fix_failures.check_budgets()

    check_fix_budgets()
