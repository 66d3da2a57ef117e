"""Inputs as a user writes them, mistakes included (issue 18, items 4 to 7): each bad one fails with an
error naming it before any request; a credential never reaches an error, a URL, a log or XCom."""

from __future__ import annotations

import json
import math

import pytest

from airflow_provider_openhands.exceptions import OpenHandsAuthError, OpenHandsConfigError, OpenHandsOutputError
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from airflow_provider_openhands.operators.openhands import (
    OpenHandsSendMessageOperator,
    OpenHandsStartConversationOperator,
)
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor
from tests.conftest import FAST_RETRIES, REPO
from tests.test_dag_runs import load_dag, task_states

DAGS = REPO / "tests" / "dags" / "openhands_input_dags.py"


def use_connection(monkeypatch, **fields) -> None:
    conn = {"conn_type": "openhands", "host": "https://app.all-hands.dev", "password": "k", "extra": {}, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", json.dumps(conn))


# -- item 4: credentials in the host URL ---------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "https://bob:hunter2@app.all-hands.dev",
        "bob:hunter2@app.all-hands.dev",  # a bare host name (scheme from the extra)
        "https://hunter2@app.all-hands.dev",  # a token as the user name
        "https://bob:hun/ter2@app.all-hands.dev",  # a password urlsplit reads as host and port
    ],
)
def test_credentials_in_the_host_are_refused_naming_the_connection_never_quoting_them(monkeypatch, host):
    use_connection(monkeypatch, host=host, port=443)
    with pytest.raises(OpenHandsConfigError) as caught:
        OpenHandsHook().settings  # noqa: B018
    message = str(caught.value)
    assert "'openhands_default'" in message and "password field" in message
    assert "hunter2" not in message and "hun/ter2" not in message and "bob" not in message


def test_credentials_in_the_host_send_nothing_and_log_nothing(emulator, monkeypatch, caplog):
    use_connection(monkeypatch, host=f"http://bob:hunter2@127.0.0.1:{emulator.port}", password=emulator.api_key)
    hook = OpenHandsHook(retry_policy=FAST_RETRIES)
    with pytest.raises(OpenHandsConfigError, match="password field") as caught:
        hook.start_conversation("Fix it", "acme/app")
    ok, message = OpenHandsHook().test_connection()
    assert not ok and "password field" in message
    assert emulator.requests == []  # refused when the connection is read: no request, no URL built
    assert "hunter2" not in str(caught.value) + message + caplog.text


# -- item 6: an IPv6 host with a port; non-finite numbers ---------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("::1", 3000, "http://[::1]:3000"),
        ("http://[::1]", 3000, "http://[::1]:3000"),
        ("http://[::1]:3000", None, "http://[::1]:3000"),
        ("::1", None, "http://[::1]"),
        ("http://[::1]/base/", 3000, "http://[::1]:3000/base"),
    ],
)
def test_an_ipv6_host_with_a_port_gives_a_valid_url(monkeypatch, host, port, url):
    use_connection(monkeypatch, host=host, port=port, extra={"scheme": "http"})
    assert OpenHandsHook().base_url == url


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "Infinity", float("nan"), float("inf")])
def test_a_non_finite_connection_timeout_is_refused(monkeypatch, timeout):
    use_connection(monkeypatch, extra={"timeout": timeout})  # json.dumps writes NaN/Infinity, which Airflow reads
    with pytest.raises(OpenHandsConfigError, match=r"openhands_default.*timeout"):
        OpenHandsHook().settings  # noqa: B018


