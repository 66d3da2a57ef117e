"""pytest fixtures for testing DAGs against the emulator: a plugin a test session asks for, with
``pytest -p airflow_provider_openhands.testing.pytest_plugin`` or ``pytest_plugins = [...]`` in its
``conftest.py``. It is not registered with pytest on install: a pytest session in an environment that
merely has the provider installed gets none of these fixtures.

``openhands_emulator`` is a running :class:`Emulator` on a free loopback port, and
``openhands_connection`` sets ``AIRFLOW_CONN_OPENHANDS_DEFAULT`` to point at it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_openhands.testing.emulator import Emulator


@pytest.fixture
def openhands_emulator() -> Iterator[Emulator]:
    with Emulator(conversation_seconds=0.5, start_seconds=0.2) as emulator:
        yield emulator


def connection_json(emulator: Emulator, api_version: str = "v1", **extra: object) -> str:
    """An ``openhands`` connection, as JSON for ``AIRFLOW_CONN_*``, that points at the emulator. Only
    what differs from the defaults goes in the extra, as the connection form stores it (v1 is the
    default API version; Airflow would warn that "v1" is too short to mask)."""
    versioned = {} if api_version == "v1" else {"api_version": api_version}
    return json.dumps(
        {
            "conn_type": "openhands",
            "host": emulator.url,
            "password": emulator.api_key,
            "extra": {**versioned, **extra},
        }
    )


@pytest.fixture
def openhands_connection(openhands_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(openhands_emulator))
    return openhands_emulator
