"""``OpenHandsNotifier`` in ``dag.test()`` (issue 20): one fix conversation per failure, no secrets.

Runs on Airflow 3.3 and 2.11 alike (``.venv`` and ``.venv-airflow2``). Each test gives its notifier a
state Variable of its own, so the dedup state of one test never reaches another.
"""

from __future__ import annotations

import json
import logging
import re
import runpy
import uuid
from pathlib import Path

import pytest

from airflow_provider_openhands.notifiers.openhands import normalise_message
from airflow_provider_openhands.testing.pytest_plugin import connection_json
from tests.conftest import EXAMPLE_DAGS, README_DAGS, REPO

pytestmark = pytest.mark.airflow_e2e

DAGS = REPO / "tests" / "dags" / "openhands_notifier_dags.py"
DAG_FILE = "tests/dags/openhands_notifier_dags.py"
PASSWORD = "pw-Xk29-notifier-db-password"
TOKEN = "tok-Qm81-notifier-api-token"
NOT_STARTED = "OpenHandsNotifier: no fix conversation was started"


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture(autouse=True)
def clean_masker():
    """Other tests of this process registered short secrets (a connection password "k") that the
    process-wide masker would find in any text ("Tracebac***"): each notifier test starts with none
    registered, and the masker is as it was after it."""
    import importlib

    maskers = []
    for path in (
        "airflow.utils.log.secrets_masker",
        "airflow.sdk._shared.secrets_masker.secrets_masker",
        "airflow._shared.secrets_masker.secrets_masker",
    ):
        try:
            masker = importlib.import_module(path)._secrets_masker()
        except Exception:
            continue
        if all(m is not masker for m, _ in maskers):
            maskers.append((masker, (set(masker.patterns), masker.replacer)))
            masker.patterns, masker.replacer = set(), None
    yield
    for masker, (patterns, replacer) in maskers:
        masker.patterns, masker.replacer = patterns, replacer


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTIFIER_DB", json.dumps({"conn_type": "postgres", "host": "db", "password": PASSWORD})
    )
    monkeypatch.setenv("AIRFLOW_VAR_NOTIFIER_API_SECRET", TOKEN)


@pytest.fixture
def service(emulator, monkeypatch: pytest.MonkeyPatch, secrets):
    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator))
    return emulator


def notifier(**kwargs):
    from airflow_provider_openhands.notifiers.openhands import OpenHandsNotifier

    options = {"repository": "acme/app", "state_variable": f"oh_notifier_test_{uuid.uuid4().hex[:8]}"}
    return OpenHandsNotifier(**{**options, **kwargs})


def run(dag_id: str, the_notifier, conf: dict | None = None, on: str = "failure"):
    dag = runpy.run_path(str(DAGS))["build"](dag_id, the_notifier, on)
    return dag.test(run_conf=conf or {})


def load_states(dag_run) -> list[str]:
    return [str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances() if ti.task_id == "load"]


def starts(emulator) -> list[dict]:
    return emulator.requests_to("POST", r"/api/v1/app-conversations$")


def message_of(request: dict) -> str:
    return "".join(part.get("text", "") for part in request["body"]["initial_message"]["content"])


class Logged:
    """What the run logged. Airflow 3.3's dag.test() logs its tasks through ``logging`` (pytest's
    ``caplog``); Airflow 2.11's takes the task loggers off ``caplog`` after the first task instance
    and prints them (``capfd``). Each source sees all or part of the same lines: a line counts as
    often as the source that saw it most often."""

    def __init__(self, capfd, caplog) -> None:
        out, err = capfd.readouterr()
        self.sources = (out + err, caplog.text)

    def count(self, text: str) -> int:
        return max(source.count(text) for source in self.sources)

    def lines_with(self, text: str) -> list[str]:
        return max(([line for line in s.splitlines() if text in line] for s in self.sources), key=len)

    def __contains__(self, text: str) -> bool:
        return self.count(text) > 0


