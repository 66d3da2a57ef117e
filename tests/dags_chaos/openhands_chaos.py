"""The DAG of ``tests/test_chaos.py``: mapped deferrable starts that wait in the triggerer.

``converse`` is mapped over the run conf's ``repositories``, one conversation each, in the
``openhands`` pool (deferred tasks count), with ``retries=3``: the chaos test SIGKILLs triggerers,
workers, task processes, the scheduler and the DAG processor meanwhile, and every retry must
reconnect to its try's conversation (or fail as that try would have), never start a second one.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "5"))

with DAG(
    dag_id="openhands_chaos",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"repositories": Param([], type="array", items={"type": "string"})},
    tags=["openhands", "chaos"],
):

    @task(retries=3, retry_delay=timedelta(seconds=5))
    def repositories(params: dict | None = None) -> list[str]:
        return list((params or {})["repositories"])

    OpenHandsStartConversationOperator.partial(
        task_id="converse",
        initial_user_msg="Update the dependencies and open a PR.",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
        pool="openhands",
        retries=3,
        retry_delay=timedelta(seconds=5),
    ).expand(repository=repositories())
