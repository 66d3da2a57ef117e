"""The ``openhands`` connection form: its extra fields, once, for every Airflow line.

Airflow 3 builds the form from the provider info (``conn-fields``, JSON schemas: a select for an
``enum``, number inputs, checkboxes) without importing the hook; Airflow 2 asks the hook's
``get_connection_form_widgets`` (wtforms fields: Airflow 2 accepts only string, integer, password and
boolean fields, so ``api_version`` is a text field that accepts ``v1`` or ``v0``). Both store each field
in the connection's extra under its plain name (``{"timeout": 30}``); connections written by older
Airflow versions may use the prefixed name (``extra__openhands__timeout``): :func:`form_extra` reads both.

The defaults are no field values: a new connection's fields are empty (Airflow 3 stores them as
``null``), an empty field means the default, so a later change of a default reaches every
connection that did not set it. Each field's description names its default (Airflow 3.3 shows no
placeholder for extra fields); Airflow 2 also shows it as the field's placeholder.

Light on purpose: the providers manager imports this module through ``get_provider_info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONN_TYPE = "openhands"
DEFAULT_CONN_ID = "openhands_default"
DEFAULT_HOST = "https://app.all-hands.dev"
PREFIX = f"extra__{CONN_TYPE}__"

#: The extra fields of the form: name -> label, help text, default (what an empty field means), JSON
#: schema (``type`` without null; no ``default``: Airflow would fill the field, and store it, with it).
FIELDS: dict[str, dict[str, Any]] = {
    "api_version": {
        "label": "API version",
        "description": "v1: OpenHands Cloud and servers from OpenHands 1.0 on (default); "
        "v0: older self-hosted servers.",
        "default": "v1",
        "schema": {"type": "string", "enum": ["v1", "v0"]},
    },
    "timeout": {
        "label": "Request timeout (s)",
        "description": "Seconds each HTTP request may take (default 30).",
        "default": 30,
        "schema": {"type": "integer", "minimum": 1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a request that failed transiently (429, 5xx, connection error); default 5.",
        "default": 5,
        "schema": {"type": "integer", "minimum": 0},
    },
    "max_requests_per_minute": {
        "label": "Max requests per minute",
        "description": "Requests each process (triggerer or worker) may send with this connection, retries "
        "included (default 60; the service allows 100 per user, shared by all).",
        "default": 60,
        "schema": {"type": "integer", "minimum": 1},
    },
    "allow_insecure_http": {
        "label": "Allow plain http",
        "description": "Send the API key over plain http to a host other than loopback (default off).",
        "default": False,
        "schema": {"type": "boolean"},
    },
    "disable_tls_verification": {
        "label": "Disable TLS verification",
        "description": "Do not verify the server's certificate (default off).",
        "default": False,
        "schema": {"type": "boolean"},
    },
}

HIDDEN_FIELDS = ["schema", "login"]
RELABELING = {"password": "API key", "host": "Base URL"}
#: The most characters of a placeholder: a longer one is cut off in the form's input.
PLACEHOLDER_CHARS = 40
#: Placeholders of the standard fields, and of the extra fields that are no checkbox (their defaults;
#: Airflow prefixes their names; only Airflow 2's form shows them). "description" cannot have one.
PLACEHOLDERS = {
    "host": f"{DEFAULT_HOST} (default)",
    "password": "OpenHands API key (Settings > API Keys)",
    # Airflow 3.3's Test button sends port 0 for an empty port, and then refuses the test.
    "port": "443 (the Test button needs a port)",
    "extra": '{"timeout": 60} (empty: the defaults)',
    **{name: str(spec["default"]) for name, spec in FIELDS.items() if spec["schema"]["type"] != "boolean"},
}


def conn_fields() -> dict[str, dict[str, Any]]:
    """``conn-fields`` of the provider info (Airflow 3)."""
    fields = {}
    for name, spec in FIELDS.items():
        schema = dict(spec["schema"])
        schema["type"] = [schema["type"], "null"]  # optional: empty means the default
        fields[name] = {"label": spec["label"], "description": spec["description"], "schema": schema}
    return fields


def ui_field_behaviour(*, kebab: bool = False) -> dict[str, Any]:
    """The standard fields' behaviour: ``kebab`` spelling for the provider info, else the hook's."""
    hidden = "hidden-fields" if kebab else "hidden_fields"
    return {hidden: list(HIDDEN_FIELDS), "relabeling": dict(RELABELING), "placeholders": dict(PLACEHOLDERS)}


def wtforms_widgets() -> dict[str, Any]:
    """The same fields as wtforms fields (Airflow 2's form). Needs Flask-AppBuilder, as the webserver has."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import AnyOf, NumberRange, Optional

    widgets: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        schema = spec["schema"]
        label, help_text = lazy_gettext(spec["label"]), spec["description"]
        if schema["type"] == "boolean":
            widgets[name] = BooleanField(label, description=help_text)
        elif schema["type"] == "integer":
            widgets[name] = IntegerField(
                label,
                widget=BS3TextFieldWidget(),
                validators=[Optional(), NumberRange(min=schema["minimum"])],
                description=help_text,
            )
        else:
            widgets[name] = StringField(
                label,
                widget=BS3TextFieldWidget(),
                validators=[Optional(), AnyOf(schema["enum"])],
                description=help_text,
            )
    return widgets


def form_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The extra as the hook reads it: form fields under their plain or prefixed name (a plain one wins),
    empty ones (an emptied form field: ``None`` or ``""``) left out so that their default applies, and
    whole numbers typed as text read as numbers."""
    result: dict[str, Any] = {}
    # prefixed names first, so that a plain name that has a value overrides them
    for key, value in sorted(extra.items(), key=lambda item: not item[0].startswith(PREFIX)):
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        if name not in FIELDS:
            result[name] = value
            continue
        if isinstance(value, str):
            value = value.strip()
            if FIELDS[name]["schema"]["type"] == "integer" and value.lstrip("-").isdigit():
                value = int(value)
        if value is None or value == "":
            continue
        result[name] = value
    return result
