"""The API key and sandbox credentials never reach logs, XCom, trigger kwargs or exception text."""

from __future__ import annotations

import json
import os

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
    from airflow_provider_openhands.engine.state import Lifecycle

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


def _warn_about_short_secrets_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's masker warns about a short value once per process: forget that it did."""
    import importlib

    for module in (
        "airflow.sdk._shared.secrets_masker.secrets_masker",
        "airflow._shared.secrets_masker.secrets_masker",
    ):
        try:
            masker = importlib.import_module(module).SecretsMasker
        except ImportError:
            continue
        if hasattr(masker, "_has_warned_short_secret"):
            monkeypatch.setattr(masker, "_has_warned_short_secret", False)


@pytest.mark.parametrize("api_version", ["v1"])
def test_no_masking_warning_for_the_connections_own_values(
    airflow_db, connection, tmp_path, monkeypatch, capfd, caplog
):
    """The extra's values are no secrets (``api_version`` "v1" is too short to mask): only the API key
    is masked, so a task logs no "Skipping masking" warning."""
    _warn_about_short_secrets_again(monkeypatch)
    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    run_dag("oh_test_split_deferrable")
    out, err = capfd.readouterr()
    everything = out + err + caplog.text
    assert "Conversation" in everything  # the logs were captured
    assert "Skipping masking" not in everything
    assert connection.api_key not in everything


@pytest.mark.parametrize("api_version", ["v0"])
def test_the_hook_masks_the_api_key_and_not_the_extra(connection, monkeypatch):
    """Airflow masks the connection as it reads it (the extra's text, values under secret-looking names);
    the hook adds the API key and nothing else: it never reads ``extra_dejson`` (sync or async), which
    asks Airflow to mask each of the extra's values once more ("v0" is too short: a warning)."""
    import asyncio
    import sys

    sdk_connection = pytest.importorskip("airflow.sdk.definitions.connection")
    import airflow.providers.common.compat.sdk as compat

    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    readers: list[str] = []
    real_sync, real_async = sdk_connection.Connection.extra_dejson, sdk_connection.Connection.aextra_dejson

    def extra_dejson(conn):
        readers.append(sys._getframe(1).f_code.co_filename)
        return real_sync.fget(conn)

    async def aextra_dejson(conn):
        readers.append(sys._getframe(1).f_code.co_filename)
        return await real_async(conn)

    monkeypatch.setattr(sdk_connection.Connection, "extra_dejson", property(extra_dejson))
    monkeypatch.setattr(sdk_connection.Connection, "aextra_dejson", aextra_dejson)
    masked: list[object] = []
    monkeypatch.setattr(compat, "mask_secret", lambda value, name=None: masked.append(value))

    assert OpenHandsHook().settings.api_version == "v0"
    assert asyncio.run(OpenHandsHook().asettings()).api_version == "v0"
    assert masked == [connection.api_key, connection.api_key]
    assert readers and all(f"airflow{os.sep}sdk{os.sep}" in path for path in readers), readers  # Airflow's own
