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
            found.append((key, value.strip() if key not in ("write", "output") else value))
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


def _marker_problem(message: str) -> str | None:
    """What is wrong with a message's ``[emulator ...]`` markers, if anything (a test-authoring error)."""
    try:
        for key, value in _directive_pairs(message):
            if key == "change":
                _change_spec(value)
            elif key == "write" and not value.partition(":")[0].strip():
                raise ValueError(f"write={value!r}: expected write=<path>:<text>")
            elif key in ("cost", "diff_bytes", "duration", "sandbox_error") and (
                not value or float(value) < 0 or math.isnan(float(value))
            ):
                raise ValueError(f"{key}={value!r}: expected a number >= 0")
    except ValueError as exc:
        return f"emulator marker: {exc}"
    return None


@dataclass
class Turn:
    """One run of the agent: the initial message, or one sent with send-message."""

    message: str
    sent_at: float  # when the user's message is on record
    start: float  # execution_status turns ``running``
    duration: float
    outcome: str
    sandbox_error: float = 0.0  # seconds of transient sandbox ERROR in the middle of the run

    @property
    def end(self) -> float:
        return self.start + self.duration + self.sandbox_error

    def error_window(self) -> tuple[float, float] | None:
        if self.sandbox_error <= 0:
            return None
        begin = self.start + self.duration / 2
        return begin, begin + self.sandbox_error

    def final_message(self) -> str:
        """What the agent's ``finish`` says: the ``finish="..."`` marker's text, else "Done: <task>"."""
        scripted = _directives(self.message).get("finish")
        if scripted:
            return scripted
        text = " ".join(_MARKER.sub("", self.message).split())
        return f"Done: {text[:40]}"

    def cost(self) -> float:
        """What the turn costs once it ended: the ``cost=`` marker, else ``COST_PER_SECOND`` per second."""
        scripted = _directives(self.message).get("cost")
        if scripted:
            return float(scripted)
        return 0.0 if self.start == math.inf else COST_PER_SECOND * (self.end - self.start)

    def spent(self, until: float) -> float:
        """The cost so far: it grows linearly from 0 at the start to :meth:`cost` at the end."""
        if self.start == math.inf or until <= self.start:
            return 0.0
        span = self.end - self.start
        return self.cost() * (1.0 if span <= 0 else min(1.0, (until - self.start) / span))

    def edits(self) -> list[tuple[str, str, str | None]]:
        """The turn's effects on the workspace, in order: (path, status, written text or None).

        ``change=<path>:<STATUS>`` gives (path, ADDED/UPDATED/DELETED, None); a rename gives the old
        path DELETED and the new one ``RENAMED_TO``; ``write=<path>:<text>`` gives (path, WRITE, text);
        ``output=<text>`` gives (openhands_output.json, WRITE, text).
        """
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

    def diff_bytes(self) -> int | None:
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
        return "running" if now < turn.end else turn.outcome

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

    def workspace(self, until: float) -> dict[str, FileState]:
        """What the agent's turns left in the workspace by ``until``, by absolute path.

        *Stricter*: a turn's files and changes appear at once when it ends, and only if it ended
        ``finished`` (none mid-run, none from a turn that ended in ``error`` or ``stuck``).
        """
        files: dict[str, FileState] = {}
        for number, turn in enumerate(self.turns):
            if turn.outcome != "finished" or turn.start == math.inf or turn.end > until:
                continue
            size = turn.diff_bytes()
            moved: str | None = None
            for path, status, text in turn.edits():
                where = self.absolute(path)
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
