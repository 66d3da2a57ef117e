"""Packaging and parse-time behaviour: provider metadata, connection form, input checks."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from airflow_provider_openhands.exceptions import OpenHandsConfigError
from airflow_provider_openhands.get_provider_info import get_provider_info


def test_provider_info_points_at_real_classes():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-openhands"
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for module in info[kind][0]["python-modules"]:
            importlib.import_module(module)
    for dotted in [info["connection-types"][0]["hook-class-name"], *info["extra-links"]]:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    assert info["connection-types"][0]["connection-type"] == OpenHandsHook.conn_type == "openhands"
    form = info["connection-types"][0]["ui-field-behaviour"]
    assert form["relabeling"]["password"] == "API key"
    assert OpenHandsHook.get_ui_field_behaviour()["hidden_fields"] == form["hidden-fields"]


def test_airflow_lists_the_provider_and_its_connection_type():
    providers = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "plain"], capture_output=True, text=True
    )
    assert "airflow-provider-openhands" in providers.stdout, providers.stderr[-2000:]
    hooks = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "plain"], capture_output=True, text=True
    )
    assert "openhands" in hooks.stdout and "OpenHandsHook" in hooks.stdout, hooks.stderr[-2000:]


def make_operator(**kwargs):
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    kwargs.setdefault("task_id", "start")
    kwargs.setdefault("initial_user_msg", "Fix the README")
    kwargs.setdefault("repository", "acme/website")
    return OpenHandsStartConversationOperator(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"initial_user_msg": ""}, "initial_user_msg"),
        ({"initial_user_msg": "   "}, "initial_user_msg"),
        ({"repository": "https://github.com/acme/website"}, "repository"),
        ({"repository": "website"}, "repository"),
        ({"git_provider": "sourceforge"}, "git_provider"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"timeout": -1}, "timeout"),
        ({"start_timeout": 0}, "start_timeout"),
        ({"success_statuses": ["done"]}, "success_statuses"),
        ({"failure_statuses": ["boom"]}, "failure_statuses"),
    ],
)
def test_bad_static_input_fails_at_parse_time_naming_the_parameter(kwargs, parameter):
    with pytest.raises(OpenHandsConfigError, match=parameter):
        make_operator(**kwargs)


def test_templated_values_are_checked_later():
    operator = make_operator(repository="{{ params.repository }}", initial_user_msg="{{ params.msg }}")
    assert operator.repository == "{{ params.repository }}"


def test_sensor_rejects_bad_statuses():
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

    with pytest.raises(OpenHandsConfigError, match="success_statuses"):
        OpenHandsConversationSensor(task_id="wait", conversation_id="x", success_statuses=["complete"])


def test_templated_fields_and_link():
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    assert set(OpenHandsStartConversationOperator.template_fields) == {
        "initial_user_msg",
        "repository",
        "selected_branch",
        "title",
        "extra_body",
        "conversation_id",
    }
    (link,) = OpenHandsStartConversationOperator.operator_extra_links
    assert link.name == "OpenHands Conversation"


def test_parsing_a_dag_file_does_not_import_http_clients():
    """DAG files are parsed again and again: the operator, sensor and decorator modules stay light."""
    code = (
        "import sys\n"
        "try:\n    import airflow.sdk\nexcept ImportError:  # Airflow 2\n    import airflow.models.baseoperator\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_openhands.operators.openhands, airflow_provider_openhands.sensors.openhands\n"
        "import airflow_provider_openhands.decorators.openhands\n"
        "heavy = ('requests', 'httpx', 'tenacity', 'airflow_provider_openhands.hooks',\n"
        "         'airflow_provider_openhands.triggers', 'airflow_provider_openhands.testing',\n"
        "         'pydantic_ai', 'openlineage', 'airflow_provider_openhands.lineage')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_task_openhands_decorator_is_registered():
    info = get_provider_info()
    (decorator,) = info["task-decorators"]
    module, _, name = decorator["class-name"].rpartition(".")
    assert decorator["name"] == "openhands" and callable(getattr(importlib.import_module(module), name))
    from airflow.providers.common.compat.sdk import task

    assert callable(task.openhands)
