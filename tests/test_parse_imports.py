"""DAG parse time imports only what building and checking a task needs (issue 18, item 8).

A DAG file that uses the operators, the sensor or ``@task.openhands`` is parsed over and over by
the DAG processor; the engine, the hook, the driver, the trigger and the libraries they need are
imported when a task runs. Checked in a fresh interpreter: ``import airflow.sdk`` (Airflow 2:
``airflow.models.baseoperator``) first, as a DAG file would, then the modules that are heavy at
parse time are taken out of ``sys.modules`` (Airflow itself may have imported some, e.g.
``jsonschema``, ``httpx``, ``tenacity``), so any import of them by the provider brings them back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Never imported when a DAG file is parsed (``jsonschema`` only to check an ``output_schema``).
HEAVY = (
    "jsonschema",
    "httpx",
    "requests",
    "tenacity",
    "openlineage",
    "airflow.providers.common.ai",
    "airflow_provider_openhands.engine.engine",
    "airflow_provider_openhands.engine.actions",
    "airflow_provider_openhands.hooks",
    "airflow_provider_openhands.triggers",
)

SCRIPT = """
import json, sys
HEAVY = HEAVY_NAMES
try:
    import airflow.sdk
    from airflow.sdk import DAG
except ImportError:  # Airflow 2: its BaseOperator itself needs requests, tenacity... (not ours to keep out)
    import airflow.models.baseoperator
    from airflow.models.dag import DAG

    OURS = ("openlineage", "airflow.providers.common.ai", "jsonschema")
    HEAVY = [h for h in HEAVY if h.startswith("airflow_provider_openhands") or h in OURS]

def heavy():
    return sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY))

for name in heavy():
    del sys.modules[name]
seen = {}

import airflow_provider_openhands.operators.openhands as operators
import airflow_provider_openhands.sensors.openhands as sensors
import airflow_provider_openhands.decorators.openhands as decorators
import airflow_provider_openhands.notifiers.openhands as notifiers
seen["import"] = heavy()

dag = DAG("parse_imports", schedule=None)
dag.__enter__()
start = operators.OpenHandsStartConversationOperator(
    task_id="start",
    initial_user_msg="Fix the README",
    repository="acme/app",
    selected_branch="main",
    git_provider="github",
    secrets={"GITHUB_TOKEN": "not-a-token"},
    deferrable=True,
    wait_for_completion=True,
    max_cost_usd=2.0,
    include_diff=True,
    output_files=["report.md"],
    success_statuses=["finished"],
)
follow_up = operators.OpenHandsSendMessageOperator(
    task_id="follow_up", conversation_id="{{ ti.xcom_pull('start') }}", message="Now add a test"
)
sensor = sensors.OpenHandsConversationSensor(
    task_id="wait", conversation_id="{{ ti.xcom_pull('start') }}", deferrable=True, max_cost_usd=1.0
)

@decorators.openhands_task(repository="acme/app", wait_for_completion=True)
def upgrade(package):
    return "Upgrade " + package

upgrade.override(task_id="upgrade")("requests")
notifiers.OpenHandsNotifier(repository="acme/app")
assert {"start", "follow_up", "wait", "upgrade"} <= set(dag.task_ids), dag.task_ids
seen["construct"] = heavy()

operators.OpenHandsStartConversationOperator(
    task_id="structured",
    initial_user_msg="Count the TODOs",
    repository="acme/app",
    wait_for_completion=True,
    output_schema={"type": "object", "properties": {"todos": {"type": "integer"}}},
)
seen["output_schema"] = heavy()
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("HEAVY_NAMES", repr(HEAVY))], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_operator_sensor_and_decorator_modules_imports_nothing_heavy(imported):
    assert imported["import"] == []


def test_building_operators_and_a_sensor_imports_nothing_heavy(imported):
    assert imported["construct"] == []


def test_an_output_schema_is_checked_at_parse_time_with_jsonschema_only(imported):
    assert "jsonschema" in imported["output_schema"]
    assert [m for m in imported["output_schema"] if not m.startswith("jsonschema")] == []
