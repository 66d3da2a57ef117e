"""A task's conversation as one explicit, serializable state, and the ids it asks for.

Every path that resumes a task reads this state and nothing else: ``execute`` after a retry (from
the task state store on Airflow >= 3.3, else rebuilt from the deterministic ids), the method a
trigger resumes (from the trigger's event, which carries it back), and the trigger itself (from
its serialized kwargs). Deadlines are absolute (epoch seconds), so a triggerer restart, a move to
another triggerer, or a resume in another worker continues the same wait, never a fresh or a
shorter one. No secrets: the API key and ``secrets=`` never enter it.

The phases, in the order a conversation lives them (see :mod:`airflow_provider_openhands.engine.engine`):
``begin`` -> ``reconnect`` (a retry looks for what an earlier try started) -> ``start`` (send the
start request) -> ``starting`` (a V1 start task works) -> ``running`` (wait for the turn's end) ->
``done`` (read the results, pause, return); a follow-up turn goes ``follow_up`` (resume the
sandbox, send the message once) -> ``running``; ``capacity`` (the account was full: try again at
``wake_time``) can follow ``start``, ``starting`` and ``follow_up``; ``closing`` stops what the task
started before it fails with ``verdict``. With ``plan_first`` a plan turn's ``done`` leads to a
person's review, then to the revision (``follow_up``) or the build (``start``: a lifecycle of its own
in the same series and try).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

PHASE_BEGIN = "begin"
PHASE_RECONNECT = "reconnect"
PHASE_START = "start"
PHASE_CAPACITY = "capacity"
PHASE_STARTING = "starting"
PHASE_FOLLOW_UP = "follow_up"
PHASE_RUNNING = "running"
PHASE_CLOSING = "closing"
PHASE_DONE = "done"
PHASES = (
    PHASE_BEGIN,
    PHASE_RECONNECT,
    PHASE_START,
    PHASE_CAPACITY,
    PHASE_STARTING,
    PHASE_FOLLOW_UP,
    PHASE_RUNNING,
    PHASE_CLOSING,
    PHASE_DONE,
)

#: Key of the lifecycle in the task state store (Airflow >= 3.3).
STATE_STORE_KEY = "openhands_lifecycle"
#: Seconds a task that gives up on its start (timeout, kill) waits at least for the start task's sandbox to
#: pause it. A task that fails for good watches a start task still working longer (another ``start_timeout``,
#: within Airflow's execution_timeout): once it names its sandbox, its agent would run unwatched.
START_STOP_GRACE = 30.0
#: How many id generations (start tasks that failed for capacity, ids taken) a retry looks for.
MAX_GENERATIONS = 8
#: The start options every trigger event carries back (small): they name a mapped task instance.
NAMING_OPTIONS = ("repository", "selected_branch")


@dataclass
class Lifecycle:
    """Where one task instance's conversation stands. ``options`` never holds secrets."""

    series: int = 1  # first try number since the task was last cleared: tries of one series share a conversation
    try_number: int = 1
    max_tries: int | None = (
        None  # Airflow's: a retry follows a retried kind while try_number <= max_tries (None: unknown)
    )
    phase: str = PHASE_BEGIN
    key: str = ""  # what the deterministic ids derive from (conversation_key); empty: ids chosen by the server
    since: str | None = None  # ISO time no later than this series' first try (the DAG run's start, less a minute)
    run_started: str | None = None  # the DAG run's start (ISO): a follow-up's retry looks for its message since
    generation: int = 0  # bumps when a start task failed for capacity: that id is spent
    attempt: int = 0  # attempts refused for capacity so far (backoff)
    client_id: str | None = None  # the conversation id asked for
    start_task_id: str | None = None
    conversation_id: str | None = None  # the conversation exists (or, for a follow-up, the one to continue)
    sandbox_id: str | None = None
    follow_up: bool = False  # continue conversation_id with a new turn instead of starting one
    started_at: float = 0.0
    series_started: float | None = None  # this series' first try began (known to it, and to retries by the store)
    start_timeout: float = 900.0
    wait_timeout: float = 24 * 3600.0
    start_deadline: float | None = None
    resume_deadline: float | None = None
    deadline: float | None = None  # the conversation must end by then
    hard_deadline: float | None = None  # Airflow's execution_timeout, less a margin
    capacity_deadline: float | None = None
    wake_time: float | None = None
    after_capacity: str = PHASE_START  # the phase a capacity wait returns to
    sent_at: str | None = None  # a follow-up's message was sent (or found sent) at this time
    send_checked: bool = False  # a retry looked for its earlier send
    #: When (service clock, give or take ``CLOCK_SKEW``) this task's message went in: ``[from, until]``.
    #: The turn is the one that follows it: another run's message on the same conversation is not it.
    sent_window: list[float] | None = None
    conflicts: int = 0  # a send met 409 (paused meanwhile) this many times
    failing_since: float | None = None  # transient failures since (survives reschedules and deferrals)
    refused_since: float | None = None  # a wait's reads meet 401 since (a key-rotation gap), until that kind works
    sandbox_error_since: float | None = None  # the sandbox has read ERROR since (this episode)
    sandbox_error_read: float | None = None  # the last read of ERROR
    sandbox_error_unseen: bool = False  # a read failed since: the time to the next ERROR read is not counted
    sandbox_error_seen: float = 0.0  # seconds of ERROR seen between reads this episode
    disagree_since: float | None = None  # the status reads ended, the events show the turn going on, since
    error_checked: bool = False  # a lasting ERROR's events showed no end: the next reading (newer) decides
    before_send: str | None = None  # a follow-up: ``updated_at`` read just before its message went
    turn_moved: bool = False  # ... and a reading since showed the conversation moved (newer, or not ended)
    turn_seen: str | None = None  # the conversation's answer (status, updated_at) when its events last read no end
    turn_read_at: float | None = None  # ... read then
    turn_reads: int = 0  # events reads of that same answer (a backoff between them)
    auth_reread_for: list[str] = field(default_factory=list)  # kinds of request a 401 read the connection again for
    unstopped: str | None = None  # a conversation an earlier series left running, its key refused: a clear waits on it
    killed: bool = False  # the task was killed and paused its conversation: a retry resumes it
    events_unreadable: bool = False  # events/search failed for good: statuses are taken as they read
    published: str | None = None  # the id this try already put in XCom and the log
    last_status: str | None = None
    outcome: str | None = None  # the final status once done
    end_state: dict[str, Any] | None = None  # the conversation as read when its turn ended (no second read for it)
    final_message: str | None = None  # the agent's last word in this turn, read with its end
    turn_read: bool = False  # final_message was read from the turn's events
    error: str | None = None  # the agent's own last error in this turn (cut short), read with its end
    verdict: dict[str, Any] | None = None  # closing: {"kind", "message"} the task fails with
    to_stop: str | None = None  # closing: "conversation", "start_task", or "lookup" (the id asked for) still to stop
    stop_by: float | None = None  # closing: a start task still working is watched until then for a sandbox to pause
    output_file: str | None = None  # output_schema: the file this turn's agent must write (absolute)
    confirming: bool = False  # the conversation waits for confirmation: read which actions next
    confirm_noted: bool = False  # on_confirmation="wait": this wait's actions were logged
    pending_actions: list[dict[str, Any]] = field(default_factory=list)  # the actions being answered
    confirmation: dict[str, Any] | None = None  # the answer to give them: {"accept", "reason", "by"}
    answered_actions: list[str] = field(default_factory=list)  # ids answered already (the newest 50)
    run_on: str | None = None  # after this task's rejection: "armed" (run the agent on if it stays idle), "due"
    idle_since: float | None = None  # after this task's rejection the conversation reads idle since
    plan: dict[str, Any] | None = None  # plan_first: the stage and the plan (see engine/plans.py)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Lifecycle:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in dict(data or {}).items() if key in known})

    def for_trigger(self, *, with_options: bool = True) -> dict[str, Any]:
        """The state without fields at their defaults, for trigger kwargs and events. Events leave the start
        options out (Airflow logs every event) unless the task must start again from them, and what the
        worker has anyway (the id key, the last status line); they keep the repository and branch
        (:data:`NAMING_OPTIONS`), which name a mapped task instance when the task resumes."""
        defaults = Lifecycle().to_dict()
        data = {key: value for key, value in self.to_dict().items() if value != defaults[key]}
        if not with_options:
            for bulky in ("options", "last_status", "key"):
                data.pop(bulky, None)
            naming = {key: self.options[key] for key in NAMING_OPTIONS if self.options.get(key)}
            if naming:
                data["options"] = naming
        return data

    def capped(self, moment: float | None) -> float | None:
        """A deadline no later than Airflow's own execution_timeout allows."""
        if moment is None:
            return self.hard_deadline
        return moment if self.hard_deadline is None else min(moment, self.hard_deadline)

    def conversation_known(self, conversation_id: str, ready_at: float, sandbox_id: str | None = None) -> None:
        """The conversation exists: its end is due ``wait_timeout`` after it was ready."""
        self.conversation_id = conversation_id
        self.sandbox_id = sandbox_id or self.sandbox_id
        self.phase = PHASE_RUNNING
        if self.deadline is None:  # uncapped: each try caps it by its own execution_timeout
            self.deadline = ready_at + self.wait_timeout


