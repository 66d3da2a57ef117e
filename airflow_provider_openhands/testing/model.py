"""The emulator's conversation model: a conversation and its turns (timing, outcome, cost), the
agent's workspace, and the ``[emulator ...]`` markers in a message that script them.

Markers in a message: ``[emulator outcome=error duration=3]`` (outcome ``finished`` by default;
also ``error``, ``stuck``), ``start=error`` (the start task fails with a ``detail``),
``start=capacity`` (the start task fails with the ``detail`` "Sandbox could not start: maximum
number of concurrent conversations (<concurrency_limit>) reached": how the service refused a start
on a full account before it answered 429), ``sandbox_error=2`` (the sandbox reads ``ERROR`` with
``execution_status`` null for 2 s in the middle of the run, then ``RUNNING`` again; the run lasts
that much longer: sandbox ERROR alone is not proof of failure), ``finish="All done: text"`` (the
agent's final answer, its ``FinishAction`` message, for that turn). Values may be quoted (``"..."``
or ``'...'``) to hold spaces or ``]``, and a quoted value its own quote escaped with a backslash
(``"{\\"a\\": 1}"``; other backslashes are kept as written); every ``[emulator ...]`` marker in a
message counts. What the agent does to its workspace, per turn (applied at the end of a turn that
ends ``finished``, in order; repeatable keys):

* ``change=<path>:<STATUS>`` with STATUS ``ADDED``, ``UPDATED`` (or its alias ``MODIFIED``,
  listed as ``UPDATED``) or ``DELETED``; ``change=<old>-><new>:RENAMED`` (or ``MOVED``) deletes the
  old path and adds the new one with the old text. E.g. ``[emulator change=src/app.py:MODIFIED
  change=README.md:ADDED]``. Texts are generated: an updated file's ``original`` is three lines, its
  new text two of them and a line naming the turn.
* ``diff_bytes=200000``: each file this turn's ``change=`` markers add or update gets a new text of
  exactly that many characters (over 1 MiB its diff is refused, as on the agent server).
* ``write="<path>:<text>"`` (path before the first colon; quote the value:
  ``[emulator write='report.json:{"a": 1}']``): the agent writes that file (text kept verbatim,
  so invalid JSON can be scripted too); ``output="<text>"`` writes the file the message asks the
  result to be written to ("... to the file `<path>`", as the provider's structured-output
  instruction says), else ``openhands_output.json`` in the project directory. Each write is also on record as the
  real agent's ``file_editor`` ``create`` ``ActionEvent`` (``FileEditorAction``: ``path``,
  ``file_text``) and its ``FileEditorObservation``, before the turn's ``finish``.
* ``cost=2.5``: what the turn costs in all (``metrics.accumulated_cost`` reaches it at the end).

Confirmation mode (V1 conversations; the real server asks when the user's ``confirmation_mode``
setting is on, a setting the emulator does not model: the markers decide):

* ``confirm="<command>"`` (repeatable, in order), optionally followed by ``risk=LOW|MEDIUM|HIGH|UNKNOWN``
  (default ``UNKNOWN``; it applies to the ``confirm=`` before it): the agent asks before running that
  terminal command. The N commands of a turn are asked at evenly spaced points of its running time
  (``duration * k / (N + 1)``). While one is pending the turn's clock stops: ``execution_status``
  ``waiting_for_confirmation``, no progress, the cost does not grow (the turn lasts that much longer).
  On record: the agent's ``ActionEvent`` (``tool_name: terminal``, ``TerminalAction``, the
  ``security_risk``), then ``ConversationStateUpdateEvent`` ``execution_status:
  waiting_for_confirmation``. An accept (``respond_to_confirmation`` ``accept: true``, ``/run``, or a
  message sent with ``run: true``) -> ``running`` and the command's ``ObservationEvent``
  (``TerminalObservation``, ``action_id``); the turn goes on. A reject -> ``idle`` then a
  ``UserRejectObservation`` (``rejection_reason``); the command is not run and the turn **stays**
  ``idle`` (its clock stopped) until ``/run``, a message or an accept, then ``running`` again. A turn's
  default final message (no ``finish=``) says what reached the agent: "Done: <task>" plus
  " (rejected: <command>: <reason>)" per rejection (accepted commands add nothing).
  ``write=``/``output=``/``change=`` effects never ask (as under a ``ConfirmRisky`` policy that finds
  them low-risk). Ignored in V0 conversations and by the plan agent (it has no terminal).
* ``confirm_plan=yes`` (a plan conversation's message; optionally followed by ``risk=``): the plan
  agent asks before its own edit of PLAN.md, as the real one does under confirmation mode
  (``AlwaysConfirm``, observed on ``openhands-ai`` 1.11): its ``planning_file_editor`` ``ActionEvent``,
  then ``waiting_for_confirmation``, asked halfway through the turn like a ``confirm=`` command and
  answered the same ways. Accepted: the edit's ``PlanningFileEditorObservation`` and the plan is
  written when the turn ends. Rejected: a ``UserRejectObservation``, PLAN.md keeps its empty headers,
  and the final message is "No plan written (rejected: <edit>: <reason>)". Ignored by the default
  agent (so a build conversation given the plan's task text does not ask for it).

Plan mode (``agent_type: "plan"`` in the V1 start request): the planning agent edits only the plan
file ``<project dir>/.agents_tmp/PLAN.md`` (``PLAN_FILE``). Its tool creates the file with the empty
section headers (``PLAN_HEADERS``) when the conversation starts (as the real tool does: the file
existing does not mean a plan was written); a turn that ends ``finished`` writes the plan: the
``plan="<text>"`` marker's text, else "# Plan\n\n1. <task without markers>", on record as a
``planning_file_editor`` ``PlanningFileEditorAction``/``PlanningFileEditorObservation``. A plan turn
applies no ``change=``/``write=``/``output=``/``diff_bytes=`` and no ``confirm=`` marker; its default
final message is the plan text (``finish=`` still wins). ``duration``, ``outcome``, ``cost``,
``sandbox_error`` apply as usual.

State updates (``v1_routes.py`` writes them; V1): besides ``execution_status``, the agent server
publishes ``ConversationStateUpdateEvent``s with ``key`` ``full_state`` (the whole conversation state,
a few KB) when the conversation starts and each time a run of the agent stops (at each confirmation it
waits for, and after each turn's closing state update), ``last_user_message_id`` after each user
message, and ``stats`` before each of the agent's actions (one per LLM call; the first turn's title
adds one), as observed. ``state_updates=N`` crowds the pages: N more ``full_state`` snapshots right
after each stop of that turn (a restarted or re-subscribed agent server publishes one each time), so a
client that reads only the newest events finds state updates there instead of the pending action or
the final answer.
"""

