"""DAGs the tests run with dag.test(): each waits in a different way. Results go to a JSON file."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator
from airflow_provider_openhands.sensors.openhands import OpenHandsConversationSensor

POLL = 0.2


@task
def record(result, name: str) -> None:
    """Write what the downstream task received, for the test to read."""
    path = os.path.join(os.environ["OPENHANDS_TEST_RESULTS"], f"{name}.json")
    with open(path, "w") as handle:
        json.dump(result, handle)


def split_dag(dag_id: str, *, deferrable: bool, mode: str = "poke", message: str = "Fix the README") -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        start = OpenHandsStartConversationOperator(
            task_id="start",
            initial_user_msg=message + " {{ dag_run.conf.get('suffix', '') }}",
            repository="{{ dag_run.conf.get('repository', 'acme/website') }}",
            deferrable=deferrable,
            poll_interval=POLL,
        )
        wait = OpenHandsConversationSensor(
            task_id="wait",
            conversation_id=start.output,
            deferrable=deferrable,
            mode=mode,
            poke_interval=POLL,
            timeout=60,
        )
        record.override(task_id="record_id")(start.output, dag_id + "-id")
        record.override(task_id="record_state")(wait.output, dag_id + "-state")
    return dag


deferrable_split = split_dag("oh_test_split_deferrable", deferrable=True)
poke_split = split_dag("oh_test_split_poke", deferrable=False)
reschedule_split = split_dag("oh_test_split_reschedule", deferrable=False, mode="reschedule")

with DAG("oh_test_wait_in_operator", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as one_task:
    run = OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README {{ dag_run.conf.get('suffix', '') }}",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )
    record.override(task_id="record_state")(run.output, "oh_test_wait_in_operator-state")

with DAG("oh_test_bad_templated_repo", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as bad:
    OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg="Fix it",
        repository="{{ dag_run.conf.get('repository', 'https://github.com/acme/website') }}",
    )

with DAG("oh_test_fan_out", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as fan_out:
    runs = OpenHandsStartConversationOperator.partial(
        task_id="run",
        initial_user_msg="Nightly maintenance",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    ).expand(repository=[f"acme/repo-{n:02d}" for n in range(25)])

with DAG("oh_test_retry_after_crash", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as crash:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
    )

with DAG("oh_test_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as slow:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="A long task [emulator duration=60]",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        timeout=1.5,
    )


class DiesAfterTheEnd(OpenHandsStartConversationOperator):
    """Its first try dies after the conversation ended and was paused, before Airflow heard of it
    (what a lost task-state report looks like: Airflow retries a task that had done its work)."""

    def execute_complete(self, context, event):
        result = super().execute_complete(context, event)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the conversation ended")
        return result


with DAG("oh_test_retry_after_the_end", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as lost:
    after_end = DiesAfterTheEnd(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
        timeout=30,  # bounded: without the fix the retry would wait on a paused conversation
    )
    record.override(task_id="record_state")(after_end.output, "oh_test_retry_after_the_end-state")

with DAG("oh_test_secrets", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as with_secrets:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Deploy the docs",
        repository="acme/website",
        secrets={"DEPLOY_TOKEN": "tok-s3cr3t-value"},
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
    )


# -- lifecycle: restarts, retries before READY, capacity, clears, deadlines (tests/test_lifecycle.py) --


@task
def upstream_text() -> str:
    """A value from upstream that looks like a template: it is data and must reach the agent as is."""
    return "Explain {{ conn.openhands_default.password }} and {% raw %}"


@task.openhands(repository="acme/website", deferrable=True, wait_for_completion=True, poll_interval=POLL)
def agent_task(text: str) -> str:
    return text


@task.openhands(deferrable=True, wait_for_completion=True, poll_interval=POLL)
def agent_options(repository: str) -> dict:
    return {"initial_user_msg": "Upgrade the dependencies", "repository": repository, "title": "upgrade"}


with DAG("oh_test_decorated_braces", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as braces:
    record.override(task_id="record_state")(agent_task(upstream_text()), "oh_test_decorated_braces-state")

with DAG("oh_test_decorated_capacity", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as capacity:
    agent_options("acme/website")


class DiesBeforeReady(OpenHandsStartConversationOperator):
    """Its first try's worker is lost after the start request, while the start task still works."""

    def hand_over(self, engine, action):
        if engine.lc.phase == "starting" and engine.lc.try_number == 1:
            raise RuntimeError("worker lost before the start task was READY")
        return super().hand_over(engine, action)


