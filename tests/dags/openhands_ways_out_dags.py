"""Tasks for the ways out of issue 29 (tests/test_ways_out.py).

The tests build their own copy with :func:`build` (message and operator parameters) under one of
these DAG ids; the module-level DAGs are what the DAG processor records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

BUDGET_DAG_ID = "oh_ways_budget"
STORE_DAG_ID = "oh_ways_store"


def build(dag_id: str, message: str = "Fix the README [emulator duration=1]", **operator: Any) -> DAG:
    """One waiting start task, its parameters over these defaults."""
    operator = {"wait_for_completion": True, "poll_interval": 0.2, **operator}
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        OpenHandsStartConversationOperator(task_id="run", repository="acme/app", initial_user_msg=message, **operator)
    return dag


budget_dag = build(BUDGET_DAG_ID)
store_dag = build(STORE_DAG_ID)
