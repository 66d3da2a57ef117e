"""DAGs run with dag.test() against the real open-source OpenHands server (tests/contract/test_real_dags.py).

The README's shapes: start then a deferrable sensor; waiting in the operator (in the worker);
``@task.openhands``. No repository: the open-source server here has no git provider to clone from.
One conversation at a time (the process sandbox boots one agent server at a time):
``max_active_tis_per_dag=1`` on every task that starts one. Results go to JSON files.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

POLL = 1.0
START = datetime(2026, 1, 1)


def scripted(answer: str) -> str:
    """A task text that makes the real server's fake LLM finish with ``answer``."""
    return f'[fake-llm seconds=2 finish="{answer}"] Check the README and report.'


@task
def record(result, name: str) -> None:
    with open(os.path.join(os.environ["OPENHANDS_TEST_RESULTS"], f"{name}.json"), "w") as handle:
        json.dump(result, handle)


with DAG("oh_real_start_then_sensor", schedule=None, start_date=START, catchup=False) as start_then_sensor:
    start = OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg=scripted("Real answer: start then sensor"),
        poll_interval=POLL,
        start_timeout=300,
        max_active_tis_per_dag=1,
    )
    wait = OpenHandsConversationSensor(
        task_id="wait", conversation_id=start.output, deferrable=True, poke_interval=POLL, timeout=300
    )
    record.override(task_id="record_id")(start.output, "oh_real_start_then_sensor-id")
    record.override(task_id="record_state")(wait.output, "oh_real_start_then_sensor-state")

with DAG("oh_real_wait_in_worker", schedule=None, start_date=START, catchup=False) as wait_in_worker:
    run = OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg=scripted("Real answer: waited in the worker"),
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        start_timeout=300,
        timeout=300,
        max_active_tis_per_dag=1,
    )
    record.override(task_id="record_state")(run.output, "oh_real_wait_in_worker-state")

with DAG("oh_real_taskflow", schedule=None, start_date=START, catchup=False) as taskflow:

    @task.openhands(
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL,
        start_timeout=300,
        timeout=300,
        max_active_tis_per_dag=1,
    )
    def check_readme(topic: str) -> str:
        return scripted(f"Real answer: {topic}")

    record.override(task_id="record_state")(check_readme("taskflow"), "oh_real_taskflow-state")