def test_a_failing_task_starts_one_conversation_with_the_exception_and_no_secret(airflow_db, service, capfd, caplog):
    dag_run = run("oh_notifier_fail", notifier())
    assert load_states(dag_run) == ["failed"]
    (start,) = starts(service)
    text = message_of(start)
    assert "ValueError: row <n>" not in text  # the message itself, not its normalised form
    assert "ValueError: row 17 of batch" in text and "login refused for ***" in text
    assert re.search(rf": {re.escape(DAG_FILE)}$", text, re.M), "no line gives the DAG file's relative path"
    assert "Traceback" in text
    # it only sent the start: no poll of the start task, nothing waited for the agent
    assert [(r["method"], r["path"]) for r in service.requests] == [("POST", "/api/v1/app-conversations")]
    assert start["body"]["selected_repository"] == "acme/app"
    everything = json.dumps(service.requests)
    assert PASSWORD not in everything and TOKEN not in everything
    conversation_id = start["body"]["conversation_id"]
    output = Logged(capfd, caplog)
    (link,) = output.lines_with("fix conversation started")
    assert service.url + "/conversations/" + conversation_id in link
    assert NOT_STARTED not in output


def test_fifty_mapped_failures_of_one_cause_start_one_conversation(airflow_db, service, capfd, caplog):
    dag_run = run("oh_notifier_mapped", notifier())
    assert load_states(dag_run) == ["failed"] * 50
    assert len(starts(service)) == 1
    output = Logged(capfd, caplog)
    assert NOT_STARTED not in output  # each of the 50 callbacks ran to its end
    assert output.count("failed as before; the fix conversation") == 49


def test_the_same_failure_again_shares_the_conversation_and_a_different_one_starts_another(airflow_db, service):
    shared = notifier()
    run("oh_notifier_fail", shared)
    run("oh_notifier_fail", shared)  # another run: other run id, same cause
    assert len(starts(service)) == 1
    run("oh_notifier_fail", shared, {"kind": "key"})
    assert len(starts(service)) == 2
    assert "KeyError" in message_of(starts(service)[-1])


def test_at_most_max_conversations_per_day(airflow_db, service, capfd, caplog):
    capped = notifier(max_conversations_per_day=1)
    run("oh_notifier_fail", capped)
    run("oh_notifier_fail", capped, {"kind": "key"})
    assert len(starts(service)) == 1
    assert "started today already (max_conversations_per_day)" in Logged(capfd, caplog)


def test_the_service_down_leaves_the_failure_as_it_was_and_logs_one_warning(
    airflow_db, secrets, monkeypatch, capfd, caplog
):
    from airflow_provider_openhands.testing import Emulator

    with Emulator() as gone:
        monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(gone))
    the_notifier = notifier(request_timeout=5)
    dag_run = run("oh_notifier_fail", the_notifier)
    assert load_states(dag_run) == ["failed"]
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    output = Logged(capfd, caplog)
    assert output.count(NOT_STARTED) == 1 and "Connection refused" in output
    assert "retry 1 of" not in output  # no warning of the hook's besides
    assert "ValueError" in output  # the task's own failure, in its log as ever
    # the claim was given back: with the service up again, the next failure starts the conversation
    with Emulator() as back:
        monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(back))
        run("oh_notifier_fail", the_notifier)
        assert len(starts(back)) == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("row 17 of batch manual__2026-05-01T10:00:00+00:00", "row 4000 of batch manual__2026-05-02T11:30:12+00:00"),
        ("object 0x7f3a2c not found", "object 0x7f9911 not found"),
        ("job 3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b lost", "job 0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e lost"),
        ("commit deadbeef42 missing", "commit 0123abcd99 missing"),
    ],
)
def test_ids_numbers_and_timestamps_do_not_make_a_different_failure(one, other):
    assert normalise_message(one) == normalise_message(other)


def test_a_different_message_is_a_different_failure():
    assert normalise_message("column 'amount' missing") != normalise_message("column 'price' missing")


def readme_example() -> Path:
    """The README's "Self-healing pipelines" example, as a DAG file in a bundle of the tests."""
    section = (REPO / "README.md").read_text().split("## Self-healing pipelines", 1)[1]
    path = README_DAGS / "orders.py"
    path.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    return path


