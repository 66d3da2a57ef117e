"""DAGs the tests run with dag.test(): each waits in a different way. Results go to a JSON file."""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

POLL = 0.2


@task
def record(result, name: str) -> None:
    """Write what the downstream task received, for the test to read."""
    path = os.path.join(os.environ["OPENHANDS_TEST_RESULTS"], f"{name}.json")
    with open(path, "w") as handle:
        json.dump(result, handle)


def split_dag(dag_id: str, *, deferrable: bool, mode: str = "poke", message: str = "Fix the README") -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        start = OpenHandsStartConversationOperator(
            task_id="start",
            initial_user_msg=message + " {{ dag_run.conf.get('suffix', '') }}",
            repository="{{ dag_run.conf.get('repository', 'acme/website') }}",
            deferrable=deferrable,
            poll_interval=POLL,
        )
        wait = OpenHandsConversationSensor(
            task_id="wait",
            conversation_id=start.output,
            deferrable=deferrable,
            mode=mode,
            poke_interval=POLL,
            timeout=60,
        )
        record.override(task_id="record_id")(start.output, dag_id + "-id")
        record.override(task_id="record_state")(wait.output, dag_id + "-state")
    return dag


deferrable_split = split_dag("oh_test_split_deferrable", deferrable=True)
poke_split = split_dag("oh_test_split_poke", deferrable=False)
reschedule_split = split_dag("oh_test_split_reschedule", deferrable=False, mode="reschedule")

with DAG("oh_test_wait_in_operator", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as one_task:
    run = OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README {{ dag_run.conf.get('suffix', '') }}",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )
    record.override(task_id="record_state")(run.output, "oh_test_wait_in_operator-state")

with DAG("oh_test_bad_templated_repo", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as bad:
    OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg="Fix it",
        repository="{{ dag_run.conf.get('repository', 'https://github.com/acme/website') }}",
    )

with DAG("oh_test_fan_out", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as fan_out:
    runs = OpenHandsStartConversationOperator.partial(
        task_id="run",
        initial_user_msg="Nightly maintenance",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    ).expand(repository=[f"acme/repo-{n:02d}" for n in range(25)])

with DAG("oh_test_retry_after_crash", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as crash:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
    )

with DAG("oh_test_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as slow:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="A long task [emulator duration=60]",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        timeout=1.5,
    )


class DiesAfterTheEnd(OpenHandsStartConversationOperator):
    """Its first try dies after the conversation ended and was paused, before Airflow heard of it
    (what a lost task-state report looks like: Airflow retries a task that had done its work)."""

    def execute_complete(self, context, event):
        result = super().execute_complete(context, event)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the conversation ended")
        return result


with DAG("oh_test_retry_after_the_end", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as lost:
    after_end = DiesAfterTheEnd(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
        timeout=30,  # bounded: without the fix the retry would wait on a paused conversation
    )
    record.override(task_id="record_state")(after_end.output, "oh_test_retry_after_the_end-state")

with DAG("oh_test_secrets", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as with_secrets:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Deploy the docs",
        repository="acme/website",
        secrets={"DEPLOY_TOKEN": "tok-s3cr3t-value"},
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )
