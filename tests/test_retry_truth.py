"""Issue 32, item 2: a retry keeps the conversation's truth.

A try decides that its conversation failed, and its process dies before Airflow records the failure
(a SIGKILL of the worker, the supervisor's heartbeat lost): Airflow retries it. That retry fails the
task as the first try would have (``OpenHandsConversationFailed``, not retried), without a second
conversation, unless the task asks for one with ``restart_failed=True``. Driven as Airflow 3.3's
task runner runs tries (``tests/harness/airflow_task.py``) against the emulator.
"""

from __future__ import annotations

import pytest

from airflow_provider_openhands.exceptions import OpenHandsConversationFailed
from airflow_provider_openhands.operators._waiting import ConversationWaiter
from tests.harness.airflow_task import AirflowTask, Killed
from tests.test_defects import AIRFLOW_3, dag, start_operator

pytestmark = [
    pytest.mark.parametrize("api_version", ["v1"]),
    pytest.mark.skipif(not AIRFLOW_3, reason="the task-runner harness copies Airflow 3.3's"),
]


def die_once_the_failure_is_decided(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first try's process dies (SIGKILL: no ``on_kill``) right after it decided that its
    conversation failed, before Airflow could record ``OpenHandsConversationFailed``."""
    decided: list[str] = []
    finish = ConversationWaiter.finish

    def finish_then_die(self, state):
        try:
            return finish(self, state)
        except OpenHandsConversationFailed:
            if decided:
                raise
            decided.append(state["conversation_id"])
            raise Killed() from None

    monkeypatch.setattr(ConversationWaiter, "finish", finish_then_die)
    return decided


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_retry_after_a_kill_fails_with_the_failed_conversation(connection, monkeypatch, deferrable):
    decided = die_once_the_failure_is_decided(monkeypatch)
    with dag(f"oh_retry_truth_{deferrable}"):
        operator = start_operator(
            initial_user_msg="Fix the README [emulator outcome=error duration=0.5]", deferrable=deferrable, retries=2
        )
    task = AirflowTask(operator)
    first = task.run(timeout=30)
    assert first.state == "up_for_retry" and decided, first
    second = task.retry(timeout=30)
    assert second.state == "failed", second  # not up_for_retry: Airflow does not retry it again
    assert isinstance(second.error, OpenHandsConversationFailed), second
    assert decided[0] in str(second.error)
    assert connection.stats()["created"] == 1, "the retry started a second conversation"


def test_restart_failed_starts_a_fresh_conversation(connection, monkeypatch):
    decided = die_once_the_failure_is_decided(monkeypatch)
    with dag("oh_retry_truth_restart"):
        operator = start_operator(
            initial_user_msg="Fix the README [emulator outcome=error duration=0.5]",
            deferrable=True,
            retries=2,
            restart_failed=True,
        )
    task = AirflowTask(operator)
    assert task.run(timeout=30).state == "up_for_retry"
    second = task.retry(timeout=30)
    assert connection.stats()["created"] == 2, "restart_failed=True: the retry starts a conversation of its own"
    assert isinstance(second.error, OpenHandsConversationFailed) and decided[0] not in str(second.error), second
