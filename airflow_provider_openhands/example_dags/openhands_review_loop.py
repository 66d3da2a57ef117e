"""A human reviews the agent's change in Airflow and sends it back with comments (Airflow >= 3.1).

``propose`` asks OpenHands for a change and waits for the end. ``review_1`` is a human-in-the-loop
task of the standard provider (``HITLOperator``, in the "Required actions" view): its body shows the
agent's final message, the files it changed, its PRs and the conversation link (templated from the
turn's XCom), and it asks **approve** or **request changes** with a ``comment`` field.
``decide_1`` branches on the answer: approve -> ``approved_1`` -> ``report_pr``, which reports the
PR link; request changes -> ``revise_1`` sends the comment as a follow-up turn to the same
conversation (``OpenHandsSendMessageOperator``) and waits for it, then ``review_2`` shows the new
result. A DAG has no loops, so the rounds are unrolled: at most ``MAX_FOLLOW_UPS`` (2) follow-up
turns, so at most three reviews; changes requested at the last review go to
``changes_still_requested``, which names the conversation to continue by hand. A review nobody
answers within ``REVIEW_TIMEOUT`` fails (no default answer: nothing is approved by silence).

On Airflow 2.11 (or 3.0) this file defines no DAG: human-in-the-loop needs Airflow 3.1.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, AirflowOptionalProviderFeatureException, Param, task

try:  # Airflow >= 3.1: the standard provider's human-in-the-loop operators
    from airflow.providers.standard.operators.hitl import HITLOperator
except (ImportError, AirflowOptionalProviderFeatureException):
    HITLOperator = None

from airflow_provider_openhands.operators.openhands import (
    OpenHandsSendMessageOperator,
    OpenHandsStartConversationOperator,
)

POLL_SECONDS = float(os.environ.get("OPENHANDS_EXAMPLE_POLL_SECONDS", "30"))
MAX_FOLLOW_UPS = 2
REVIEW_TIMEOUT = timedelta(days=2)
APPROVE, REQUEST_CHANGES = "approve", "request changes"
CONVERSATION_ID = "{{ ti.xcom_pull(task_ids='propose')['conversation_id'] }}"

#: The review's body (Markdown), from the reviewed turn's result in XCom.
REVIEW_BODY = """{% set turn = ti.xcom_pull(task_ids='TURN') %}
**What the agent says**

{{ turn.final_message or "(no final message)" }}

**Files changed**

{% for f in turn.changed_files or [] %}- `{{ f.path }}` ({{ f.status }})
{% else %}- none
{% endfor %}
**Pull requests:** {{ (turn.pr_urls or []) | join(", ") or "none yet" }}

**Conversation:** {{ turn.url }}
"""

#: The follow-up turn: the reviewer's comment, as entered in the review form.
FOLLOW_UP = """{% set comment = ti.xcom_pull(task_ids='REVIEW')['params_input']['comment'] %}\
A reviewer looked at your change and requested changes:

{{ comment or "(no comment given: review your change once more and improve it)" }}

Make these changes and push them to the same branch and pull request."""


if HITLOperator is not None:
    with DAG(
        dag_id="openhands_review_loop",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={
            "repository": Param("acme/app", type="string"),
            "task": Param("Fix the failing unit tests and open a pull request.", type="string"),
        },
        tags=["openhands", "example", "human-in-the-loop"],
        doc_md=__doc__,
    ) as dag:
        agent_options = {"deferrable": True, "poll_interval": POLL_SECONDS, "pool": "openhands"}
        turn = OpenHandsStartConversationOperator(
            task_id="propose",
            initial_user_msg="{{ params.task }}",
            repository="{{ params.repository }}",
            wait_for_completion=True,
            **agent_options,
        )

        @task.branch
        def decide(answer: dict, approved: str, changes: str) -> str:
            chosen = answer["chosen_options"][0]
            print(f"Reviewer chose {chosen!r}: {answer['params_input'].get('comment') or '(no comment)'}")
            return approved if chosen == APPROVE else changes

        @task
        def approved(state: dict) -> dict:
            return state

        @task(trigger_rule="none_failed_min_one_success")
        def report_pr(ti=None) -> str:
            """Report the approved turn's PR (only one ``approved_<n>`` ran; the others were skipped)."""
            ids = [f"approved_{n}" for n in range(1, MAX_FOLLOW_UPS + 2)]
            (state,) = [s for s in (ti.xcom_pull(task_ids=i) for i in ids) if s]
            prs = ", ".join(state.get("pr_urls") or []) or "no PR was opened"
            message = f"Approved: {prs} ({state['url']})"
            print(message)
            return message

        @task
        def changes_still_requested(state: dict, answer: dict) -> str:
            comment = answer["params_input"].get("comment") or "(no comment)"
            message = (
                f"Changes still requested after {MAX_FOLLOW_UPS} follow-ups ({comment}): continue the "
                f"conversation by hand at {state['url']}"
            )
            print(message)
            return message

        report = report_pr()
        for n in range(1, MAX_FOLLOW_UPS + 2):
            review = HITLOperator(
                task_id=f"review_{n}",
                subject=f"Review OpenHands' change to {{{{ params.repository }}}} (review {n})",
                body=REVIEW_BODY.replace("TURN", turn.task_id),
                options=[APPROVE, REQUEST_CHANGES],
                params={"comment": Param("", type="string", description="What to change (sent to the agent)")},
                response_timeout=REVIEW_TIMEOUT,
            )
            turn >> review
            last = n == MAX_FOLLOW_UPS + 1
            changes = "changes_still_requested" if last else f"revise_{n}"
            route = decide.override(task_id=f"decide_{n}")(review.output, f"approved_{n}", changes)
            route >> approved.override(task_id=f"approved_{n}")(turn.output) >> report
            if last:
                route >> changes_still_requested(turn.output, review.output)
            else:
                revise = OpenHandsSendMessageOperator(
                    task_id=changes,
                    conversation_id=CONVERSATION_ID,
                    message=FOLLOW_UP.replace("REVIEW", review.task_id),
                    **agent_options,
                )
                route >> revise
                turn = revise
