"""Everything the provider sends, and everything the emulator answers, fits the official OpenAPI documents."""

from __future__ import annotations

import time

import pytest

from airflow_provider_openhands.api import endpoints
from airflow_provider_openhands.api.options import StartOptions


def test_every_exchange_fits_the_spec(hook, connection, api_version, contract):
    first = hook.start_conversation(
        "Check the README", "acme/website", selected_branch="main", git_provider="github", poll_interval=0.05
    )
    time.sleep(connection.start_seconds + 0.05)
    hook.get_conversation(first)
    hook.get_conversations([first, "e" * 32])
    time.sleep(connection.conversation_seconds)
    hook.get_conversation(first)
    hook.stop_conversation(first)
    hook.get_conversation(first)
    assert hook.test_connection()[0]

    checked_requests = checked_responses = 0
    assert connection.requests
    for exchange in connection.requests:
        template = contract.template_for(api_version, exchange["method"], exchange["path"])
        assert template, f"{exchange['method']} {exchange['path']} is not in the {api_version} spec"
        if exchange["body"] is not None:
            contract.validate_request(api_version, exchange["method"], template, exchange["body"])
            checked_requests += 1
        contract.validate_response(api_version, exchange["method"], template, exchange["response"], exchange["status"])
        checked_responses += 1
    assert checked_requests >= 1 and checked_responses == len(connection.requests)


@pytest.mark.parametrize("api_version", ["v1", "v0"])
def test_start_bodies_fit_the_spec_with_every_option(api_version, contract):
    options = StartOptions(
        initial_user_msg="Upgrade the dependencies",
        repository="acme/app",
        selected_branch="develop",
        git_provider="gitlab",
        title="Nightly upgrade",
        conversation_id="5f0c1d34-5c1c-4d43-9d3b-8a4e6c3c2b10",
        extra_body={"llm_model": "claude"} if api_version == "v1" else {"conversation_instructions": "Be brief"},
    )
    request = endpoints.start_request(api_version, options)
    contract.validate_request(api_version, request.method, request.path, request.json)


def test_spec_rejects_a_body_of_the_wrong_version(contract):
    """The contract check can fail: a V1 body is not a valid V0 InitSessionRequest."""
    from jsonschema import ValidationError

    v1_body = endpoints.start_request("v1", StartOptions("Fix it", "acme/app")).json
    with pytest.raises(ValidationError):
        contract.validate_request("v0", "POST", "/api/conversations", v1_body)
