"""The lifecycle engine: every decision about a task's conversation, in the order a conversation lives it.

Pure: no I/O, no Airflow, no clock of its own. :meth:`Engine.step` takes the state
(:class:`~airflow_provider_openhands.engine.state.Lifecycle`), one observation and the time, and
returns the one action to take next (:mod:`~airflow_provider_openhands.engine.actions`). The
worker loop, the trigger, the sensor's poke and the managed agent only run actions and feed back
what happened; log lines the engine wants written wait in :attr:`Engine.logs`.

The rules, by phase:

* **begin**: a follow-up reads its conversation; a retry (a try after the first of its series)
  looks for what an earlier try started; else the start request goes out.
* **reconnect**: an earlier try's conversation that is alive is waited on again; one that ended
  well is the result; one that failed fails the task as the earlier try would have (a try that died
  after that was decided, before Airflow recorded it, gets a retry: the outcome must not depend on
  when a process died), unless ``restart_failed``: then it is left, and a fresh one starts (saying
  so), as for a V0 conversation that reads ``stopped`` (this series' kill may have stopped it); one
  paused mid-run (the task was killed, or the service paused it) is resumed; a start task still working
  is waited on. Ids derive from the series, the connection, the namespace and the moment this
  deployment started the run, so another deployment's conversation is never a candidate.
* **start**: the start request is sent once; its answer publishes the id at once (V1: the id the
  task chose). A full account (429 CONCURRENCY_LIMIT_REACHED) -> a wait for a free slot with backoff
  within ``capacity_timeout``; a daily quota, 401/403/422 -> fail for good; a transient failure ->
  fail for Airflow's retry, which reconnects (the request may have been acted on); on a try no retry
  follows (``max_tries``), the id it asked for is looked up first and what runs under it stopped.
* **starting**: the start task is read until READY (-> running), ERROR for capacity (-> a new id
  after a wait for a slot) or ERROR (-> fail, retried), or ``start_timeout`` (-> watch it up to
  another ``start_timeout`` for a sandbox, pause it, fail). A failure names what it could not stop.
* **follow_up**: read the conversation; a paused sandbox is resumed (a full account waits for a slot
  like a start); a retry first looks for its own message among those sent since the run began;
  the message is sent once; 409 (paused meanwhile) -> resume and send again; 410 -> fail for good.
  The turn is the one after the task's own message (its text, and when the send went in): its end is
  the first end after it. Another message sent meanwhile (another run's follow-up on the same
  conversation: after ours before our end, or before ours with its turn still going) -> the events
  cannot tell whose end is whose (a service may take both in one run, or one after the other) ->
  fail for good (``permanent``: a retry reads the same events), leaving the conversation running for
  the other sender.
* **running**: the conversation is read until its turn ends. A status only counts as the end once
  the events agree (V1): right after a follow-up, or a resume, the service still shows the previous
  turn's ``finished``. A sandbox that reads ``ERROR`` must stay so for ``sandbox_error_grace`` (the
  real server reads ERROR for a moment when a health check is slow). A paused conversation: its
  events tell one that ended from one paused mid-run; one the task itself paused on a kill is
  resumed. Budget over -> pause, fail. Deadline -> pause (``stop_on_timeout``), fail. Events that
  cannot be read (404) -> the status stands (read again), with a warning; a follow-up's end then needs
  a reading that moved since its message (newer ``updated_at``, or the turn going on), else it fails
  after :data:`EVENTS_DISAGREE_MAX`, not paused. A lasting ERROR the events do not explain is judged
  on a reading made after they answered (an answer that came late may find the sandbox recovered).
* **confirmation** (``waiting_for_confirmation``: the agent waits for a person to confirm its next
  actions): the pending actions are read from the events, then by ``on_confirmation``: ``fail``
  (fail, naming them), ``reject`` / ``approve`` (answer on the agent server, each action logged),
  ``ask`` (a person answers through Airflow; the answer comes back in the state), or ``wait`` (log
  them once and wait: a sensor watching someone else's conversation). Answered actions are
  remembered, so a status that still reads waiting is not answered twice. A follow-up never sends
  to a conversation that waits: the service would take the message as an approval. After this
  task's own rejection the agent stays idle until it is run on (the answer's ``/run``); if that
  failed, a conversation that reads ``idle`` (not an end by the task's statuses) for two poll
  intervals is run on (``RunOn``), once per rejection (again after an outage or a 401 refused it),
  right after a read of its own (a trigger hands it to the worker, which reads again first).
* **plan_first** (:mod:`~airflow_provider_openhands.engine.plans`): a plan turn that ends well is not
  the task's end: the plan is read, a person reviews it; Approve starts the build (a default-agent
  conversation on the plan's sandbox, with ids of its own), Revise sends the comment to the plan
  conversation as a follow-up turn and asks again (without a comment: asks again at once), Reject or
  no answer fails the task and pauses the plan's sandbox (``pause_when_done``).
* **errors** while waiting: transient ones are ridden out until ``unreachable_timeout`` of
  failures; a conversation that is gone fails for good. A 401 reads the connection again at once
  (once per kind of request, until one of that kind works). A wait's read that still meets 401
  rides out a key-rotation gap (the old key revoked before the connection holds the new one): the
  connection is read again each poll, on a clock of its own (``refused_since``, kept like an
  outage's) within the same ``unreachable_timeout`` (one patience: a refused key leaves the
  service as unusable as an outage, and a new option would be one more to tune). When it runs out
  the task fails for good, naming the conversation it could not stop (the key is refused) and
  remembering it: a clear waits on it while it runs, instead of starting a second agent beside it
  (one that ended meanwhile is freed and a fresh one starts, as a clear does). Any other request
  that meets 401 after the connection was read again fails. A message or a confirmation answer
  refused with 401 is not sent again as it was: the engine reads the conversation (or what waits)
  afresh and decides again.
* **killed**: pause the conversation, or the start task's sandbox (``cancel_on_kill``), and remember
  it, so the retry resumes it.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openhands.api.state import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_SUCCESS_STATUSES,
    START_TASK_ERROR,
    START_TASK_READY,
    STATUS_DELETING,
    STATUS_IDLE,
    STATUS_MISSING,
    STATUS_PAUSED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    STATUS_WAITING_FOR_CONFIRMATION,
    V1,
    canonical_id,
    format_time,
    is_capacity_error,
    parse_time,
)
from airflow_provider_openhands.engine import actions as a
from airflow_provider_openhands.engine import plans
from airflow_provider_openhands.engine import state as lifecycle_state
from airflow_provider_openhands.engine.state import (
    MAX_GENERATIONS,
    PHASE_BEGIN,
    PHASE_CAPACITY,
    PHASE_CLOSING,
    PHASE_DONE,
    PHASE_FOLLOW_UP,
    PHASE_RECONNECT,
    PHASE_RUNNING,
    PHASE_START,
    PHASE_STARTING,
    Lifecycle,
    candidate_ids,
    client_id,
)

SUCCESS = "success"
FAILURE = "failure"
#: Default for how long a wait rides out a service that keeps failing transiently.
DEFAULT_UNREACHABLE_TIMEOUT = 30 * 60.0
#: Default for how long a sandbox may read ERROR before it counts (the real server shows a transient one).
DEFAULT_SANDBOX_ERROR_GRACE = 120.0
#: A wait rebuilt after its deadline (a triggerer restart) reads once before it gives up.
FIRST_READ_GRACE = 60.0
#: A follow-up's send meeting 409 (paused meanwhile) is tried again this many times.
MAX_CONFLICTS = 3
#: How long the events may show a turn going on while the status reads it ended (a follow-up's lag is
#: seconds; a server whose events stop arriving must not hold a task until its deadline).
EVENTS_DISAGREE_MAX = 300.0
#: Clocks of the worker and the service may differ by this much (bounds of "since" searches).
CLOCK_SKEW = 60.0
#: Statuses the events can confirm as a turn's end (others a task may count as its end, e.g. idle, stand).
ENDED_BY_EVENTS = frozenset({"finished", "error", "stuck"})
#: Statuses from which a conversation cannot go on.
GONE_STATUSES = frozenset({STATUS_MISSING, STATUS_DELETING})
#: The reads of a wait: a 401 on one rides out a key-rotation gap (any other request fails on a second 401).
WAIT_READS = (a.ReadConversation, a.ReadStartTask, a.ReadTurn, a.ReadPending, a.Reconnect, a.FindSend)


def classify(status: str | None, success: Collection[str], failure: Collection[str]) -> str | None:
    """``success``, ``failure``, or None while the conversation is still going."""
    if status in success:
        return SUCCESS
    if status in failure:
        return FAILURE
    return None


def describe(state: dict[str, Any]) -> str:
    """A short human description of a state, for log lines and error messages."""
    raw = state.get("execution_status") or state.get("agent_state") or state.get("conversation_status")
    sandbox = state.get("sandbox_status")
    parts = [f"status={state.get('status')}"]
    if raw:
        parts.append(f"agent={raw}")
    if sandbox and sandbox != "RUNNING":
        parts.append(f"sandbox={sandbox}")
    return " ".join(parts)


def describe_action(action: dict[str, Any]) -> str:
    """An action waiting for confirmation, for log lines and the person asked: tool, what, risk."""
    risk = action.get("security_risk") or "UNKNOWN"
    return f"{action.get('tool') or 'tool'} `{action.get('summary') or ''}` (security risk {risk})"


def over_budget(state: dict[str, Any], limit: float | None, conversation_id: Any) -> str | None:
    """Why the conversation's cost (its total, earlier turns included) is over ``limit``, or None."""
    cost = (state.get("metrics") or {}).get("accumulated_cost")
    if limit is None or not isinstance(cost, (int, float)) or cost <= limit:
        return None
    return f"Conversation {conversation_id} cost ${cost:.4f}, over max_cost_usd ${limit:.4f}"