with DAG("oh_test_retry_before_ready", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as early:
    DiesBeforeReady(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
    )

for _mode in ("deferrable", "worker"):
    with DAG(f"oh_test_start_timeout_{_mode}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as _dag:
        OpenHandsStartConversationOperator(
            task_id="run",
            initial_user_msg="Fix the README",
            repository="acme/website",
            deferrable=_mode == "deferrable",
            wait_for_completion=True,
            poll_interval=POLL,
            start_timeout=1,
            retries=1,
            retry_delay=0,
        )
    globals()[_dag.dag_id] = _dag

with DAG("oh_test_execution_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as exec_timeout:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="A long task [emulator duration=60]",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        execution_timeout=timedelta(seconds=4),
    )

with DAG("oh_test_permanent_error", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as permanent:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        wait_for_completion=True,
        poll_interval=POLL,
        retries=2,
        retry_delay=0,
    )

for _mode in ("poke", "reschedule", "deferrable"):
    for _soft in (False, True):
        _dag_id = f"oh_test_sensor_{_mode}" + ("_soft" if _soft else "")
        with DAG(_dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as _dag:
            OpenHandsConversationSensor(
                task_id="wait",
                conversation_id="{{ dag_run.conf['conversation_id'] }}",
                deferrable=_mode == "deferrable",
                mode="reschedule" if _mode == "reschedule" else "poke",
                poke_interval=POLL,
                timeout=1.5,
                stop_on_timeout=True,
                soft_fail=_soft,
            )
        globals()[_dag_id] = _dag

with DAG("oh_test_capacity_start_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as legacy:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README [emulator start=capacity]",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        capacity_timeout=3,
        retries=1,
        retry_delay=0,
    )


# -- results: budget, attribution, changes, files, structured output (tests/test_results.py) --

with DAG("oh_test_budget", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as budget:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="A long, expensive task [emulator duration=60]",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        max_cost_usd=0.02,
        retries=1,
        retry_delay=0,
    )

TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "cause": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "suggested_fix": {"type": "string"},
    },
    "required": ["cause", "confidence", "suggested_fix"],
}

for _mode in ("deferrable", "worker"):
    with DAG(f"oh_test_results_{_mode}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as _dag:
        OpenHandsStartConversationOperator(
            task_id="run",
            initial_user_msg="{{ dag_run.conf['message'] }}",
            repository="acme/website",
            git_provider="github",
            deferrable=_mode == "deferrable",
            wait_for_completion=True,
            poll_interval=POLL,
            output_schema=TRIAGE_SCHEMA,
            output_files=["report.json"],
            include_diff=True,
            max_diff_chars=1000,
        )
    globals()[_dag.dag_id] = _dag

from airflow_provider_openhands.operators.openhands import OpenHandsSendMessageOperator  # noqa: E402

with DAG("oh_test_follow_up", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as follow_up:
    first_turn = OpenHandsStartConversationOperator(
        task_id="start",
        initial_user_msg='Fix the README [emulator finish="First answer" duration=0.5]',
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,  # and pause_when_done pauses it: the follow-up resumes it
        poll_interval=POLL,
    )
    second_turn = OpenHandsSendMessageOperator(
        task_id="follow_up",
        conversation_id="{{ ti.xcom_pull(task_ids='start', key='conversation_id') }}",
        message='Now add a test [emulator finish="Second answer" duration=1 change=tests/test_readme.py:ADDED]',
        deferrable=True,
        poll_interval=POLL,
    )
    first_turn >> second_turn
    record.override(task_id="record_first")(first_turn.output, "oh_test_follow_up-first")
    record.override(task_id="record_second")(second_turn.output, "oh_test_follow_up-second")

with DAG("oh_test_permanent_error_deferred", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as perm2:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="Fix the README",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=2,
        retry_delay=0,
    )


class DiesAfterItsTurn(OpenHandsSendMessageOperator):
    """A follow-up whose first try is lost after its turn ended (a long turn: many events)."""

    def execute_complete(self, context, event):
        result = super().execute_complete(context, event)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the follow-up's turn")
        return result


with DAG("oh_test_follow_up_retry", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as fu_retry:
    DiesAfterItsTurn(
        task_id="follow_up",
        conversation_id="{{ dag_run.conf['conversation_id'] }}",
        message="{{ dag_run.conf['message'] }}",
        deferrable=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=0,
    )

with DAG("oh_test_follow_up_output", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as fu_output:
    OpenHandsSendMessageOperator(
        task_id="follow_up",
        conversation_id="{{ dag_run.conf['conversation_id'] }}",
        message="{{ dag_run.conf['message'] }}",
        deferrable=True,
        poll_interval=POLL,
        output_schema=TRIAGE_SCHEMA,
    )

# Issue 18: a worker-side task reading many diffs, with a small total cap on what it returns.
with DAG("oh_test_results_bounded", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as bounded_dag:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="{{ dag_run.conf['message'] }}",
        repository="acme/website",
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        include_diff=True,
        output_files=["report.txt"],
        max_result_bytes=60_000,
    )

# Issue 18: the trajectory archived for audit, on success and on failure.
with DAG("oh_test_trajectory", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as trajectory_dag:
    OpenHandsStartConversationOperator(
        task_id="run",
        initial_user_msg="{{ dag_run.conf['message'] }}",
        repository="acme/website",
        deferrable=True,
        wait_for_completion=True,
        poll_interval=POLL,
        archive_trajectory=True,
        output_path=os.environ.get("OPENHANDS_TEST_ARCHIVE", "/tmp/openhands-test-archive"),
    )