#: The lifecycle's clocks: when a time-based rule began to count (transient failures, a refused key, a
#: sandbox's ERROR episode, a status the events disagree with, idle polls before a run-on).
CLOCKS = ("failing_since", "refused_since", "sandbox_error_since", "disagree_since", "idle_since")


#: An outage's clock (``failing_since``) is handed back to be stored once it ran this long (or a
#: quarter of ``unreachable_timeout``, if less): a blip (one 429 or 503 on a batch that every wait
#: hears) must not send every deferred task of the triggerer back to a worker, twice.
OUTAGE_SAVE_AFTER = 30.0


def unsaved_clock(
    stored: Lifecycle,
    current: Lifecycle,
    sandbox_error_grace: float,
    *,
    now: float | None = None,
    unreachable_timeout: float | None = None,
) -> str | None:
    """The clock that started or stopped since ``stored`` was saved, or the ERROR seen that grew by
    half a grace; None if none did. With ``now``, an outage's clock that started since counts only
    once it ran :data:`OUTAGE_SAVE_AFTER` (or a quarter of ``unreachable_timeout``).

    Airflow keeps a trigger's kwargs as they were when the task deferred, and a triggerer restart
    rebuilds the trigger from them: a clock kept only in the trigger's memory would count from zero
    after each restart, and a triggerer killed often enough would never let it run out. A trigger
    hands its wait back when this names a clock, so the worker defers again with it stored: at most
    twice per clock episode (its start and its stop), and twice more per ``sandbox_error_grace``.
    """
    for name in CLOCKS:
        started = getattr(current, name)
        if getattr(stored, name) == started:
            continue
        outage = name in ("failing_since", "refused_since")  # a transient failure, a key refused: one patience
        if outage and now is not None and getattr(stored, name) is None and started is not None:
            young = (
                OUTAGE_SAVE_AFTER if unreachable_timeout is None else min(OUTAGE_SAVE_AFTER, unreachable_timeout / 4)
            )
            if now - started < young:
                continue
        return name
    if current.sandbox_error_seen - stored.sandbox_error_seen >= sandbox_error_grace / 2:
        return "sandbox_error_seen"
    return None


