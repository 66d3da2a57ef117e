"""DAGs tests/test_inputs.py runs with dag.test(): inputs as a user writes them (issue 18)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openhands.operators.openhands import (
    OpenHandsSendMessageOperator,
    OpenHandsStartConversationOperator,
)
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

POLL = 0.2

with DAG("oh_test_templated_secrets", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as secrets:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Deploy the docs {{ dag_run.conf.get('suffix', '') }}",
        repository="acme/website",
        secrets={
            "GH_PAT": "{{ var.value.gh_pat }}",  # rendered when the task starts the conversation
            "FROM_CONN": "{{ conn.oh_test_git.password }}",
            "STATIC": "static-s3cr3t-4711",  # not templated: sent as written
        },
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )

with DAG("oh_test_results_as_conversation_id", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as ids:
    # Each task's result (a dict holding conversation_id) is the next one's conversation_id.
    first = OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg='Fix the README [emulator finish="First answer" duration=0.3]',
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )
    wait = OpenHandsConversationSensor(
        task_id="wait", conversation_id=first.output, poke_interval=POLL, timeout=30, deferrable=False
    )
    OpenHandsSendMessageOperator(
        task_id="follow_up",
        conversation_id=wait.output,
        message='Now add a test [emulator finish="Second answer" duration=0.3]',
        deferrable=True,
        poll_interval=POLL,
    )
