"""What a person sees of an OpenHands task in Airflow (issue 21, items 1 to 3), through real parts:
``dag.test()`` (Airflow 3.3's task runner in process: XCom, extra links, the task state store and
the rendered map index go through its execution API to the metadata DB) against the emulator.

* While a deferrable task waits in the (inline) triggerer, XCom holds ``conversation_id`` and
  ``conversation_url``, the "OpenHands Conversation" link resolves as the API server resolves it,
  the log has one line with the URL, and the task state store holds the conversation.
* Mapped tasks are named after their repository (and branch): ``rendered_map_index``.
* A conversation that ends in ``error`` fails its task with the agent's own error text, in the
  exception and the log, and the nightly report's failed row carries it and keeps its link.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.test_defects import GUARD, POLL, dag, dag_test, errors, log, start_operator, states

AIRFLOW_3 = __import__("airflow").__version__.split(".")[0] >= "3"
pytestmark = [
    pytest.mark.airflow_e2e,
    pytest.mark.parametrize("api_version", ["v1"]),
    pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's dag bundles and task runner"),
]

LINK_NAME = "OpenHands Conversation"
HAS_STATE_STORE = __import__("importlib.util").util.find_spec("airflow.models.task_state_store") is not None


def what_the_ui_reads(dag_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """This moment's XCom, extra link (as the API server resolves it: the serialized task's link
    reads the XCom the task runner pushed) and task state store of one task instance."""
    import json

    from airflow.models.dagbag import DBDagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_openhands.engine.state import STATE_STORE_KEY

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id, TaskInstance.map_index == map_index
            )
        ).one()
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.task_id == task_id, XComModel.map_index == map_index
            )
        ).all()
        xcoms = {row.key: XComModel.deserialize_value(row) for row in rows}
        task = DBDagBag().get_latest_version_of_dag(dag_id, session=session).get_task(task_id)
        link = task.get_extra_links(ti, LINK_NAME)
        store = None
        if HAS_STATE_STORE:  # Airflow >= 3.3
            from airflow.models.task_state_store import TaskStateStoreModel

            row = session.scalars(
                select(TaskStateStoreModel).where(
                    TaskStateStoreModel.dag_id == dag_id,
                    TaskStateStoreModel.task_id == task_id,
                    TaskStateStoreModel.map_index == map_index,
                    TaskStateStoreModel.key == STATE_STORE_KEY,
                )
            ).one_or_none()
            store = None if row is None else json.loads(row.value)
        return {"xcom": xcoms, "link": link, "store": store, "state": str(getattr(ti.state, "value", ti.state))}


def while_running(
    emulator, read: Any, *, settle: float = 1.0, timeout: float = 40.0, until: Any = None
) -> dict[str, Any]:
    """Call ``read()`` once the (only) conversation has run ``settle`` seconds, in a thread, while
    ``dag.test()`` runs its task; returns what it read. With ``until``, read again until what was
    read satisfies it (a loaded machine may read before the task reached the state under test);
    ``read_at`` is the time of the read kept."""
    seen: dict[str, Any] = {}

    def watch() -> None:
        give_up = time.time() + timeout
        while time.time() < give_up:
            conversations = list(emulator.conversations.values())
            if conversations and time.time() >= conversations[0].ready_at + settle:
                seen["running_until"] = conversations[0].turns[-1].end
                seen.update(read())
                seen["read_at"] = time.time()
                if until is None or until(seen):
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    seen["thread"] = thread
    return seen


# -- 1: the link, the id and the URL while the task is deferred ------------------------------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_a_running_task_shows_its_conversation(airflow_db, connection, capfd, deferrable):
    """Item 1: while the conversation runs (a deferrable task waiting in the triggerer, its V1 start
    task not READY when it deferred; or a task waiting in its worker), XCom holds
    ``conversation_id`` and ``conversation_url``, the extra link resolves to that URL as the API
    server resolves it (the UI's "Extra Links"), the log has one line with it, and the task state
    store holds what the worker knows: in the worker the running conversation; deferred, the start
    it handed to the triggerer, with the id it published (Airflow's triggerer cannot write the store)."""
    from airflow_provider_openhands.api.state import canonical_id

    dag_id = f"oh_see_link_{'deferred' if deferrable else 'worker'}"
    connection.configure(start_seconds=1.0)
    with dag(dag_id) as the_dag:
        start_operator(initial_user_msg="Fix the README [emulator duration=6]", deferrable=deferrable)
    seen = while_running(connection, lambda: what_the_ui_reads(dag_id, "run"))
    dag_run = dag_test(the_dag)
    seen["thread"].join(5)
    output = log(capfd)
    assert states(dag_run) == {"run": "success"}, errors(output)
    assert "read_at" in seen and seen["read_at"] < seen["running_until"], "never read while the conversation ran"
    (conversation,) = connection.conversations.values()
    assert canonical_id(seen["xcom"].get("conversation_id") or "") == canonical_id(conversation.id), seen
    url = seen["xcom"].get("conversation_url")
    assert url and canonical_id(conversation.id) in url.replace("-", ""), seen
    assert seen["link"] == url, f"the extra link while the conversation ran: {seen['link']!r}"
    with_url = [line for line in output.splitlines() if url in line]
    published = [line for line in with_url if "| duration" not in line]  # the summary line ends the task's log
    assert len(published) == 1, with_url  # one line with the URL, as soon as the id was published
    if not HAS_STATE_STORE:
        return
    store = seen["store"]
    assert store is not None, "nothing in the task state store while the conversation ran"
    assert canonical_id(store["published"] or "") == canonical_id(conversation.id), store
    if deferrable:
        assert (store["phase"], store["start_task_id"] is not None) == ("starting", True), store
    else:
        assert store["phase"] == "running", store
        assert canonical_id(store["conversation_id"] or "") == canonical_id(conversation.id), store


# -- 2: mapped tasks named after their repository -------------------------------------------------------


def test_mapped_tasks_are_named_after_their_repository(airflow_db, connection, capfd):
    """Item 2: a mapped start operator (over repository and branch) and a mapped ``@task.openhands``
    (its function returns the repository), both deferrable: each task instance's
    ``rendered_map_index`` (what the grid, the task header and the failed-logs panel show) names its
    repository and branch; the operator's already while it waits in the triggerer. A task that is
    not mapped gets no name, and a ``map_index_template`` of the DAG's own stands."""
    from airflow.providers.common.compat.sdk import task

    from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

    waits = {"deferrable": True, "wait_for_completion": True, "poll_interval": POLL, "timeout": 20}
    with dag("oh_see_mapped_names") as the_dag:
        classic = OpenHandsStartConversationOperator.partial(
            task_id="classic", initial_user_msg="Fix the README [emulator duration=3]", execution_timeout=GUARD, **waits
        ).expand_kwargs([{"repository": "acme/web", "selected_branch": "main"}, {"repository": "acme/api"}])

        @task.openhands(execution_timeout=GUARD, **waits)
        def decorated(repository: str) -> dict:
            return {"initial_user_msg": "Upgrade the dependencies", "repository": repository}

        own = OpenHandsStartConversationOperator.partial(
            task_id="own", initial_user_msg="Fix it", map_index_template="{{ 'mine' }}", **waits
        ).expand(repository=["acme/own"])
        (
            classic
            >> decorated.expand(repository=["acme/docs", "acme/ops"])
            >> own
            >> start_operator(task_id="single", initial_user_msg="Fix the README", repository="acme/single")
        )

    def names() -> dict[tuple[str, int], Any]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == "oh_see_mapped_names")).all()
            return {"names": {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in rows}}

    named_yet = lambda seen: seen["names"].get(("classic", 0)) not in ("0", None)  # noqa: E731
    seen = while_running(connection, names, settle=0.5, until=named_yet)
    dag_run = dag_test(the_dag)
    seen["thread"].join(5)
    assert set(states(dag_run).values()) == {"success"}, errors(log(capfd))
    named = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in dag_run.get_task_instances()}
    assert named == {
        ("classic", 0): "acme/web@main",
        ("classic", 1): "acme/api",
        ("decorated", 0): "acme/docs",
        ("decorated", 1): "acme/ops",
        ("own", 0): "mine",
        ("single", -1): None,
    }
    (first,) = [c for c in connection.conversations.values() if c.repository == "acme/web"]
    assert "read_at" in seen and seen["read_at"] < first.turns[-1].end, "never read while classic[0] ran"
    assert seen["names"][("classic", 0)] == "acme/web@main", seen["names"]  # named while it waited


