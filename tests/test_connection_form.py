"""Issue 12, items 3-5: the connection form, the Test button's messages, and a quiet extra link."""

from __future__ import annotations

import json
import socket

import pytest

from airflow_provider_openhands import connection_form
from airflow_provider_openhands.get_provider_info import get_provider_info
from airflow_provider_openhands.hooks.openhands import OpenHandsHook
from tests.conftest import FAST_RETRIES, REPO

FORM_FIELDS = {
    "api_version",
    "timeout",
    "max_retries",
    "max_requests_per_minute",
    "allow_insecure_http",
    "disable_tls_verification",
}


def airflow_major() -> int:
    from airflow import __version__

    return int(__version__.split(".")[0])


# -- the form --------------------------------------------------------------------------------------


def test_provider_info_declares_the_form_fields_for_airflow_3():
    (conn_type,) = get_provider_info()["connection-types"]
    fields = conn_type["conn-fields"]
    assert set(fields) == FORM_FIELDS
    assert fields["api_version"]["schema"]["enum"] == ["v1", "v0"]  # a select
    for name in ("timeout", "max_retries", "max_requests_per_minute"):
        assert "integer" in fields[name]["schema"]["type"], name
    for name in ("allow_insecure_http", "disable_tls_verification"):
        assert "boolean" in fields[name]["schema"]["type"], name
    for name, field in fields.items():
        assert "null" in field["schema"]["type"], f"{name} would be required"
        assert field["label"] and field["description"], name
        # no value the form would fill in and store: an empty field means the default, which it names
        assert "default" not in field["schema"], name
        assert "default" in field["description"], name
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API key"


def test_the_defaults_the_form_shows_are_the_hooks():
    from airflow_provider_openhands.hooks import transport

    defaults = {name: spec["default"] for name, spec in connection_form.FIELDS.items()}
    assert defaults["timeout"] == transport.DEFAULT_TIMEOUT
    assert defaults["max_retries"] == transport.DEFAULT_MAX_RETRIES
    assert defaults["max_requests_per_minute"] == transport.DEFAULT_MAX_REQUESTS_PER_MINUTE
    assert connection_form.DEFAULT_HOST == transport.DEFAULT_BASE_URL
    assert OpenHandsHook.default_conn_name == connection_form.DEFAULT_CONN_ID


def test_ui_field_behaviour_is_the_same_for_both_airflow_lines():
    hook_side = OpenHandsHook.get_ui_field_behaviour()
    info_side = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    assert hook_side["hidden_fields"] == info_side["hidden-fields"] == ["schema", "login"]
    assert hook_side["relabeling"] == info_side["relabeling"]
    assert hook_side["placeholders"] == info_side["placeholders"]


def test_placeholders_fit_and_show_the_defaults():
    """Each placeholder fits its input (the API key's was cut off); the port's says what the Test button
    needs; the host's and (Airflow 2) the extra fields' are the defaults an empty field means."""
    placeholders = OpenHandsHook.get_ui_field_behaviour()["placeholders"]
    for name, text in placeholders.items():
        assert len(text) <= connection_form.PLACEHOLDER_CHARS, (name, text)
    assert placeholders["port"] == "443 (the Test button needs a port)"
    assert placeholders["host"] == "https://app.all-hands.dev (default)"
    assert "API key" in placeholders["password"]
    assert (placeholders["api_version"], placeholders["timeout"], placeholders["max_retries"]) == ("v1", "30", "5")
    assert "api_version" not in placeholders["extra"]  # no example that stores a default


def test_the_hook_module_imports_without_the_web_ui_packages():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('wtforms', 'flask_appbuilder', 'flask_babel'):\n"
        "    sys.modules[name] = None  # an import of it fails\n"
        "import airflow_provider_openhands.hooks.openhands as m\n"
        "print(m.OpenHandsHook.get_ui_field_behaviour()['relabeling']['password'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("API key"), result.stderr[-2000:]


