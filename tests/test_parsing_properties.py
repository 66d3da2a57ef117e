"""Property-based tests of answer parsing (hypothesis).

Any body the official schema allows parses into the normalised state; any other body ends in a
clear provider error, never an unhandled exception or a hang. The flows are fed bodies directly:
they do no I/O, so no transport is involved (and none is mocked).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from airflow_provider_openhands.api import endpoints
from airflow_provider_openhands.api.options import StartOptions
from airflow_provider_openhands.api.state import KNOWN_STATUSES
from airflow_provider_openhands.exceptions import OpenHandsError
from airflow_provider_openhands.hooks.transport import drive
from tests.conftest import REPO

DOCS = {
    "v1": json.loads((REPO / "tests/openapi/openhands-cloud-v1.openapi.json").read_text()),
    "v0": json.loads((REPO / "tests/openapi/openhands-v0.openapi.json").read_text()),
}
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def strategy(version: str, schema: dict[str, Any]) -> st.SearchStrategy:
    """Values valid for the subset of JSON Schema the OpenHands documents use."""
    components = DOCS[version]["components"]["schemas"]
    if not isinstance(schema, dict):  # a boolean schema: anything goes
        return JSON
    if "$ref" in schema:
        return strategy(version, components[schema["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in schema:
        return st.one_of([strategy(version, option) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=int(schema.get("minimum", -(2**31))), max_value=2**31)
    if kind == "number":
        return st.floats(min_value=schema.get("minimum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes().map(lambda d: d.isoformat() + "Z")
        if schema.get("format") == "uuid":
            return st.uuids().map(str)
        return st.text(max_size=12)
    if kind == "array":
        return st.lists(strategy(version, schema.get("items", {})), max_size=3)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        optional = {k: strategy(version, v) for k, v in properties.items() if k not in required}
        fixed = {k: strategy(version, properties[k]) for k in required if k in properties}
        if not properties and schema.get("additionalProperties"):
            return st.dictionaries(st.text(max_size=6), strategy(version, schema["additionalProperties"]), max_size=2)
        return st.fixed_dictionaries(fixed, optional=optional)
    return JSON


def schema_of(version: str, name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def valid(version: str, name: str, value: Any) -> bool:
    root = {"$ref": f"#/components/schemas/{name}", "components": DOCS[version]["components"]}
    return Draft202012Validator(root).is_valid(value)


def feed(flow, *bodies: Any) -> Any:
    """Run a flow, answering its requests with ``bodies`` in turn."""
    answers = iter(bodies)
    return drive(flow, lambda request: next(answers))


@PROPERTIES
@given(st.data())
def test_any_valid_v1_conversation_parses(data):
    conversation = data.draw(strategy("v1", schema_of("v1", "AppConversation")))
    assert valid("v1", "AppConversation", conversation)
    asked = conversation.get("id") or "0" * 32  # the schema does not require ``id``
    states = feed(endpoints.conversations("v1", [asked], "https://oh.test"), [conversation])
    (state,) = [s for s in states.values() if s is not None]
    assert state["status"] in KNOWN_STATUSES
    assert "session_api_key" not in state
    assert state["url"].startswith("https://oh.test/conversations/")


@PROPERTIES
@given(st.data())
def test_any_valid_v1_start_task_parses(data):
    # ``request`` echoes the start request (the parser ignores it); its processor list uses
    # discriminated unions this small generator does not cover, so it stays empty here.
    task = data.draw(strategy("v1", schema_of("v1", "AppConversationStartTask")).map(lambda t: {**t, "request": {}}))
    assert valid("v1", "AppConversationStartTask", task)
    asked = task.get("id") or "1" * 32  # the schema does not require ``id``
    (parsed,) = feed(endpoints.start_tasks([asked]), [task]).values()
    assert parsed["status"] == task.get("status", "WORKING") and parsed["id"] == asked


@PROPERTIES
@given(st.data())
def test_any_valid_v0_conversation_parses(data):
    info = data.draw(strategy("v0", schema_of("v0", "ConversationInfo")))
    assert valid("v0", "ConversationInfo", info)
    events = {"events": [{"id": 1, "observation": "agent_state_changed", "extras": {"agent_state": "finished"}}]}
    asked = info["conversation_id"] or "abc"
    states = feed(endpoints.conversations("v0", [asked], "https://oh.test"), info, events)
    (state,) = states.values()
    assert state["status"] in KNOWN_STATUSES


@pytest.mark.parametrize(
    ("name", "make_flow", "extra_bodies"),
    [
        ("v1 batch", lambda: endpoints.conversations("v1", ["a" * 32], "https://oh.test"), ()),
        ("v1 start", lambda: endpoints.start("v1", StartOptions("Fix it")), ()),
        ("v1 start tasks", lambda: endpoints.start_tasks(["a" * 32]), ()),
        ("v0 start", lambda: endpoints.start("v0", StartOptions("Fix it")), ()),
        ("v0 conversation", lambda: endpoints.conversations("v0", ["abc"], "https://oh.test"), ({"events": []},)),
    ],
)
@PROPERTIES
@given(body=JSON)
def test_any_other_body_gives_a_clear_error(name, make_flow, extra_bodies, body):
    try:
        feed(make_flow(), body, *extra_bodies, *extra_bodies)
    except OpenHandsError as exc:
        assert str(exc)  # a provider error with a message: fine
    # anything else (TypeError, KeyError, StopIteration, ...) fails the test by propagating
