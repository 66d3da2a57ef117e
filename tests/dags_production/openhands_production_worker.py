"""DAGs for ``tests/test_production_topology.py`` (besides the example nightly DAG, linked here as
deployed): a worker-side wait under the CeleryExecutor.

* ``openhands_production_worker``: one conversation waited for in the Celery worker
  (``deferrable=False, wait_for_completion=True``), in the ``openhands`` pool with a high priority
  (it takes the next free slot while the nightly fan-out runs). The test SIGKILLs the whole Celery
  worker that runs it; Airflow notices the missing heartbeats and retries the task, and the retry
  must reconnect to the same conversation. Run conf ``duration``: how long the conversation runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

with DAG(
    dag_id="openhands_production_worker",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"repository": Param("acme/worker-side", type="string"), "duration": Param(30, type="number")},
    tags=["openhands", "e2e"],
):
    OpenHandsStartConversationOperator(
        task_id="converse",
        initial_user_msg="Fix the flaky test. [emulator duration={{ params.duration }}]",
        repository="{{ params.repository }}",
        deferrable=False,
        wait_for_completion=True,
        poll_interval=1,
        timeout=600,
        start_timeout=300,
        pool="openhands",
        priority_weight=1000,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )
