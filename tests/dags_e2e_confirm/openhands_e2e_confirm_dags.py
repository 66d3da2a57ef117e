"""A task whose agent asks for confirmation and nobody answers (tests/test_real_airflow.py, issue 29
scenario 13): ``on_confirmation="ask"``, ``confirmation_timeout=5``, deferrable."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

DAG_ID = "openhands_e2e_unanswered_ask"

with DAG(DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    OpenHandsStartConversationOperator(
        task_id="maintain",
        repository="acme/app",
        initial_user_msg='Clean the build directory [emulator confirm="rm -rf build" risk=HIGH]',
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        on_confirmation="ask",
        confirmation_timeout=5,
        timeout=300,
    )
