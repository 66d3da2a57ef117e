"""What a person sees of the plan review and the confirmations (issue 19) in Airflow 3's web UI.

A real Airflow (``airflow standalone``, ``scripts/local_airflow.py``) runs the
``openhands_plan_and_confirm`` example against the emulator: its agent writes a plan ("1. Bump
requests"), then, once the plan is approved, the build conversation waits for a person to confirm
``pip install -U requests``. Headless Chromium, logged in as a person, answers both in the UI:

a. **Browse > Required Actions** lists the task's request ("Response Required"); its review drawer
   shows the plan as the body's markdown renders it (an ordered list: "1." is the list's marker,
   the item's text is "Bump requests"), the link to the plan conversation on the emulator's page,
   the form's text field and the Approve / Revise / Reject buttons. The person clicks **Approve**.
b. The build's confirmation: the list shows the task's request pending again. Before Airflow 3.4 a
   task's later request keeps its first form (the plan review's subject, body and field): the
   command to confirm is in the task's log, next to its "Required Action" tab. There the person
   types a reason and clicks **Reject**; the agent receives ``accept: false`` with that reason, goes
   on without the command, and the task succeeds, its log naming who rejected what.

Same conventions as ``tests/test_browser.py`` (its fixtures are used here): ``pytest -n 0 -m
browser``, fails (never skips) without Chromium or playwright; screenshots go to the test's tmp dir,
or with ``OPENHANDS_SCREENSHOTS=1`` to ``docs/screenshots/required-actions-plan-review.png`` and
``required-actions-confirmation.png``. About 1.5 minutes on two cores.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_openhands.testing import Emulator
from scripts.local_airflow import LocalAirflow
from tests.test_browser import RUN_WAIT_S, browser, screenshot, signed_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

DAG_ID, TASK_ID = "openhands_plan_and_confirm", "upgrade"
PLAN, COMMAND, REASON = "1. Bump requests", "pip install -U requests", "use the lock file"
TASK = f'Upgrade requests [emulator plan="{PLAN}" confirm="{COMMAND}" change=req.txt:MODIFIED]'
#: The plan review's subject (``_plans.ask_review``); before Airflow 3.4 the confirmation's request shows it too.
SUBJECT = f"OpenHands plan to review ({TASK_ID})"
#: The scheduler's line once it has taken in the executor's "success" of the task process that parked
#: the task in ``awaiting_input``. An answer given before that (a person answering within seconds, on a
#: loaded machine) makes Airflow 3.3 fail the task: the answer re-queues it, and the late "success"
#: then finds it queued ("finished with state success, but the task instance's state attribute is
#: queued"). The test's person answers after it, as people do.
PARKED = (
    r"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id}, [^\n]*"
    r"state=awaiting_input, [^\n]*executor_state=success"
)
#: The drawer has slid in: no finite animation running (the UI's state badges pulse for ever).
OPENED = "document.getAnimations().every(a => a.playState != 'running' || a.effect.getTiming().iterations == Infinity)"


@dataclass
class PlanRun:
    """One run of the plan-and-confirm example in a real Airflow, and the emulator it talks to."""

    airflow: LocalAirflow
    emulator: Emulator
    run_id: str

    @property
    def task_url(self) -> str:
        return f"{self.airflow.ui_url}/dags/{DAG_ID}/runs/{self.run_id}/tasks/{TASK_ID}"

    def request(self) -> tuple[str | None, str | None, str | None]:
        """The task's state and its HITL request's answer as the metadata DB has it: (state,
        responded_at, chosen_options); no request yet: (state, None, None)."""
        rows = self.airflow.query(
            "SELECT ti.state, h.responded_at, h.chosen_options FROM task_instance ti "
            "LEFT JOIN hitl_detail h ON h.ti_id = ti.id WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
            DAG_ID,
            self.run_id,
            TASK_ID,
        )
        return rows[0] if rows else (None, None, None)

    def wait(self, what: str, done: Callable[[tuple[str | None, str | None, str | None]], bool]) -> None:
        deadline, seen = time.monotonic() + RUN_WAIT_S, None
        while time.monotonic() < deadline:
            self.airflow.check_alive()
            with contextlib.suppress(sqlite3.Error):  # the DB may be busy for a moment
                seen = self.request()
                if done(seen):
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{what}: not within {RUN_WAIT_S}s (last seen {seen}):\n{self.airflow.standalone_log()}")

    def wait_for_question(self, number: int) -> None:
        """The task asks a person its ``number``-th question: ``awaiting_input``, the request not
        answered, and the scheduler done with the task process that parked it (see ``PARKED``)."""
        self.wait(
            f"the task asking a person (question {number})",
            lambda seen: seen[0] == "awaiting_input" and seen[1] is None and self.parked() >= number,
        )

    def parked(self) -> int:
        """How many times the scheduler took in the executor's report of the task parking itself."""
        log = (self.airflow.home / "standalone.log").read_text(errors="replace")
        return len(re.findall(PARKED.format(dag_id=DAG_ID, task_id=TASK_ID, run_id=re.escape(self.run_id)), log))

    def conversations(self) -> list[Any]:
        return list({id(c): c for c in self.emulator.conversations.values()}.values())

    def confirmations(self) -> list[dict[str, Any]]:
        """What the agent server received as the answers to its confirmations."""
        return [r["body"] for r in self.emulator.requests_to("POST", r"/events/respond_to_confirmation$")]


