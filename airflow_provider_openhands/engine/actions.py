"""What the engine asks its drivers to do, and what they tell it back. Plain data, no I/O.

One observation in, one action out: a driver runs the action (a request, a sleep, a deferral, a
task result) and feeds back an :class:`Answer` or a :class:`Problem`. Actions are serializable
(``to_dict``), so a trigger can hand one it does not run back to the worker in its event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Action:
    def to_dict(self) -> dict[str, Any]:
        return {"action": type(self).__name__, **dataclasses.asdict(self)}


# -- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconnect(Action):
    """A retry: read what the earlier tries of this series may have started (conversations by id,
    the ended status of paused ones, V1 start tasks created since ``since``); also a try no retry
    follows, whose start answer was lost: what it started under the id it asked for. Answer: ``{"conversations":
    {id: state | None}, "ended": {id: status | None}, "start_tasks": [task, ...]}``."""

    conversation_ids: tuple[str, ...]
    since: str | None
    start_task_id: str | None = None  # the one the task state store remembers


@dataclass(frozen=True)
class PostStart(Action):
    """Send the start request once, asking for ``client_id``. Answer: ``{"conversation_id", "start_task"}``."""

    client_id: str | None


@dataclass(frozen=True)
class Publish(Action):
    """Put the conversation's id and link in XCom and the log (as soon as the id is known). Answer: None."""

    conversation_id: str


@dataclass(frozen=True)
class ReadStartTask(Action):
    """Read a V1 start task, not before ``at`` (epoch seconds). Answer: the task or None."""

    start_task_id: str
    at: float = 0.0


@dataclass(frozen=True)
class ReadConversation(Action):
    """Read the conversation, not before ``at``. ``poll``: a wait on its end (the triggerer's work in
    deferrable mode); else a read the worker makes at once. Answer: the normalised state or None."""

    conversation_id: str
    at: float = 0.0
    poll: bool = True


@dataclass(frozen=True)
class ReadTurn(Action):
    """Read the newest turn from the events, or with ``own`` (the message, and the service time
    ``[from, until]`` it went in) the turn that follows this task's own message. Answer: ``{"status",
    "live", "final_message", "error", "ambiguous"}``; ``ambiguous`` says why the events cannot tell
    which end is this message's (another message went in meanwhile), else None."""

    conversation_id: str
    own: tuple[str, float, float] | None = None


@dataclass(frozen=True)
class FindSend(Action):
    """A follow-up's retry: the time of this task's message among the user messages sent since
    ``since`` (None if not there). Answer: an ISO time or None."""

    conversation_id: str
    since: str | None


@dataclass(frozen=True)
class ReadPending(Action):
    """V1: the agent's actions that wait for confirmation. Answer: ``[{"id", "tool", "summary",
    "security_risk"}, ...]``, oldest first (empty: answered meanwhile)."""

    conversation_id: str


@dataclass(frozen=True)
class Confirm(Action):
    """Answer the pending actions on the conversation's agent server: accept, or reject with
    ``reason`` (the agent is then told to go on, and reads the reason). Answer: anything."""

    conversation_id: str
    accept: bool
    reason: str


@dataclass(frozen=True)
class RunOn(Action):
    """Run the agent on (its agent server's ``/run``): after this task's rejection it stays idle, the
    ``/run`` sent with the rejection having failed. Only if the conversation, read just before, is
    idle. Answer: True, or False if it was not (nothing was sent)."""

    conversation_id: str


@dataclass(frozen=True)
class AskPerson(Action):
    """Ask a person to approve or reject ``actions`` (Airflow's human-in-the-loop). The task waits
    for the answer without a worker slot and resumes with it in ``Lifecycle.confirmation``."""

    conversation_id: str
    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ReadPlan(Action):
    """``plan_first``: read the plan the plan agent wrote (its plan file). Answer: the text, or None."""

    conversation_id: str


@dataclass(frozen=True)
class AskReview(Action):
    """``plan_first``: show the plan to a person (Approve, Revise with a comment, Reject) through
    Airflow's human-in-the-loop. The task waits without a worker slot and resumes with the decision
    in ``Lifecycle.plan["review"]``."""

    conversation_id: str
    text: str
    round: int


@dataclass(frozen=True)
class Send(Action):
    """Send the follow-up message. Answer: anything."""

    conversation_id: str