def series_start(try_number: int, max_tries: int | None, retries: int | None) -> int:
    """The first try of the current series: a clear starts a new one, a retry does not.

    Airflow sets ``max_tries = retries`` for a new task instance and ``max_tries = try_number +
    retries`` when it is cleared, and leaves it alone on a retry.
    """
    if max_tries is None or retries is None or max_tries < 0:
        return 1
    return max(1, min(try_number, max_tries - retries + 1))


def conversation_key(
    *,
    conn_id: str,
    namespace: str | None,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int,
    run_started: str | None = None,
) -> str:
    """What the deterministic ids derive from. The connection (and ``id_namespace``) salt them, and so
    does the moment this deployment started the DAG run: two deployments (staging and production)
    that share an API key, a connection id and a ``scheduled__...`` run id never ask for the same
    conversation, so neither can take over or adopt the other's."""
    return f"airflow-provider-openhands:{conn_id}:{namespace or ''}:{dag_id}:{task_id}:{run_id}:{map_index}" + (
        f":{run_started}" if run_started else ""
    )


def client_id(key: str, try_number: int, generation: int = 0) -> str:
    """The conversation id one try (and id generation) asks for."""
    suffix = f":{try_number}" + (f":{generation}" if generation else "")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key + suffix))


def candidate_ids(lc: Lifecycle, generations: int) -> list[str]:
    """The ids the earlier tries of this series may have asked for, newest try first."""
    if not lc.key:
        return []
    tries = range(lc.try_number - 1, lc.series - 1, -1)
    return [client_id(lc.key, t, g) for t in tries for g in range(generations)]
