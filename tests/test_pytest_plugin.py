"""The emulator's pytest plugin is opt-in: a user's pytest session gets its fixtures only when it asks
(``-p airflow_provider_openhands.testing.pytest_plugin``), never because the provider is installed.

Each case runs a user's test file in a pytest of its own (a subprocess, in a directory outside this
project, so none of its conftest or settings apply) and reads what that pytest reports.
"""

from __future__ import annotations

import pytest

PLUGIN = "airflow_provider_openhands.testing.pytest_plugin"

#: A user's test: the hook reaches the emulator through the connection the plugin's fixture sets.
USER_TEST = """
from airflow_provider_openhands.hooks.openhands import OpenHandsHook


def test_a_conversation_reaches_the_emulator(openhands_connection):
    conversation_id = OpenHandsHook().start_conversation("Fix the typo", "acme/website", poll_interval=0.05)
    assert conversation_id
    assert len(openhands_connection.conversations) == 1
"""


def run_user_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=USER_TEST)
    # The user's own Airflow home, not this session's: on Airflow 2.11 an airflow.cfg the CLI wrote
    # there (a fernet key) breaks every connection with a password under newer cryptography.
    monkeypatch.setenv("AIRFLOW_HOME", str(pytester.path / "airflow-home"))
    # -p no:cacheprovider: nothing written beside the user's test file.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_an_installed_provider_adds_no_fixtures_to_a_users_pytest(pytester: pytest.Pytester, monkeypatch):
    result = run_user_tests(pytester, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'openhands_connection' not found*"])
    # Not registered at all: the session's header names no plugin of this distribution.
    plugins = next(line for line in result.outlines if line.startswith("plugins:"))
    assert "openhands" not in plugins, plugins


def test_the_plugin_asked_for_with_p_gives_the_emulator_fixtures(pytester: pytest.Pytester, monkeypatch):
    result = run_user_tests(pytester, monkeypatch, "-p", PLUGIN)
    result.assert_outcomes(passed=1)