@dataclass(frozen=True)
class Resume(Action):
    """Resume a paused V1 sandbox. Answer: True, or False if it is gone."""

    sandbox_id: str


@dataclass(frozen=True)
class Pause(Action):
    """Stop the conversation: pause its sandbox (V1), stop it (V0). Answer: anything; a failure is logged."""

    conversation_id: str
    sandbox_id: str | None


@dataclass(frozen=True)
class PauseStartTask(Action):
    """Pause the sandbox of a start task that never became READY, waiting for it to name one until
    ``until`` (epoch seconds; None: ``START_STOP_GRACE`` from now). Answer: True (paused) or False (the
    start failed: nothing to pause); a problem if it still works at ``until``."""

    start_task_id: str
    until: float | None = None


@dataclass(frozen=True)
class RereadConnection(Action):
    """Read the connection again (a rotated API key), then the engine repeats what met the 401."""


# -- waits and ends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sleep(Action):
    """Nothing to do until ``until`` (a wait for a free slot): sleep, or defer without a worker slot."""

    until: float


@dataclass(frozen=True)
class Conclude(Action):
    """The turn ended with ``status``: read what it produced, pause the sandbox if asked, succeed or
    fail by the status."""

    conversation_id: str
    status: str


@dataclass(frozen=True)
class ReturnId(Action):
    """The task does not wait for the end: return the conversation id."""

    conversation_id: str


@dataclass(frozen=True)
class Fail(Action):
    """Fail the task. ``kind`` says how (see :data:`WAYS_OUT`)."""

    kind: str
    message: str


@dataclass(frozen=True)
class WayOut:
    """How one kind of :class:`Fail` reaches Airflow: the exception every driver raises (its name in
    ``airflow_provider_openhands.exceptions``: the engine imports no Airflow) and whether Airflow's
    retries follow (False: the class is an ``AirflowFailException``; tests/test_ways_out.py checks)."""

    exception: str
    retried: bool


#: The one table of the ways a task fails: each kind of :class:`Fail` the engine emits, the
#: exception the operator, the sensor and the trigger's worker raise for it, and whether Airflow
#: retries it (the README's table says the same).
WAYS_OUT = {
    "permanent": WayOut("OpenHandsPermanentError", False),  # 401/403/404/422, quota, archived: the same answer again
    "config": WayOut("OpenHandsConfigError", False),
    "timeout": WayOut("OpenHandsConversationTimeout", False),  # the conversation was stopped at its deadline
    "start_timeout": WayOut("OpenHandsStartTimeout", False),
    "budget": WayOut("OpenHandsBudgetExceeded", False),
    "capacity_timeout": WayOut("OpenHandsCapacityTimeout", False),
    "conversation_failed": WayOut("OpenHandsConversationFailed", False),
    "confirmation": WayOut("OpenHandsConfirmationRequired", False),  # a confirmation this task may not give
    "plan_rejected": WayOut("OpenHandsPermanentError", False),  # plan_first: the plan was rejected (or unanswered)
    "start_failed": WayOut("OpenHandsStartError", True),  # a start task in ERROR: a retry starts again
    "unreachable": WayOut("OpenHandsUnreachableError", True),  # the service kept failing: retries are for that
    "transient": WayOut("OpenHandsTransientError", True),  # a request that may have been acted on: the retry reconnects
    "killed": WayOut("OpenHandsError", True),  # nothing was left to stop; Airflow fails the try as it does
}

#: Kinds of :class:`Fail`, and whether Airflow's retries may help (from :data:`WAYS_OUT`).
FAILURES = {kind: way.retried for kind, way in WAYS_OUT.items()}


# -- observations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """A try begins (fresh lifecycle, or the one the task state store kept)."""


@dataclass(frozen=True)
class Continue:
    """The driver resumes from the state (after a deferral, a reschedule, a sleep): what next?"""


@dataclass(frozen=True)
class Tick:
    """Time passed with no answer (a deadline may have come)."""


@dataclass(frozen=True)
class Killed:
    """The task is being killed (worker ``on_kill``, SIGTERM, a user marking it; not a triggerer restart)."""


@dataclass(frozen=True)
class Answer:
    value: Any = None


@dataclass(frozen=True)
class Problem:
    """A request failed. ``kind``: transient, permanent, auth, not_found, capacity, quota, conflict (409),
    gone (410), invalid (422/400)."""

    kind: str
    message: str
    status_code: int | None = None
    limit: int | None = None
    current: int | None = None