from __future__ import annotations

import math
import posixpath
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

START_STEPS = (
    "WORKING",
    "WAITING_FOR_SANDBOX",
    "PREPARING_REPOSITORY",
    "RUNNING_SETUP_SCRIPT",
    "SETTING_UP_GIT_HOOKS",
    "SETTING_UP_SKILLS",
    "STARTING_CONVERSATION",
    "READY",
)
WORKSPACE_ROOT = "/workspace/project"  # the Cloud sandbox's working_dir; a repository is cloned below it
OUTPUT_FILE = "openhands_output.json"  # what ``[emulator output=...]`` writes, in the project directory
CHANGE_STATUSES = {"UPDATED": "UPDATED", "MODIFIED": "UPDATED", "ADDED": "ADDED", "DELETED": "DELETED"}
RENAME_STATUSES = ("RENAMED", "MOVED")
COST_PER_SECOND = 0.01  # a turn's default cost per second of running, when no ``cost=`` marker sets it
AGENT_TYPES = ("default", "plan")  # the V1 start request's ``agent_type`` (the spec's ``AgentType``)
SECURITY_RISKS = ("UNKNOWN", "LOW", "MEDIUM", "HIGH")  # the spec's ``SecurityRisk``
PLAN_FILE = ".agents_tmp/PLAN.md"  # the plan agent's file, relative to the project directory
#: What the planning tool writes to PLAN.md when the conversation starts (``get_plan_headers``).
PLAN_HEADERS = "\n".join(
    f"# {number}. {title}\n"
    for number, title in enumerate(
        ("OBJECTIVE", "CONTEXT SUMMARY", "APPROACH OVERVIEW", "IMPLEMENTATION STEPS", "TESTING AND VALIDATION"), 1
    )
)
DEFAULT_REJECTION = "User rejected the action."  # ``ConfirmationResponseRequest.reason``'s default
PLAN_EDITOR = "planning_file_editor"  # the plan agent's tool, the one action it may ask to confirm
# ``[emulator key=value key="a quoted value, ] and all"]``: quoted values may hold spaces and ``]``,
# and their own quote escaped with a backslash (``"{\\"a\\": 1}"``); other backslashes stay as written.
_MARKER = re.compile(r"""\[emulator\b((?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\]"'])*)\]""")
_PAIR = re.compile(r"""([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s"']*))""")


