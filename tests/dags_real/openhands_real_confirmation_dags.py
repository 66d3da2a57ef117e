"""A task whose agent waits for confirmation on the real OpenHands server (tests/contract/test_real_confirmations.py).

The tests switch the server's confirmation mode on and build their own copy with :func:`build`
(its ``on_confirmation``, ``deferrable`` and scripted message) under the same DAG id; the
module-level DAG is what the DAG bundle records. One conversation at a time
(``max_active_tis_per_dag=1``). No repository: the open-source server here has no git provider.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

DAG_ID = "oh_real_confirmation"
MESSAGE = '[fake-llm run="echo confirmed" finish="Confirmation round over"] Run the command, then report.'


def build(dag_id: str = DAG_ID, message: str = MESSAGE, **operator: Any) -> DAG:
    operator.setdefault("on_confirmation", "fail")
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        OpenHandsStartConversationOperator(
            task_id="maintain",
            initial_user_msg=message,
            wait_for_completion=True,
            poll_interval=1.0,
            start_timeout=300,
            timeout=300,
            max_active_tis_per_dag=1,
            **operator,
        )
    return dag


confirmation_dag = build()
