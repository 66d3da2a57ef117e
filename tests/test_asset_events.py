"""Asset events of OpenHands tasks (issue 13, item 4): the outlets' events carry the conversation's outcome."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.test_dag_runs import load_dag, task_states

pytestmark = pytest.mark.airflow_e2e


def events_for(uri: str) -> list[dict]:
    from airflow.utils.session import create_session

    try:
        from airflow.models.asset import AssetEvent, AssetModel  # Airflow 3

        asset_key = AssetEvent.asset_id
    except ImportError:  # Airflow 2.11
        from airflow.models.dataset import DatasetEvent as AssetEvent
        from airflow.models.dataset import DatasetModel as AssetModel

        asset_key = AssetEvent.dataset_id
    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetModel.id == asset_key)
            .filter(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
            .all()
        )
        return [dict(row.extra or {}) for row in rows]


@pytest.mark.parametrize("api_version", ["v1"])
def test_the_fix_dag_emits_an_asset_event_with_the_conversation(airflow_db, connection, monkeypatch):
    import airflow

    monkeypatch.setenv("OPENHANDS_EXAMPLE_POLL_SECONDS", "0.2")
    uri = "openhands://acme/app/fixes"
    before = len(events_for(uri))
    dag = load_dag(EXAMPLE_DAGS / "openhands_fix_then_review.py", "openhands_fix")
    assert task_states(dag.test()) == {"fix": "success"}
    events = events_for(uri)
    if int(airflow.__version__.split(".")[0]) < 3:
        # documented: no extra on Airflow 2.11 (and its dag.test() records no dataset event without
        # a serialized DAG); the task still succeeds with its outlet
        assert not any(e.get("conversation_id") for e in events)
        return
    assert len(events) == before + 1
    extra = events[-1]
    (conversation,) = connection.conversations.values()
    assert extra["conversation_id"].replace("-", "") == conversation.id.replace("-", "")
    assert extra["status"] == "finished" and extra["repository"] == "acme/app"
    assert extra["conversation_url"].endswith(extra["conversation_id"])
    assert isinstance(extra["pr_numbers"], list) and isinstance(extra["pr_urls"], list)
    assert len(extra["pr_numbers"]) == len(extra["pr_urls"])
    assert isinstance(extra["cost"], float)