def test_get_connection_form_widgets():
    """Airflow 2's form: only the field classes Airflow 2 accepts, api_version limited to v1/v0."""
    pytest.importorskip("flask_appbuilder", reason="Airflow 2's web UI (Flask-AppBuilder) is not installed")
    from wtforms import BooleanField, IntegerField, PasswordField, StringField
    from wtforms.validators import AnyOf

    widgets = OpenHandsHook.get_connection_form_widgets()
    assert set(widgets) == FORM_FIELDS
    for name, widget in widgets.items():
        assert widget.field_class in (IntegerField, PasswordField, StringField, BooleanField), name
        assert widget.kwargs["description"], name
    assert widgets["api_version"].field_class is StringField
    (choice,) = [v for v in widgets["api_version"].kwargs["validators"] if isinstance(v, AnyOf)]
    assert list(choice.values) == ["v1", "v0"]
    assert widgets["timeout"].field_class is IntegerField
    assert all("default" not in widget.kwargs for widget in widgets.values())  # nothing stored unasked
    assert widgets["allow_insecure_http"].field_class is BooleanField


def test_airflow_builds_the_form_from_the_provider():
    """What the UI asks Airflow for: the extra fields of the ``openhands`` type (Airflow 3: its hook
    metadata service; Airflow 2: the providers manager, which calls get_connection_form_widgets)."""
    if airflow_major() >= 3:
        from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

        (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "openhands"]
        assert set(meta.extra_fields) == FORM_FIELDS
        assert meta.extra_fields["api_version"]["schema"]["enum"] == ["v1", "v0"]
        assert meta.standard_fields.password.title == "API key"
        assert meta.standard_fields.port.hidden is False
        assert "Test button" in meta.standard_fields.port.placeholder
        # what a new connection's form starts with, and its Extra JSON: no default filled in to be stored
        assert {name: field["value"] for name, field in meta.extra_fields.items()} == dict.fromkeys(FORM_FIELDS)
    else:
        pytest.importorskip("flask_appbuilder")
        from airflow.providers_manager import ProvidersManager

        widgets = ProvidersManager().connection_form_widgets
        assert {f"extra__openhands__{name}" for name in FORM_FIELDS} <= set(widgets)
        assert widgets["extra__openhands__timeout"].field_name == "timeout"  # stored under the plain name
        assert ProvidersManager().field_behaviours["openhands"]["relabeling"]["password"] == "API key"


# -- reading what the form stored -------------------------------------------------------------------


def settings_for(monkeypatch, extra: dict, **conn):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        json.dumps(
            {"conn_type": "openhands", "host": "https://oh.example.com", "password": "k", **conn, "extra": extra}
        ),
    )
    return OpenHandsHook().settings


def test_a_connection_saved_by_the_form_is_read(monkeypatch):
    """Airflow 3's form and Airflow 2's both store plain names; an emptied field stores null."""
    settings = settings_for(
        monkeypatch,
        {
            "api_version": "v0",
            "timeout": 12,
            "max_retries": None,
            "max_requests_per_minute": 90,
            "allow_insecure_http": False,
            "disable_tls_verification": True,
        },
    )
    assert (settings.api_version, settings.timeout, settings.max_retries) == ("v0", 12, 5)
    assert settings.max_requests_per_minute == 90 and settings.verify is False


def test_a_connection_saved_with_empty_fields_follows_the_defaults(monkeypatch):
    """Airflow 3's form stores an empty field as null: the hook's default applies, today's and any later one."""
    from airflow_provider_openhands.hooks import transport

    monkeypatch.setattr(transport, "DEFAULT_TIMEOUT", 45.0)
    settings = settings_for(monkeypatch, dict.fromkeys(FORM_FIELDS))
    assert (settings.api_version, settings.timeout, settings.max_retries) == ("v1", 45.0, transport.DEFAULT_MAX_RETRIES)
    assert settings.max_requests_per_minute == transport.DEFAULT_MAX_REQUESTS_PER_MINUTE and settings.verify is True


