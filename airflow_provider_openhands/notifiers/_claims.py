"""The notifier's records: one Airflow Variable per attempt to fix a failure, never one shared value.

Workers share only Airflow Variables (the task state store belongs to one task instance), and a
Variable can only be read, written whole or deleted: no lock, no insert that fails when the key
exists. One Variable read, changed and written back by every failure loses what another worker
wrote meanwhile. So each attempt writes only a Variable of its own (``<base>.<signature>.<token>``),
which no other worker writes, and one attempt per signature wins by Lamport's bakery algorithm,
which needs no more than that: a ticket taken one above every ticket seen, the smallest ticket
(then token) wins, and a worker still taking its ticket is waited for. A worker that starts later
sees the winner's ticket while taking its own, so its ticket is larger: two writers never both win.
The winner keeps its Variable as the fix's record; the others delete theirs.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

#: Seconds a worker taking its ticket is waited for (a worker that died meanwhile is passed over).
CHOOSING_SECONDS = 30.0


class Claims:
    """The records of one notifier (its ``state_variable`` as ``base``), within ``window`` seconds."""

    def __init__(self, base: str, window: float, stale: float) -> None:
        self.base, self.window, self.stale = base, window, stale

    def records(self, now: float, signature: str = "") -> dict[str, dict[str, Any]]:
        """Live records (and tickets being taken) by Variable key; those past the window are deleted."""
        found = {}
        for key in _keys(f"{self.base}.{signature}"):
            record = _get(key)
            if record is None:
                continue
            if now - float(record.get("at", 0)) >= self.window:
                _delete(key)  # the window is over: the next failure of its kind starts afresh
                continue
            found[key] = record
        return found

    def standing(self, record: dict[str, Any], now: float) -> bool:
        """Within the window: a fix started, or one being started by a worker not dead (``stale``)."""
        age = now - float(record.get("at", 0))
        return age < self.window and (bool(record.get("url")) or age <= self.stale)

    def claim(self, signature: str, record: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """Take a ticket for ``signature``: (this attempt's key, None) when it won, else (None, the
        record that won). ``record`` is what the ticket holds besides its number (run, time)."""
        token = uuid.uuid4().hex[:16]
        mine = f"{self.base}.{signature}.{token}"
        _set(mine, {**record, "choosing": True})
        others = {k: r for k, r in self.records(time.time(), signature + ".").items() if k != mine}
        number = 1 + max((int(r.get("number") or 0) for r in others.values()), default=0)
        _set(mine, {**record, "number": number})
        for key in _keys(f"{self.base}.{signature}."):
            if key == mine:
                continue
            theirs = self._chosen(key)
            if theirs is None or not self.standing(theirs, time.time()):
                continue
            if (int(theirs["number"]), key) < (number, mine):
                _delete(mine)
                return None, theirs
        return mine, None

    def _chosen(self, key: str) -> dict[str, Any] | None:
        """Another ticket once it has its number (None: gone, or its worker died taking it)."""
        give_up = time.time() + CHOOSING_SECONDS
        while True:
            theirs = _get(key)
            if theirs is None or not theirs.get("choosing"):
                return theirs if theirs is not None and theirs.get("number") else None
            if time.time() >= give_up:
                return None
            time.sleep(0.05)

    def add(self, key: str, facts: dict[str, Any]) -> None:
        """Add to a record: its own worker once the fix started, or a cost check pausing it."""
        _set(key, {**(_get(key) or {}), **facts})

    def drop(self, key: str) -> None:
        _delete(key)


# -- Airflow Variables: the task SDK's in a task, the metadata database's elsewhere ------------------


def _sdk() -> bool:
    """In a task process of Airflow 3 (its Variables go through the API server), not in the DB's reach."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    if not AIRFLOW_V_3_0_PLUS:
        return False
    from airflow.sdk.execution_time import task_runner

    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def _variable() -> Any:
    if _sdk():
        from airflow.sdk import Variable

        return Variable
    from airflow.models.variable import Variable

    return Variable


def _get(key: str) -> dict[str, Any] | None:
    raw = _variable().get(key, None)
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _set(key: str, value: dict[str, Any]) -> None:
    _variable().set(key, json.dumps(value, sort_keys=True), description="OpenHandsNotifier: a fix conversation")


def _delete(key: str) -> None:
    _variable().delete(key)


def _keys(prefix: str) -> list[str]:
    """Variable keys starting with ``prefix`` (Airflow 3.3's ``Variable.keys`` in a task; the metadata
    database's elsewhere, Airflow 2 included)."""
    if _sdk():
        from airflow.sdk import Variable

        return sorted(key for key in Variable.keys(prefix=prefix) if key.startswith(prefix))
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(Variable.key).filter(Variable.key.startswith(prefix, autoescape=True)).all()
    return sorted(key for (key,) in rows if key.startswith(prefix))
