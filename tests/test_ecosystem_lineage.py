"""OpenLineage facets of the operator and the sensor (issue 13, item 3), through the OpenLineage
provider's ExtractorManager as its own tests do. Needs the ``openlineage`` extra: marked ``ecosystem``."""

from __future__ import annotations

from unittest import mock

import pytest

pytestmark = pytest.mark.ecosystem


def extract(task, state_name):
    from airflow.providers.openlineage.extractors import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    ti = mock.MagicMock(task_id=task.task_id)
    ti.xcom_pull.return_value = None
    dagrun = mock.MagicMock(run_id="manual__1")
    return ExtractorManager().extract_metadata(dagrun, task, getattr(TaskInstanceState, state_name), ti)


def ended_state(hook, task, message):
    conversation_id = hook.start_conversation(message, "acme/app", poll_interval=0.05)
    import time

    deadline = time.time() + 20
    while hook.get_turn_outcome(conversation_id)["status"] is None:
        assert time.time() < deadline
        time.sleep(0.1)
    task.__dict__["hook"] = hook
    return task.final_state(conversation_id, None)


def operator():
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    return OpenHandsStartConversationOperator(
        task_id="fix", initial_user_msg="Fix it", repository="acme/app", wait_for_completion=True
    )


@pytest.mark.parametrize("api_version", ["v1"])
def test_operator_lineage_on_start_and_on_success_field_by_field(connection, hook):
    task = operator()
    started = extract(task, "RUNNING")
    assert [(d.namespace, d.name) for d in started.inputs] == [("https://github.com", "acme/app")]
    assert [(d.namespace, d.name) for d in started.outputs] == [("https://github.com", "acme/app")]
    assert started.run_facets == {}

    state = ended_state(hook, task, 'Fix it [emulator finish="Fixed"]')
    task.finish(state)
    lineage = extract(task, "SUCCESS")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("https://github.com", "acme/app")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("https://github.com", "acme/app")]
    facet = lineage.run_facets["openhands_conversation"]
    assert facet.conversationId == state["conversation_id"]
    assert facet.url == state["url"] and state["conversation_id"] in facet.url
    assert facet.status == "finished"
    assert facet.prNumbers == state["pr_number"]
    assert facet.prUrls == state["pr_urls"]
    assert facet.cost == state["metrics"]["accumulated_cost"] is not None
    assert facet.model == state["metrics"]["model_name"] == "emulated-model"
    # the facet serialises as OpenLineage events carry it
    from openlineage.client.serde import Serde

    as_json = Serde.to_dict(facet)
    assert as_json["conversationId"] == state["conversation_id"] and as_json["_producer"]


@pytest.mark.parametrize("api_version", ["v1"])
def test_operator_lineage_on_failure_field_by_field(connection, hook):
    from airflow_provider_openhands.exceptions import OpenHandsConversationFailed

    task = operator()
    state = ended_state(hook, task, "Fix it [emulator outcome=error]")
    with pytest.raises(OpenHandsConversationFailed):
        task.finish(state)
    lineage = extract(task, "FAILED")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("https://github.com", "acme/app")]
    facet = lineage.run_facets["openhands_conversation"]
    assert facet.conversationId == state["conversation_id"]
    assert facet.status == "error"
    assert facet.url == state["url"]
    assert facet.prNumbers == state["pr_number"] and facet.prUrls == state["pr_urls"]
    assert facet.cost == state["metrics"]["accumulated_cost"]
    assert facet.model == "emulated-model"


@pytest.mark.parametrize("api_version", ["v1"])
def test_sensor_lineage_names_the_repository_of_the_conversation(connection, hook):
    from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

    sensor = OpenHandsConversationSensor(task_id="wait", conversation_id="placeholder")
    state = ended_state(hook, sensor, "Fix it")
    sensor.conversation_id = state["conversation_id"]
    # before the end: the conversation id is known, the repository not yet
    early = extract(sensor, "FAILED")
    assert early.inputs == [] and early.run_facets["openhands_conversation"].conversationId == state["conversation_id"]
    sensor.finish(state)
    lineage = extract(sensor, "SUCCESS")
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("https://github.com", "acme/app")]
    facet = lineage.run_facets["openhands_conversation"]
    assert (facet.conversationId, facet.status, facet.url) == (state["conversation_id"], "finished", state["url"])


def test_parsing_with_the_extras_installed_still_imports_no_pydantic_ai_or_openlineage():
    import subprocess
    import sys

    import airflow.providers.common.ai
    import airflow.providers.openlineage  # noqa: F401

    code = (
        "import sys\nimport airflow.sdk\nbefore = set(sys.modules)\n"
        "import airflow_provider_openhands.operators.openhands, airflow_provider_openhands.sensors.openhands\n"
        "heavy = ('requests', 'httpx', 'pydantic_ai', 'openlineage', 'airflow.providers.common.ai',\n"
        "         'airflow.providers.openlineage', 'airflow_provider_openhands.lineage')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize("api_version", ["v1"])
def test_dataset_names_ignore_case_and_a_self_hosted_gitlab_keeps_its_host(emulator, api_version, monkeypatch):
    """Issue 22, item 6: ``Acme/App`` and ``acme/app`` are one dataset; a GitLab named in the
    connection's extra ``git_hosts`` is its own namespace, not gitlab.com."""
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(emulator, api_version, git_hosts={"gitlab": "https://git.acme.dev/"}),
    )
    for repository, provider, expected in [
        ("Acme/App", "github", ("https://github.com", "acme/app")),
        ("platform/Tools/CLI", "gitlab", ("https://git.acme.dev", "platform/tools/cli")),
    ]:
        task = OpenHandsStartConversationOperator(
            task_id="fix", initial_user_msg="Fix it", repository=repository, git_provider=provider
        )
        lineage = extract(task, "RUNNING")
        assert [(d.namespace, d.name) for d in lineage.inputs] == [expected]


def test_the_run_facet_s_schema_url_resolves_to_the_run_facet_base():
    """Issue 22, item 6: the facet's ``_schemaURL`` is the spec's RunFacet definition (which exists),
    not a URL that serves no schema."""
    from openlineage.client.facet_v2 import RunFacet

    from airflow_provider_openhands._openlineage import OpenHandsConversationRunFacet

    facet = OpenHandsConversationRunFacet(conversationId="abc")
    assert facet._schemaURL == RunFacet._get_schema()
    assert facet._schemaURL.startswith("https://openlineage.io/spec/") and facet._schemaURL.endswith("#/$defs/RunFacet")
