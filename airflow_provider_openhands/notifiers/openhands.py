"""``OpenHandsNotifier``: a failed task starts one OpenHands conversation that looks for a fix.

Used as ``on_failure_callback`` (or ``on_retry_callback``) of a task or a DAG, as ``SlackNotifier``
is. A callback has little time and must not fail Airflow's own bookkeeping, so the notifier only
sends the start request (it never waits for the agent) and catches everything it raises. Only the
parse-time base class is imported here; the hook, the masker and Airflow's models are imported when
a failure is handled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.notifier import BaseNotifier

from airflow_provider_openhands.exceptions import OpenHandsConfigError

if TYPE_CHECKING:
    from airflow_provider_openhands.notifiers._claims import Claims

log = logging.getLogger(__name__)

#: A claim without a conversation this old is from a worker that died between its claim and its start.
STALE_CLAIM_SECONDS = 600.0
#: The task id of a DAG-level failure (the DAG's ``on_failure_callback``: no task instance).
DAG_LEVEL = "(the DAG)"


class _NotStarted(Exception):
    """The start failed and so did the cost check before it: one warning says both (masked already)."""


DEFAULT_INSTRUCTION = """\
An Airflow task failed: {{ failure.dag_id }}.{{ failure.task_id }}{{ failure.map_label }} \
(run {{ failure.run_id }}, try {{ failure.try_number }}).

Exception: {{ failure.exception }}

Traceback:
```
{{ failure.traceback }}
```
{% if failure.log_tail %}
The end of the task's log:
```
{{ failure.log_tail }}
```
{% endif %}
DAG file (relative to the repository root): {{ failure.dag_file }}
Operator: {{ failure.operator }}
Its rendered template fields (secrets removed):
{{ failure.fields }}

