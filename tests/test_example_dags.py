"""The example DAGs: they load without errors, and they run end to end with dag.test()."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.test_dag_runs import load_dag, task_states

pytestmark = pytest.mark.airflow_e2e
EXAMPLES = EXAMPLE_DAGS  # shipped in the package


def dag_bag():
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2

        return DagBag(dag_folder=str(EXAMPLES), include_examples=False)
    return DagBag(dag_folder=str(EXAMPLES))


def hitl_operator() -> type | None:
    """The standard provider's HITLOperator, or None before Airflow 3.1: the provider is installed on
    every line (a dependency), and there its module refuses to import with a non-ImportError."""
    try:
        from airflow.providers.standard.operators.hitl import HITLOperator
    except Exception:  # Airflow 2.11 / 3.0: AirflowOptionalProviderFeatureException
        return None
    return HITLOperator


def test_every_example_loads_without_import_errors(airflow_db):
    bag = dag_bag()
    assert not bag.import_errors, bag.import_errors
    assert {"openhands_readme_check", "openhands_nightly_maintenance", "openhands_pipeline_chain"} <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        assert bag.get_dag(dag_id).doc_md, f"{dag_id} has no docstring saying what it shows"


@pytest.mark.parametrize("api_version", ["v1"])
def test_pipeline_chain_branches_on_the_pr(airflow_db, connection, monkeypatch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    dag = load_dag(EXAMPLES / "openhands_pipeline_chain.py", "openhands_pipeline_chain")
    states = task_states(dag.test(run_conf={"repository": "acme/docs", "failing_check": "a typo"}))
    assert states == {
        "describe_task": "success",
        "fix": "success",
        "add_test": "success",
        "route": "success",
        "announce_pr": "success",
        "nothing_to_merge": "skipped",
    }
    (conversation,) = connection.conversations.values()  # the follow-up went to the same conversation
    assert "a typo" in conversation.message and conversation.repository == "acme/docs"
    (follow_up,) = connection.requests_to("POST", "send-message")
    assert "add a test" in follow_up["body"]["content"][0]["text"]


@pytest.mark.parametrize("api_version", ["v1"])
@pytest.mark.parametrize(("confidence", "branch"), [(0.9, "open_fix_ticket"), (0.3, "page_a_human")])
def test_alert_triage_branches_on_the_structured_answer(airflow_db, connection, monkeypatch, confidence, branch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    answer = f'{{\\"cause\\": \\"queue closed\\", \\"confidence\\": {confidence}, \\"suggested_fix\\": \\"retry\\"}}'
    log = f'ERROR worker.py:88 ConnectionResetError [emulator output="{answer}"]'
    dag = load_dag(EXAMPLES / "openhands_alert_triage.py", "openhands_alert_triage")
    states = task_states(dag.test(run_conf={"error_log": log}))
    assert states["triage"] == "success" and states["decide"] == "success"
    assert states[branch] == "success"
    other = {"open_fix_ticket", "page_a_human"} - {branch}
    assert states[other.pop()] == "skipped"


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_maintenance_reports_and_fails_only_after_all_ended(airflow_db, connection, monkeypatch):
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.outcomes_by_repository = {"acme/two": "error"}
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    dag_run = dag.test(run_conf={"repositories": ["acme/one", "acme/two", "acme/three"]})
    maintain = {
        ti.map_index: str(getattr(ti.state, "value", ti.state))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "maintain"
    }
    assert maintain == {0: "success", 1: "failed", 2: "success"}
    # the report ran after all of them ended, and failed the run because one conversation failed
    assert task_states(dag_run)["report"] == "failed"
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    assert connection.stats()["created"] == 3


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_maintenance_without_repositories_skips(airflow_db, connection):
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    states = task_states(dag.test(run_conf={"repositories": []}))
    assert states["repositories"] == "skipped" and connection.requests == []


def nightly_run(repositories: list[str]):
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    dag_run = dag.test(run_conf={"repositories": repositories})
    maintain = {
        ti.map_index: str(getattr(ti.state, "value", ti.state))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "maintain"
    }
    return dag_run, maintain


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_report_names_each_failed_repository_and_why(airflow_db, connection, monkeypatch, capfd, caplog):
    """Item 1: one aligned table in the task log, and a failure that names the repository and the reason."""
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.outcomes_by_repository = {"acme/two": "error"}
    dag_run, maintain = nightly_run(["acme/one", "acme/two"])
    assert maintain == {0: "success", 1: "failed"} and task_states(dag_run)["report"] == "failed"
    out, err = capfd.readouterr()
    # the sandbox was paused after the end: the report still reads how the agent ended
    assert "acme/two: the conversation ended in error" in out + err
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "airflow.task" and "Nightly" in r.getMessage()]
    table = [line for line in logged.splitlines() if line.startswith(("#  repository", "0  acme/", "1  acme/"))]
    assert len(table) == 3, table
    header, first, second = table
    assert header.index("task") == first.index("success") == second.index("failed")  # aligned
    assert header.index("conversation") == first.index("finished") == second.index("error")
    assert "XCom not found" not in out + err  # item 5: the link waits quietly for the conversation


@pytest.mark.parametrize("api_version", ["v1"])
def test_nightly_run_with_a_wrong_key_fails_and_names_the_repository(airflow_db, connection, monkeypatch, capfd):
    """Item 1: maintain[0] fails before any conversation exists; the run must not be green."""
    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.api_key = "another-key"
    dag_run, maintain = nightly_run(["acme/one"])
    assert maintain == {0: "failed"}
    assert task_states(dag_run)["report"] == "failed"
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    out, err = capfd.readouterr()
    assert "1 of 1 'maintain' task(s) failed: acme/one: failed before any conversation started" in out + err
    assert "Returned value was: []" not in out + err
    assert "XCom not found" not in out + err  # item 5: no link lookup for a conversation that never existed
    assert connection.stats()["created"] == 0


def test_nightly_trigger_form_does_not_require_repositories():
    """Item 6: empty means "use the Variable", so the form must not mark the field required."""
    dag = load_dag(EXAMPLES / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    param = dag.params.get_param("repositories")
    assert "null" in param.schema["type"] and "array" in param.schema["type"]
    param.resolve(None)  # validates: no value is allowed
    assert dag.max_active_runs == 1 and "max_active_runs" in dag.doc_md and "unpausing" in dag.doc_md.lower()


def answer_reviews(dag_id: str, answers: dict[str, tuple[str, str]], bodies: dict[str, str], stop, errors: list):
    """Answer each awaiting review of ``dag_id`` through the HITL REST API's handler, as a person would.

    Runs in a thread while ``dag.test()`` waits for the input; on a review it has no answer for (or
    any error) it fails the run, so ``dag.test()`` ends instead of waiting for ever.
    """
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import State, TaskInstanceState

    reviewer = SimpleAuthManagerUser(username="reviewer", role="admin")
    answered: set = set()
    while not stop.wait(0.2):
        try:
            with create_session() as session:
                waiting = (
                    session.query(TaskInstance)
                    .filter(TaskInstance.dag_id == dag_id, TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                    .all()
                )
                for ti in waiting:
                    if ti.id in answered:  # still shown as waiting until the task resumes (slow under load)
                        continue
                    if ti.task_id not in answers:
                        raise AssertionError(f"no answer for {ti.task_id}")
                    bodies[ti.task_id] = session.get(HITLDetail, ti.id).body
                    option, comment = answers[ti.task_id]
                    update_hitl_detail(
                        dag_id=dag_id,
                        dag_run_id=ti.run_id,
                        task_id=ti.task_id,
                        update_hitl_detail_payload=UpdateHITLDetailPayload(
                            chosen_options=[option], params_input={"comment": comment}
                        ),
                        user=reviewer,
                        session=session,
                    )
                    answered.add(ti.id)
        except Exception as error:  # reported by the test
            errors.append(error)
            with create_session() as session:  # fail what waits, so that the run ends
                for ti in session.query(TaskInstance).filter(
                    TaskInstance.dag_id == dag_id, TaskInstance.state.not_in(list(State.finished))
                ):
                    ti.state = TaskInstanceState.FAILED
            return


@pytest.mark.parametrize("api_version", ["v1"])
@pytest.mark.parametrize(
    ("answers", "path"),
    [
        ({"review_1": ("approve", "")}, ["review_1", "approved_1", "report_pr"]),
        (
            {"review_1": ("request changes", "Rename the helper to parse_row"), "review_2": ("approve", "")},
            ["review_1", "revise_1", "review_2", "approved_2", "report_pr"],
        ),
        (
            {
                "review_1": ("request changes", "Rename the helper to parse_row"),
                "review_2": ("request changes", "Also add a docstring"),
                "review_3": ("request changes", "Still not right"),
            },
            ["review_1", "revise_1", "review_2", "revise_2", "review_3", "changes_still_requested"],
        ),
    ],
    ids=["approve", "one-follow-up", "out-of-rounds"],
)
def test_review_loop_sends_the_comment_back_until_approved(airflow_db, connection, monkeypatch, answers, path):
    """Item 5: HITL reviews answered through the HITL API while dag.test() runs; at most 2 follow-ups."""
    if not hitl_operator():
        pytest.skip("human-in-the-loop needs Airflow >= 3.1")
    import threading

    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    dag = load_dag(EXAMPLES / "openhands_review_loop.py", "openhands_review_loop")
    bodies: dict[str, str] = {}
    errors: list = []
    stop = threading.Event()
    reviewer = threading.Thread(target=answer_reviews, args=(dag.dag_id, answers, bodies, stop, errors), daemon=True)
    reviewer.start()
    try:
        dag_run = dag.test(
            run_conf={
                "repository": "acme/app",
                "task": 'Fix the tests [emulator finish="Fixed test_parse" change=src/parse.py:MODIFIED]',
            }
        )
    finally:
        stop.set()
        reviewer.join(10)
    assert not errors, errors
    states = task_states(dag_run)
    assert {task for task, state in states.items() if state == "success"} == {"propose", *path} | {
        f"decide_{n}" for n in (1, 2, 3) if f"review_{n}" in path
    }
    assert {task for task, state in states.items() if state != "success"} <= {
        task for task, state in states.items() if state == "skipped"
    }
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    # the review shows the agent's final message, its changed files and the conversation link
    (conversation,) = connection.conversations.values()
    assert "Fixed test_parse" in bodies["review_1"] and f"/conversations/{conversation.id}" in bodies["review_1"]
    assert "- `src/parse.py` (UPDATED)" in bodies["review_1"] and "/pull/" in bodies["review_1"]
    # each "request changes" before the last review sent its comment to the same conversation
    follow_ups = [r["body"]["content"][0]["text"] for r in connection.requests_to("POST", "send-message")]
    comments = [comment for option, comment in answers.values() if option == "request changes"][:2]
    assert len(follow_ups) == len(comments)
    for text, comment in zip(follow_ups, comments, strict=True):
        assert comment in text and "same branch" in text
    if "report_pr" in path:
        report = dag_run.get_task_instance("report_pr").xcom_pull(task_ids="report_pr")
        assert report.startswith("Approved: ")


def test_review_loop_defines_its_dag_only_where_hitl_exists(airflow_db):
    """Item 5: a DAG on Airflow >= 3.1; on 2.11 the file imports cleanly and defines none."""
    import runpy

    HITLOperator = hitl_operator()
    defined = runpy.run_path(str(EXAMPLES / "openhands_review_loop.py")).values()
    dags = [v for v in defined if hasattr(v, "task_dict") and not isinstance(v, type)]
    if HITLOperator is None:
        assert dags == []
        return
    (dag,) = dags
    assert dag.dag_id == "openhands_review_loop" and "human-in-the-loop" in dag.doc_md
    reviews = [t for t in dag.tasks if isinstance(t, HITLOperator)]
    assert [t.task_id for t in reviews] == ["review_1", "review_2", "review_3"]
    assert all(t.options == ["approve", "request changes"] and "comment" in t.params for t in reviews)
    assert all(t.defaults is None and t.response_timeout for t in reviews)
