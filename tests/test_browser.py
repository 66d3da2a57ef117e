"""What a person sees in Airflow 3's web UI while the nightly example runs, in a real browser.

A real Airflow (``airflow standalone``: scheduler, triggerer, DAG processor, API server;
``scripts/local_airflow.py``) runs the ``openhands_nightly_maintenance`` example over three
repositories against the emulator: the agent finishes on one, ends in error on another, and keeps
working on the third. Headless Chromium (the system's, driven by playwright) logs in as a person
does and finds, on the pages a person opens:

a. the page of the task still deferred (waiting in the triggerer): the "OpenHands Conversation"
   link (its Details tab), pointing at the emulator's page of that conversation;
b. the run's grid with its mapped ``maintain`` tasks: each named after its repository, with its state;
c. the failed task's log: the agent's own error text, as the emulator's agent wrote it.

Opt-in, a CI step of its own: ``pytest -m browser`` (one process: it starts one Airflow). It needs
``/usr/bin/chromium`` (``apt-get install chromium``; ``OPENHANDS_CHROMIUM`` names another) and
``pip install playwright`` (playwright's own browser download is not used): without them it fails,
it never skips. Screenshots go to the test's tmp dir, or to ``docs/screenshots/`` with
``OPENHANDS_SCREENSHOTS=1`` (how the README's are made). About 1.5 minutes on two cores.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import AIRFLOW_3, REPO, LocalAirflow

pytestmark = pytest.mark.browser

DAG_ID = "openhands_nightly_maintenance"
FINISHES, FAILS, RUNS_LONG = "acme/web", "acme/api", "acme/docs"
#: In map-index order: the run's ``repositories`` param.
REPOSITORIES = [FINISHES, FAILS, RUNS_LONG]
#: The task states a person should see by the time the browser looks.
STATES = {FINISHES: "success", FAILS: "failed", RUNS_LONG: "deferred"}
LINK_NAME = "OpenHands Conversation"
CHROMIUM = Path(os.environ.get("OPENHANDS_CHROMIUM", "/usr/bin/chromium"))
#: Headless, and nothing that phones home: this network refuses it (and Chromium then stalls).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page may take to show what is looked for (a loaded two-core machine), in ms.
PAGE_WAIT_MS = 60_000
#: How long the run may take to reach ``STATES`` once triggered, in s.
RUN_WAIT_S = 180
SCREENSHOTS = REPO / "docs" / "screenshots"


@dataclass
class Nightly:
    """One run of the nightly example in a real Airflow, and the emulator it talks to."""

    airflow: LocalAirflow
    emulator: Emulator
    run_id: str

    def task_url(self, repository: str | None = None) -> str:
        """The page of ``maintain``'s task for a repository; without one, of all its mapped tasks."""
        url = f"{self.airflow.ui_url}/dags/{DAG_ID}/runs/{self.run_id}/tasks/maintain/mapped"
        return url if repository is None else f"{url}/{REPOSITORIES.index(repository)}"

    def states(self) -> dict[str, str | None]:
        """``maintain``'s task state per repository, from the metadata DB."""
        rows = self.airflow.task_states(DAG_ID, self.run_id)
        return {REPOSITORIES[index]: state for task_id, index, state in rows if task_id == "maintain" and index >= 0}

    def conversation(self, repository: str) -> Any:
        (conversation,) = [c for c in self.emulator.conversations.values() if c.repository == repository]
        return conversation

    def agent_error(self, repository: str) -> str:
        """The agent's error on a repository, as the emulator's events API has it: ``code: detail``."""
        answer = requests.get(
            f"{self.emulator.url}/api/v1/conversation/{self.conversation(repository).id}/events/search",
            params={"kind__eq": "ConversationErrorEvent"},
            headers={"Authorization": f"Bearer {self.emulator.api_key}"},
            timeout=30,
        )
        answer.raise_for_status()
        (event,) = answer.json()["items"]
        return f"{event['code']}: {event['detail']}"


def _fail_unless_runnable() -> None:
    """Fail (never skip) when this machine cannot run the test: CI installs what it needs."""
    problems = []
    if not AIRFLOW_3:
        problems.append("it needs Airflow 3 (its React UI); this is Airflow 2")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        problems.append("it runs in one process (one Airflow for its tests): run `pytest -n 0 -m browser`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (`pip install playwright`; its browser download is not needed)")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"no Chromium at {CHROMIUM} (`apt-get install -y chromium`, or set OPENHANDS_CHROMIUM)")
    if problems:
        pytest.fail("the browser test cannot run: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _fail_unless_runnable()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def nightly(browser: Any) -> Iterator[Nightly]:
    """The run, once the browser may look: one repository's task succeeded, one failed (its agent
    ended in error) and one is deferred, its conversation running for the next 15 minutes."""
    say = lambda line: print(f"[browser] {line}", flush=True)  # noqa: E731
    with Emulator(
        conversation_seconds=4,
        start_seconds=1,
        outcomes_by_repository={FAILS: "error"},
        seconds_by_repository={RUNS_LONG: 900},
    ) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "2"},
            log=say,
        )
        try:
            started = time.monotonic()
            airflow.start()
            airflow.wait_for_dag(DAG_ID)
            run = Nightly(airflow, emulator, airflow.trigger(DAG_ID, {"repositories": REPOSITORIES}))
            _wait_for_states(run, RUN_WAIT_S)
            say(f"Airflow up and the run in its states {STATES} after {time.monotonic() - started:.0f}s")
            yield run
        finally:
            airflow.stop()
            airflow.cleanup()


