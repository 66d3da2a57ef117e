"""A DAG the link tests run with dag.test(): tasks ask the "OpenHands Conversation" link for their own URL."""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

URL = "https://app.all-hands.dev/conversations/0123456789abcdef0123456789abcdef"

with DAG("oh_test_link", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as link_dag:

    @task
    def ask(push: bool, name: str, ti=None) -> str:
        """Ask the link the way Airflow 3 does when a run of the task ends (from the task itself)."""
        from airflow_provider_openhands.links.openhands import CONVERSATION_URL_KEY, OpenHandsConversationLink

        if push:
            ti.xcom_push(key=CONVERSATION_URL_KEY, value=URL)
        link = OpenHandsConversationLink().get_link(ti.task, ti_key=ti)
        index = getattr(ti, "map_index", -1)
        path = os.path.join(os.environ["OPENHANDS_TEST_RESULTS"], f"link-{name}-{index}.json")
        with open(path, "w") as handle:
            json.dump(link, handle)
        return link

    ask.override(task_id="absent")(False, "absent")
    ask.override(task_id="present")(True, "present")
    ask.override(task_id="present_mapped").partial(name="present_mapped").expand(push=[True, True])
