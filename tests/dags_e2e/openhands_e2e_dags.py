"""DAGs for ``tests/test_real_airflow.py``'s fault scenarios in a real Airflow (scheduler, triggerer,
DAG processor, API server as separate processes): short polls, fast retries, and the emulator's
``duration`` marker in the message, so the test chooses how long each conversation runs (run conf
``duration``, seconds).

* ``openhands_e2e_fan_out``: mapped over the ``repositories`` param, each task starts its
  conversation and waits for it in the triggerer; the test kills the triggerer under them.
* ``openhands_e2e_worker``: the same, waiting in the worker (``deferrable=False``); the test kills
  the task process and its retry must reconnect.
* ``openhands_e2e_clear``: one conversation; the test clears the task after success, as a person
  would, and the task must start a new one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

MESSAGE = "Fix the flaky test. [emulator duration={{ params.duration }}]"
COMMON = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "tags": ["openhands", "e2e"],
}
WAIT = {"wait_for_completion": True, "poll_interval": 1, "timeout": 600, "start_timeout": 300}


@task
def repositories(params: dict | None = None) -> list[str]:
    return list((params or {})["repositories"])


with DAG(
    dag_id="openhands_e2e_fan_out",
    params={"repositories": Param([], type="array"), "duration": Param(20, type="number")},
    **COMMON,
):
    OpenHandsStartConversationOperator.partial(
        task_id="converse",
        initial_user_msg=MESSAGE,
        deferrable=True,
        retries=2,
        retry_delay=timedelta(seconds=1),
        **WAIT,
    ).expand(repository=repositories())

with DAG(
    dag_id="openhands_e2e_worker",
    params={"repositories": Param([], type="array"), "duration": Param(20, type="number")},
    **COMMON,
):
    OpenHandsStartConversationOperator.partial(
        task_id="converse",
        initial_user_msg=MESSAGE,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
        **WAIT,
    ).expand(repository=repositories())

with DAG(
    dag_id="openhands_e2e_clear",
    params={"repository": Param("acme/cleared", type="string"), "duration": Param(2, type="number")},
    **COMMON,
):
    OpenHandsStartConversationOperator(
        task_id="converse",
        initial_user_msg=MESSAGE,
        repository="{{ params.repository }}",
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=1),
        **WAIT,
    )
