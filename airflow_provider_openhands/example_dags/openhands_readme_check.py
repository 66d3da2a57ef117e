"""Ask OpenHands to check a repository's README and open a PR if it is wrong.

Shows the classic split: ``start`` starts the conversation (its id goes to XCom), ``wait`` waits in
the triggerer for it to end without holding a worker slot (deferrable), and ``report`` prints the
link and any PR. The repository is a DAG param: trigger with ``{"repository": "owner/repo"}``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

# 30 s between polls suits the live service (100 requests/minute per user); the offline demo
# sets a shorter interval.
POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))

with DAG(
    dag_id="openhands_readme_check",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"repository": Param("acme/website", type="string", description="owner/repo to check")},
    tags=["openhands", "example"],
    doc_md=__doc__,
) as dag:
    start = OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg=(
            "Check whether there is any incorrect information in the README.md file and send a PR to fix it if so."
        ),
        repository="{{ params.repository }}",
        title="README check for {{ params.repository }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        pool="openhands",  # slots = the account's concurrent-conversation limit (see README)
    )
    wait = OpenHandsConversationSensor(
        task_id="wait",
        conversation_id=start.output,
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=6 * 3600,
        pool="openhands",
    )

    @task
    def report(state: dict) -> str:
        prs = ", ".join(f"#{n}" for n in state["pr_number"]) or "no PR"
        line = f"{state['selected_repository']}: {state['status']}, {prs}, {state['url']}"
        print(line)
        return line

    report(wait.output)
