"""Confirmations routed to a person: ``on_confirmation="ask"`` through Airflow's human-in-the-loop.

When the agent waits for confirmation (OpenHands' confirmation mode), the engine hands the task an
:class:`~airflow_provider_openhands.engine.actions.AskPerson`. The task writes a HITL request (the
"Required actions" view: the pending actions, the conversation link, Approve / Reject with a reason)
and waits for the answer without a worker slot: Airflow >= 3.3 parks the task in
``awaiting_input`` (``TaskAwaitingInput``), 3.1 and 3.2 defer to the standard provider's
``HITLTrigger``. The answer resumes the task with the lifecycle; the engine gives it to the agent
and goes back to waiting. No answer within ``confirmation_timeout`` rejects (the request's default
is Reject), never approves.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_openhands.exceptions import OpenHandsConfigError

ON_CONFIRMATION = ("ask", "approve", "reject", "fail")
APPROVE, REJECT = "Approve", "Reject"
PARAMS = {
    "reason": {
        "value": "",
        "description": "Why (on Reject, the agent reads it and goes on without the actions)",
        "schema": {"type": ["string", "null"]},
    }
}


def hitl_available() -> bool:
    """Airflow's human-in-the-loop (``upsert_hitl_detail``) exists: Airflow >= 3.1."""
    try:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail  # noqa: F401
    except ImportError:
        return False
    return True


def checked_on_confirmation(value: str | None) -> str:
    """``on_confirmation`` as given, or its default: ``ask`` where Airflow can ask a person, else ``fail``."""
    if value is None:
        return "ask" if hitl_available() else "fail"
    if value not in ON_CONFIRMATION:
        raise OpenHandsConfigError(f"on_confirmation must be one of {list(ON_CONFIRMATION)}, got {value!r}")
    if value == "ask" and not hitl_available():
        raise OpenHandsConfigError(
            "on_confirmation='ask' needs Airflow >= 3.1 (human-in-the-loop); use 'fail', 'reject' or 'approve'"
        )
    return value


def ask_person(operator: Any, context: Any, lifecycle: dict[str, Any], action: Any, link: str) -> None:
    """Write the HITL request for ``action``'s pending actions and wait for the answer (never returns)."""
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_openhands.engine.engine import describe_action

    ti = context["ti"]
    listed = "\n".join(f"- {describe_action(pending)}" for pending in action.actions)
    seconds = answer_within(operator, lifecycle)
    body = str(
        redact(
            f"The OpenHands agent of `{ti.dag_id}.{ti.task_id}` waits for a person to confirm "
            f"{'this action' if len(action.actions) == 1 else 'these actions'} "
            f"in conversation [{action.conversation_id}]({link}):\n\n{listed}\n\n"
            f"**{APPROVE}** lets the agent run {'it' if len(action.actions) == 1 else 'them'}; **{REJECT}** tells it "
            f"why (the reason below) and it goes on without. No answer within {duration(seconds)} rejects.\n\n"
            "A later confirmation of this task (before Airflow 3.4) shows this text again: its actions are "
            "in the task's log."
        )
    )
    request_input(
        operator,
        ti,
        options=[APPROVE, REJECT],
        subject=f"OpenHands asks to confirm the agent's next action ({ti.task_id})",
        body=body,
        params=PARAMS,
        method_name="execute_confirmation",
        kwargs={"lifecycle": lifecycle},
        seconds=seconds,
    )


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def answer_within(operator: Any, lifecycle: dict[str, Any]) -> float:
    """``confirmation_timeout``, but no later than the wait's own deadline (``timeout``): an approval
    given after it would only be followed by the task pausing the conversation and failing."""
    import time

    ends = [d for d in (lifecycle.get("deadline"), lifecycle.get("hard_deadline")) if isinstance(d, (int, float))]
    left = min(ends) - time.time() if ends else float(operator.confirmation_timeout)
    return max(1.0, min(float(operator.confirmation_timeout), left))


def request_input(
    operator: Any,
    ti: Any,
    *,
    options: list[str],
    subject: str,
    body: str,
    params: dict[str, Any],
    method_name: str,
    kwargs: dict[str, Any],
    seconds: float | None = None,
) -> None:
    """Write a HITL request whose default (on timeout) is the last option, and wait for its answer
    without a worker slot: ``awaiting_input`` on Airflow >= 3.3, ``HITLTrigger`` on 3.1 and 3.2.
    Never returns: the task resumes in ``method_name`` with ``kwargs`` and the ``event``."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    defaults = [options[-1]]
    upsert_hitl_detail(
        ti_id=ti.id, options=options, subject=subject, body=body, defaults=defaults, multiple=False, params=params
    )
    timeout = timedelta(seconds=operator.confirmation_timeout if seconds is None else seconds)
    try:
        from airflow.sdk.exceptions import TaskAwaitingInput  # Airflow >= 3.3: no trigger, no slot
    except ImportError:
        from airflow.providers.standard.triggers.hitl import HITLTrigger

        trigger = HITLTrigger(
            ti_id=ti.id,
            options=options,
            params=params,
            defaults=defaults,
            multiple=False,
            timeout_datetime=datetime.now(timezone.utc) + timeout,
        )
        operator.defer(trigger=trigger, method_name=method_name, kwargs=kwargs)
    raise TaskAwaitingInput(method_name=method_name, kwargs=kwargs, timeout=timeout)


def answer_of(event: Any) -> dict[str, Any]:
    """The person's answer as the engine gives it: ``{"accept", "reason", "by"}``. A timeout, or an
    answer that cannot be read, rejects."""
    event = event if isinstance(event, dict) else {}
    chosen = event.get("chosen_options") or []
    user = event.get("responded_by_user") or {}
    given = event.get("params_input") or {}
    # before Airflow 3.4 a task's later request keeps its first one's form: a plan review's "comment"
    reason = str(given.get("reason") or given.get("comment") or "").strip()
    if event.get("error") or not chosen:
        why = event.get("error") or "no answer"
        return {"accept": False, "reason": f"No one answered in Airflow ({why})", "by": "Airflow (no answer)"}
    if event.get("timedout") or not user:
        return {"accept": False, "reason": "No one answered in Airflow within confirmation_timeout", "by": "timeout"}
    accept = chosen == [APPROVE]
    by = str(user.get("name") or user.get("id") or "a person")
    return {"accept": accept, "reason": reason or ("" if accept else f"rejected by {by} in Airflow"), "by": by}