@pytest.mark.parametrize("source", ["example_dags", "README"])
def test_the_example_dag_starts_a_fix_conversation(airflow_db, service, source):
    """The example DAG, and the README's example as written: the task fails, one conversation starts."""
    from tests.test_dag_runs import load_dag

    if source == "README":
        dag = load_dag(readme_example(), "orders")
    else:
        dag = load_dag(EXAMPLE_DAGS / "openhands_self_healing.py", "openhands_self_healing")
    callbacks = dag.task_dict["load_orders"].on_failure_callback
    (example_notifier,) = callbacks if isinstance(callbacks, list) else [callbacks]  # a list on Airflow 3
    example_notifier.state_variable = f"oh_notifier_test_{uuid.uuid4().hex[:8]}"
    dag_run = dag.test()
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    (start,) = starts(service)
    text = message_of(start)
    assert "could not convert string to float: '1,234.50'" in text
    if source == "example_dags":
        assert "example_dags/openhands_self_healing.py" in text
    assert start["body"]["selected_repository"] == "acme/airflow-dags"


def dataset_events(uri: str) -> list[dict]:
    from airflow.models.dataset import DatasetEvent, DatasetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(DatasetEvent)
            .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
            .filter(DatasetModel.uri == uri)
            .all()
        )
        return [dict(row.extra or {}) for row in rows]


def test_fix_asset_emits_an_event_with_the_conversation_on_airflow_2(airflow_db, service):
    import airflow

    from airflow_provider_openhands.exceptions import OpenHandsConfigError

    uri = f"openhands://acme/app/fixes-{uuid.uuid4().hex[:6]}"
    if int(airflow.__version__.split(".")[0]) >= 3:
        from airflow.sdk import Asset

        with pytest.raises(OpenHandsConfigError, match="Airflow 2"):  # documented: a callback cannot emit one
            notifier(fix_asset=Asset(uri))
        return
    from airflow.datasets import Dataset
    from airflow.models.dataset import DatasetModel
    from airflow.utils.session import create_session

    with create_session() as session:  # as the DAG processor records the review DAG's schedule
        session.add(DatasetModel(uri=uri))
    run("oh_notifier_fail", notifier(fix_asset=Dataset(uri), max_cost_usd=2.5))
    (start,) = starts(service)
    (extra,) = dataset_events(uri)
    assert extra["conversation_id"] == start["body"]["conversation_id"]
    assert extra["repository"] == "acme/app" and extra["max_cost_usd"] == 2.5
    assert extra["conversation_url"].endswith(extra["conversation_id"])


def test_the_end_of_the_task_log_is_sent_masked(tmp_path, monkeypatch):
    """A worker writes the try's log locally: its end goes in the message, through the masker."""
    from types import SimpleNamespace

    from airflow.providers.common.compat.sdk import mask_secret

    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path))
    monkeypatch.setenv(
        "AIRFLOW__LOGGING__LOG_FILENAME_TEMPLATE", "{{ ti.dag_id }}/{{ ti.task_id }}/{{ try_number }}.log"
    )
    secret = "log-secret-" + uuid.uuid4().hex
    mask_secret(secret)
    (tmp_path / "etl" / "load").mkdir(parents=True)
    lines = [f"line {n}" for n in range(200)] + [f"connecting with {secret}", "ValueError: bad row"]
    (tmp_path / "etl" / "load" / "2.log").write_text("\n".join(lines))
    ti = SimpleNamespace(dag_id="etl", task_id="load", run_id="r", try_number=2, map_index=-1)
    context = {"ti": ti, "dag": SimpleNamespace(dag_id="etl", fileloc=str(DAGS)), "exception": ValueError("x")}
    failure = notifier(log_tail_lines=5).describe(context)
    assert failure["log_tail"].splitlines() == [
        "line 197",
        "line 198",
        "line 199",
        "connecting with ***",
        "ValueError: bad row",
    ]
    assert failure["dag_file"] == DAG_FILE