def _now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), tz=timezone.utc).isoformat()


def _naive_iso(at: float) -> str:
    """UTC, without a time zone: how start-task reads and SDK events write timestamps."""
    return datetime.fromtimestamp(at, tz=timezone.utc).replace(tzinfo=None).isoformat()


def _z_iso(at: float) -> str:
    return _naive_iso(at) + "Z"


def _hex(value: Any) -> str | None:
    try:
        return uuid.UUID(str(value)).hex
    except ValueError:
        return None


def _directive_pairs(message: str) -> list[tuple[str, str]]:
    """Every ``key=value`` pair of every ``[emulator ...]`` marker in a message, in order."""
    found: list[tuple[str, str]] = []
    for match in _MARKER.finditer(message or ""):
        for pair in _PAIR.finditer(match.group(1)):
            key, double, single, bare = pair.groups()
            if double is not None:
                value = double.replace('\\"', '"')
            elif single is not None:
                value = single.replace("\\'", "'")
            else:
                value = bare or ""
            found.append((key, value.strip() if key not in ("write", "output", "plan") else value))
    return found


def _directives(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of every ``[emulator ...]`` marker in a message (later ones win)."""
    return dict(_directive_pairs(message))


def _change_spec(spec: str) -> list[tuple[str, str]]:
    """``path:STATUS`` -> [(path, status)]; ``old->new:RENAMED`` -> [(old, DELETED), (new, ADDED)]."""
    path, sep, status = spec.rpartition(":")
    status = status.strip().upper()
    if not sep or not path.strip():
        raise ValueError(f"change={spec!r}: expected change=<path>:<STATUS>")
    if status in RENAME_STATUSES:
        old, arrow, new = path.partition("->")
        if not arrow or not old.strip() or not new.strip():
            raise ValueError(f"change={spec!r}: a rename is change=<old>-><new>:RENAMED")
        return [(old.strip(), "DELETED"), (new.strip(), "RENAMED_TO")]
    if status not in CHANGE_STATUSES:
        raise ValueError(f"change={spec!r}: status must be one of {sorted(CHANGE_STATUSES)} or RENAMED")
    return [(path.strip(), CHANGE_STATUSES[status])]


def _confirmations(message: str, agent_type: str = "default") -> list[Confirmation]:
    """The ``confirm=`` commands of a message, in order, each with the ``risk=`` that follows it (the
    plan agent: only its PLAN.md edit, if ``confirm_plan=yes`` asks for it)."""
    found: list[Confirmation] = []
    current: Confirmation | None = None
    seen = False  # a confirm= or confirm_plan= came before (a risk= needs one)
    for key, value in _directive_pairs(message):
        if key == "confirm":
            if not value:
                raise ValueError('confirm="": expected confirm="<command>"')
            seen, current = True, Confirmation(command=value) if agent_type == "default" else None
        elif key == "confirm_plan":
            if value.lower() not in ("yes", "true", "1"):
                raise ValueError(f"confirm_plan={value!r}: expected confirm_plan=yes")
            asked = agent_type == "plan" and not any(c.tool == PLAN_EDITOR for c in found)
            seen, current = True, Confirmation(command=f"create {PLAN_FILE}", tool=PLAN_EDITOR) if asked else None
        elif key == "risk":
            if not seen:
                raise ValueError(f"risk={value!r}: a risk= follows the confirm= it applies to")
            if value not in SECURITY_RISKS:
                raise ValueError(f"risk={value!r}: expected one of {list(SECURITY_RISKS)}")
            if current is not None:
                current.risk = value
            continue
        else:
            continue
        if current is not None:
            found.append(current)
    return found


def _marker_problem(message: str) -> str | None:
    """What is wrong with a message's ``[emulator ...]`` markers, if anything (a test-authoring error)."""
    try:
        for agent_type in AGENT_TYPES:
            _confirmations(message, agent_type)
        for key, value in _directive_pairs(message):
            if key == "change":
                _change_spec(value)
            elif key == "write" and not value.partition(":")[0].strip():
                raise ValueError(f"write={value!r}: expected write=<path>:<text>")
            elif key in ("cost", "diff_bytes", "duration", "sandbox_error", "state_updates") and (
                not value or float(value) < 0 or math.isnan(float(value))
            ):
                raise ValueError(f"{key}={value!r}: expected a number >= 0")
    except ValueError as exc:
        return f"emulator marker: {exc}"
    return None


@dataclass
class Confirmation:
    """An action the agent asks the user to confirm (a ``confirm=`` marker) and the answer it got."""

    command: str
    risk: str = "UNKNOWN"
    tool: str = "terminal"  # ``planning_file_editor``: the plan agent's edit of PLAN.md
    answered_at: float | None = None  # when it was accepted or rejected
    accepted: bool | None = None
    reason: str | None = None  # the rejection's reason
    resumed_at: float | None = None  # when the agent went on: the accept; after a reject /run, a message, an accept


@dataclass
class Turn:
    """One run of the agent: the initial message, or one sent with send-message."""

    message: str
    sent_at: float  # when the user's message is on record
    start: float  # execution_status turns ``running``
    duration: float
    outcome: str
    sandbox_error: float = 0.0  # seconds of transient sandbox ERROR in the middle of the run
    agent_type: str = "default"  # ``plan``: the planning agent (it writes PLAN.md only; asks only with confirm_plan=)
    asks: bool = True  # ``confirm=`` markers apply (V1 only)
    confirmations: list[Confirmation] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.confirmations and self.asks:
            try:
                self.confirmations = _confirmations(self.message, self.agent_type)
            except ValueError:  # refused with 400 where a message comes in; a Turn built by hand asks nothing
                self.confirmations = []

    # -- the clock: running time, and the stops (a transient sandbox ERROR, pending confirmations) --

    def _stops(self) -> list[tuple[float, int]]:
        """(running-time offset, index) of each stop: -1 the sandbox ERROR, else a confirmation."""
        stops = [(self.duration / 2, -1)] if self.sandbox_error > 0 else []
        count = len(self.confirmations)
        stops += [(self.duration * (k + 1) / (count + 1), k) for k in range(count)]
        return sorted(stops)

    def timeline(self) -> tuple[list[tuple[int, float, float]], float]:
        """The stops so far as (index, begin, end) in wall-clock time, and the turn's end (``inf``
        while a confirmation waits for its answer or a rejected one for the agent to go on)."""
        if self.start == math.inf:
            return [], math.inf
        windows: list[tuple[int, float, float]] = []
        shift = 0.0
        for offset, index in self._stops():
            begin = self.start + offset + shift
            if index < 0:
                length = self.sandbox_error
            else:
                resumed = self.confirmations[index].resumed_at
                if resumed is None:
                    windows.append((index, begin, math.inf))
                    return windows, math.inf
                length = max(0.0, resumed - begin)
            windows.append((index, begin, begin + length))
            shift += length
        return windows, self.start + self.duration + shift

    @property
    def end(self) -> float:
        return self.timeline()[1]

    def error_window(self) -> tuple[float, float] | None:
        if self.sandbox_error <= 0:
            return None
        for index, begin, end in self.timeline()[0]:
            if index < 0:
                return begin, end
        return None  # after a confirmation still pending

    def asked_at(self, index: int) -> float | None:
        """When the agent asks for confirmation ``index`` (None: not before an earlier one is answered)."""
        for number, begin, _ in self.timeline()[0]:
            if number == index:
                return begin
        return None

    def pending(self, now: float) -> tuple[int, str] | None:
        """(index, ``waiting_for_confirmation`` or ``idle``) if the turn stands at a confirmation now."""
        for index, begin, end in self.timeline()[0]:
            if index < 0 or not begin <= now < end:
                continue
            answer = self.confirmations[index]
            if answer.answered_at is None or now < answer.answered_at:
                return index, "waiting_for_confirmation"
            return index, "idle"  # rejected, the agent not run again yet
        return None

    def status(self, now: float) -> str:
        """The turn's execution status at ``now`` (it has started)."""
        if now >= self.end:
            return self.outcome
        pending = self.pending(now)
        return pending[1] if pending else "running"

    def respond(self, now: float, accept: bool, reason: str) -> None:
        """``respond_to_confirmation``: accept or reject the pending action (nothing pending: nothing)."""
        pending = self.pending(now)
        if pending is None:
            return
        index, state = pending
        answer = self.confirmations[index]
        if state == "waiting_for_confirmation":
            answer.answered_at, answer.accepted = now, accept
            if accept:
                answer.resumed_at = now
            else:
                answer.reason = reason
        elif accept:  # after a reject, an accept runs the agent again
            answer.resumed_at = now

    def go_on(self, now: float) -> None:
        """``/run`` or a new message: a pending action is approved, a rejected turn runs again."""
        pending = self.pending(now)
        if pending is not None:
            self.respond(now, True, "")

    def _confirmation_windows(self) -> list[tuple[float, float]]:
        return [(begin, end) for index, begin, end in self.timeline()[0] if index >= 0]

    def at_running(self, running: float) -> float:
        """The wall-clock moment the turn has run ``running`` seconds (its sandbox ERROR counts as
        running time, its confirmation stops do not)."""
        wall = self.start + running
        for begin, end in self._confirmation_windows():
            if begin < wall:  # the stop came before that much running time: it shifts the moment
                wall += end - begin
        return wall

    def running_time(self, until: float) -> float:
        """How long the turn has run by ``until``, its confirmation stops left out."""
        if self.start == math.inf or until <= self.start:
            return 0.0
        elapsed = min(until, self.end) - self.start
        for begin, end in self._confirmation_windows():
            elapsed -= max(0.0, min(end, until) - begin) if begin < until else 0.0
        return max(0.0, elapsed)

    # -- what the turn says and does ----------------------------------------------------------------

    def task(self) -> str:
        """The message without its markers, whitespace collapsed."""
        return " ".join(_MARKER.sub("", self.message).split())

    def plan_text(self) -> str:
        """What a plan turn writes to PLAN.md: the ``plan=`` marker's text, else a one-step plan."""
        return _directives(self.message).get("plan") or f"# Plan\n\n1. {self.task()}"

    def final_message(self) -> str:
        """What the agent's ``finish`` says: the ``finish="..."`` marker's text, else "Done: <task>"
        with each rejected command and its reason (a plan turn: the plan text)."""
        scripted = _directives(self.message).get("finish")
        if scripted:
            return scripted
        if self.agent_type == "plan":
            refused = [c for c in self.confirmations if c.accepted is False]
            if refused:
                return f"No plan written (rejected: {refused[0].command}: {refused[0].reason})"
            return self.plan_text()
        rejected = "".join(f" (rejected: {c.command}: {c.reason})" for c in self.confirmations if c.accepted is False)
        return f"Done: {self.task()[:40]}{rejected}"

    def cost(self) -> float:
        """What the turn costs once it ended: the ``cost=`` marker, else ``COST_PER_SECOND`` per second."""
        scripted = _directives(self.message).get("cost")
        if scripted:
            return float(scripted)
        return 0.0 if self.start == math.inf else COST_PER_SECOND * (self.duration + self.sandbox_error)

    def spent(self, until: float) -> float:
        """The cost so far: it grows linearly with the running time, from 0 to :meth:`cost` (not while
        the turn waits at a confirmation)."""
        if self.start == math.inf or until <= self.start:
            return 0.0
        span = self.duration + self.sandbox_error
        return self.cost() * (1.0 if span <= 0 else min(1.0, self.running_time(until) / span))

    def edits(self) -> list[tuple[str, str, str | None]]:
        """The turn's effects on the workspace, in order: (path, status, written text or None).

        ``change=<path>:<STATUS>`` gives (path, ADDED/UPDATED/DELETED, None); a rename gives the old
        path DELETED and the new one ``RENAMED_TO``; ``write=<path>:<text>`` gives (path, WRITE, text);
        ``output=<text>`` gives (openhands_output.json, WRITE, text). A plan turn: (PLAN_FILE, WRITE,
        the plan) only.
        """
        if self.agent_type == "plan":
            if any(c.accepted is False for c in self.confirmations):
                return []  # its edit of PLAN.md was rejected: the file keeps its headers
            return [(PLAN_FILE, "WRITE", self.plan_text())]
        found: list[tuple[str, str, str | None]] = []
        for key, value in _directive_pairs(self.message):
            if key == "change":
                found += [(path, status, None) for path, status in _change_spec(value)]
            elif key == "write":
                path, _, text = value.partition(":")
                found.append((path.strip(), "WRITE", text))
            elif key == "output":
                found.append((self.instructed_output_file() or OUTPUT_FILE, "WRITE", value))
        return found

    def instructed_output_file(self) -> str | None:
        """The file the message tells the agent to write its result to (a real agent reads it there)."""
        found = re.search(r"to the file `([^`]+)`", self.message)
        return found.group(1) if found else None

    def state_updates(self) -> int:
        """How many extra ``full_state`` snapshots the agent server publishes at each stop of the turn."""
        scripted = _directives(self.message).get("state_updates")
        return int(float(scripted)) if scripted else 0

    def diff_bytes(self) -> int | None:
        if self.agent_type == "plan":
            return None
        scripted = _directives(self.message).get("diff_bytes")
        return int(float(scripted)) if scripted else None


def _original_text(path: str) -> str:
    """A file's text before the agent changed it (as ``git show <ref>:<path>`` prints it)."""
    return "\n".join(f"{path}: line {n} as it was in the repository" for n in (1, 2, 3))


def _modified_text(path: str, turn_number: int, size: int | None) -> str:
    """A changed file's new text; exactly ``size`` characters with ``diff_bytes=<size>``."""
    line = f"{path}: changed by the agent in turn {turn_number + 1}"
    if size is None:
        return "\n".join([*_original_text(path).splitlines()[:2], line])
    text = "\n".join([line] * (size // (len(line) + 1) + 1))
    return text[:size]


@dataclass
class FileState:
    """A file the agent touched: its git status, its text at the base ref and now (None: deleted)."""

    status: str  # ADDED, UPDATED or DELETED (the agent server's GitChangeStatus)
    original: str
    modified: str | None


@dataclass
class Conversation:
    id: str
    api_version: str
    message: str
    repository: str | None
    branch: str | None
    git_provider: str | None
    title: str | None
    created: float
    ready_at: float  # V1: start task READY / V0: runtime RUNNING
    duration: float
    outcome: str
    start_error: bool = False
    start_task_id: str | None = None
    sandbox_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    paused_at: float | None = None
    stopped_at: float | None = None
    deleted: bool = False
    sandbox_override: str | None = None  # e.g. MISSING, set by a test
    status_override: str | None = None  # an execution status (even unknown), set by a test
    request: dict[str, Any] = field(default_factory=dict)
    error_step: int = 2  # the start step at which a failing start task turns ERROR
    error_detail: str = "Sandbox failed to start: repository clone failed"
    duplicate: bool = False  # a start task for a conversation id already used: never a conversation
    taken_over_at: float | None = None  # a later start with this id booted over this sandbox
    seq: int = 0  # creation order, to break ties between equal ``created`` times
    turns: list[Turn] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)  # pause / resume / delete times
    agent_type: str = "default"  # V1 ``agent_type``: ``plan`` for the planning agent
    parent_id: str | None = None  # V1 ``parent_conversation_id``: this conversation shares its sandbox
    sub_ids: list[str] = field(default_factory=list)  # its sub-conversations' ids, oldest first

    def __post_init__(self) -> None:
        if not self.turns:
            directives = _directives(self.message)
            self.turns.append(
                Turn(
                    message=self.message,
                    sent_at=self.ready_at,
                    start=self.ready_at,
                    duration=self.duration,
                    outcome=self.outcome,
                    sandbox_error=float(directives.get("sandbox_error", 0) or 0),
                    agent_type=self.agent_type,
                    asks=self.api_version == "v1",
                )
            )

    def set_first_turn(self, ready_at: float, duration: float) -> None:
        self.ready_at = ready_at
        self.duration = duration
        first = self.turns[0]
        first.sent_at = first.start = ready_at
        first.duration = duration

    @property
    def error_at(self) -> float:
        """When a failing start task shows ERROR."""
        return self.created + (self.ready_at - self.created) * self.error_step / (len(START_STEPS) - 1)

    def ready(self, now: float) -> bool:
        return not self.start_error and now >= self.ready_at

    def turn_at(self, now: float) -> Turn | None:
        started = [t for t in self.turns if t.start <= now]
        return started[-1] if started else None

    def agent_status(self, now: float) -> str | None:
        """Execution status of the agent: None before the sandbox runs."""
        if now < self.ready_at:
            return None
        if self.status_override:
            return self.status_override
        turn = self.turn_at(now)
        if turn is None:
            return None
        return turn.status(now)

    def pending_turn(self, now: float) -> Turn | None:
        """The turn that stands at a confirmation now (waiting for the answer, or idle after a reject)."""
        turn = self.turn_at(now)
        return turn if turn is not None and turn.pending(now) is not None else None

    def in_sandbox_error(self, now: float) -> bool:
        for turn in self.turns:
            window = turn.error_window()
            if window and window[0] <= now < window[1]:
                return True
        return False

    def finished_at(self) -> float:
        """When the last turn that runs ends (a message sent with ``run: false`` starts none)."""
        return max(t.end for t in self.turns if t.start != math.inf)

    def updated_at(self, now: float) -> float:
        points = [self.created, self.ready_at, *self.changes]
        for turn in self.turns:
            points += [turn.start, turn.end, *(turn.error_window() or ())]
            for index, answer in enumerate(turn.confirmations):
                points += [turn.asked_at(index) or math.inf, answer.answered_at or math.inf]
                points.append(answer.resumed_at or math.inf)
        return max(p for p in points if p <= now)

    def spent(self, until: float) -> float:
        """The accumulated cost up to ``until``: each turn's grows linearly while it runs."""
        return sum(t.spent(until) for t in self.turns)

    @property
    def project_dir(self) -> str:
        """Where the agent works: ``/workspace/project/<repository name>``, else ``/workspace/project``."""
        if self.repository:
            return f"{WORKSPACE_ROOT}/{self.repository.rstrip('/').split('/')[-1]}"
        return WORKSPACE_ROOT

    def absolute(self, path: str) -> str:
        return posixpath.normpath(path if path.startswith("/") else posixpath.join(self.project_dir, path))

    def in_repository(self, absolute: str) -> str | None:
        """The path relative to the project directory (the git repository), or None if outside it."""
        prefix = self.project_dir + "/"
        return absolute[len(prefix) :] if absolute.startswith(prefix) else None

    def workspace(self, until: float, sharing: tuple[Conversation, ...] = ()) -> dict[str, FileState]:
        """What the agent's turns left in the workspace by ``until``, by absolute path; ``sharing``:
        the other conversations in the same sandbox (their turns change the same files).

        *Stricter*: a turn's files and changes appear at once when it ends, and only if it ended
        ``finished`` (none mid-run, none from a turn that ended in ``error`` or ``stuck``). A plan
        conversation's PLAN.md holds ``PLAN_HEADERS`` from READY on (as the planning tool creates it).
        """
        files: dict[str, FileState] = {}
        steps: list[tuple[float, int, int, Conversation, Turn | None]] = []
        for owner in (self, *sharing):
            if owner.agent_type == "plan" and owner.ready_at <= until and not owner.start_error:
                steps.append((owner.ready_at, owner.seq, -1, owner, None))
            for number, turn in enumerate(owner.turns):
                if turn.outcome == "finished" and turn.start != math.inf and turn.end <= until:
                    steps.append((turn.end, owner.seq, number, owner, turn))
        steps.sort(key=lambda step: step[:3])
        for _, _, number, owner, turn in steps:
            if turn is None:  # the planning tool's empty PLAN.md, unless one is there already
                files.setdefault(owner.absolute(PLAN_FILE), FileState("ADDED", "", PLAN_HEADERS))
                continue
            size = turn.diff_bytes()
            moved: str | None = None
            for path, status, text in turn.edits():
                where = owner.absolute(path)
                before = files.get(where)
                if status == "DELETED":
                    moved = before.modified if before and before.modified is not None else _original_text(path)
                    if before is not None and before.status == "ADDED":
                        del files[where]  # added, then deleted: no change at all
                    else:
                        files[where] = FileState("DELETED", before.original if before else _original_text(path), None)
                    continue
                if status == "RENAMED_TO":
                    text = moved
                elif text is None:
                    text = _modified_text(path, number, size)
                if before is None:
                    existed = status == "UPDATED"
                    files[where] = FileState(
                        "UPDATED" if existed else "ADDED", _original_text(path) if existed else "", text
                    )
                else:
                    kept = "ADDED" if before.status == "ADDED" else "UPDATED"
                    files[where] = FileState(kept, before.original, text)
        return files

    def alive(self, now: float) -> bool:
        """Holds an account slot: the sandbox is starting or running (finished or not)."""
        if self.deleted or self.paused_at is not None or self.stopped_at is not None:
            return False
        if self.start_error and now >= self.error_at:
            return False
        return self.sandbox_override not in ("MISSING", "ERROR")
