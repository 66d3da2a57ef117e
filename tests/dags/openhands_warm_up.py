"""A DAG that needs no service: ``airflow_db`` runs it once in each test process, so the first
``dag.test()``'s one-time cost (some 15 s of imports and set-up) falls in no test's timing."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

with DAG("oh_test_warm_up", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as warm_up:

    @task
    def nothing() -> None:
        """Nothing to do: the run itself is the point."""

    nothing()
