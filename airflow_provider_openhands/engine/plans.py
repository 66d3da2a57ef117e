"""``plan_first``: the stages of a task whose agent plans first, and what each stage sends. Pure.

How OpenHands hands a plan on (read in the open-source server and its web UI, and checked on it):
the plan agent (``agent_type: "plan"``) may only write ``.agents_tmp/PLAN.md`` in the project
directory; the UI's **Build** button then sends "Execute the plan based on the .agents_tmp/PLAN.md
file." to a default-agent conversation that shares the sandbox. Through the API the provider does
the same: once a person approves, it starts a default conversation with ``parent_conversation_id``
set to the plan conversation (the service gives it the same sandbox, so the same workspace and
PLAN.md) and that message. Revise sends the person's comment to the plan conversation as a
follow-up turn and asks again; Reject, or no answer within ``confirmation_timeout``, fails the task.

``Lifecycle.plan`` holds the stage: ``{"stage": "planning" | "building", "round", "task": the task's
own start options, "comment": the newest Revise comment, "of": the plan conversation, "text": the
plan shown, "review": {"decision", "comment", "by"} once a person answered}``. The engine moves from
stage to stage (:meth:`~airflow_provider_openhands.engine.engine.Engine.step`); a deferral, a retry
from the task state store and a triggerer restart all resume where the task was.
"""

from __future__ import annotations

import uuid
from typing import Any

PLAN_FILE = ".agents_tmp/PLAN.md"
BUILD_MESSAGE = "Execute the plan based on the .agents_tmp/PLAN.md file."
APPROVE, REVISE, REJECT = "Approve", "Revise", "Reject"
#: The most characters of a plan kept in the lifecycle (trigger kwargs, the state store) and the result.
PLAN_CHARS = 20_000
PLANNING, BUILDING = "planning", "building"


def first_stage(options: dict[str, Any], plan: dict[str, Any] | None) -> dict[str, Any]:
    """The plan a task begins with (or the stored one it resumes), holding the task's own options:
    a resumed ``@task.openhands`` has no message of its own."""
    return {**(plan or {"stage": PLANNING, "round": 0}), "task": dict(options)}


def stage_options(plan: dict[str, Any]) -> dict[str, Any]:
    """The start (or follow-up) options of the stage ``plan`` names, from the task's own options."""
    options = dict(plan["task"])
    extra = dict(options.get("extra_body") or {})
    if plan["stage"] == PLANNING:
        if plan.get("round"):
            message = f"Revise the plan (round {plan['round'] + 1}): {plan['comment']}"
            return {**options, "initial_user_msg": message, "extra_body": extra}
        return {**options, "extra_body": {**extra, "agent_type": "plan"}}
    message = f"{BUILD_MESSAGE}\n\nThe task it plans:\n{options['initial_user_msg']}"
    return {**options, "initial_user_msg": message, "extra_body": {**extra, "parent_conversation_id": plan["of"]}}


def planning(plan: dict[str, Any] | None) -> bool:
    return bool(plan) and plan.get("stage") == PLANNING


def building(plan: dict[str, Any] | None) -> bool:
    return bool(plan) and plan.get("stage") == BUILDING


def stage_key(key: str, plan: dict[str, Any] | None) -> str:
    """The ids' key of a stage: a build asks for ids of its own, and of the plan it carries out (a
    retry without the task state store, whose person revised the plan, does not adopt the build of
    an older one)."""
    if not key or not plan or not building(plan):
        return key
    digest = uuid.uuid5(uuid.NAMESPACE_URL, str(plan.get("text") or "")).hex[:12]
    return f"{key}:build:{plan.get('round') or 0}:{digest}"