@pytest.mark.parametrize("name", ["timeout", "poll_interval", "start_timeout", "max_cost_usd", "max_diff_chars"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_operator_number_fails_at_parse_time(name, value):
    with pytest.raises(OpenHandsConfigError, match=rf"^{name} must be a finite number"):
        OpenHandsStartConversationOperator(
            task_id="t", initial_user_msg="x", repository="acme/app", wait_for_completion=True, **{name: value}
        )


@pytest.mark.parametrize("name", ["unreachable_timeout", "sandbox_error_grace", "max_cost_usd"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_sensor_number_fails_at_parse_time(name, value):
    # (the sensor's timeout and poke_interval are Airflow's: it refuses NaN itself, naming them)
    with pytest.raises(OpenHandsConfigError, match=rf"^{name} must be a finite number"):
        OpenHandsConversationSensor(task_id="w", conversation_id="a" * 32, **{name: value})


# -- item 6: output_schema with an unresolvable $ref, NaN in the output -------------------------


@pytest.mark.parametrize(
    ("schema", "ref"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "#/$defs/Missing"),
        ({"$ref": "#/definitions/A", "definitions": {"A": {"$ref": "#/definitions/B"}}}, "#/definitions/B"),
        ({"items": {"$ref": "#no-such-anchor"}}, "#no-such-anchor"),
        ({"properties": {"a": {"$ref": "https://example.com/remote.json"}}}, "https://example.com/remote.json"),
        (
            {"$schema": "http://json-schema.org/draft-07/schema#", "allOf": [{"$ref": "#/definitions/X"}]},
            "#/definitions/X",
        ),
    ],
)
def test_an_output_schema_with_an_unresolvable_ref_fails_at_parse_time(schema, ref):
    with pytest.raises(OpenHandsConfigError, match=r"^output_schema has a \$ref that cannot be resolved") as caught:
        OpenHandsStartConversationOperator(
            task_id="t", initial_user_msg="x", repository="acme/app", wait_for_completion=True, output_schema=schema
        )
    assert repr(ref) in str(caught.value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}},
        {
            "$id": "https://example.com/root.json",
            "items": {"$id": "sub/x.json", "$ref": "#/$defs/Q", "$defs": {"Q": {}}},
        },
        {"properties": {"a": {"$ref": "#name"}}, "$defs": {"n": {"$anchor": "name", "type": "integer"}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "$ref": "#/definitions/A", "definitions": {"A": {}}},
        {"properties": {"meta": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}},  # bundled meta-schema
    ],
)
def test_an_output_schema_whose_refs_resolve_is_accepted(schema):
    OpenHandsStartConversationOperator(
        task_id="t", initial_user_msg="x", repository="acme/app", wait_for_completion=True, output_schema=schema
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_the_output_is_not_json(constant):
    from airflow_provider_openhands.results import parse_output

    with pytest.raises(OpenHandsOutputError, match=rf"is not JSON.*{constant} is not a JSON number"):
        parse_output('{"confidence": ' + constant + "}", {"type": "object"}, "Done")


@pytest.mark.airflow_e2e
@pytest.mark.parametrize("api_version", ["v1"])
def test_nan_in_the_agent_s_output_file_fails_the_task(airflow_db, connection, api_version, capfd):
    from tests.test_dag_runs import run_dag
    from tests.test_results import WORK

    nan_output = '{\\"cause\\": \\"disk full\\", \\"confidence\\": NaN, \\"suggested_fix\\": \\"rotate\\"}'
    dag_run = run_dag("oh_test_results_deferrable", {"message": "Triage " + WORK.replace("{output}", nan_output)})
    assert task_states(dag_run) == {"run": "failed"}
    out, err = capfd.readouterr()
    assert "is not JSON (NaN is not a JSON number)" in out + err


# -- item 6: repository path segments ------------------------------------------------------------


@pytest.mark.parametrize("repository", ["../..", "acme/..", "./web", "acme/./web", "../acme/web", "acme/web/.."])
def test_dot_segments_are_refused_as_repository(repository):
    with pytest.raises(OpenHandsConfigError, match=r"^repository must look like 'owner/repo'"):
        OpenHandsStartConversationOperator(task_id="t", initial_user_msg="x", repository=repository)


@pytest.mark.parametrize("repository", ["acme/web", "acme/web.site", "group/sub/repo", "acme/.github", "acme/..x"])
def test_dotted_names_that_are_no_segments_are_repositories(repository):
    OpenHandsStartConversationOperator(task_id="t", initial_user_msg="x", repository=repository)


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_dot_segment_repository_sends_nothing_through_the_hook(hook, connection):
    with pytest.raises(OpenHandsConfigError, match="repository"):
        hook.start_conversation("Fix it", "../..")
    assert connection.requests == []


# -- item 6: a result dict where a conversation id is expected ----------------------------------


def test_conversation_id_accepts_an_id_or_a_result_holding_one():
    from airflow_provider_openhands.api.options import check_conversation_id

    uuid = "5f0c1d34-5c1c-4d43-9d3b-8a4e6c3c2b10"
    assert check_conversation_id(uuid) == uuid
    assert check_conversation_id(" " + uuid.replace("-", "") + " ") == uuid.replace("-", "")
    assert check_conversation_id({"conversation_id": uuid, "status": "finished", "metrics": {}}) == uuid


BIG_RESULT = {"status": "finished", "final_message": "x" * 5000, "changed_files": [{"path": "a"}] * 50}


@pytest.mark.parametrize(
    "value", [BIG_RESULT, {"conversation_id": None, **BIG_RESULT}, "Invalid", 42, ["a" * 32], "a" * 31]
)
@pytest.mark.parametrize("api_version", ["v1"])
def test_a_bad_conversation_id_fails_naming_it_before_any_request(connection, value):
    sensor = OpenHandsConversationSensor(task_id="wait", conversation_id=value, poke_interval=0.1, soft_fail=True)
    send = OpenHandsSendMessageOperator(task_id="send", conversation_id=value, message="Go on")
    start = OpenHandsStartConversationOperator(task_id="start", initial_user_msg="Go on", conversation_id=value)
    for task in (sensor, send, start):
        with pytest.raises(OpenHandsConfigError, match=r"^conversation_id must be a conversation id") as caught:
            task.execute({})
        assert len(str(caught.value)) < 300  # a short repr, not the whole result
    assert connection.requests == []


@pytest.mark.airflow_e2e
@pytest.mark.parametrize("api_version", ["v1"])
def test_each_task_s_result_works_as_the_next_one_s_conversation_id(airflow_db, connection, api_version):
    dag_run = load_dag(DAGS, "oh_test_results_as_conversation_id").test()
    assert task_states(dag_run) == dict.fromkeys(("start", "wait", "follow_up"), "success")
    assert connection.stats()["created"] == 1
    (send,) = connection.requests_to("POST", "/send-message$")  # the follow-up went to the started conversation
    (conversation_id,) = {c.id for c in connection.conversations.values()}
    assert conversation_id.replace("-", "") in send["path"].replace("-", "")


# -- item 7: V0's 401 -----------------------------------------------------------------------------


def test_a_v0_401_says_the_key_may_lack_access_to_the_repository(connection, api_version, monkeypatch):
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        connection_json(connection, api_version).replace(connection.api_key, "wrong-key-123"),
    )
    with pytest.raises(OpenHandsAuthError) as caught:
        OpenHandsHook(retry_policy=FAST_RETRIES).start_conversation("Fix it", "acme/app")
    message = str(caught.value)
    assert "'openhands_default'" in message and "401" in message and "wrong-key-123" not in message
    if api_version == "v0":
        assert "may be wrong, revoked, or without access to the repository" in message
    else:
        assert "is missing, wrong or revoked" in message and "repository" not in message


# -- item 5: templated secrets --------------------------------------------------------------------


@pytest.mark.airflow_e2e
@pytest.mark.parametrize("api_version", ["v1"])
def test_templated_secrets_are_rendered_at_run_time_masked_and_never_stored(
    airflow_db, connection, api_version, monkeypatch, capfd, caplog
):
    """``{{ var.value.x }}`` and ``{{ conn.x.password }}`` in ``secrets`` reach the start request
    rendered, are masked in logs (even under names Airflow does not mask by itself), and never reach
    the rendered-fields table."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.providers.common.compat.sdk import redact
    from airflow.utils.session import create_session

    var_value, conn_value = "rendered-pat-8c1e55", "conn-pw-93d2aa"
    monkeypatch.setenv("AIRFLOW_VAR_GH_PAT", var_value)
    monkeypatch.setenv("AIRFLOW_CONN_OH_TEST_GIT", json.dumps({"conn_type": "generic", "password": conn_value}))
    dag = load_dag(DAGS, "oh_test_templated_secrets")
    assert "secrets" not in dag.get_task("run").template_fields
    dag_run = dag.test(run_conf={"suffix": "now"})
    assert task_states(dag_run) == {"run": "success"}
    (post,) = connection.requests_to("POST", "app-conversations$")
    assert post["body"]["secrets"] == {"GH_PAT": var_value, "FROM_CONN": conn_value, "STATIC": "static-s3cr3t-4711"}
    assert var_value not in str(redact(f"token {var_value}"))  # masked as soon as it was rendered
    out, err = capfd.readouterr()
    assert "OpenHands conversation" in out + err + caplog.text  # the run's logs were captured
    assert var_value not in out + err + caplog.text and conn_value not in out + err + caplog.text
    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag.dag_id, run_id=dag_run.run_id).all()
    stored = json.dumps([row.rendered_fields for row in rows], default=str)
    assert "Deploy the docs now" in stored  # the table has this run's rendered fields, and no secret
    assert var_value not in stored and conn_value not in stored and "secrets" not in stored