def test_prefixed_form_names_are_read_too(monkeypatch):
    """Connections written by older Airflow versions (or by hand after their docs) use prefixed names."""
    settings = settings_for(
        monkeypatch,
        {
            "extra__openhands__api_version": "v0",
            "extra__openhands__timeout": "7",
            "extra__openhands__max_retries": "2",
            "extra__openhands__disable_tls_verification": True,
            "extra__openhands__allow_insecure_http": True,
        },
        host="http://oh.example.com",
    )
    assert (settings.api_version, settings.timeout, settings.max_retries, settings.verify) == ("v0", 7, 2, False)
    assert settings.base_url == "http://oh.example.com"


def test_a_plain_name_with_a_value_wins_over_a_prefixed_one(monkeypatch):
    extra = {"extra__openhands__timeout": 7, "timeout": 9, "extra__openhands__max_retries": 3, "max_retries": ""}
    assert connection_form.form_extra(extra) == {"timeout": 9, "max_retries": 3}
    assert settings_for(monkeypatch, extra).timeout == 9


def test_a_stored_port_is_used_with_a_host_without_one(monkeypatch):
    assert settings_for(monkeypatch, {}, port=443).base_url == "https://oh.example.com:443"
    assert settings_for(monkeypatch, {}, host="https://oh.example.com:8443", port=443).base_url.endswith(":8443")


# -- the Test button ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_host_reads_cannot_reach(monkeypatch):
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        json.dumps({"conn_type": "openhands", "host": f"http://127.0.0.1:{port}", "password": "k"}),
    )
    ok, message = OpenHandsHook().test_connection()
    assert not ok
    assert message == f"cannot reach http://127.0.0.1:{port}: connection refused"


def test_an_unknown_host_name_reads_cannot_reach(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT",
        json.dumps({"conn_type": "openhands", "host": "https://openhands.invalid", "password": "k"}),
    )
    ok, message = OpenHandsHook().test_connection()
    assert not ok and message.startswith("cannot reach https://openhands.invalid: ")
    assert "HTTPSConnectionPool" not in message


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_cli_names_the_connection(connection, monkeypatch):
    """``airflow connections test <id>`` tests the connection under its own id: messages name it."""
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    ok, message = OpenHandsHook(retry_policy=FAST_RETRIES).test_connection()
    assert ok and "'openhands_default'" in message
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(connection, "v1").replace(connection.api_key, "wrong")
    )
    ok, message = OpenHandsHook(retry_policy=FAST_RETRIES).test_connection()
    assert not ok and "API key of connection 'openhands_default'" in message


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_ui_test_copy_is_not_named_by_its_random_id(connection, monkeypatch):
    """Airflow's Test button tests a copy under a random id (``get_random_string()``, as an env variable)."""
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_QX7ZPT2A", connection_json(connection, "v1").replace(connection.api_key, "wrong"))
    ok, message = OpenHandsHook("qX7zPt2A", retry_policy=FAST_RETRIES).test_connection()
    assert not ok and "qX7zPt2A" not in message and "API key of this connection" in message
    monkeypatch.setenv("AIRFLOW_CONN_QX7ZPT2A", json.dumps({"conn_type": "openhands", "host": "http://x.example"}))
    ok, message = OpenHandsHook("qX7zPt2A").test_connection()
    assert not ok and message.startswith("This connection has no API key")


@pytest.mark.parametrize("api_version", ["v1"])
def test_a_wrong_base_url_gets_a_hint(connection, monkeypatch):
    from airflow_provider_openhands.testing.pytest_plugin import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(connection, "v1"))
    connection.add_fault(status=404, method="GET", times=1)
    ok, message = OpenHandsHook(retry_policy=FAST_RETRIES).test_connection()
    assert not ok and "api_version" in message and connection.url in message


