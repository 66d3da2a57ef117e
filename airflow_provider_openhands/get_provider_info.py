"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_openhands import __version__, connection_form


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-openhands",
        "name": "OpenHands",
        "description": "Run OpenHands Cloud coding-agent conversations as Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "OpenHands",
                "external-doc-url": "https://docs.openhands.dev/openhands/usage/cloud/cloud-api",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "OpenHands", "python-modules": ["airflow_provider_openhands.hooks.openhands"]}],
        "operators": [
            {"integration-name": "OpenHands", "python-modules": ["airflow_provider_openhands.operators.openhands"]}
        ],
        "sensors": [
            {"integration-name": "OpenHands", "python-modules": ["airflow_provider_openhands.sensors.openhands"]}
        ],
        "triggers": [
            {"integration-name": "OpenHands", "python-modules": ["airflow_provider_openhands.triggers.openhands"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_openhands.hooks.openhands.OpenHandsHook",
                "hook-name": "OpenHands",
                "connection-type": "openhands",
                "conn-fields": connection_form.conn_fields(),
                "ui-field-behaviour": connection_form.ui_field_behaviour(kebab=True),
            }
        ],
        "task-decorators": [
            {"name": "openhands", "class-name": "airflow_provider_openhands.decorators.openhands.openhands_task"}
        ],
        "extra-links": ["airflow_provider_openhands.links.openhands.OpenHandsConversationLink"],
        "notifications": ["airflow_provider_openhands.notifiers.openhands.OpenHandsNotifier"],
    }
