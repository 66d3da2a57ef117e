"""``plan_first=True``: the agent plans, a person approves in Airflow, then the plan is carried out.

How OpenHands hands a plan on (read in the open-source server and its web UI, and checked on it):
the plan agent (``agent_type: "plan"``) may only write ``.agents_tmp/PLAN.md`` in the project
directory; the UI's **Build** button then sends "Execute the plan based on the .agents_tmp/PLAN.md
file." to a default-agent conversation that shares the sandbox. Through the API the provider does
the same: once a person approves, it starts a default conversation with ``parent_conversation_id``
set to the plan conversation (the service gives it the same sandbox, so the same workspace and
PLAN.md) and that message. Revise sends the person's comment to the plan conversation as a
follow-up turn and asks again; Reject, or no answer within ``confirmation_timeout``, fails the task.

The stage lives in the lifecycle (``Lifecycle.plan``), so a deferral, a retry from the task state
store and a triggerer restart all resume where the task was.
"""

from __future__ import annotations

from typing import Any

PLAN_FILE = ".agents_tmp/PLAN.md"
BUILD_MESSAGE = "Execute the plan based on the .agents_tmp/PLAN.md file."
APPROVE, REVISE, REJECT = "Approve", "Revise", "Reject"
PARAMS = {
    "comment": {
        "value": "",
        "description": "What to change in the plan (Revise), or why not (Reject)",
        "schema": {"type": ["string", "null"]},
    }
}
#: The most characters of a plan kept in the lifecycle (trigger kwargs, the state store) and the result.
PLAN_CHARS = 20_000


def stage_options(options: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The start (or follow-up) options of the stage ``plan`` names, from the task's own options."""
    extra = dict(options.get("extra_body") or {})
    if plan["stage"] == "planning":
        if plan.get("round"):
            return {**options, "initial_user_msg": f"Revise the plan: {plan['comment']}", "extra_body": extra}
        return {**options, "extra_body": {**extra, "agent_type": "plan"}}
    message = f"{BUILD_MESSAGE}\n\nThe task it plans:\n{options['initial_user_msg']}"
    return {**options, "initial_user_msg": message, "extra_body": {**extra, "parent_conversation_id": plan["of"]}}


def ask_review(operator: Any, context: Any, lifecycle: dict[str, Any], plan: dict[str, Any], link: str) -> None:
    """Show the plan for approval (Airflow's human-in-the-loop) and wait without a worker slot."""
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_openhands.operators._confirmations import answer_within, duration, request_input

    ti = context["ti"]
    seconds = answer_within(operator, {**lifecycle, "deadline": None})  # the plan's turn is over: its deadline too
    body = str(
        redact(
            f"The OpenHands agent of `{ti.dag_id}.{ti.task_id}` wrote this plan in conversation "
            f"[{plan['of']}]({link}) (round {plan.get('round', 0) + 1}):\n\n{plan.get('text') or '(empty)'}\n\n"
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