Find the cause of this failure. If it is a defect in this repository's code, fix it, add a test that \
fails without the fix, and open a pull request. If no code change is needed (bad input data, an outage \
of another system, a missing or expired credential), change nothing and explain why in your final message.
"""

# What varies between two failures of one cause, replaced before the message is hashed (order matters).
_NORMALISE = (
    (re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def normalise_message(message: str) -> str:
    """A failure message with its timestamps, UUIDs, hex ids and numbers replaced, so that the same
    cause (row 17 or row 4 000, run of today or yesterday) reads the same."""
    for pattern, placeholder in _NORMALISE:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())


def failure_signature(dag_id: str, task_id: str, exception_type: str, message: str) -> str:
    """What makes two failures "the same": DAG, task (all map indexes alike), exception type and the
    normalised message. A hash: the dedup state never holds the message (it may hold data)."""
    text = "\x00".join((dag_id, task_id, exception_type, normalise_message(message)))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class OpenHandsNotifier(BaseNotifier):
    """Start one OpenHands conversation to fix a failed task (``on_failure_callback``).

    The agent gets the exception, its traceback, the end of the task's log when the worker can read
    it, the DAG file's path in the repository, the operator and its rendered template fields, and is
    asked to open a pull request with a fix and a test, or to explain why no code change is needed.

    * Never blocks: the start request is sent, nothing waits for the agent. Never raises: any error
      (service down, bad connection, a template error) is one warning in the task's log, and the
      task's own failure stays as it was. A started conversation is one log line with its link.
    * No storms: failures with one signature (DAG id, task id, exception type, message with
      numbers, ids, hex and timestamps normalised) within ``window`` share one conversation (50
      mapped instances failing for one cause start one); at most ``max_conversations_per_day``
      start per notifier (per ``state_variable``) and UTC day.
    * No secrets: all text sent passes Airflow's secrets masker (``redact``): connection passwords,
      Variables with secret-looking names and values registered with ``mask_secret`` are masked;
      template fields with secret-looking names are left out.

    The dedup state is in Airflow Variables (under ``state_variable``), not the task state store: it
    must be shared by every task, map index, run and worker a notifier serves (and by the DAG
    processor, where DAG-level callbacks run), and the task state store belongs to one task
    instance. Races: each attempt to fix a failure writes only a Variable of its own, and of the
    workers that claim one signature at once exactly one wins (see ``notifiers/_claims.py``), so
    no record is lost and no failure starts two conversations. Listing the records needs
    ``Variable.keys`` in a task on Airflow 3 (3.3 and later).

    :param repository: ``owner/repo`` the agent works on (templated). Default: the repository of
        the DAG file (its git checkout's ``origin`` remote).
    :param instruction: Jinja template of the message (default :data:`DEFAULT_INSTRUCTION`); it sees
        the task context and ``failure`` (``dag_id``, ``task_id``, ``run_id``, ``exception``,
        ``exception_type``, ``traceback``, ``log_tail``, ``dag_file``, ``operator``, ``fields``).
    :param selected_branch: branch to check out (templated).
    :param git_provider: ``github``, ``gitlab``, ...
    :param title: conversation title (templated); default ``Fix <dag>.<task>: <exception type>``.
    :param openhands_conn_id: the ``openhands`` connection.
    :param window: how long one signature keeps sharing its conversation (default 24 h).
    :param max_conversations_per_day: fix conversations this notifier starts per UTC day, at most.
    :param max_cost_usd: the budget of each fix conversation. The start request has no budget field
        and no task waits on a fix conversation, so a follow-up check enforces it:
        :meth:`check_budgets` pauses each fix conversation of this notifier (within ``window``) whose
        cost is over its budget. Every failure the notifier handles runs the check first; a DAG that
        calls ``check_budgets()`` on a schedule covers the hours without failures. The budget is
        also in the conversation's observability metadata and the ``fix_asset`` event's extra, for
        a task that follows the fix (``OpenHandsConversationSensor(max_cost_usd=...)``).
    :param fix_asset: an Asset (Dataset) to emit an event on when a conversation starts (extra:
        ``conversation_id``, ``conversation_url``, ``repository``, ``dag_id``, ``task_id``,
        ``max_cost_usd``), so a review DAG scheduled on it follows the fix. Airflow 2 only: Airflow 3
        sends asset events only with a successful task's outlets, and a callback has no way to send
        one (refused there, not ignored).
    :param state_variable: the prefix of the Variables holding the dedup state and the daily count
        (``<state_variable>.<signature>.<token>``). Default: ``openhands_notifier.<conn id>.<repository>``;
        notifiers sharing one share both.
    :param repository_root: the directory the DAG file's path is given relative to (default: the
        git checkout holding the DAG file, else the DAG bundle's root).
    :param log_tail_lines: lines of the task's log sent, at most (0: none).
    :param request_timeout: seconds the start request (retries included) may take.
    :param claim_settle_seconds: no longer used (a claim needs no time to settle); accepted so that
        DAG files that set it still parse.
    """

    template_fields = ("repository", "selected_branch", "title")

    def __init__(
        self,
        *,
        repository: str | None = None,
        instruction: str = DEFAULT_INSTRUCTION,
        selected_branch: str | None = None,
        git_provider: str | None = None,
        title: str | None = None,
        openhands_conn_id: str = "openhands_default",
        window: timedelta | float = timedelta(hours=24),
        max_conversations_per_day: int = 10,
        max_cost_usd: float | None = None,
        fix_asset: Any = None,
        state_variable: str | None = None,
        repository_root: str | None = None,
        log_tail_lines: int = 80,
        request_timeout: float = 20.0,
        claim_settle_seconds: float = 0.5,
    ) -> None:
        super().__init__()
        from airflow_provider_openhands.api.options import check_positive, check_repository, is_templated

        if repository is not None and not is_templated(repository):
            check_repository(repository)
        self.repository = repository
        self.instruction = instruction
        self.selected_branch = selected_branch
        self.git_provider = git_provider
        self.title = title
        self.openhands_conn_id = openhands_conn_id
        seconds = window.total_seconds() if isinstance(window, timedelta) else window
        self.window = check_positive(seconds, "window")
        if isinstance(max_conversations_per_day, bool) or not isinstance(max_conversations_per_day, int):
            raise OpenHandsConfigError(f"max_conversations_per_day must be an int, got {max_conversations_per_day!r}")
        if max_conversations_per_day < 0:
            raise OpenHandsConfigError(f"max_conversations_per_day must be >= 0, got {max_conversations_per_day!r}")
        self.max_conversations_per_day = max_conversations_per_day
        self.max_cost_usd = None if max_cost_usd is None else check_positive(max_cost_usd, "max_cost_usd")
        if fix_asset is not None and _airflow_3():
            raise OpenHandsConfigError(
                "fix_asset needs Airflow 2: on Airflow 3 only a successful task's outlets emit asset events, "
                "and a failure callback cannot send one"
            )
        if fix_asset is not None:
            from airflow.datasets import Dataset

            if not isinstance(fix_asset, Dataset):
                raise OpenHandsConfigError(f"fix_asset must be a Dataset, got {type(fix_asset).__name__}")
        self.fix_asset = fix_asset
        self.state_variable = state_variable
        self.repository_root = repository_root
        self.log_tail_lines = max(0, int(log_tail_lines))
        self.request_timeout = check_positive(request_timeout, "request_timeout")
        self.claim_settle_seconds = max(0.0, float(claim_settle_seconds))

    # -- Airflow's entry point -------------------------------------------------------------------

    def get_template_env(self, dag: Any = None) -> Any:
        """The DAG's Jinja environment, or a plain sandboxed one when the callback's ``dag`` has none
        (a DAG-level callback on Airflow 3 may be handed the serialized DAG)."""
        return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    def __call__(self, *args: Any) -> None:
        """Airflow calls this with the context. Unlike ``BaseNotifier``'s, it never raises: whatever
        goes wrong is one warning, and the callback machinery and the task's state are left alone."""
        try:
            context = args[0] if len(args) == 1 else {"dag": args[0]}
            notifier = copy.copy(self)  # rendered per call: a templated field never sticks to the next one
            notifier._update_context(context)
            notifier.render_template_fields(context)
            notifier.notify(context)
        except Exception as exc:
            try:
                why = str(exc) if isinstance(exc, _NotStarted) else _redact(f"{type(exc).__name__}: {exc}")
            except Exception:  # no masker: the exception's type only, never an unmasked message
                why = type(exc).__name__
            log.warning("OpenHandsNotifier: no fix conversation was started: %s", why)

    def notify(self, context: Any) -> None:
        failure = self.describe(context)
        git_root = failure.pop("_git_root")
        repository = self.repository or _origin_repository(git_root)
        if not repository:
            raise OpenHandsConfigError(
                "no repository: the DAG file is in no git checkout with an 'origin' remote; set repository="
            )
        failure["repository"] = repository
        key = self._state_key(repository)
        self._deadline = time.time() + self.request_timeout  # the check and the start share it
        unchecked = None
        try:
            self._pause_over_budget(key)
        except Exception as exc:  # the check is a guard: a failure of its own never costs the new fix
            unchecked = _redact(f"{type(exc).__name__}: {exc}")
        try:
            self._start_once(context, failure, repository, key)
        except Exception as exc:
            if unchecked is None:
                raise
            why = _redact(f"{type(exc).__name__}: {exc}")
            raise _NotStarted(f"{why} (nor were the fix conversations' costs checked: {unchecked})") from None
        if unchecked is not None:
            log.warning("OpenHandsNotifier: the fix conversations' costs were not checked: %s", unchecked)

    # -- the cost guard ------------------------------------------------------------------------------

    def check_budgets(self) -> list[str]:
        """The follow-up check of ``max_cost_usd``: pause every fix conversation this notifier started
        (within ``window``) whose cost is over the budget it was started with; return their ids.

        For a task scheduled beside the pipelines (``@task def guard(): return notifier.check_budgets()``),
        so a fix conversation is stopped even when no other failure comes. Needs ``repository`` or
        ``state_variable`` (a DAG file's repository is only known in its failure's context). Raises
        what goes wrong: unlike a callback, such a task should fail visibly."""
        if not (self.state_variable or (self.repository and not _is_templated(self.repository))):
            raise OpenHandsConfigError("check_budgets needs repository= (not templated) or state_variable=")
        return self._pause_over_budget(self._state_key(self.repository or ""))

    def _pause_over_budget(self, key: str) -> list[str]:
        from airflow_provider_openhands.api.state import canonical_id
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook
        from airflow_provider_openhands.hooks.transport import RetryPolicy

        claims = self._claims(key)
        watched = {
            record_key: fix
            for record_key, fix in claims.records(time.time()).items()
            if fix.get("conversation_id") and fix.get("max_cost_usd") is not None and not fix.get("paused")
        }
        if not watched and self.max_cost_usd is None:
            return []
        hook = OpenHandsHook(self.openhands_conn_id, retry_policy=RetryPolicy(max_retries=0))
        if hook.api_version != "v1":  # enforced or refused, never ignored
            raise OpenHandsConfigError(
                f"max_cost_usd needs a V1 connection: {self.openhands_conn_id!r} uses {hook.api_version}, "
                "which reports no cost"
            )
        if not watched:
            return []
        paused: dict[str, str] = {}
        with hook.deadline(getattr(self, "_deadline", None) or time.time() + self.request_timeout):
            states = hook.get_conversations([fix["conversation_id"] for fix in watched.values()])
            for record_key, fix in watched.items():
                state = states.get(canonical_id(fix["conversation_id"])) or {}
                cost = (state.get("metrics") or {}).get("accumulated_cost")
                if not isinstance(cost, (int, float)) or cost <= fix["max_cost_usd"]:
                    continue
                hook.stop_conversation(fix["conversation_id"], state.get("sandbox_id"))
                paused[record_key] = fix["conversation_id"]
                log.warning(
                    "OpenHandsNotifier: the fix conversation %s cost $%.4f, over its max_cost_usd $%.4f: paused",
                    fix.get("url") or fix["conversation_id"],
                    cost,
                    fix["max_cost_usd"],
                )
        for record_key in paused:
            claims.add(record_key, {"paused": "max_cost_usd"})
        return list(paused.values())

    # -- what the agent is told ----------------------------------------------------------------------

    def describe(self, context: Any) -> dict[str, Any]:
        """The failure's facts, each passed through the secrets masker."""
        import traceback

        ti = context.get("ti") or context.get("task_instance")
        dag = context.get("dag")
        task = context.get("task") or getattr(ti, "task", None)
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            exception_type = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
            message = str(exc)
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            exception_type, message = "reason", str(exc or context.get("reason") or "unknown")
            trace = "(no traceback: the callback was not given an exception)"
        map_index = int(getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1)
        fileloc = getattr(dag, "fileloc", None)
        git_root = self.repository_root or _git_root(fileloc)
        return {
            "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?"),
            "task_id": getattr(ti, "task_id", None) or DAG_LEVEL,
            "run_id": getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", "?"),
            "try_number": getattr(ti, "try_number", "?"),
            "map_index": map_index,
            "map_label": f"[{map_index}]" if map_index >= 0 else "",
            "exception_type": exception_type,
            "exception": _redact(f"{exception_type}: {message}"),
            "_message": message,
            "traceback": _tail_chars(_redact(trace), 8000),  # masked whole: a cut could split a secret
            "log_tail": _redact(self._log_tail(ti)),
            "dag_file": _relative(fileloc, git_root, getattr(dag, "relative_fileloc", None)),
            "operator": f"{type(task).__module__}.{type(task).__name__}" if task is not None else "(unknown)",
            "fields": _redact(_rendered_fields(task)),
            "_git_root": git_root,
            # the DAG's callback: no exception, a reason (Airflow 3 also gives it a failed task instance)
            "_dag_level": ti is None or (context.get("exception") is None and context.get("reason") is not None),
        }

    def message(self, context: Any, failure: Mapping[str, Any]) -> str:
        env = self.get_template_env(dag=context.get("dag"))
        facts = {k: v for k, v in failure.items() if not k.startswith("_")}
        context["failure"] = facts  # not a copy of the context: Airflow 2 warns on each deprecated key read
        try:
            text = self.render_template(self.instruction, context, env)
        finally:
            context.pop("failure", None)
        return _redact(text)

    def _log_tail(self, ti: Any) -> str:
        """The end of this try's log file, when the worker writes it locally (else empty)."""
        if not self.log_tail_lines or ti is None:
            return ""
        try:
            import jinja2
            from airflow.configuration import conf

            template = conf.get("logging", "log_filename_template")
            name = jinja2.Template(template).render(ti=ti, try_number=ti.try_number)
            path = os.path.join(conf.get("logging", "base_log_folder"), name)
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                start = max(0, handle.tell() - 64_000)
                handle.seek(start)
                lines = handle.read().decode("utf-8", "replace").splitlines()
                if start:  # the first line is cut: it could hold part of a secret the masker cannot match
                    lines = lines[1:]
        except Exception:
            return ""
        return "\n".join(lines[-self.log_tail_lines :])

    # -- one conversation per signature ------------------------------------------------------------

    def _state_key(self, repository: str) -> str:
        return self.state_variable or f"openhands_notifier.{self.openhands_conn_id}.{repository.replace('/', '.')}"

    def _claims(self, key: str) -> Claims:
        from airflow_provider_openhands.notifiers._claims import Claims

        return Claims(key, self.window, STALE_CLAIM_SECONDS)

    def _start_once(self, context: Any, failure: dict[str, Any], repository: str, key: str) -> None:
        signature = failure_signature(
            failure["dag_id"], failure["task_id"], failure["exception_type"], _redact(failure.pop("_message"))
        )
        where = f"{failure['dag_id']}.{failure['task_id']}{failure['map_label']}"
        run = f"{failure['dag_id']}/{failure['run_id']}"
        now = time.time()
        claims = self._claims(key)
        records = {k: r for k, r in claims.records(now).items() if claims.standing(r, now)}
        if failure["_dag_level"] and any(record.get("run") == run for record in records.values()):
            log.info("OpenHandsNotifier: run %s failed; a fix conversation already looks at its failed task", run)
            return
        known = next((r for k, r in records.items() if k.startswith(f"{key}.{signature}.") and r.get("number")), None)
        if known:  # read only: 50 failures of one cause write nothing
            log.info(
                "OpenHandsNotifier: %s failed as before; the fix conversation %s already looks at it",
                where,
                known.get("url") or "(being started by another worker)",
            )
            return
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        started = sum(1 for r in records.values() if r.get("number") and r.get("day") == today)
        if started >= self.max_conversations_per_day:
            log.warning(
                "OpenHandsNotifier: no fix conversation for %s: %d started today already (max_conversations_per_day)",
                where,
                started,
            )
            return
        record = {"at": now, "run": run, "day": today}
        mine, theirs = claims.claim(signature, record)
        if mine is None:
            log.info(
                "OpenHandsNotifier: %s: another worker starts the fix conversation of this failure (%s)",
                where,
                (theirs or {}).get("url") or "being started",
            )
            return
        try:
            conversation_id, url = self._submit(context, failure, repository, signature, now)
        except Exception:
            claims.drop(mine)  # the claim goes: a later failure may try again
            raise
        record = {"conversation_id": conversation_id, "url": url}
        if self.max_cost_usd is not None:
            record["max_cost_usd"] = self.max_cost_usd
        claims.add(mine, record)
        log.info("OpenHandsNotifier: %s failed; OpenHands fix conversation started: %s", where, url)
        try:
            self._emit(context, failure, repository, conversation_id, url)
        except Exception as exc:
            why = _redact(f"{type(exc).__name__}: {exc}")
            log.warning("OpenHandsNotifier: the fix_asset event of %s was not emitted: %s", url, why)

    def _submit(
        self, context: Any, failure: Mapping[str, Any], repository: str, signature: str, now: float
    ) -> tuple[str, str]:
        from airflow_provider_openhands.api.options import StartOptions
        from airflow_provider_openhands.exceptions import OpenHandsApiError
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook
        from airflow_provider_openhands.hooks.transport import RetryPolicy

        hook = OpenHandsHook(self.openhands_conn_id, retry_policy=RetryPolicy(max_retries=0))
        if hook.api_version == "v0":  # a second start of one id is refused with 409 there
            bucket = int(now // self.window)
            conversation_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"openhands-notifier:{signature}:{bucket}"))
        else:  # a reused id would take the first conversation's sandbox over: the link is known at once
            conversation_id = str(uuid.uuid4())
        fields = {
            "airflow_dag_id": failure["dag_id"],
            "airflow_task_id": failure["task_id"],
            "airflow_run_id": failure["run_id"],
            "airflow_map_index": failure["map_index"],
            "airflow_notifier": "openhands",
        }
        if self.max_cost_usd is not None:
            fields["airflow_max_cost_usd"] = self.max_cost_usd
        fields = {k: _redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        title = self.title or f"Fix {failure['dag_id']}.{failure['task_id']}: {failure['exception_type']}"
        options = StartOptions(
            initial_user_msg=self.message(context, failure),
            repository=repository,
            selected_branch=self.selected_branch,
            git_provider=self.git_provider,
            title=_redact(title),
            conversation_id=conversation_id,
            observability_tags=tuple(f"{k}:{v}" for k, v in fields.items()),
            observability_metadata=fields,
        )
        try:
            with hook.deadline(getattr(self, "_deadline", None) or time.time() + self.request_timeout):
                started = hook.submit_conversation(options)
        except OpenHandsApiError as exc:
            if getattr(exc, "status_code", None) != 409:
                raise
            started = {"conversation_id": conversation_id}  # V0: another worker started this very id
        conversation_id = started.get("conversation_id") or conversation_id
        return conversation_id, hook.conversation_url(conversation_id)

    def _emit(self, context: Any, failure: Mapping[str, Any], repository: str, conversation_id: str, url: str) -> None:
        """Airflow 2: the ``fix_asset`` event, for a review DAG scheduled on it."""
        if self.fix_asset is None:
            return
        from airflow.datasets.manager import dataset_manager
        from airflow.utils.session import create_session

        extra = {
            "conversation_id": conversation_id,
            "conversation_url": url,
            "repository": repository,
            "dag_id": failure["dag_id"],
            "task_id": failure["task_id"],
            "run_id": failure["run_id"],
            "max_cost_usd": self.max_cost_usd,
        }
        with create_session() as session:
            dataset_manager.register_dataset_change(
                task_instance=context.get("ti"), dataset=self.fix_asset, extra=extra, session=session
            )


# -- helpers -----------------------------------------------------------------------------------------


def _airflow_3() -> bool:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    return AIRFLOW_V_3_0_PLUS


def _is_templated(value: str) -> bool:
    from airflow_provider_openhands.api.options import is_templated

    return is_templated(value)


def _redact(value: Any) -> str:
    """Text through Airflow's secrets masker (connection passwords, secret Variables, ``mask_secret``)."""
    from airflow.providers.common.compat.sdk import redact

    text = value if isinstance(value, str) else str(value)
    return str(redact(text))


def _tail_chars(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def _rendered_fields(task: Any) -> str:
    """``name: value`` of the task's rendered template fields; a field with a secret-looking name is
    masked by name, every value by content (by the caller). Only plain data is shown: an object's
    ``str`` may run code (Airflow 2's lazy context values query the database), so it shows as its type."""
    from airflow.providers.common.compat.sdk import redact

    lines = []
    for name in getattr(task, "template_fields", ()) or ():
        try:
            value = _plain(getattr(task, name, None))
            if value in (None, "", {}, []):
                continue
            value = redact(value, name)
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        except Exception:
            continue
        lines.append(f"- {name}: {_tail_chars(text, 1500)}")
    return "\n".join(lines) or "(none)"


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data, at most 4 levels and 50 items per level; other objects as ``<type>``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth >= 4:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in list(value)[:50]]
    return f"<{type(value).__name__}>"


def _git_root(fileloc: str | None) -> str | None:
    if not fileloc:
        return None
    directory = os.path.dirname(os.path.abspath(fileloc))
    while True:
        if os.path.exists(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _relative(fileloc: str | None, root: str | None, bundle_relative: Any) -> str:
    if fileloc and root:
        return os.path.relpath(os.path.abspath(fileloc), root)
    return str(bundle_relative or fileloc or "(unknown)")


_REMOTE = re.compile(r"(?:[:/])([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+?)(?:\.git)?/?$")


def _origin_repository(root: str | None) -> str | None:
    """``owner/repo`` of the checkout's ``origin`` remote (``.git`` a directory, or a worktree's file)."""
    if not root:
        return None
    try:
        git = os.path.join(root, ".git")
        if os.path.isfile(git):
            with open(git) as handle:
                gitdir = handle.read().split("gitdir:", 1)[1].strip()
            git = os.path.join(root, gitdir)
            common = os.path.join(git, "commondir")
            if os.path.exists(common):
                with open(common) as handle:
                    git = os.path.join(git, handle.read().strip())
        with open(os.path.join(git, "config")) as handle:
            config = handle.read()
    except (OSError, IndexError):
        return None
    section = re.search(r'\[remote "origin"\]([^\[]*)', config)
    url = re.search(r"^\s*url\s*=\s*(\S+)", section.group(1), re.M) if section else None
    if not url:
        return None
    path = re.sub(r"^[a-z+]+://[^/]+/", "/", url.group(1))
    match = _REMOTE.search(path)
    return match.group(1) if match else None
