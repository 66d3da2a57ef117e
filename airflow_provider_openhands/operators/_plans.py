"""``plan_first`` in Airflow: the plan's review through human-in-the-loop (Approve / Revise / Reject).

The stages and what each sends are the engine's (:mod:`airflow_provider_openhands.engine.plans`,
which also says how OpenHands hands a plan on); here is only what a person sees and answers.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openhands.engine.plans import APPROVE, REJECT, REVISE

PARAMS = {
    "comment": {
        "value": "",
        "description": "What to change in the plan (Revise), or why not (Reject)",
        "schema": {"type": ["string", "null"]},
    }
}


def ask_review(operator: Any, context: Any, lifecycle: dict[str, Any], review: Any, link: str) -> None:
    """Show the plan for approval (Airflow's human-in-the-loop) and wait without a worker slot."""
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_openhands.operators._confirmations import answer_within, duration, request_input

    ti = context["ti"]
    seconds = answer_within(operator, {**lifecycle, "deadline": None})  # the plan's turn is over: its deadline too
    body = str(
        redact(
            f"The OpenHands agent of `{ti.dag_id}.{ti.task_id}` wrote this plan in conversation "
            f"[{review.conversation_id}]({link}) (round {review.round + 1}):\n\n{review.text or '(empty)'}\n\n"
            f"**{APPROVE}** has it carried out; **{REVISE}** sends your comment to the agent and asks again; "
            f"**{REJECT}** fails the task. No answer within {duration(seconds)} rejects.\n\n"
            "A later round of this task (before Airflow 3.4) shows this text again: the new plan is in the "
            "task's log and the conversation."
        )
    )
    request_input(
        operator,
        ti,
        options=[APPROVE, REVISE, REJECT],
        subject=f"OpenHands plan to review ({ti.task_id})",
        body=body,
        params=PARAMS,
        method_name="execute_plan_review",
        kwargs={"lifecycle": lifecycle},
        seconds=seconds,
    )


def review_of(event: Any) -> tuple[str, str, str]:
    """``(decision, comment, who)``: a timeout or an unreadable answer is a rejection."""
    event = event if isinstance(event, dict) else {}
    chosen = event.get("chosen_options") or []
    user = event.get("responded_by_user") or {}
    given = event.get("params_input") or {}
    # before Airflow 3.4 a task's later request keeps its first one's form: a confirmation's "reason"
    comment = str(given.get("comment") or given.get("reason") or "").strip()
    if event.get("error") or not chosen or event.get("timedout") or not user:
        return REJECT, "no one answered within confirmation_timeout", "timeout"
    return str(chosen[0]), comment, str(user.get("name") or user.get("id") or "a person")