def still_running(state: dict[str, Any]) -> bool:
    """Whether an ended conversation still holds a sandbox (V1) or runtime (V0). A sandbox in ERROR
    counts: the service shows a transient ERROR, and such a sandbox may run on."""
    if state.get("api_version") == V1:
        return state.get("sandbox_status") in ("RUNNING", "STARTING", "ERROR")
    return state.get("conversation_status") in ("RUNNING", "STARTING")


@dataclass(frozen=True)
class Rules:
    """What the task asked for: the parameters every decision reads."""

    success_statuses: frozenset[str] = DEFAULT_SUCCESS_STATUSES
    failure_statuses: frozenset[str] = DEFAULT_FAILURE_STATUSES
    wait_for_completion: bool = True
    poll_interval: float = 10.0
    stop_on_timeout: bool = True
    cancel_on_kill: bool = True
    capacity_timeout: float = 6 * 3600.0
    unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT
    sandbox_error_grace: float = DEFAULT_SANDBOX_ERROR_GRACE
    max_cost_usd: float | None = None
    api_version: str = V1
    on_confirmation: str = "wait"
    pause_when_done: bool = True
    restart_failed: bool = False  # a retry that finds its series' conversation failed starts a fresh one


@dataclass
class Engine:
    """Decides; never does. See the module docstring for the rules."""

    rules: Rules
    lc: Lifecycle
    #: (level, message) lines for the driver's log.
    logs: list[tuple[str, str]] = field(default_factory=list)
    #: The action waiting for an answer (a 401 repeats it after reading the connection again).
    pending: a.Action | None = None
    last_state: dict[str, Any] | None = None
    last_read: float | None = None
    created: float | None = None
    paused_warned: bool = False
    pending_before_reread: a.Action | None = None
    #: The actions an answer is for still wait, read just now: the answer may go (never on an older read).
    answer_checked: bool = False

    # -- the one entry point -----------------------------------------------------------------------

    def step(self, observation: Any, now: float) -> a.Action:
        if self.created is None:
            self.created = now
        action = self._decide(observation, now)
        self.pending = action
        return action

    def _decide(self, obs: Any, now: float) -> a.Action:
        if isinstance(obs, a.Killed):
            return self._killed()
        if isinstance(obs, a.Begin):
            return self._begin(now)
        if isinstance(obs, a.Problem):
            return self._problem(obs, now)
        if isinstance(obs, a.Tick) and isinstance(self.pending, a.ReadTurn):  # no answer: read again
            self.lc.turn_seen = None
        if isinstance(obs, a.Answer):
            action = self._answer(self.pending, obs.value, now)
            if isinstance(action, (a.AskPerson, a.Confirm, a.RunOn)):  # never ask or answer past the deadline
                action = self._expired(now) or action
            if action is not None:
                return action
        expired = self._expired(now)
        if expired is not None:
            return expired
        return self._next(now)

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    # -- what the state asks for next ----------------------------------------------------------

    def _next(self, now: float) -> a.Action:
        lc = self.lc
        if lc.phase == PHASE_BEGIN:
            return self._begin(now)
        if lc.phase == PHASE_CLOSING:
            return self._closing()
        if lc.phase == PHASE_RECONNECT:  # before publishing: the remembered id may be abandoned
            return a.Reconnect(tuple(self._candidates()), lc.since, lc.start_task_id)
        if lc.conversation_id and lc.published != self._public_id() and lc.phase != PHASE_FOLLOW_UP:
            return self._publish()
        if lc.phase == PHASE_START:
            lc.client_id = client_id(lc.key, lc.try_number, lc.generation) if lc.key else None
            return a.PostStart(lc.client_id)
        if lc.phase == PHASE_CAPACITY:
            if now < (lc.wake_time or 0.0):
                return a.Sleep(float(lc.wake_time or now))
            lc.phase = lc.after_capacity
            return self._next(now)
        if lc.phase == PHASE_STARTING:
            if self._public_id() and lc.published != self._public_id():
                return self._publish()
            return a.ReadStartTask(str(lc.start_task_id), self._poll_at(now))
        if lc.phase in (PHASE_FOLLOW_UP, PHASE_RUNNING):
            confirming = self._confirmation_next()
            if confirming is not None:
                return confirming
        if lc.phase == PHASE_RUNNING and lc.run_on == "due":  # run it on from a read of its own, not a poll's
            return a.ReadConversation(str(lc.conversation_id), 0.0, False)
        if lc.phase == PHASE_FOLLOW_UP:  # at once, but after a resume or an answer at the poll interval
            paced = self._resuming() or bool(lc.answered_actions) or isinstance(self.pending, a.ReadPending)
            paced = paced or lc.confirm_noted  # on_confirmation="wait": it waits for someone, read at the interval
            return a.ReadConversation(str(lc.conversation_id), self._poll_at(now) if paced else 0.0, False)
        if lc.phase == PHASE_RUNNING:
            if not self.rules.wait_for_completion:
                return a.ReturnId(str(lc.conversation_id))
            return a.ReadConversation(str(lc.conversation_id), self._poll_at(now))
        if lc.phase == PHASE_DONE:
            return self._done(now)
        raise AssertionError(f"no next action in phase {lc.phase}")  # pragma: no cover

    def _public_id(self) -> str | None:
        """The id people may see: the conversation's, or before READY the one the task asked for."""
        chosen = self.lc.conversation_id or self.lc.client_id
        return canonical_id(chosen) if chosen else None

    def _publish(self) -> a.Action:
        self.lc.published = self._public_id()
        return a.Publish(str(self.lc.published))

    def _poll_at(self, now: float) -> float:
        return now if self.last_read is None else self.last_read + self.rules.poll_interval

    def _resuming(self) -> bool:
        return self.lc.resume_deadline is not None

    # -- begin and reconnect -------------------------------------------------------------------

    def _begin(self, now: float) -> a.Action:
        lc = self.lc
        lc.published, lc.verdict, lc.to_stop, lc.stop_by = None, None, None, None  # a new try: Airflow cleared XCom
        lc.auth_reread_for = []  # a new try may read its connection again on a 401
        if lc.follow_up:
            lc.deadline = lc.deadline if lc.sent_at else None  # a wait before the send is the try's own
            if not lc.conversation_id:
                return self._fail("config", "conversation_id is empty: a follow-up needs the conversation to continue")
            lc.phase = PHASE_RUNNING if lc.sent_at else PHASE_FOLLOW_UP
        else:
            reconnect = lc.try_number > lc.series or lc.conversation_id or lc.unstopped
            lc.phase = PHASE_RECONNECT if reconnect else PHASE_START
        return self._next(now)

    def _candidates(self) -> list[str]:
        lc = self.lc
        ids = [cid for cid in (lc.unstopped, lc.conversation_id) if cid]
        generations = MAX_GENERATIONS if self.rules.api_version == V1 else 1
        return list(dict.fromkeys(canonical_id(cid) for cid in ids + candidate_ids(lc, generations)))

    def _found(self, found: dict[str, Any], now: float) -> a.Action:
        """What a retry found of the earlier tries: adopt it, or start afresh (see the module docstring)."""
        lc = self.lc
        states = {canonical_id(k): v for k, v in (found.get("conversations") or {}).items()}
        ended = {canonical_id(k): v for k, v in (found.get("ended") or {}).items()}
        rejected: set[str] = set()
        if lc.unstopped:
            action = self._found_unstopped(states, rejected, now)
            if action is not None:
                return action
        for cid in self._candidates():
            state = states.get(cid)
            if state is None:
                continue
            status = state["status"]
            if status == STATUS_PAUSED:
                status = ended.get(cid) or (lc.outcome if cid == lc.conversation_id else None) or status
            verdict = classify(status, self.rules.success_statuses, self.rules.failure_statuses)
            if state.get("sandbox_status") == "ERROR":
                verdict = None  # maybe a transient ERROR: adopt it, the wait applies sandbox_error_grace
            if verdict == FAILURE and (self.rules.restart_failed or status == STATUS_STOPPED):  # V0: a kill stops it
                self.log("info", f"An earlier try's conversation {cid} ended {status}: starting a fresh one")
                rejected.add(cid)
                continue
            if verdict == FAILURE:
                self.log(
                    "info", f"An earlier try's conversation {cid} ended {status}: the task fails as that try would"
                )
            else:
                self.log("info", f"Reconnecting to conversation {cid} started by an earlier try ({status})")
            if cid != canonical_id(str(lc.conversation_id)):
                lc.deadline = None
            lc.conversation_known(state["conversation_id"], parse_time(state.get("created_at")) or now)
            lc.sandbox_id = state.get("sandbox_id") or lc.sandbox_id
            if verdict is not None:
                lc.phase, lc.outcome = PHASE_DONE, status
            elif status == STATUS_PAUSED and state.get("sandbox_id"):
                self.log("info", f"Conversation {cid} was paused mid-run: resuming it")
                lc.killed = True  # paused by this series (a kill): resume it, now or after a wait for a slot
                return a.Resume(str(state["sandbox_id"]))
            return self._next(now)
        for task in found.get("start_tasks") or []:
            if task["status"] == START_TASK_ERROR or canonical_id(str(task.get("conversation_id"))) in rejected:
                continue
            if task["status"] == START_TASK_READY and task.get("conversation_id"):
                if canonical_id(task["conversation_id"]) != canonical_id(str(lc.conversation_id)):
                    lc.deadline = None
                lc.conversation_known(task["conversation_id"], parse_time(task.get("updated_at")) or now)
                lc.killed = True  # found paused mid-run at its first read: this series' kill paused it, resume
                return self._next(now)
            self.log("info", f"Reconnecting to start task {task['id']} of an earlier try ({task['status']})")
            same = lc.start_task_id == task["id"] and lc.start_deadline
            lc.phase, lc.start_task_id, lc.client_id = PHASE_STARTING, task["id"], task.get("requested_id")
            lc.killed = True  # its conversation read paused mid-run at first: a kill paused its sandbox, resume
            if not same:
                lc.start_deadline = (parse_time(task.get("created_at")) or now) + lc.start_timeout
            return self._next(now)
        lc.conversation_id, lc.deadline = None, None  # a fresh conversation gets a deadline of its own
        lc.phase = PHASE_START
        return self._next(now)

    def _found_unstopped(self, states: dict[str, Any], rejected: set[str], now: float) -> a.Action | None:
        """The conversation an earlier series could not stop (its key was refused), as a clear finds it:
        still running -> this series waits on it (a second agent beside it would do the same work);
        ended, paused or gone -> a fresh start, as a clear does, its sandbox freed if it holds one."""
        lc = self.lc
        cid, lc.unstopped = canonical_id(str(lc.unstopped)), None
        state = states.get(cid)
        if state is None:
            return None
        status = state["status"]
        ended = classify(status, self.rules.success_statuses, self.rules.failure_statuses)
        if ended is None and status not in GONE_STATUSES and status != STATUS_PAUSED:
            self.log(
                "info",
                f"Conversation {cid}, which an earlier try could not stop (its key was refused), still runs "
                f"({status}): waiting on it instead of starting another",
            )
            lc.deadline = None  # this series' own timeout, from now
            lc.conversation_known(state["conversation_id"], now, state.get("sandbox_id"))
            return self._next(now)
        rejected.add(cid)
        if self.rules.pause_when_done and still_running(state):
            self.log("info", f"Conversation {cid}, left running by an earlier try, ended {status}: freeing its sandbox")
            return a.Pause(state["conversation_id"], state.get("sandbox_id"))  # then the search goes on
        return None

    # -- answers ---------------------------------------------------------------------------------

    def _answer(self, pending: a.Action | None, value: Any, now: float) -> a.Action | None:
        """Move the state on by an answer; an action to take at once, or None for "what the state asks"."""
        lc = self.lc
        refused = type(pending).__name__
        if refused in lc.auth_reread_for:  # it works (again): a later 401 on it may read the connection once more
            lc.auth_reread_for = [kind for kind in lc.auth_reread_for if kind != refused]
            if lc.refused_since is not None and not lc.auth_reread_for:
                self.log("info", f"OpenHands takes the API key again, after {now - lc.refused_since:.0f}s refused.")
                lc.refused_since = None
        answering = isinstance(pending, a.ReadPending) and lc.confirmation is not None  # its send keeps failing?
        if not answering and isinstance(
            pending, (a.ReadStartTask, a.ReadConversation, a.ReadTurn, a.Resume, a.Reconnect, a.ReadPending, a.Confirm)
        ):
            self._reachable(now)
        if isinstance(pending, a.Reconnect) and lc.phase == PHASE_CLOSING:
            return self._looked_up(value or {}, now)
        if isinstance(pending, a.Reconnect):
            return self._found(value or {}, now)
        if isinstance(pending, a.PostStart):
            return self._started(value, now)
        if isinstance(pending, a.ReadStartTask):
            self.last_read = now
            return self._start_task(value, now)
        if isinstance(pending, a.ReadConversation):
            self.last_read = now if pending.poll or pending.at or self._resuming() else self.last_read
            if lc.phase == PHASE_FOLLOW_UP:
                return self._follow_up_read(value, now)
            return self._conversation(value, now)
        if isinstance(pending, a.ReadTurn):
            return self._turn(value or {}, now)
        if isinstance(pending, a.ReadPending):
            self.last_read = now
            return self._pending(list(value or []))
        if isinstance(pending, a.Confirm):
            return self._confirmed(pending, now)
        if isinstance(pending, a.ReadPlan):
            return self._planned(value)
        if isinstance(pending, a.RunOn):
            lc.run_on, lc.idle_since, self.last_read = None, None, now
            ran = "ran the agent on" if value is not False else "it was no longer idle: nothing sent"
            self.log("warning", f"Conversation {lc.conversation_id} stayed idle after the rejection: {ran}")
            return None
        if isinstance(pending, a.Resume):
            if value is False:
                return self._fail("permanent", f"The sandbox of conversation {lc.conversation_id} is gone")
            lc.killed, lc.turn_seen = False, None
            if lc.phase != PHASE_FOLLOW_UP:
                lc.phase, lc.resume_deadline = PHASE_RUNNING, None
            self.last_read = now
            return None
        if isinstance(pending, a.FindSend):
            lc.send_checked = True
            if value:
                self.log(
                    "info", f"An earlier try sent this message to {lc.conversation_id} already: waiting on its turn"
                )
                lc.sent_at, lc.phase, lc.resume_deadline = str(value), PHASE_RUNNING, None
                found = parse_time(str(value))
                lc.sent_window = [found, found] if found is not None else lc.sent_window
                if lc.deadline is None:
                    lc.deadline = now + lc.wait_timeout
                return None
            return None  # not sent: a read of the conversation first (it may wait for a confirmation by now)
        if isinstance(pending, a.Send):
            lc.sent_at, lc.run_on, lc.turn_seen = lc.sent_at or "sent", None, None  # a message runs the agent on
            lc.turn_moved = False
            began = (lc.sent_window or [now - CLOCK_SKEW])[0]  # set when the send went out
            lc.sent_window = [began, now + CLOCK_SKEW]
            lc.phase, lc.resume_deadline = PHASE_RUNNING, None
            self.last_read = None
            self.log("info", f"Follow-up message sent to conversation {lc.conversation_id}")
            lc.deadline = now + lc.wait_timeout  # the turn's, not the wait's before the send
            return None
        if isinstance(pending, (a.Pause, a.PauseStartTask)):
            lc.to_stop = None
            stopping = (lc.verdict or {}).get("stopping")
            if stopping and value is not False:
                self._note(f"{stopping} was paused")
            elif stopping:
                self._note(f"{stopping}: nothing was left to pause")
            return None
        if isinstance(pending, a.RereadConnection):
            before, self.pending_before_reread = self.pending_before_reread, None
            if isinstance(before, (a.Send, a.Confirm, a.RunOn)):  # never again blindly: what waits may have changed
                return None  # a read first (a follow-up's: the conversation; an answer's: what waits)
            return before
        return None

    def _started(self, started: dict[str, Any], now: float) -> a.Action | None:
        lc = self.lc
        asked = lc.client_id or "chosen by the server"
        self.log("info", f"Start request sent (conversation id {asked})")
        if started.get("conversation_id"):  # V0 answers the conversation at once
            lc.conversation_known(started["conversation_id"], now)
            return None
        lc.start_task_id = started["start_task"]["id"]
        lc.phase = PHASE_STARTING
        lc.start_deadline = now + lc.start_timeout
        self.last_read = now
        self.log("info", f"Start task {lc.start_task_id} created; waiting for the sandbox to be READY")
        return None

    def _start_task(self, task: dict[str, Any] | None, now: float) -> a.Action | None:
        lc = self.lc
        if task is None:
            return self._fail("permanent", f"OpenHands has no start task with id {lc.start_task_id!r}")
        if task["status"] != lc.last_status:
            self.log("info", f"Start task {lc.start_task_id}: {task['status']}")
            lc.last_status = task["status"]
        lc.sandbox_id = task.get("sandbox_id") or lc.sandbox_id
        if task["status"] == START_TASK_READY and task.get("conversation_id"):
            ready_at = min(now, parse_time(task.get("updated_at")) or now)
            lc.conversation_known(task["conversation_id"], ready_at, task.get("sandbox_id"))
            lc.last_status, self.last_read = None, None
            if lc.client_id and task["conversation_id"].replace("-", "") != lc.client_id.replace("-", ""):
                self.log(
                    "warning",
                    f"The server ignored the client-chosen conversation id {lc.client_id} (it made "
                    f"{task['conversation_id']}): a retry of this task can only find the conversation through "
                    "the task state store (Airflow >= 3.3).",
                )
            return None
        if task["status"] == START_TASK_ERROR:
            detail = task.get("detail") or "no detail given"
            message = f"OpenHands could not start the conversation (start task {task['id']}): {detail}"
            if is_capacity_error(task):
                lc.generation += 1  # that start task spent its id
                lc.start_task_id = None
                return self._capacity(None, None, PHASE_START, now)
            return self._fail("start_failed", message)
        return None

    def _follow_up_read(self, state: dict[str, Any] | None, now: float) -> a.Action | None:
        lc = self.lc
        if state is None:
            return self._fail("permanent", f"OpenHands has no conversation with id {lc.conversation_id!r}")
        lc.sandbox_id = state.get("sandbox_id") or lc.sandbox_id
        if lc.published != canonical_id(state["conversation_id"]):
            lc.conversation_id = state["conversation_id"]
            return self._publish()
        if state["status"] in GONE_STATUSES:
            return self._fail(
                "permanent",
                f"Conversation {lc.conversation_id} cannot go on: its sandbox is {state.get('sandbox_status')}",
            )
        over = self._over_budget(state)
        if over is not None and lc.try_number > lc.series and not lc.send_checked:  # an earlier try's turn?
            return a.FindSend(str(lc.conversation_id), self._series_since())  # found: it is stopped
        if over is not None:  # the conversation's total already passed it: send nothing more
            if lc.resume_deadline is not None:  # this try resumed the sandbox: pause it again
                return self._close("budget", over + ": stopped", stop="conversation")
            return self._fail("budget", over)
        sandbox = state.get("sandbox_status")
        if sandbox == "PAUSED":
            if lc.resume_deadline is None:
                lc.resume_deadline = now + lc.start_timeout
            self.log("info", f"Conversation {lc.conversation_id} is paused: resuming its sandbox")
            return a.Resume(str(state.get("sandbox_id")))
        if sandbox != "RUNNING":
            if lc.resume_deadline is None:
                lc.resume_deadline = now + lc.start_timeout
            return None  # starting: read again
        if state["status"] == STATUS_WAITING_FOR_CONFIRMATION:  # a message now would approve what waits
            if self.rules.on_confirmation == "wait" and lc.deadline is None:  # someone else answers it, in time
                lc.deadline = now + lc.wait_timeout
            return self._waiting_for_confirmation(state)
        if lc.try_number > lc.series and not lc.send_checked:
            return a.FindSend(str(lc.conversation_id), self._series_since())
        lc.before_send = state.get("updated_at")  # without events, this turn's end must come after it
        if lc.sent_window is None or lc.sent_window[1] < lc.sent_window[0]:  # the first send of this message
            # not before this series began: the same text an earlier run sent is not this one's (as FindSend)
            began = max(now - CLOCK_SKEW, parse_time(self._series_since()) or now - CLOCK_SKEW)
            lc.sent_window = [began, began - 1.0]  # its end once the send is answered
        return a.Send(str(lc.conversation_id))

    def _conversation(self, state: dict[str, Any] | None, now: float) -> a.Action | None:
        lc, rules = self.lc, self.rules
        if state is None:
            return self._fail("permanent", f"OpenHands has no conversation with id {lc.conversation_id!r}")
        self.last_state = state
        lc.sandbox_id = state.get("sandbox_id") or lc.sandbox_id
        lc.run_on = "armed" if lc.run_on == "due" else lc.run_on  # due again only by this read
        if state.get("status") != STATUS_PAUSED:
            lc.killed = False  # running: a later pause is the service's or a person's, not this series' kill
        over = self._over_budget(state)
        if over is not None and classify(state["status"], rules.success_statuses, rules.failure_statuses) is None:
            return self._close("budget", over + ": stopped", stop="conversation")  # ended: the driver reports it
        text = describe(state)
        if text != lc.last_status:
            self.log("info", f"Conversation {lc.conversation_id}: {text}")
            lc.last_status = text
        if state.get("sandbox_status") == "ERROR":
            # The real server shows a transient ERROR when a health check is slow. What counts is the
            # ERROR seen: the time between two reads of it (at most two polls: the sandbox may have been
            # RUNNING unseen in a longer gap), unless a read between them failed; reads further apart
            # than the grace begin a new episode. A lasting ERROR is then checked against the events:
            # the turn may have ended well in a gap the reads did not see.
            last = lc.sandbox_error_read
            if lc.sandbox_error_since is None or last is None or now - last > rules.sandbox_error_grace:
                lc.sandbox_error_since, lc.sandbox_error_seen, lc.error_checked = now, 0.0, False
            elif not lc.sandbox_error_unseen:
                lc.sandbox_error_seen += min(now - last, 2 * rules.poll_interval)
            lc.sandbox_error_read, lc.sandbox_error_unseen = now, False
            if lc.sandbox_error_seen < rules.sandbox_error_grace:
                return None
            if state.get("api_version") == V1 and not lc.events_unreadable and not lc.error_checked:
                # its end, if it ended; else the sandbox failed it
                return a.ReadTurn(str(lc.conversation_id), self._own())
        else:
            lc.sandbox_error_since, lc.sandbox_error_read, lc.sandbox_error_seen = None, None, 0.0
            lc.sandbox_error_unseen, lc.error_checked = False, False
        status = state["status"]
        if status == STATUS_WAITING_FOR_CONFIRMATION:
            lc.idle_since = None  # not idle: a run-on needs two idle polls after it
            return self._waiting_for_confirmation(state)
        lc.confirm_noted = False
        if status == STATUS_PAUSED and state.get("api_version") == V1:
            if not lc.events_unreadable:
                return self._read_turn(state, now, again=False)
            if lc.killed and state.get("sandbox_id"):  # no events to tell: this series' kill paused it
                return self._resume_killed(state, now)
        if status != STATUS_PAUSED:
            self.paused_warned = False
        run_on = self._run_on(status, now)
        if run_on is not None:
            return run_on
        verdict = classify(status, rules.success_statuses, rules.failure_statuses)
        confirmable = status in ENDED_BY_EVENTS and state.get("sandbox_status") != "ERROR"
        unmoved = self._unmoved_since_send(state, verdict)
        if verdict is None:
            return None
        if unmoved and confirmable and lc.events_unreadable:
            return self._earlier_end(state, now)
        if state.get("api_version") == V1 and not lc.events_unreadable and confirmable:
            read = self._read_turn(state, now, again=True)  # the events confirm it is this turn's end
            return read if read is not None or lc.disagree_since is None else self._disagreed(state, now)
        return self._ended(status, now)

    def _read_turn(self, state: dict[str, Any], now: float, *, again: bool) -> a.Action | None:
        """The turn's events, unless they were read for this very answer (status and ``updated_at``
        unchanged) and showed no end: a paused conversation costs one events read until it changes;
        one whose status disagrees with its events (``again``) is read once more after 1, 2, 4, ...
        polls (a server may not move ``updated_at``). None: nothing to read now."""
        lc = self.lc
        seen = f"{state.get('status')}|{state.get('sandbox_status')}|{state.get('updated_at')}"
        if lc.turn_seen == seen and lc.turn_read_at is not None and not lc.killed:  # a kill's pause: read, resume
            backoff = self.rules.poll_interval * 2 ** min(lc.turn_reads, 8)
            if not again or now - lc.turn_read_at < backoff - self.rules.poll_interval / 2:
                return None
            lc.turn_reads += 1
        else:
            lc.turn_seen, lc.turn_reads = seen, 0
        lc.turn_read_at = now
        return a.ReadTurn(str(lc.conversation_id), self._own())

    def _own(self) -> tuple[str, float, float] | None:
        """What tells this follow-up's turn from another run's on the same conversation: its message,
        and when it went in (None: a start's turn, or a wait on someone else's: the newest turn)."""
        lc = self.lc
        window, text = lc.sent_window, lc.options.get("initial_user_msg")
        if not lc.follow_up or not lc.sent_at or window is None or window[1] < window[0] or not text:
            return None
        return (str(text), window[0], window[1])

    def _series_since(self) -> str | None:
        """Since when a follow-up's retry looks for its own message: the DAG run's start, or this
        series' first try (less a minute of clock skew) where it is known (the task state store kept
        it), so a message an earlier series of the same run sent is never taken as this one's. Without
        the store a retry cannot tell the two apart (README, "Follow-up turns")."""
        lc = self.lc
        since = lc.run_started or lc.since
        if lc.series_started is None:
            return since
        began = lc.series_started - CLOCK_SKEW
        if (parse_time(since) or 0.0) >= began:
            return since
        return format_time(began)

    def _over_budget(self, state: dict[str, Any]) -> str | None:
        return over_budget(state, self.rules.max_cost_usd, self.lc.conversation_id)

    def _turn(self, turn: dict[str, Any], now: float) -> a.Action | None:
        lc = self.lc
        state = self.last_state or {}
        if turn.get("ambiguous"):  # another run's message went in meanwhile: its end may be taken for ours
            return self._fail(
                "permanent",
                f"Cannot tell how this task's turn on conversation {lc.conversation_id} ended: {turn['ambiguous']}. "
                "Send one follow-up at a time to a conversation (the conversation is left running for the other)",
            )
        ended = turn.get("status")
        if ended:
            lc.disagree_since, lc.turn_seen = None, None  # a next turn's end is read on its own
            lc.final_message, lc.error, lc.turn_read = turn.get("final_message"), turn.get("error"), True
            if classify(ended, self.rules.success_statuses, self.rules.failure_statuses) is not None:
                return self._ended(ended, now)
            return None
        if state.get("status") == STATUS_PAUSED:
            if lc.killed and state.get("sandbox_id"):
                return self._resume_killed(state, now)
            if not self.paused_warned:
                self.paused_warned = True
                self.log(
                    "warning",
                    f"Conversation {lc.conversation_id} is paused (by a user, or by the service for capacity); "
                    "waiting for it to be resumed until the deadline.",
                )
            return None
        if state.get("sandbox_status") == "ERROR":  # a lasting ERROR, the turn not ended: the verdict on a
            lc.error_checked = True  # reading newer than this check (an answer that came late finds it recovered)
            return a.ReadConversation(str(lc.conversation_id), 0.0, False)
        if not turn.get("live"):  # the status stands
            return self._ended(str(state.get("status")), now)
        lc.disagree_since = lc.disagree_since or now
        return self._disagreed(state, now)

    def _unmoved_since_send(self, state: dict[str, Any], verdict: str | None) -> bool:
        """A follow-up: whether the conversation may still show what it showed before the message went
        (the service shows the previous turn's end for a while). Once a reading is newer
        (``updated_at``) or shows it going on, an end is this turn's."""
        lc = self.lc
        if not (lc.follow_up and lc.sent_at) or lc.turn_moved:
            return False
        before = parse_time(lc.before_send) if lc.before_send else parse_time(lc.sent_at)
        updated = parse_time(state.get("updated_at"))
        newer = before is not None and updated is not None and updated > before
        if newer or (verdict is None and state.get("status") != STATUS_PAUSED):
            lc.turn_moved, lc.disagree_since = True, None
            return False
        return True

    def _earlier_end(self, state: dict[str, Any], now: float) -> a.Action | None:
        """Without events (404), a follow-up's conversation reads ended as before its message: an end
        the previous turn left. Wait for a change; fail (never pause: the turn may run) if none comes."""
        lc = self.lc
        lc.disagree_since = lc.disagree_since or now
        if now - lc.disagree_since < EVENTS_DISAGREE_MAX:
            return None
        return self._fail(
            "permanent",
            f"Conversation {lc.conversation_id} still reads {state.get('status')} as it did before this task's "
            f"message (updated_at {state.get('updated_at')}), {now - lc.disagree_since:.0f}s on, and its events "
            "cannot be read to tell this turn's end: failing rather than taking an earlier turn's end for this "
            "one's (not paused: the turn may be running)",
        )

    def _disagreed(self, state: dict[str, Any], now: float) -> a.Action | None:
        """The status reads ended, the events last showed the turn going on: a new turn began after the
        status was written, so wait for its end; but not past :data:`EVENTS_DISAGREE_MAX`."""
        lc = self.lc
        if now - (lc.disagree_since or now) < EVENTS_DISAGREE_MAX:
            return None
        self.log(
            "warning",
            f"Conversation {lc.conversation_id} reads {state.get('status')} but its events still show the turn "
            f"going on after {EVENTS_DISAGREE_MAX:.0f}s: taking the status",
        )
        return self._ended(str(state.get("status")), now)

    # -- confirmations ---------------------------------------------------------------------------

    def _waiting_for_confirmation(self, state: dict[str, Any]) -> a.Action | None:
        lc, mode = self.lc, self.rules.on_confirmation
        if mode == "wait" and lc.confirm_noted:
            return None
        if state.get("api_version") != V1 or lc.events_unreadable:
            text = (
                f"Conversation {lc.conversation_id} waits for a person to confirm the agent's next action, "
                "which this server does not let the provider read or answer"
            )
            if mode == "wait":
                lc.confirm_noted = True
                self.log("warning", text + ": answer it in OpenHands; waiting until the deadline")
                return None
            return self._fail("confirmation", text + f" (on_confirmation={mode!r}): answer it in OpenHands")
        lc.confirming = True
        return a.ReadPending(str(lc.conversation_id))

    def _confirmation_next(self) -> a.Action | None:
        """What an answer in progress asks for: give the answer, ask the person, read the actions."""
        lc = self.lc
        if lc.confirmation is not None and not self.answer_checked:  # what waits now? (the answer may be late)
            return a.ReadPending(str(lc.conversation_id))
        if lc.confirmation is not None:
            answer = lc.confirmation
            return a.Confirm(str(lc.conversation_id), bool(answer.get("accept")), str(answer.get("reason") or ""))
        if lc.pending_actions and self.rules.on_confirmation == "ask":
            return a.AskPerson(str(lc.conversation_id), tuple(lc.pending_actions))
        if lc.confirming:
            return a.ReadPending(str(lc.conversation_id))
        return None

    def _pending(self, actions: list[dict[str, Any]]) -> a.Action | None:
        lc = self.lc
        lc.confirming = False
        fresh = [action for action in actions if str(action.get("id")) not in lc.answered_actions]
        if lc.confirmation is not None:
            return self._check_answer(fresh)
        return self._new_pending(fresh)

    def _check_answer(self, fresh: list[dict[str, Any]]) -> a.Action | None:
        """An answer goes only to the actions it was given for, while they wait. An answer whose
        sending failed may have reached the agent all the same: sent again, it would approve (or
        reject) what the agent asks next, which nobody saw."""
        lc = self.lc
        asked = {str(action.get("id")) for action in lc.pending_actions}
        waiting = {str(action.get("id")) for action in fresh}
        if waiting and waiting <= asked:
            lc.pending_actions = [action for action in lc.pending_actions if str(action.get("id")) in waiting]
            self.answer_checked = True
            return self._confirmation_next()
        listed = "; ".join(describe_action(action) for action in lc.pending_actions)
        if not waiting & asked:
            self.log("info", f"Conversation {lc.conversation_id} no longer waits for {listed}: answered meanwhile")
            lc.answered_actions = (lc.answered_actions + sorted(asked))[-50:]
        else:
            self.log("info", f"Conversation {lc.conversation_id} waits for more than the answer was for: asking anew")
        lc.pending_actions, lc.confirmation = [], None
        return self._new_pending([action for action in fresh if str(action.get("id")) not in lc.answered_actions])

    def _new_pending(self, fresh: list[dict[str, Any]]) -> a.Action | None:
        lc, mode = self.lc, self.rules.on_confirmation
        if not fresh:  # answered meanwhile (here or in OpenHands): the status will move on
            return None
        listed = "; ".join(describe_action(action) for action in fresh)
        who = f"Conversation {lc.conversation_id} waits for a person to confirm: {listed}"
        if mode == "wait":
            lc.confirm_noted = True
            self.log("warning", who + ". Answer it in OpenHands; waiting until the deadline")
            return None
        if mode == "fail":
            return self._fail("confirmation", who + " (on_confirmation='fail'): answer it in OpenHands")
        lc.pending_actions = fresh
        if mode == "ask":
            self.log("info", who + ": asking a person in Airflow (Required actions)")
            return a.AskPerson(str(lc.conversation_id), tuple(fresh))
        accept = mode == "approve"
        verb = "approved" if accept else "rejected"
        lc.confirmation = {"accept": accept, "reason": f"{verb} by on_confirmation={mode!r}", "by": "on_confirmation"}
        self.answer_checked = True  # for the actions just read
        return self._confirmation_next()

    def _confirmed(self, given: a.Confirm, now: float) -> a.Action | None:
        lc = self.lc
        answer = lc.confirmation or {}
        verb = "Approved" if given.accept else "Rejected"
        reason = f" (reason: {given.reason})" if given.reason else ""
        for action in lc.pending_actions:
            self.log("info", f"{verb} by {answer.get('by') or 'a person'}: {describe_action(action)}{reason}")
        ids = [str(action.get("id")) for action in lc.pending_actions]
        lc.answered_actions = (lc.answered_actions + ids)[-50:]
        lc.pending_actions, lc.confirmation, lc.confirm_noted = [], None, False
        if not given.accept:
            lc.run_on, lc.idle_since = "armed", None
        self.answer_checked = False
        self.last_read = now
        return None

    def _run_on(self, status: str, now: float) -> a.Action | None:
        """After this task's own rejection the agent stays idle until it is run on: the answer's ``/run``
        did that, unless it failed. Idle (and not an end by the task's statuses) for two poll intervals,
        read just now: run it on, once per rejection (again, two idle polls later, if an outage refused it)."""
        lc = self.lc
        if lc.run_on is None:
            return None
        if status != STATUS_IDLE or classify(status, self.rules.success_statuses, self.rules.failure_statuses):
            lc.idle_since = None
            lc.run_on = None if status == STATUS_RUNNING else "armed"  # running: it went on
            return None
        lc.idle_since = now if lc.idle_since is None else lc.idle_since
        if now - lc.idle_since < 2 * self.rules.poll_interval:
            return None
        lc.run_on = "due"  # until the driver ran it on (a trigger hands it back to the worker); logged then
        return a.RunOn(str(lc.conversation_id))

    def _resume_killed(self, state: dict[str, Any], now: float) -> a.Action:
        lc = self.lc
        self.log("info", f"Conversation {lc.conversation_id} was paused when the task was killed: resuming it")
        lc.resume_deadline = now + lc.start_timeout
        return a.Resume(str(state["sandbox_id"]))

    def _ended(self, status: str, now: float) -> a.Action:
        lc = self.lc
        lc.phase, lc.outcome = PHASE_DONE, status
        state = self.last_state
        if state is not None and canonical_id(str(state.get("conversation_id"))) == canonical_id(
            str(lc.conversation_id)
        ):
            lc.end_state = {k: v for k, v in state.items() if not any(w in k for w in ("key", "secret", "password"))}
        return self._done(now)

    def _done(self, now: float) -> a.Action:
        """The turn ended: the task's end, unless it was a plan that ended well (a person reviews it)."""
        lc = self.lc
        ended_well = classify(lc.outcome, self.rules.success_statuses, self.rules.failure_statuses) == SUCCESS
        if plans.planning(lc.plan) and ended_well:
            return self._plan_next(now)
        return a.Conclude(str(lc.conversation_id), str(lc.outcome))

    # -- plan_first: review, then revise or build -------------------------------------------------

    def _plan_next(self, now: float) -> a.Action:
        """A plan turn ended well: read the plan, have a person review it, then act on the answer."""
        lc = self.lc
        plan = lc.plan or {}
        if plan.get("text") is None and not lc.turn_read and not lc.events_unreadable:
            # found ended by a retry: read its final message first, should the plan file be empty
            return a.ReadTurn(str(lc.conversation_id), self._own())
        if plan.get("text") is None:
            return a.ReadPlan(str(lc.conversation_id))
        review = plan.get("review")
        if not review:
            return a.AskReview(str(plan["of"]), str(plan["text"]), int(plan.get("round") or 0))
        decision, comment, who = review.get("decision"), str(review.get("comment") or ""), review.get("by")
        self.log(
            "info", f"Plan of conversation {plan['of']}: {decision} by {who}" + (f": {comment}" if comment else "")
        )
        if decision == plans.REVISE and not comment:
            self.log("warning", "Revise without a comment: asking again (the comment says what to change)")
            lc.plan = {key: value for key, value in plan.items() if key != "review"}
            return self._plan_next(now)
        if decision == plans.REVISE:
            return self._next_stage(
                {**plan, "stage": plans.PLANNING, "round": int(plan.get("round") or 0) + 1, "comment": comment}, now
            )
        if decision == plans.APPROVE:
            return self._next_stage({**plan, "stage": plans.BUILDING}, now)
        return self._close(
            "plan_rejected",
            f"The plan of conversation {plan['of']} was rejected by {who}: {comment or 'no reason given'}",
            stop="conversation" if self.rules.pause_when_done else None,  # nothing more to do there: free it
        )

    def _planned(self, text: Any) -> a.Action:
        lc = self.lc
        cid = str(lc.conversation_id)
        text = str(text or lc.final_message or "")[: plans.PLAN_CHARS]
        lc.plan = {**(lc.plan or {}), "of": cid, "text": text}
        self.log("info", f"The agent's plan (conversation {cid}), for review in Airflow:\n{text}")
        return a.AskReview(cid, text, int(lc.plan.get("round") or 0))

    def _next_stage(self, plan: dict[str, Any], now: float) -> a.Action:
        """A new turn for the stage ``plan`` names: the revision (a follow-up of the plan conversation)
        or the build (a conversation of its own, with ids of its own). The series, the try and
        Airflow's deadline carry over; the turn's own deadlines start now."""
        old = self.lc
        build = plan["stage"] == plans.BUILDING
        plan = {key: value for key, value in plan.items() if key != "review" and (build or key != "text")}
        new = Lifecycle(
            series=old.series,
            try_number=old.try_number,
            key=plans.stage_key(old.key, plan) if build else old.key,
            since=old.since,
            run_started=old.run_started,
            started_at=now,
            series_started=old.series_started,
            start_timeout=old.start_timeout,
            wait_timeout=old.wait_timeout,
            hard_deadline=old.hard_deadline,
            follow_up=not build,
            conversation_id=None if build else str(plan["of"]),
            sandbox_id=None if build else old.sandbox_id,
            output_file=old.output_file,
            answered_actions=list(old.answered_actions),
            plan=plan,
            options=plans.stage_options(plan),
        )
        for name, value in new.to_dict().items():  # in place: the drivers hold this lifecycle
            setattr(old, name, value)
        self.last_state, self.last_read, self.paused_warned, self.answer_checked = None, None, False, False
        return self._begin(now)

    # -- problems --------------------------------------------------------------------------------

    def _problem(self, problem: a.Problem, now: float) -> a.Action:
        lc, pending = self.lc, self.pending
        if isinstance(pending, a.ReadTurn):  # not read after all: the same answer is read again
            lc.turn_seen = None
        if isinstance(pending, a.Confirm):  # it may have reached the agent: read what waits before any resend
            self.answer_checked = False
            if not pending.accept:  # the rejection may have reached it, not its /run (a 401 on the /run too)
                lc.run_on, lc.idle_since = "armed", None
        if isinstance(pending, a.RunOn):  # refused for good: given up; an outage or a 401: again while it stays idle
            lc.run_on = "armed" if problem.kind in ("auth", "transient") else None
            if problem.kind == "transient":  # two more idle polls, read just then, before it comes again
                lc.idle_since = None
            if problem.kind != "auth":
                again = ": again if it stays idle" if lc.run_on else ""
                self.log(
                    "warning",
                    f"Could not run the agent of conversation {lc.conversation_id} on: {problem.message}{again}",
                )
                return self._next(now)
        if isinstance(pending, (a.Pause, a.PauseStartTask)) or (
            isinstance(pending, a.Reconnect) and lc.phase == PHASE_CLOSING
        ):
            again = self._stop_again(problem, now)
            if again is not None:
                return again
            self._not_stopped(pending, problem)
            lc.to_stop = None
            return self._next(now)
        if isinstance(pending, a.Publish):
            return self._next(now)
        if problem.kind == "auth" and problem.status_code != 403 and isinstance(pending, WAIT_READS):
            return self._key_refused(pending, problem, now)  # 403: a key that works, for another account
        if problem.kind == "auth" and pending is not None and type(pending).__name__ not in lc.auth_reread_for:
            lc.auth_reread_for = [*lc.auth_reread_for, type(pending).__name__]  # once, until such a request works
            self.pending_before_reread = pending
            self.log("warning", f"{problem.message}: reading the connection again (a rotated key?)")
            return a.RereadConnection()
        if isinstance(pending, a.ReadTurn) and problem.kind in ("not_found", "permanent", "invalid"):
            lc.events_unreadable = True
            self.log("warning", f"Cannot read the events of conversation {lc.conversation_id}: {problem.message}")
            return a.ReadConversation(str(lc.conversation_id), 0.0, False)  # the status stands: a fresh one
        if isinstance(pending, a.ReadPending) and problem.kind in ("not_found", "permanent", "invalid"):
            lc.events_unreadable, lc.confirming = True, False
            self.log("warning", f"Cannot read the events of conversation {lc.conversation_id}: {problem.message}")
            return self._waiting_for_confirmation(self.last_state or {}) or self._next(now)
        if isinstance(pending, a.ReadPlan) and problem.kind not in ("transient", "auth"):  # e.g. 409 paused
            self.log("warning", f"Could not read the plan file of conversation {lc.conversation_id}: {problem.message}")
            return self._planned(None)  # the agent's final message is the plan then
        if isinstance(pending, a.FindSend) and problem.kind in ("not_found", "permanent", "invalid"):
            lc.send_checked = True
            self.log("warning", f"Cannot tell whether an earlier try sent the message ({problem.message}): sending it")
            return self._next(now)  # after a read of the conversation
        if problem.kind == "capacity" and isinstance(pending, (a.PostStart, a.Resume)):
            back = PHASE_START if isinstance(pending, a.PostStart) else lc.phase
            lc.resume_deadline = None
            return self._capacity(problem.limit, problem.current, back, now)
        if problem.kind == "conflict" and isinstance(pending, a.Send):
            lc.conflicts += 1
            if lc.conflicts <= MAX_CONFLICTS:
                self.log("info", f"Conversation {lc.conversation_id} was paused meanwhile (409): resuming it")
                lc.phase = PHASE_FOLLOW_UP
                return self._next(now)
        if problem.kind == "gone":
            return self._fail(
                "permanent",
                f"Conversation {lc.conversation_id} is archived (HTTP 410): start a new one instead",
            )
        if problem.kind == "transient" and isinstance(pending, a.PostStart) and not self.retry_follows("transient"):
            return self._lost_start(problem)
        if problem.kind == "transient" and isinstance(pending, (a.PostStart, a.Send)):
            return self._fail("transient", problem.message)  # it may have been acted on: the retry reconnects
        if problem.kind != "transient":
            return self._fail("permanent", problem.message)
        lc.sandbox_error_unseen = True  # the time to the next ERROR read is not counted
        if lc.failing_since is None:
            lc.failing_since = now
            self.log(
                "warning",
                f"OpenHands is not answering ({problem.message}); waiting on, until the deadline or "
                f"{self.rules.unreachable_timeout / 60:.0f} min of failures.",
            )
        if now - lc.failing_since >= self.rules.unreachable_timeout:
            return self._fail(
                "unreachable",
                f"OpenHands kept failing for {now - lc.failing_since:.0f}s (unreachable_timeout): {problem.message}",
            )
        expired = self._expired(now)
        if expired is not None:
            return expired
        self.last_read = now
        return self._repeat(pending, now)

    def _key_refused(self, pending: a.Action, problem: a.Problem, now: float) -> a.Action:
        """A wait's read met 401: read the connection again (at once the first time, then each poll)
        until it works, the deadline comes, or ``unreachable_timeout`` of failures ran out."""
        lc, rules = self.lc, self.rules
        if lc.refused_since is None:
            lc.refused_since = now
        kind = type(pending).__name__
        first = kind not in lc.auth_reread_for
        if first:
            lc.auth_reread_for = [*lc.auth_reread_for, kind]
            waiting_on = self._public_id() or f"start task {lc.start_task_id}"
            self.log(
                "warning",
                f"{problem.message.rstrip('.')}, while waiting on {waiting_on}: reading the connection again each "
                f"poll (a rotated key?), until the deadline or {rules.unreachable_timeout:.0f}s of failures "
                "(unreachable_timeout)",
            )
            self.pending_before_reread = pending  # at once: the connection may hold the new key already
        else:
            self.pending_before_reread = self._repeat(pending, now)
        if not first and now - lc.refused_since >= rules.unreachable_timeout:  # never before one more reading
            return self._fail("permanent", self._left_running(problem, now))
        expired = self._expired(now)
        if expired is not None:
            return expired
        lc.sandbox_error_unseen = True  # the time to the next ERROR read is not counted
        self.last_read = now
        return a.RereadConnection()

    def _left_running(self, problem: a.Problem, now: float) -> str:
        """Why the task gives up on a refused key, naming what it could not stop; remembered for a clear."""
        lc = self.lc
        refused = f"OpenHands refused the API key for {now - (lc.refused_since or now):.0f}s (unreachable_timeout)"
        why = problem.message.rstrip(".")
        cid = self._public_id()
        if cid is None:
            what = f"start task {lc.start_task_id}" if lc.start_task_id else "nothing started yet"
            return f"{refused}: {why}. Could not stop {what} (the key is refused)"
        then = "fix the connection's key, or stop it in OpenHands"
        if not lc.follow_up:
            lc.unstopped = cid
            then = (
                "fix the connection's key and clear the task (it waits on that conversation instead of "
                "starting another), or stop it in OpenHands"
            )
        return (
            f"{refused}: {why}. Conversation {cid} could not be stopped (the key is refused) and may still run: {then}"
        )

    def _stop_again(self, problem: a.Problem, now: float) -> a.Action | None:
        """One patience: a stop that met a transient failure is tried again, as a wait's read would be,
        until ``unreachable_timeout`` of failures (or Airflow's own deadline for the task)."""
        lc = self.lc
        if problem.kind != "transient":
            return None
        lc.failing_since = now if lc.failing_since is None else lc.failing_since
        at = now + self.rules.poll_interval
        if now - lc.failing_since >= self.rules.unreachable_timeout or (lc.hard_deadline or at) < at:
            return None
        if now == lc.failing_since:
            self.log("warning", f"Could not stop what the task started yet ({problem.message}): trying again")
        return a.Sleep(at)

    def _repeat(self, pending: a.Action | None, now: float) -> a.Action:
        """The same request again, after a poll interval."""
        at = now + self.rules.poll_interval
        if isinstance(pending, a.ReadConversation):
            return a.ReadConversation(pending.conversation_id, at, pending.poll)
        if isinstance(pending, a.ReadStartTask):
            return a.ReadStartTask(pending.start_task_id, at)
        if isinstance(pending, a.ReadTurn):  # read the conversation again, then its events
            return a.ReadConversation(pending.conversation_id, at)
        return a.Sleep(at)  # then what the state asks for, as before

    def _reachable(self, now: float) -> None:
        if self.lc.failing_since is not None:
            self.log("info", f"OpenHands answers again, after {now - self.lc.failing_since:.0f}s of failures.")
            self.lc.failing_since = None

    # -- capacity ----------------------------------------------------------------------------------

    def _capacity(self, limit: int | None, current: int | None, back: str, now: float) -> a.Action:
        """No free conversation slot: wait with backoff, within one ``capacity_timeout`` for the task."""
        lc, rules = self.lc, self.rules
        if lc.capacity_deadline is None:
            lc.capacity_deadline = now + rules.capacity_timeout
        deadline = lc.capped(lc.capacity_deadline) or lc.capacity_deadline
        waited = now - (lc.capacity_deadline - rules.capacity_timeout)
        if now >= deadline:
            return self._fail(
                "capacity_timeout",
                f"No free OpenHands conversation slot after {waited:.0f}s (capacity_timeout); "
                f"the service reports {current} running of a limit of {limit}",
            )
        delay = min(rules.poll_interval * 2**lc.attempt, max(rules.poll_interval, 300.0), deadline - now)
        delay *= random.uniform(0.8, 1.0)
        self.log(
            "warning",
            f"The account runs as many conversations as it may (limit {limit}, running {current}); waited "
            f"{waited:.0f}s so far, trying again in {delay:.0f}s. Cap concurrency with the 'openhands' pool to "
            "avoid this.",
        )
        lc.attempt += 1
        lc.wake_time = now + delay
        lc.phase, lc.after_capacity = PHASE_CAPACITY, back
        return a.Sleep(lc.wake_time)

    # -- deadlines ---------------------------------------------------------------------------------

    def due(self) -> float | None:
        """When the current phase must be over (epoch seconds), or None for no limit."""
        lc = self.lc
        if lc.phase == PHASE_STARTING:
            return lc.capped(lc.start_deadline)
        if lc.phase == PHASE_FOLLOW_UP and lc.resume_deadline is not None:
            return lc.capped(lc.resume_deadline)
        if lc.phase == PHASE_FOLLOW_UP and lc.confirm_noted:  # on_confirmation="wait": until the deadline
            return lc.capped(lc.deadline)
        if lc.phase == PHASE_RUNNING and self.rules.wait_for_completion:
            return lc.capped(lc.deadline)
        return None

    def wake_at(self) -> float | None:
        """When a deadline may fire: at it, but not before one answer was read since this engine was
        built (a trigger rebuilt after its deadline, however late, first learns whether the start
        task became READY, or the conversation ended, meanwhile)."""
        due = self.due()
        if due is None or self.last_read is not None or self.created is None:
            return due
        return max(due, self.created + FIRST_READ_GRACE)

    def _expired(self, now: float) -> a.Action | None:
        lc = self.lc
        wake = self.wake_at()
        if wake is None or now < wake:
            return None
        due = self.due() or now
        by_airflow = lc.hard_deadline is not None and due >= lc.hard_deadline
        why = " (before Airflow's execution_timeout ends the task)" if by_airflow else ""
        if lc.phase == PHASE_STARTING:
            lc.stop_by = self._watch_until(now)
            what = f"Start task {lc.start_task_id}" + (f" (conversation {self._public_id()})" if lc.client_id else "")
            self.log(
                "warning",
                f"{what} was not READY in time: watching it up to {lc.stop_by - now:.0f}s more for a sandbox to pause",
            )
            return self._close(
                "start_timeout",
                f"{what} was not READY in time{why} (last: {lc.last_status})",
                stop="start_task",
                stopping=f"the sandbox of start task {lc.start_task_id}",
            )
        if lc.phase == PHASE_FOLLOW_UP and lc.resume_deadline is None:  # it waited for someone to confirm
            waits = f"Conversation {lc.conversation_id} still waits for a confirmation at its deadline{why}"
            return self._fail("timeout", waits)
        if lc.phase == PHASE_FOLLOW_UP:
            return self._close(
                "start_timeout",
                f"The sandbox of conversation {lc.conversation_id} was not running in time{why}",
                stop="conversation",  # it was resumed: pause it again
            )
        last = describe(self.last_state) if self.last_state else "not read yet"
        return self._close(
            "timeout",
            f"Conversation {lc.conversation_id} still {last} at its deadline{why}",
            stop="conversation" if self.rules.stop_on_timeout else None,
        )

    # -- ends ----------------------------------------------------------------------------------------

    def _fail(self, kind: str, message: str) -> a.Action:
        return self._close(kind, message, stop=None)

    def _close(self, kind: str, message: str, *, stop: str | None, stopping: str | None = None) -> a.Action:
        """Fail with ``kind`` after stopping ``stop``; ``stopping`` names it, for the message to say how that went."""
        lc = self.lc
        lc.phase, lc.verdict, lc.to_stop = PHASE_CLOSING, {"kind": kind, "message": message}, stop
        if stopping:
            lc.verdict["stopping"] = stopping
        return self._closing()

    def retry_follows(self, kind: str) -> bool:
        """Whether Airflow retries a failure of ``kind``: the table says it may, and this is not the last
        try (Airflow retries while ``try_number <= max_tries``; an unknown ``max_tries``: as if it did)."""
        lc = self.lc
        retried = a.WAYS_OUT[kind].retried
        return retried and (lc.max_tries is None or lc.try_number <= lc.max_tries)

    def _watch_until(self, now: float) -> float:
        """How long a task that fails for good watches a start task still working for a sandbox to pause:
        another ``start_timeout`` (at least the grace), within Airflow's execution_timeout."""
        grace = now + lifecycle_state.START_STOP_GRACE
        watch = self.lc.capped(now + self.lc.start_timeout) or grace
        return max(grace, watch)

    def _note(self, text: str) -> None:
        """Add to the message the task fails with (what its stopping did)."""
        verdict = self.lc.verdict
        if verdict is not None:
            self.lc.verdict = {**verdict, "message": f"{verdict['message']}; {text}"}

    def _not_stopped(self, pending: a.Action, problem: a.Problem) -> None:
        """A stop (or the look-up before it) failed: the log and the failure name what may run on."""
        lc = self.lc
        if isinstance(pending, a.Reconnect):
            what = f"conversation {canonical_id(str(lc.client_id))} could not be looked up to stop it"
        elif isinstance(pending, a.PauseStartTask):
            named = f" (conversation {self._public_id()})" if self._public_id() else ""
            what = f"start task {pending.start_task_id}{named} could not be stopped"
        else:
            what = f"conversation {getattr(pending, 'conversation_id', lc.conversation_id)} could not be stopped"
        note = f"{what} ({problem.message}): it may still be running"
        self.log("warning", f"Could not stop what the task started: {note}")
        self._note(note)

    def _lost_start(self, problem: a.Problem) -> a.Action:
        """The start request may have been acted on and no retry follows to reconnect: look up the id it
        asked for and stop what runs under it (a V1 start task may still be working), naming the id."""
        lc = self.lc
        if not lc.client_id:
            return self._fail(
                "transient",
                f"{problem.message}. No retry follows: the service may have started a conversation whose id "
                "this task cannot know (deterministic_conversation_id=False)",
            )
        cid = canonical_id(lc.client_id)
        message = (
            f"The answer to the start request of conversation {cid} was lost ({problem.message}); no retry follows"
        )
        self.log("warning", f"{message}: looking conversation {cid} up to stop it")
        return self._close("transient", message, stop="lookup", stopping=f"conversation {cid}")

    def _looked_up(self, found: dict[str, Any], now: float) -> a.Action:
        """What runs under the id a lost start asked for: stop it, or say that nothing does."""
        lc = self.lc
        cid = canonical_id(str(lc.client_id))
        lc.to_stop = None
        state = {canonical_id(k): v for k, v in (found.get("conversations") or {}).items()}.get(cid)
        tasks = [t for t in found.get("start_tasks") or [] if canonical_id(str(t.get("requested_id"))) == cid]
        if state is not None:
            lc.conversation_id, lc.sandbox_id = state["conversation_id"], state.get("sandbox_id") or lc.sandbox_id
            self.log("info", f"Conversation {cid} found: {describe(state)}")
            if still_running(state):
                lc.to_stop = "conversation"
            else:
                self._note(f"conversation {cid} was found not running ({describe(state)})")
        elif tasks and tasks[0]["status"] != START_TASK_ERROR:
            task = tasks[0]
            self.log("info", f"Start task {task['id']} of conversation {cid} found: {task['status']}")
            lc.start_task_id, lc.sandbox_id = task["id"], task.get("sandbox_id") or lc.sandbox_id
            if task["status"] == START_TASK_READY and task.get("conversation_id"):
                lc.conversation_id, lc.to_stop = task["conversation_id"], "conversation"
            else:
                lc.to_stop, lc.stop_by = "start_task", self._watch_until(now)
                lc.verdict = {**(lc.verdict or {}), "stopping": f"the sandbox of its start task {task['id']}"}
        elif tasks:
            self._note(f"its start task {tasks[0]['id']} failed: nothing runs")
        else:
            self._note(f"OpenHands shows no conversation or start task for {cid}: nothing was started")
        return self._closing()

    def _closing(self) -> a.Action:
        lc = self.lc
        if lc.to_stop == "lookup" and lc.client_id:
            return a.Reconnect((lc.client_id,), lc.since, None)
        if lc.to_stop == "conversation" and lc.conversation_id:
            return a.Pause(lc.conversation_id, lc.sandbox_id)
        if lc.to_stop == "start_task" and lc.conversation_id:
            return a.Pause(lc.conversation_id, lc.sandbox_id)
        if lc.to_stop == "start_task" and lc.start_task_id:
            return a.PauseStartTask(lc.start_task_id, lc.stop_by)
        verdict = lc.verdict or {"kind": "permanent", "message": "failed"}
        return a.Fail(verdict["kind"], verdict["message"])

    def _killed(self) -> a.Action:
        """Stop what the task started, and remember it: a retry resumes a conversation it paused."""
        lc = self.lc
        if not self.rules.cancel_on_kill or lc.phase == PHASE_DONE:
            return a.Fail("killed", "killed")
        if lc.phase == PHASE_CLOSING:  # killed before the closing's own stop (budget, timeout) was done
            stop = self._closing()
            if isinstance(stop, a.PauseStartTask):  # a kill leaves moments: the grace, not the long watch
                return a.PauseStartTask(stop.start_task_id)
            return stop if isinstance(stop, a.Pause) else a.Fail("killed", "killed")
        resumed = lc.resume_deadline is not None  # a follow-up resumed the sandbox before it sent
        if (
            lc.conversation_id
            and lc.phase in (PHASE_RUNNING, PHASE_FOLLOW_UP)
            and (lc.sent_at or not lc.follow_up or resumed)
        ):
            lc.killed = True
            return a.Pause(lc.conversation_id, lc.sandbox_id)
        if lc.phase == PHASE_STARTING and lc.start_task_id:
            lc.killed = True
            return a.PauseStartTask(lc.start_task_id)
        return a.Fail("killed", "killed")