# -- the extra link ---------------------------------------------------------------------------------


@pytest.mark.airflow_e2e
def test_the_link_is_quiet_until_the_url_exists(airflow_db, tmp_path, monkeypatch, capfd, caplog):
    """Item 5: a task instance without the XCom gets an empty link and no ``XCom not found`` error."""
    from tests.test_dag_runs import load_dag, task_states

    monkeypatch.setenv("OPENHANDS_TEST_RESULTS", str(tmp_path))
    dag_run = load_dag(REPO / "tests" / "dags" / "openhands_link_dags.py", "oh_test_link").test()
    assert set(task_states(dag_run).values()) == {"success"}
    links = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("link-*.json")}
    url = "https://app.all-hands.dev/conversations/0123456789abcdef0123456789abcdef"
    assert links == {
        "link-absent--1": "",
        "link-present--1": url,
        "link-present_mapped-0": url,
        "link-present_mapped-1": url,
    }
    out, err = capfd.readouterr()
    assert "XCom not found" not in out + err + caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text[-3000:]
    if airflow_major() < 3:  # the webserver asks with the task instance's key, after the fact
        from airflow_provider_openhands.links.openhands import OpenHandsConversationLink

        (absent,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "absent"]
        assert OpenHandsConversationLink().get_link(None, ti_key=absent.key) == ""


UI_TEST_BUTTON = """
import json, sys
from airflow.models import Connection
from airflow.utils.session import create_session
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

host, port = sys.argv[1], int(sys.argv[2])
with create_session() as session:
    for conn_id in ("oh_ui_no_port", "oh_ui_port"):
        session.query(Connection).filter(Connection.conn_id == conn_id).delete()
    session.add(Connection(conn_id="oh_ui_no_port", conn_type="openhands", host=host, password="k"))
    session.add(Connection(conn_id="oh_ui_port", conn_type="openhands", host=host, port=port, password="k"))
client = TestClient(create_app())
answers = {}
for conn_id in ("oh_ui_no_port", "oh_ui_port"):
    listed = client.get(f"/api/v2/connections/{conn_id}").json()
    # what the connection list's Test button posts: the listed connection, port as Number(port)
    body = {key: listed[key] for key in ("connection_id", "conn_type", "description", "host", "login", "password",
                                         "schema", "extra")}
    body["port"] = listed["port"] or 0
    answer = client.post("/api/v2/connections/test", json=body)
    answers[conn_id] = [answer.status_code, answer.json()]
with create_session() as session:
    session.query(Connection).filter(Connection.conn_id.in_(list(answers))).delete()
print("ANSWERS " + json.dumps(answers))
"""


@pytest.mark.airflow_e2e
def test_airflow_3_ui_test_button_needs_a_stored_port(airflow_db):
    """Item 4, what we found: Airflow 3.3's Test button posts ``port: 0`` for a connection whose port is
    empty, and its endpoint refuses a port that differs from the stored one unless the request carries
    the password (the UI sends it masked). Hiding the port in the form cannot help (a hidden field stores
    nothing); a stored port can: the Port field is shown, with 443 as its placeholder."""
    if airflow_major() < 3:
        pytest.skip("Airflow 2's Test button posts the form as it is")
    import os
    import subprocess
    import sys

    port = free_port()  # nothing listens: the answer shows that the hook was reached
    env = {
        **os.environ,
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    result = subprocess.run(
        [sys.executable, "-c", UI_TEST_BUTTON, "http://127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("ANSWERS ")] or [result.stderr[-3000:]]
    answers = json.loads(line.removeprefix("ANSWERS "))
    status, body = answers["oh_ui_no_port"]
    assert status == 400 and "differs from the stored connection" in body["detail"]
    status, body = answers["oh_ui_port"]
    assert status == 200 and body == {
        "status": False,
        "message": f"cannot reach http://127.0.0.1:{port}: connection refused",
    }
