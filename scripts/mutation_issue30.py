"""Issue 30's 13 engine mutations, by behaviour: each a text replacement in ``engine/engine.py``.

``scripts/mutation.py --named`` runs them (served from memory, as its own mutants); docs/mutation.md
records which tests kill each. A replacement whose text is gone (the engine was edited) is reported
as stale, never run as the code it no longer is.
"""

from __future__ import annotations

ENGINE = "airflow_provider_openhands/engine/engine.py"

#: (behaviour, file, text, replacement): the text must occur exactly once in the file.
NAMED: list[tuple[str, str, str, str]] = [
    (
        "1 first retry does not reconnect",
        ENGINE,
        "lc.try_number > lc.series or lc.conversation_id",
        "lc.try_number > lc.series + 1 or lc.conversation_id",
    ),
    (
        "2 a rejected plan does not pause its sandbox",
        ENGINE,
        'stop="conversation" if self.rules.pause_when_done else None,  # nothing more',
        "stop=None,  # nothing more",
    ),
    (
        "3 sandbox ERROR counts at once",
        ENGINE,
        "if lc.sandbox_error_seen < rules.sandbox_error_grace:\n",
        "if False:\n",
    ),
    (
        "4 the deadline skipped on the outage path",
        ENGINE,
        "        expired = self._expired(now)\n        if expired is not None:\n            return expired\n"
        "        self.last_read = now\n",
        "        self.last_read = now\n",
    ),
    (
        "5 a follow-up retry resends without looking",
        ENGINE,
        "        if lc.try_number > lc.series and not lc.send_checked:\n            return a.FindSend",
        "        if False:\n            return a.FindSend",
    ),
    (
        "6 a rejection does not arm the run-on",
        ENGINE,
        '        if not given.accept:\n            lc.run_on, lc.idle_since = "armed", None\n',
        "",
    ),
    (
        "7 a kill forgets that it paused",
        ENGINE,
        "lc.killed = True\n            return a.Pause(",
        "return a.Pause(",
    ),
    (
        "8 a status taken while the events disagree",
        ENGINE,
        "        lc.disagree_since = lc.disagree_since or now\n        return self._disagreed(state, now)\n",
        '        return self._ended(str(state.get("status")), now)\n',
    ),
    (
        "9 a person asked past the deadline",
        ENGINE,
        "action = self._expired(now) or action",
        "action = action",
    ),
    (
        "10 a transient ERROR counted on reconnect",
        ENGINE,
        "                verdict = None  # maybe a transient ERROR",
        "                pass  # maybe a transient ERROR",
    ),
    (
        "11 a follow-up retry that found its message has no deadline",
        ENGINE,
        "                if lc.deadline is None:\n                    lc.deadline = now + lc.wait_timeout\n"
        "                return None\n",
        "                return None\n",
    ),
    (
        "12 a follow-up waiting on someone else's confirmation has no deadline",
        ENGINE,
        'if self.rules.on_confirmation == "wait" and lc.deadline is None:',
        "if False:",
    ),
    (
        "13 unreadable events make any ended status finished",
        ENGINE,
        # since issue 29 (scenario 3) the status is read again after the 404, and judged here
        "return self._ended(status, now)\n\n    def _read_turn",
        'return self._ended("finished" if lc.events_unreadable else status, now)\n\n    def _read_turn',
    ),
]