def _wait_for_states(run: Nightly, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        run.airflow.check_alive()
        with contextlib.suppress(sqlite3.Error):  # the DB may be busy for a moment
            states = run.states()
        if states == STATES:
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"the run did not reach {STATES} within {timeout:.0f}s (last seen {states}):\n{run.airflow.standalone_log()}"
    )


@contextlib.contextmanager
def signed_in(browser: Any, airflow: LocalAirflow) -> Iterator[Any]:
    """A browser tab logged in to the UI as a person does: the sign-in form and its credentials."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(PAGE_WAIT_MS)
    user, password = airflow.credentials()
    tab.goto(airflow.ui_url + "/")
    tab.get_by_label("Username").fill(user)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(lambda url: "/auth/login" not in url)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="module")
def page(browser: Any, nightly: Nightly) -> Iterator[Any]:
    with signed_in(browser, nightly.airflow) as tab:
        yield tab


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save what the page shows: to ``docs/screenshots/<name>.png`` with OPENHANDS_SCREENSHOTS=1, else tmp_path."""

    def save(page: Any, name: str) -> Path:
        folder = SCREENSHOTS if os.environ.get("OPENHANDS_SCREENSHOTS") == "1" else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        print(f"[browser] screenshot {path}")
        return path

    return save


def _header(page: Any, repository: str, state: str) -> None:
    """The task page's header names the task after its repository and shows its state."""
    from playwright.sync_api import expect

    expect(page.get_by_text(f"maintain [{repository}]", exact=True).first).to_be_visible()
    expect(page.get_by_text(state.capitalize(), exact=True).first).to_be_visible()


def test_a_deferred_task_page_links_its_conversation(nightly: Nightly, page: Any, screenshot: Any) -> None:
    """The task waiting in the triggerer: its page's "OpenHands Conversation" link is the emulator's
    page of the conversation it waits for, while it waits."""
    from playwright.sync_api import expect

    conversation = nightly.conversation(RUNS_LONG)
    expected = f"{nightly.emulator.url}/conversations/{conversation.id}"
    assert nightly.states()[RUNS_LONG] == "deferred"
    page.goto(nightly.task_url(RUNS_LONG))
    _header(page, RUNS_LONG, "deferred")
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name=LINK_NAME, exact=True)
    expect(link).to_have_attribute("href", expected)
    expect(link).to_be_visible()
    # seen while the task was deferred and its conversation ran, before and after
    assert nightly.states()[RUNS_LONG] == "deferred", nightly.states()
    assert time.time() < conversation.turns[-1].end, "the conversation ended before the link was seen"
    screenshot(page, "deferred-task-conversation-link")


def test_the_nightly_grid_names_each_repository(nightly: Nightly, page: Any, screenshot: Any) -> None:
    """The run's grid and its mapped ``maintain`` tasks: one row per repository, named after it (the
    operator's ``map_index_template``), with its state and a link to its own task page."""
    from playwright.sync_api import expect

    page.goto(nightly.task_url())
    expect(page.get_by_text("maintain [ ]", exact=True).first).to_be_visible()  # the grid's row of the mapped task
    expect(page.get_by_text(f"{len(REPOSITORIES)} Task Instances", exact=True)).to_be_visible()
    for index, repository in enumerate(REPOSITORIES):
        name = page.get_by_role("link", name=repository, exact=True)
        expect(name).to_have_count(1)
        expect(name).to_have_attribute("href", re.compile(rf"/tasks/maintain/mapped/{index}$"))
        row = page.locator("tr").filter(has=name)
        expect(row).to_contain_text(STATES[repository].capitalize())
    screenshot(page, "nightly-grid-repositories")


def test_a_failed_task_log_shows_the_agents_error(nightly: Nightly, page: Any, screenshot: Any) -> None:
    """The failed task's log (its page opens on it) carries the agent's own error text, whole."""
    from playwright.sync_api import expect

    error = nightly.agent_error(FAILS)
    assert error.startswith("LLMServiceUnavailableError: "), error
    page.goto(nightly.task_url(FAILS))
    _header(page, FAILS, "failed")
    line = page.get_by_text(f"the agent's last error: {error}").first
    expect(line).to_be_visible()
    page.get_by_role("button", name="Log Settings").click()
    page.get_by_role("menuitem", name="Wrap").click()  # long lines wrapped: the whole error on screen
    line.scroll_into_view_if_needed()
    expect(line).to_be_visible()
    screenshot(page, "failed-task-agent-error")