# -- 2 and 3: the nightly example, one repository failing -----------------------------------------------


def test_the_nightly_run_names_its_repositories_and_the_agents_error(
    airflow_db, connection, monkeypatch, capfd, caplog
):
    """Items 2 and 3: the nightly example over two repositories, the agent of one failing (the
    emulator writes a ``ConversationErrorEvent``, as the real server does). Each mapped task is named
    after its repository; the failed task's exception and log carry the agent's own error, cut to a
    readable length; the report's failed row carries it too, with the conversation's link."""
    from airflow_provider_openhands.api.state import ERROR_CHARS
    from tests.conftest import EXAMPLE_DAGS
    from tests.test_dag_runs import load_dag

    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    connection.outcomes_by_repository = {"acme/api": "error"}
    nightly = load_dag(EXAMPLE_DAGS / "openhands_nightly_maintenance.py", "openhands_nightly_maintenance")
    dag_run = nightly.test(run_conf={"repositories": ["acme/web", "acme/api"]})
    output = log(capfd)
    maintain = {ti.map_index: ti for ti in dag_run.get_task_instances() if ti.task_id == "maintain"}
    assert {i: str(getattr(ti.state, "value", ti.state)) for i, ti in maintain.items()} == {0: "success", 1: "failed"}
    assert {i: ti.rendered_map_index for i, ti in maintain.items()} == {0: "acme/web", 1: "acme/api"}

    error = "LLMServiceUnavailableError: litellm.InternalServerError: the LLM provider answered HTTP 500"
    (failed,) = [c for c in connection.conversations.values() if c.repository == "acme/api"]
    raised = [line for line in output.splitlines() if "OpenHandsConversationFailed:" in line]
    assert raised and all(error in line for line in raised), errors(output)  # the task's exception
    logged = [line for line in output.splitlines() if "the agent's last error" in line and error in line]
    assert any("OpenHandsConversationFailed" not in line for line in logged), logged  # a log line of its own
    assert all(len(line.split("the agent's last error: ", 1)[1]) <= ERROR_CHARS + 200 for line in logged)

    (table,) = [r.getMessage() for r in caplog.records if r.name == "airflow.task" and "Nightly" in r.getMessage()]
    (row,) = [line for line in table.splitlines() if line.startswith("1  acme/api")]
    assert "FAILED: the conversation ended in error: " + error in row, row
    assert row.rstrip().endswith(f"/conversations/{failed.id}"), row  # the failed row keeps its link
    assert f"acme/api: the conversation ended in error: {error}" in output  # the report task's failure
