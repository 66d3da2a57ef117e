"""The API key and sandbox credentials never reach logs, XCom, trigger kwargs or exception text."""

from __future__ import annotations

import json

import pytest

from tests.test_dag_runs import run_dag


@pytest.mark.parametrize("api_version", ["v1", "v0"])
def test_no_key_in_logs_or_xcom_of_a_whole_run(airflow_db, connection, tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    run_dag("oh_test_split_deferrable")
    out, err = capfd.readouterr()
    everything = out + err + caplog.text
    state = json.loads((tmp_path / "oh_test_split_deferrable-state.json").read_text())
    assert "Conversation" in everything  # the logs were captured
    assert connection.api_key not in everything
    assert "session_api_key" not in state and "session-" not in json.dumps(state)
    assert "session-" not in everything  # the emulator's sandbox credentials start with this


@pytest.mark.parametrize("api_version", ["v1"])
def test_secrets_option_is_masked_sent_and_never_carried(airflow_db, connection, capfd, caplog):
    """The sandbox secrets reach the start request, and nothing else: not the lifecycle the trigger
    and the task state store carry, not the logs."""
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    operator = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="Deploy", repository="acme/web", secrets={"DEPLOY_TOKEN": "tok-s3cr3t-value"}
    )
    assert "secrets" not in operator.template_fields
    assert "tok-s3cr3t-value" not in str(redact("token is tok-s3cr3t-value"))
    run_dag("oh_test_secrets")
    (post,) = connection.requests_to("POST", "app-conversations$")
    assert post["body"]["secrets"] == {"DEPLOY_TOKEN": "tok-s3cr3t-value"}
    out, err = capfd.readouterr()
    assert "tok-s3cr3t-value" not in out + err + caplog.text
    from airflow_provider_openhands.lifecycle import Lifecycle

    trigger = operator.make_trigger(Lifecycle(options=operator._options()))
    assert "tok-s3cr3t-value" not in repr(trigger.serialize())


def test_secrets_in_extra_body_are_refused(connection):
    from airflow_provider_openhands.exceptions import OpenHandsConfigError
    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    operator = OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="Deploy", repository="acme/web", extra_body={"secrets": {"A": "b"}}
    )
    with pytest.raises(OpenHandsConfigError, match="secrets="):
        operator._options()
