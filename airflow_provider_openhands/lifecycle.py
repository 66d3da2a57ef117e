"""A task's lifecycle as one explicit, serializable state.

Every path that resumes a task reads this state and nothing else: ``execute`` after a retry (from
the task state store on Airflow >= 3.3, else rebuilt from the deterministic ids), the method a
trigger resumes (from the trigger's event, which carries it back), and the trigger itself (from
its serialized kwargs). Deadlines are absolute (epoch seconds), so a triggerer restart, a move to another
triggerer, or a resume in another worker continues the same wait, never a fresh or a shorter one.

Phases: ``start`` (send the start request) -> ``starting`` (a V1 start task works) -> ``running``
(the conversation exists) -> ``done``; ``capacity`` (the account was full: start again at
``wake_time``) can follow ``start`` or ``starting``.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

PHASE_START = "start"
PHASE_CAPACITY = "capacity"
PHASE_STARTING = "starting"
PHASE_RUNNING = "running"
PHASE_DONE = "done"
PHASES = (PHASE_START, PHASE_CAPACITY, PHASE_STARTING, PHASE_RUNNING, PHASE_DONE)

#: Key of the lifecycle in the task state store (Airflow >= 3.3).
STATE_STORE_KEY = "openhands_lifecycle"
#: Seconds a task that gives up on its start (timeout, kill) waits for the start task's sandbox to pause it.
START_STOP_GRACE = 30.0
#: How many id generations (start tasks that failed for capacity) a retry looks for.
MAX_GENERATIONS = 8


@dataclass
class Lifecycle:
    """Where one task instance's conversation stands. ``options`` never holds secrets."""

    series: int = 1  # first try number since the task was last cleared: tries of one series share a conversation
    try_number: int = 1
    phase: str = PHASE_START
    generation: int = 0  # bumps when a start task failed for capacity: that id is spent
    attempt: int = 0  # start attempts refused for capacity so far (backoff)
    client_id: str | None = None  # the conversation id asked for
    start_task_id: str | None = None
    conversation_id: str | None = None
    sandbox_id: str | None = None
    started_at: float = 0.0
    start_timeout: float = 900.0
    wait_timeout: float = 24 * 3600.0
    start_deadline: float | None = None
    deadline: float | None = None  # the conversation must end by then
    hard_deadline: float | None = None  # Airflow's execution_timeout, less a margin
    capacity_deadline: float | None = None
    wake_time: float | None = None
    outcome: str | None = None  # the final status once done
    output_file: str | None = None  # output_schema: the file this turn's agent must write (absolute)
    turn_after: str | None = None  # a follow-up turn: only an end newer than this (updated_at) counts
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Lifecycle:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in dict(data or {}).items() if key in known})

    def for_trigger(self, *, with_options: bool = True) -> dict[str, Any]:
        """The state without fields at their defaults, for trigger kwargs and events. Events leave the start
        options out (Airflow logs every event) unless the task must start again from them."""
        defaults = Lifecycle().to_dict()
        data = {key: value for key, value in self.to_dict().items() if value != defaults[key]}
        if not with_options:
            data.pop("options", None)
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
        if self.deadline is None:
            self.deadline = self.capped(ready_at + self.wait_timeout)


def series_start(try_number: int, max_tries: int | None, retries: int | None) -> int:
    """The first try of the current series: a clear starts a new one, a retry does not.

    Airflow sets ``max_tries = retries`` for a new task instance and ``max_tries = try_number +
    retries`` when it is cleared, and leaves it alone on a retry.
    """
    if max_tries is None or retries is None or max_tries < 0:
        return 1
    return max(1, min(try_number, max_tries - retries + 1))


def conversation_key(
    *, conn_id: str, namespace: str | None, dag_id: str, task_id: str, run_id: str, map_index: int
) -> str:
    """What the deterministic ids derive from: the connection (and ``id_namespace``) salt them, so
    a staging and a production DAG of the same name on one account never share a conversation."""
    return f"airflow-provider-openhands:{conn_id}:{namespace or ''}:{dag_id}:{task_id}:{run_id}:{map_index}"


def client_id(key: str, try_number: int, generation: int = 0) -> str:
    """The conversation id one try (and id generation) asks for."""
    suffix = f":{try_number}" + (f":{generation}" if generation else "")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key + suffix))