def test_a_claim_left_by_a_dead_worker_does_not_block_its_failure_for_the_window(airflow_db, service):
    """A worker killed between its claim and its start leaves a claim without a conversation."""
    import time

    from airflow.models.variable import Variable  # the metadata DB's, from outside a task

    from airflow_provider_openhands.notifiers._claims import _keys
    from airflow_provider_openhands.notifiers.openhands import STALE_CLAIM_SECONDS

    shared = notifier()
    run("oh_notifier_fail", shared)
    (key,) = _keys(shared.state_variable + ".")  # the failure's record, in a Variable of its own
    entry = json.loads(Variable.get(key))
    entry.pop("url")
    entry["at"] = time.time() - STALE_CLAIM_SECONDS - 1
    Variable.set(key, json.dumps(entry))
    run("oh_notifier_fail", shared)
    assert len(starts(service)) == 2


# -- max_cost_usd: the follow-up check -------------------------------------------------------------

EXPENSIVE = "Fix {{ failure.exception_type }}. [emulator cost=3 duration=1]"


def run_guard(the_notifier) -> list[str]:
    """Run ``notifier.check_budgets()`` as a task (the DAG file's guard DAG); what it returned."""
    dag = runpy.run_path(str(DAGS))["build_guard"]("oh_notifier_budget_guard", the_notifier)
    dag_run = dag.test()
    (ti,) = dag_run.get_task_instances()
    assert str(getattr(ti.state, "value", ti.state)) == "success"
    from tests.test_defects import xcom

    return xcom(dag_run, "check_budgets")


def wait_until_finished(conversation_id: str) -> None:
    import time

    from airflow_provider_openhands.exceptions import OpenHandsNotFoundError
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    hook = OpenHandsHook()
    for _ in range(200):
        try:
            if hook.get_conversation(conversation_id)["status"] in ("finished", "idle"):
                return
        except OpenHandsNotFoundError:  # its start task is still at work
            pass
        time.sleep(0.1)
    raise AssertionError(f"{conversation_id} did not finish")


def pauses(emulator) -> list[str]:
    return [r["path"].split("/")[-2] for r in emulator.requests_to("POST", r"/api/v1/sandboxes/[^/]+/pause$")]


def sandbox_of(emulator, conversation_id: str) -> str:
    from airflow_provider_openhands.hooks.openhands import OpenHandsHook

    return OpenHandsHook().get_conversation(conversation_id)["sandbox_id"]


def test_the_next_failure_pauses_a_fix_conversation_over_max_cost_usd(airflow_db, service, capfd, caplog):
    shared = notifier(max_cost_usd=2.0, instruction=EXPENSIVE)
    run("oh_notifier_fail", shared)
    first = starts(service)[0]["body"]["conversation_id"]
    wait_until_finished(first)  # it cost $3: over its $2
    run("oh_notifier_fail", shared, {"kind": "key"})  # another failure: the check runs before its start
    assert len(starts(service)) == 2
    assert pauses(service) == [sandbox_of(service, first)]
    (line,) = Logged(capfd, caplog).lines_with("over its max_cost_usd")
    assert first in line and "$3.0000" in line
    run("oh_notifier_fail", shared, {"kind": "key"})  # paused once: not again
    assert pauses(service).count(sandbox_of(service, first)) == 1


def test_check_budgets_in_a_task_pauses_only_what_is_over_its_budget(airflow_db, service):
    over = notifier(max_cost_usd=2.0, instruction=EXPENSIVE)
    within = notifier(max_cost_usd=10.0, instruction=EXPENSIVE)
    unguarded = notifier(instruction=EXPENSIVE)
    for each in (over, within, unguarded):
        run("oh_notifier_fail", each)
    conversations = [s["body"]["conversation_id"] for s in starts(service)]
    for conversation_id in conversations:
        wait_until_finished(conversation_id)
    assert run_guard(within) == [] and run_guard(unguarded) == []
    assert pauses(service) == []
    assert run_guard(over) == [conversations[0]]
    assert pauses(service) == [sandbox_of(service, conversations[0])]
    assert run_guard(over) == []  # once


def test_check_budgets_needs_to_know_its_state(airflow_db):
    from airflow_provider_openhands.exceptions import OpenHandsConfigError
    from airflow_provider_openhands.notifiers.openhands import OpenHandsNotifier

    with pytest.raises(OpenHandsConfigError, match="repository="):
        OpenHandsNotifier(max_cost_usd=1.0).check_budgets()


