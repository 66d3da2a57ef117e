"""A maintenance task whose agent asks for confirmation (tests/test_confirmations.py).

The tests build their own copy with :func:`build` (its ``on_confirmation``, ``deferrable``, message)
under the same DAG id; the module-level DAG is what the DAG processor records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

DAG_ID = "oh_confirmations"
MESSAGE = 'Clean the build directory [emulator confirm="rm -rf build" risk=HIGH]'


def build(dag_id: str = DAG_ID, message: str = MESSAGE, **operator: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        OpenHandsStartConversationOperator(
            task_id="maintain",
            repository="acme/app",
            initial_user_msg=message,
            wait_for_completion=operator.pop("wait_for_completion", True),
            poll_interval=0.2,
            **operator,
        )
    return dag


def build_decorated(dag_id: str = DAG_ID, message: str = MESSAGE, **operator: Any) -> DAG:
    """The same task as ``@task.openhands``: its message comes from the function, at run time only."""
    from airflow_provider_openhands.decorators.openhands import openhands_task

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @openhands_task(
            task_id="maintain", repository="acme/app", wait_for_completion=True, poll_interval=0.2, **operator
        )
        def maintain() -> str:
            return message

        maintain()
    return dag


confirmation_dag = build()
