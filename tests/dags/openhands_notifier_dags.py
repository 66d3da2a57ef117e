"""DAGs whose tasks fail, with ``OpenHandsNotifier`` as their failure callback (tests/test_notifier.py).

The tests build their own copy with :func:`build` (a notifier of their own: its state Variable, cap,
connection) under the same DAG id; the module-level DAGs are what the DAG processor records.

A failing task reads a connection's password and a ``*_secret`` Variable, prints both to its log and
puts both in its exception's message: the notifier must send neither.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openhands.notifiers.openhands import OpenHandsNotifier

DAG_IDS = ("oh_notifier_fail", "oh_notifier_mapped", "oh_notifier_budget_guard")
MAPPED = 50


@task
def load(row: int = 17, **context) -> None:
    """Fail as a task that logged in with a secret would: the secret in its log and in its exception."""
    from airflow.providers.common.compat.sdk import BaseHook, Variable

    password = BaseHook.get_connection("notifier_db").password
    token = Variable.get("notifier_api_secret")
    print(f"connecting with password {password} and token {token}")
    kind = (context["dag_run"].conf or {}).get("kind", "value")
    if kind == "key":
        raise KeyError(f"column 'amount' missing in batch {context['run_id']}")
    raise ValueError(f"row {row} of batch {context['run_id']}: login refused for {password} with token {token}")


def build(dag_id: str, notifier: OpenHandsNotifier | None = None, on: str = "failure") -> DAG:
    """``on="retry"``: the notifier is the task's ``on_retry_callback`` (one retry, no delay);
    ``on="dag"``: the DAG's ``on_failure_callback``; ``on="both"``: the DAG's and the task's."""
    from datetime import timedelta

    notifier = notifier or OpenHandsNotifier(repository="acme/app")
    dag_callback = {"on_failure_callback": notifier} if on in ("dag", "both") else {}
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **dag_callback) as dag:
        if on == "retry":
            load.override(task_id="load", retries=1, retry_delay=timedelta(0), on_retry_callback=notifier)()
        elif on == "dag":
            load.override(task_id="load")()
        elif on == "both":  # the DAG's callback and the task's
            load.override(task_id="load", on_failure_callback=notifier)()
        elif dag_id == "oh_notifier_mapped":
            load.override(task_id="load", on_failure_callback=notifier).expand(row=list(range(MAPPED)))
        else:
            load.override(task_id="load", on_failure_callback=notifier)()
    return dag


def build_guard(dag_id: str, notifier: OpenHandsNotifier) -> DAG:
    """The follow-up check of ``max_cost_usd`` as a scheduled task: ``notifier.check_budgets()``."""
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task
        def check_budgets() -> list[str]:
            return notifier.check_budgets()

        check_budgets()
    return dag


fail_dag = build("oh_notifier_fail")
mapped_dag = build("oh_notifier_mapped")
guard_dag = build_guard("oh_notifier_budget_guard", OpenHandsNotifier(repository="acme/app", max_cost_usd=5.0))