def test_as_on_retry_callback_a_failure_that_will_be_retried_starts_one(airflow_db, service, capfd, caplog):
    dag_run = run("oh_notifier_fail", notifier(), on="retry")
    assert load_states(dag_run) == ["failed"]  # after its retry
    (start,) = starts(service)
    assert "ValueError: row 17 of batch" in message_of(start) and "try 1)" in message_of(start)
    assert NOT_STARTED not in Logged(capfd, caplog)


def test_as_the_dags_on_failure_callback_the_run_starts_one(airflow_db, service, capfd, caplog):
    dag_run = run("oh_notifier_fail", notifier(), on="dag")
    assert load_states(dag_run) == ["failed"]
    (start,) = starts(service)
    text = message_of(start)
    assert "oh_notifier_fail." in text and DAG_FILE in text
    assert NOT_STARTED not in Logged(capfd, caplog)


# -- from the fresh-context review of issue 20 ------------------------------------------------------


def test_a_secret_the_traceback_cut_would_split_is_masked_whole():
    """The traceback is cut to its last 8000 characters after masking, never before."""
    from types import SimpleNamespace

    from airflow.providers.common.compat.sdk import mask_secret

    secret = "cut-secret-" + uuid.uuid4().hex
    mask_secret(secret)
    try:
        raise ValueError(secret + "x" * 7990)  # the cut falls inside the secret
    except ValueError as exc:
        error = exc
    ti = SimpleNamespace(dag_id="etl", task_id="load", run_id="r", try_number=1, map_index=-1)
    context = {"ti": ti, "dag": SimpleNamespace(dag_id="etl", fileloc=str(DAGS)), "exception": error}
    failure = notifier(log_tail_lines=0).describe(context)
    assert secret[len(secret) // 2 :] not in failure["traceback"] and "***" in failure["traceback"]


def test_the_same_failure_after_its_window_starts_another(airflow_db, service):
    import time

    # A window of 8 s: the second run must come within it even on a loaded machine (at 2 s, a
    # dag.test() run under load sometimes took longer, and the second started its own, rightly).
    shared = notifier(window=8.0, claim_settle_seconds=0)
    run("oh_notifier_fail", shared)
    claimed_by = time.time()  # the first failure's claim was made before its run ended
    run("oh_notifier_fail", shared)
    assert len(starts(service)) == 1
    time.sleep(max(0.0, claimed_by + 8.5 - time.time()))
    run("oh_notifier_fail", shared)
    assert len(starts(service)) == 2


def test_two_different_failures_at_once_both_start(airflow_db, service):
    """Two workers write the one state Variable at the same moment: the claim another failure's write
    overwrote is made again, so neither failure loses its conversation."""
    import threading
    from datetime import datetime
    from types import SimpleNamespace

    from airflow.providers.common.compat.sdk import DAG

    dag = DAG("etl", schedule=None, start_date=datetime(2026, 1, 1))
    dag.fileloc = str(DAGS)
    shared = notifier(claim_settle_seconds=0.3)
    barrier = threading.Barrier(2)

    def fail(task_id: str, error: Exception) -> None:
        ti = SimpleNamespace(dag_id="etl", task_id=task_id, run_id="r", try_number=1, map_index=-1)
        context = {"ti": ti, "dag": dag, "exception": error}
        barrier.wait()
        shared(context)

    threads = [
        threading.Thread(target=fail, args=("load", ValueError("bad row"))),
        threading.Thread(target=fail, args=("transform", KeyError("amount"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(s["body"]["title"].split(":")[0] for s in starts(service)) == ["Fix etl.load", "Fix etl.transform"]


def test_the_dag_s_callback_does_not_start_a_second_one_for_its_failed_task(airflow_db, service, capfd, caplog):
    run("oh_notifier_fail", notifier(), on="both")
    (start,) = starts(service)
    assert "ValueError: row 17 of batch" in message_of(start)
    assert "a fix conversation already looks at its failed task" in Logged(capfd, caplog)


def test_max_cost_usd_is_refused_on_v0_not_ignored(airflow_db, emulator, monkeypatch, secrets):
    from airflow_provider_openhands.exceptions import OpenHandsConfigError

    monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(emulator, "v0"))
    with pytest.raises(OpenHandsConfigError, match="max_cost_usd needs a V1 connection"):
        notifier(max_cost_usd=2.0).check_budgets()


def test_a_failing_cost_check_still_starts_the_fix_and_warns_once(airflow_db, service, monkeypatch, capfd, caplog):
    from airflow_provider_openhands.exceptions import OpenHandsTransientError
    from airflow_provider_openhands.notifiers.openhands import OpenHandsNotifier

    def unreadable(self, key):
        raise OpenHandsTransientError("500 Internal Server Error")

    monkeypatch.setattr(OpenHandsNotifier, "_pause_over_budget", unreadable)
    run("oh_notifier_fail", notifier(max_cost_usd=2.0))
    assert len(starts(service)) == 1
    output = Logged(capfd, caplog)
    assert output.count("costs were not checked") == 1 and NOT_STARTED not in output


def test_the_service_down_with_a_budget_is_still_one_warning(airflow_db, service, monkeypatch, capfd, caplog):
    """A fix conversation to check, then the service down: the check and the start both fail, in one warning."""
    from airflow_provider_openhands.testing import Emulator

    guarded = notifier(max_cost_usd=2.0, request_timeout=5)
    run("oh_notifier_fail", guarded)
    capfd.readouterr()
    caplog.clear()
    with Emulator() as gone:
        monkeypatch.setenv("AIRFLOW_CONN_OPENHANDS_DEFAULT", connection_json(gone))
    run("oh_notifier_fail", guarded, {"kind": "key"})
    output = Logged(capfd, caplog)
    assert output.count("OpenHandsNotifier:") == 1 and output.count(NOT_STARTED) == 1
    (line,) = output.lines_with(NOT_STARTED)
    assert "nor were the fix conversations' costs checked" in line


def test_eight_failures_at_once_keep_all_eight_records_and_a_duplicate_is_refused(airflow_db, service, monkeypatch):
    """Issue 29, scenario 7: eight different tasks fail at once, and a ninth failure repeats the
    first's. One read-modify-written Variable lost one or two of the eight records, so the same
    failures again started duplicates. Each claim is won by one writer, and each record kept: eight
    starts, then none for the same eight failures. A Variable read takes 30 ms here (a worker's
    reads go over the network), so that what one writer read is older than another's write."""
    import threading
    import time
    from datetime import datetime
    from types import SimpleNamespace

    from airflow.models.variable import Variable
    from airflow.providers.common.compat.sdk import DAG

    read = Variable.get.__func__

    def slow_read(cls, *args, **kwargs):
        value = read(cls, *args, **kwargs)
        time.sleep(0.03)
        return value

    monkeypatch.setattr(Variable, "get", classmethod(slow_read))

    dag = DAG("etl", schedule=None, start_date=datetime(2026, 1, 1))
    dag.fileloc = str(DAGS)
    shared = notifier(claim_settle_seconds=0.3)
    failures = [(f"load_{n}", ValueError(f"bad row in part {chr(97 + n)}")) for n in range(8)]
    barrier = threading.Barrier(len(failures) + 1)

    def fail(task_id: str, error: Exception, wait: bool = True) -> None:
        ti = SimpleNamespace(dag_id="etl", task_id=task_id, run_id="r", try_number=1, map_index=-1)
        if wait:
            barrier.wait()
        shared({"ti": ti, "dag": dag, "exception": error})

    threads = [threading.Thread(target=fail, args=failure) for failure in [*failures, failures[0]]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    titles = sorted(s["body"]["title"] for s in starts(service))
    assert titles == sorted(f"Fix etl.{task_id}: ValueError" for task_id, _ in failures)
    monkeypatch.setattr("airflow_provider_openhands.notifiers.openhands.STALE_CLAIM_SECONDS", 1.0)
    time.sleep(1.1)  # a claim without its record is stale by now: only a record refuses a failure
    for task_id, error in failures:  # the same failures again: each finds its record
        fail(task_id, error, wait=False)
    assert len(starts(service)) == len(failures)