@pytest.fixture(scope="module")
def plan_run(browser: Any) -> Iterator[PlanRun]:  # noqa: F811 - the fixture imported above
    say = lambda line: print(f"[browser] {line}", flush=True)  # noqa: E731
    with Emulator(conversation_seconds=2, start_seconds=1) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "1"},
            log=say,
        )
        try:
            airflow.start()
            airflow.wait_for_dag(DAG_ID)
            yield PlanRun(airflow, emulator, airflow.trigger(DAG_ID, {"repository": "acme/app", "task": TASK}))
        finally:
            airflow.stop()
            airflow.cleanup()


def _pending_in_the_list(page: Any, run: PlanRun) -> Any:
    """Browse > Required Actions: the task's request is the one row, waiting for a response."""
    from playwright.sync_api import expect

    page.goto(f"{run.airflow.ui_url}/required_actions")
    row = page.locator("tr").filter(has=page.get_by_role("link", name=SUBJECT, exact=True))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Response Required")
    expect(row).to_contain_text(run.run_id)
    return row


def _answer(page: Any, option: str, reason: str = "", form: Any = None) -> None:
    """Type the reason into the form's one field and click the option (``form``: the drawer, else the
    page). The form clears its field once its request has loaded (a person never types that fast):
    typed until the text stays."""
    from playwright.sync_api import expect

    form = page if form is None else form
    field = form.get_by_role("textbox")
    for _ in range(20):
        field.fill(reason)
        page.wait_for_timeout(500)
        if field.input_value() == reason:
            break
    expect(field).to_have_value(reason)
    form.get_by_role("button", name=option, exact=True).click()


def test_a_person_reviews_the_plan_and_answers_the_confirmation_in_the_ui(
    plan_run: PlanRun,
    browser: Any,  # noqa: F811 - the fixture imported above
    screenshot: Any,  # noqa: F811 - the fixture imported above
) -> None:
    from playwright.sync_api import expect

    run, user = plan_run, plan_run.airflow.credentials()[0]
    run.wait_for_question(1)
    with signed_in(browser, run.airflow) as page:
        page.set_viewport_size({"width": 1400, "height": 780})  # the screenshots: the drawer, the log, no blank
        # a. the plan review, in the Required Actions view's review drawer
        row = _pending_in_the_list(page, run)
        row.get_by_role("button", name="Open Review Drawer").click()
        drawer = page.get_by_role("dialog")
        expect(drawer.get_by_role("heading", name="Required Actions")).to_be_visible()
        expect(drawer.get_by_text(SUBJECT, exact=True)).to_be_visible()
        # the body's markdown rendered: "1. Bump requests" is an ordered list of one item
        expect(drawer.locator("ol > li")).to_have_text([PLAN.removeprefix("1. ")])
        (plan,) = run.conversations()
        link = drawer.get_by_role("link", name=plan.id, exact=True)
        expect(link).to_have_attribute("href", f"{run.emulator.url}/conversations/{plan.id}")
        expect(link).to_be_visible()
        expect(drawer.get_by_role("textbox")).to_be_visible()
        for option in ("Approve", "Revise", "Reject"):
            expect(drawer.get_by_role("button", name=option, exact=True)).to_be_visible()
        page.wait_for_function(OPENED)
        screenshot(page, "required-actions-plan-review")
        _answer(page, "Approve", form=drawer)
        # answered (the task soon resumes and asks again, which clears the answer: its log keeps it)
        run.wait("the answer recorded", lambda seen: seen[1] is not None or seen[0] != "awaiting_input")

        # b. the build's confirmation: pending again in the list; the command in the task's log
        run.wait_for_question(2)
        assert len(run.conversations()) == 2, "no build conversation after the approval"
        row = _pending_in_the_list(page, run)
        row.get_by_role("link", name=TASK_ID, exact=True).click()  # the task's Required Action tab
        page.get_by_role("link", name="Logs", exact=True).click()
        page.get_by_role("button", name="Log Settings").click()
        page.get_by_role("menuitem", name="Wrap").click()  # long lines wrapped: the whole line on screen
        expect(page.get_by_text(f"Approve by {user}").first).to_be_visible()  # the plan's answer, and who gave it
        asked = page.get_by_text(f"waits for a person to confirm: terminal `{COMMAND}`")
        expect(asked).to_be_visible()
        expect(page.get_by_text("Awaiting Input", exact=True).first).to_be_visible()
        answer_tab = page.get_by_role("link", name="Required Action (1)", exact=True)
        expect(answer_tab).to_be_visible()
        asked.scroll_into_view_if_needed()
        screenshot(page, "required-actions-confirmation")
        answer_tab.click()
        _answer(page, "Reject", REASON)  # the task's tab: its one form

        # the answer reached the agent, which went on without the command: the task succeeded
        ended = run.airflow.wait_for_run(DAG_ID, run.run_id, timeout=RUN_WAIT_S)
        assert ended == "success", run.airflow.task_log(DAG_ID, run.run_id, TASK_ID)[-6000:]
        assert run.request()[0] == "success", run.request()
        assert run.confirmations() == [{"accept": False, "reason": REASON}]
        page.goto(run.task_url)  # its log (lines still wrapped: the setting is kept)
        expect(page.get_by_text(f"Rejected by {user}: terminal `{COMMAND}`").first).to_be_visible()
