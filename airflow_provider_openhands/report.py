"""A report over a mapped OpenHands task: one row per mapped task instance, whatever became of it.

A report that only reads the conversations the tasks pushed misses every task that failed before a
conversation existed (a wrong API key, a start error, a capacity timeout) and calls such a run a
success. :func:`collect` starts from the mapped task instances' states instead, then adds what is known
of each one's conversation: the final state a successful task returned, or the conversation's state
read now (one batched request).

Used by the ``openhands_nightly_maintenance`` example from a task with ``trigger_rule=ALL_DONE``::

    report = collect(context, "maintain", repositories)
    log.info("%s", report.table())
    report.raise_if_failed()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openhands.api.state import DEFAULT_FAILURE_STATUSES, DEFAULT_SUCCESS_STATUSES, canonical_id
from airflow_provider_openhands.outcome import duration_seconds

#: Why a task instance that has no conversation did not succeed.
_WITHOUT_CONVERSATION = {
    "failed": "failed before any conversation started (a wrong API key, a start error, bad input: see its log)",
    "upstream_failed": "not run: an upstream task failed",
    "removed": "removed from the DAG",
}
_NOT_FAILED = {"success", "skipped"}


@dataclass
class Row:
    """One mapped task instance and what is known of its conversation."""

    map_index: int
    repository: str | None
    task_state: str
    status: str | None = None  # the conversation's, None when it never existed
    pr_number: list[Any] = field(default_factory=list)
    cost: float | None = None
    duration_s: float | None = None
    url: str | None = None
    conversation_id: str | None = None
    error: str | None = None  # the agent's own last error, for a conversation that ended in a failure
    problem: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.problem)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Report:
    task_id: str
    rows: list[Row]

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.failed]

    def table(self) -> str:
        """One aligned table: a header, a line per row, a total."""
        header = ("#", "repository", "task", "conversation", "PRs", "cost", "duration", "link / problem")
        lines = [header]
        for row in self.rows:
            lines.append(
                (
                    str(row.map_index),
                    row.repository or "?",
                    row.task_state,
                    row.status or "-",
                    ", ".join(f"#{n}" for n in row.pr_number) or "-",
                    f"${row.cost:.4f}" if isinstance(row.cost, (int, float)) else "-",
                    f"{row.duration_s:.0f}s" if row.duration_s is not None else "-",
                    f"FAILED: {row.problem}" + (f" {row.url}" if row.url else "") if row.failed else (row.url or "-"),
                )
            )
        widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
        text = ["  ".join([*(line[c].ljust(widths[c]) for c in range(len(widths))), line[-1]]) for line in lines]
        cost = sum(row.cost for row in self.rows if isinstance(row.cost, (int, float)))
        text.append(f"{len(self.rows)} task(s) of {self.task_id!r}: {len(self.failed)} failed; cost ${cost:.4f}")
        return "\n".join(text)

    def failure_message(self) -> str:
        listed = "; ".join(
            f"{row.repository or f'map index {row.map_index}'}: {row.problem}" + (f" ({row.url})" if row.url else "")
            for row in self.failed
        )
        return f"{len(self.failed)} of {len(self.rows)} {self.task_id!r} task(s) failed: {listed}"

    def raise_if_failed(self) -> None:
        """Fail the reporting task, without retries (asking again gives the same report)."""
        if self.failed:
            from airflow.providers.common.compat.sdk import AirflowFailException

            raise AirflowFailException(self.failure_message())


def mapped_task_states(context: Mapping[str, Any], task_id: str) -> dict[int, str]:
    """Map index -> state of ``task_id``'s task instances in this run (-1: the task is not mapped, or
    its expansion never happened because an upstream task failed or skipped)."""
    ti = context["ti"]
    if hasattr(ti, "get_task_states"):  # Airflow 3: the task asks the API server
        by_run = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
        states = {}
        for key, state in (by_run.get(ti.run_id) or {}).items():
            if key == task_id:
                states[-1] = _text(state)
            elif key.startswith(f"{task_id}_") and key[len(task_id) + 1 :].isdigit():
                states[int(key[len(task_id) + 1 :])] = _text(state)
        return states
    return {  # Airflow 2: the task reads the database
        other.map_index: _text(other.state)
        for other in context["dag_run"].get_task_instances()
        if other.task_id == task_id
    }


def collect(
    context: Mapping[str, Any],
    task_id: str,
    inputs: Sequence[str] | None = None,
    *,
    openhands_conn_id: str = "openhands_default",
    success_statuses: Iterable[str] = DEFAULT_SUCCESS_STATUSES,
    failure_statuses: Iterable[str] = DEFAULT_FAILURE_STATUSES,
) -> Report:
    """A :class:`Report` over the mapped task ``task_id`` of this run.

    :param inputs: what the task was mapped over (``inputs[i]`` is map index ``i``'s repository); it names
        the tasks that never had a conversation. Without it, rows are matched by the conversations'
        repositories alone.
    """
    success_statuses, failure_statuses = set(success_statuses), set(failure_statuses)
    ti = context["ti"]
    states = {
        index: state
        for index, state in mapped_task_states(context, task_id).items()
        if not (index < 0 and state in ("skipped", "none"))  # nothing was mapped
    }
    # Pulled without map indexes: a value per task instance that pushed one, and no lookup of one that did
    # not (which Airflow 3 would log as an error).
    finals = {
        canonical_id(state["conversation_id"]): dict(state)
        for state in ti.xcom_pull(task_ids=task_id) or []
        if isinstance(state, Mapping) and state.get("conversation_id")
    }
    ids = [str(i) for i in ti.xcom_pull(task_ids=task_id, key="conversation_id") or [] if i]
    unread = [i for i in ids if canonical_id(i) not in finals]
    current: Mapping[str, Any] = {}
    if unread:
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        hook = OpenHandsHook(openhands_conn_id)
        current = {key: dict(state) for key, state in hook.get_conversations(unread).items() if state}
        for state in current.values():
            _read_turn(hook, state, failure_statuses)
    conversations = [(True, state) for state in finals.values()] + [
        (False, dict(current.get(canonical_id(i)) or {"conversation_id": i, "status": "missing"})) for i in unread
    ]

    def take(repository: str | None, prefer_final: bool) -> dict[str, Any] | None:
        matching = [c for c in conversations if repository and c[1].get("selected_repository") == repository]
        if not matching:
            return None
        chosen = next((c for c in matching if c[0] == prefer_final), matching[0])
        conversations.remove(chosen)
        return chosen[1]

    rows: list[Row] = []
    for index in sorted(states):
        repository = inputs[index] if inputs is not None and 0 <= index < len(inputs) else None
        rows.append(_row(index, repository, states[index], take(repository, states[index] == "success")))
    for row in rows:  # conversations whose repository did not name their task instance
        if row.conversation_id is None and row.repository is None and conversations:
            _, state = conversations.pop(0)
            filled = _row(row.map_index, state.get("selected_repository"), row.task_state, state)
            row.__dict__.update(filled.__dict__)
    for row in rows:
        row.problem = _problem(row, success_statuses, failure_statuses)
    return Report(task_id, rows)


def _read_turn(hook: Any, state: dict[str, Any], failure_statuses: set[str]) -> None:
    """A conversation a task did not return, paused or ended in a failure: one page of its events tells
    how the agent ended (a paused sandbox hides it) and the agent's own last error."""
    from airflow_provider_openhands.exceptions import OpenHandsError

    paused = state.get("status") == "paused"
    if not paused and state.get("status") not in failure_statuses:
        return
    try:
        turn = hook.get_turn_outcome(state["conversation_id"])
    except OpenHandsError:  # the status read stands, without the agent's error
        return
    if paused:
        state["status"] = turn.get("status") or "paused"
    state["error"] = turn.get("error")


def _row(index: int, repository: str | None, task_state: str, state: Mapping[str, Any] | None) -> Row:
    if state is None:
        return Row(index, repository, task_state)
    return Row(
        index,
        repository or state.get("selected_repository"),
        task_state,
        status=state.get("status"),
        pr_number=list(state.get("pr_number") or []),
        cost=(state.get("metrics") or {}).get("accumulated_cost"),
        duration_s=duration_seconds(state),
        url=state.get("url"),
        conversation_id=state.get("conversation_id"),
        error=state.get("error"),
    )


def _problem(row: Row, success_statuses: set[str], failure_statuses: set[str]) -> str:
    if row.task_state in _NOT_FAILED:
        return ""
    if row.conversation_id is None:
        return _WITHOUT_CONVERSATION.get(row.task_state, f"task {row.task_state}, no conversation")
    if row.status in failure_statuses:
        return f"the conversation ended in {row.status}" + (f": {row.error}" if row.error else "")
    if row.status in success_statuses:
        return f"task {row.task_state} although its conversation {row.status}"
    return f"task {row.task_state} while its conversation was {row.status} (timed out or stopped)"


def _text(state: Any) -> str:
    return str(getattr(state, "value", state)) if state is not None else "none"
