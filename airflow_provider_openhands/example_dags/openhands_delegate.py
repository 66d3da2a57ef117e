"""A calling agent delegates coding work to OpenHands (common.ai ``AgentOperator`` + ``ManagedAgentToolset``).

The calling model (any pydantic-ai model on the ``pydanticai_default`` connection) decides when to
ask OpenHands: the tool ``ask_openhands`` starts a conversation on ``acme/app``, waits for the
agent's answer (its final message) and hands it back to the model. Needs the ``common-ai`` extra
(``pip install "airflow-provider-openhands[common-ai]"``, Airflow 3); without it this file defines
no DAG. Offline, the tests run it with pydantic-ai's ``TestModel`` (connection extra
``{"model": "test"}``) against the bundled emulator.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

try:
    from airflow.providers.common.ai.operators.agent import AgentOperator
    from airflow.providers.common.ai.toolsets import ManagedAgentToolset
except ImportError:  # the common-ai extra is not installed (or Airflow 2): no DAG here
    AgentOperator = ManagedAgentToolset = None

if AgentOperator is not None:
    from airflow_provider_openhands.integrations.managed_agent import OpenHandsManagedAgentHook

    with DAG(
        dag_id="openhands_delegate",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["openhands", "example", "common-ai"],
        doc_md=__doc__,
    ) as dag:
        AgentOperator(
            task_id="triage",
            llm_conn_id="pydanticai_default",
            system_prompt=(
                "You triage bug reports for the acme/app repository. When a fix needs code changes, ask "
                "OpenHands to make them and open a pull request, then summarise what it did."
            ),
            prompt="Users report that the signup page crashes when the email has a plus sign. Get it fixed.",
            toolsets=[
                ManagedAgentToolset(
                    OpenHandsManagedAgentHook().agent("acme/app"),
                    tool_name="ask_openhands",
                    description=(
                        "A coding agent with a checkout of acme/app: it can read and change the code, run "
                        "the tests and open a pull request. Give it one precise task; it answers with a "
                        "summary of what it did."
                    ),
                    timeout=3600,
                )
            ],
        )
