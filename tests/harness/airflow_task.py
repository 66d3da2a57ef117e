"""Run one operator as Airflow 3.3's task runner does, without a scheduler: for what ``dag.test()``
cannot drive (a SIGTERM then a retry, two deployments with the same ids, a triggerer restart, XCom
at the moment a task defers, reschedule pokes).

What it copies (``airflow/sdk/execution_time/task_runner.py`` and the execution API):

* Each run of the task (a try, a resume after a deferral, a poke) is a new process that parses the
  DAG file: here a ``deepcopy`` of the operator, its templates rendered, ``execute`` (or the method
  the deferral named) called with the ``ExecutorSafeguard`` set, then ``post_execute``; the return
  value goes to XCom ``return_value``.
* The task instance's XCom is cleared when a try starts and at each reschedule poke, not on a
  resume. The task state store is scoped to the DAG run, task and map index: the same across
  tries, pokes, deferrals and clears. Each :class:`Deployment` (metadata DB) has its own.
* ``max_tries`` is ``retries`` for a new task instance and ``try_number + retries`` after a clear;
  a failure is retried if ``max_tries != 0 and try_number <= max_tries``; ``AirflowFailException``
  and ``AirflowSensorTimeout`` fail at once.
* ``TaskDeferred``: the kwargs of ``trigger.serialize()`` go through serde (as stored in the trigger
  table); the triggerer imports the classpath, builds the trigger and runs it to its first event in
  an event loop of its own; the task resumes with ``event=payload`` (``__fail__`` on a trigger
  timeout or error). A triggerer restart cancels the trigger's task, awaits ``cleanup()`` and
  rebuilds the trigger from the stored kwargs.
* SIGTERM (``kill``): ``on_kill`` runs (from another thread) while ``execute`` runs, then the
  process dies: the try fails, ``up_for_retry`` if it may be retried.
* ``AirflowRescheduleException``: a new poke at the date asked, with ``task_reschedule_count`` and
  ``ti.get_first_reschedule_date()`` as Airflow gives them.
* ``TaskAwaitingInput`` (human-in-the-loop, Airflow >= 3.3): the HITL request the task wrote
  (``upsert_hitl_detail``'s message to the supervisor) is kept in ``hitl_requests``; the task is
  parked, no trigger, no worker; ``answer(request)`` (a person, through the HITL API) gives its
  answer, else, when the timeout passes, the scheduler's sweep (``check_awaiting_input_timeouts``)
  writes the request's defaults as the answer. The task resumes in the method named, its kwargs
  through serde with ``event``: ``HITLDetail.as_resume_event_payload`` of that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import ctypes
import functools
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any


class Killed(BaseException):
    """The task process died (SIGTERM, then the supervisor's SIGKILL)."""

    def __str__(self) -> str:
        return "the task process was killed (SIGTERM)"


class TaskStateStore:
    """``context["task_state_store"]`` (Airflow 3.3): JSON values by key for one task of one DAG run."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.values.get(key, default))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def clear(self) -> None:
        self.values.clear()


class Deployment:
    """One Airflow installation: its metadata DB's XCom, task state stores and DAG runs."""

    def __init__(self, name: str = "airflow") -> None:
        self.name = name
        self.xcom: dict[tuple[Any, ...], Any] = {}  # (dag_id, run_id, task_id, map_index, key) -> value
        self.stores: dict[tuple[Any, ...], TaskStateStore] = {}
        self.dag_runs: dict[tuple[str, str], SimpleNamespace] = {}

    def dag_run(self, dag_id: str, run_id: str, start_date: datetime | None = None) -> SimpleNamespace:
        now = start_date or datetime.now(timezone.utc)
        fields = {"start_date": now, "queued_at": now, "run_after": now, "logical_date": now, "conf": {}}
        return self.dag_runs.setdefault((dag_id, run_id), SimpleNamespace(dag_id=dag_id, run_id=run_id, **fields))


class TaskInstance:
    """What operators use of Airflow's RuntimeTaskInstance."""

    def __init__(self, task: Any, deployment: Deployment, dag_id: str, run_id: str, map_index: int) -> None:
        self.task, self.deployment = task, deployment
        self.dag_id, self.task_id, self.run_id, self.map_index = dag_id, task.task_id, run_id, map_index
        self.id = uuid.uuid4()  # the HITL request of this task instance names it
        self.try_number, self.max_tries = 1, task.retries or 0
        self.start_date: datetime | None = None
        self.first_poke: datetime | None = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.deployment.xcom[(self.dag_id, self.run_id, self.task_id, self.map_index, key)] = copy.deepcopy(value)

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return copy.deepcopy(self.deployment.xcom.get((self.dag_id, self.run_id, task_ids or self.task_id, -1, key)))

    def xcom(self) -> dict[str, Any]:
        """This task instance's XCom, by key."""
        mine = (self.dag_id, self.run_id, self.task_id, self.map_index)
        return {k[4]: copy.deepcopy(v) for k, v in self.deployment.xcom.items() if k[:4] == mine}

    def clear_xcom(self) -> None:
        mine = (self.dag_id, self.run_id, self.task_id, self.map_index)
        for key in [k for k in self.deployment.xcom if k[:4] == mine]:
            del self.deployment.xcom[key]

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_poke if context.get("task_reschedule_count", 0) else None


@dataclass
class Deferral:
    """A deferral as the triggerer got it, and this task instance's XCom at that moment."""

    classpath: str
    kwargs: dict[str, Any]  # serde-serialized, as stored in the trigger table
    method_name: str
    xcom: dict[str, Any]
    at: float = field(default_factory=time.time)


@dataclass
class TryResult:
    state: str  # success, failed, up_for_retry, skipped; up_for_reschedule when max_pokes ran out
    value: Any = None
    error: BaseException | None = None
    try_number: int = 1
    pokes: int = 0
    seconds: float = 0.0

    def __repr__(self) -> str:
        error = f", {type(self.error).__name__}: {self.error}" if self.error else ""
        return f"TryResult({self.state}, try {self.try_number}, {self.pokes} pokes, {self.seconds:.1f}s{error})"


class AirflowTask:
    """One task instance of ``operator`` in ``deployment``, run try by try.

    ``run()``, ``retry()`` and ``clear()`` run a try to its end (deferrals and pokes included);
    ``kill_during(when)`` SIGTERMs a try once ``when()`` holds (or after ``when`` seconds);
    ``restart_triggerer()`` restarts the triggerer under a deferred try. ``start()``, ``kill()`` and
    ``wait()`` drive a try step by step. ``deferrals`` lists the deferrals; ``on_defer(deferral)`` is
    called at each. ``max_pokes`` bounds a rescheduling sensor's try.
    """

    def __init__(
        self,
        operator: Any,
        *,
        deployment: Deployment | None = None,
        run_id: str = "manual__2026-11-30T00:00:00+00:00",
        dag_run_start: datetime | None = None,
        map_index: int = -1,
        max_pokes: int = 100,
        on_defer: Callable[[Deferral], None] | None = None,
        answer: Callable[[Any], tuple[list[str], dict[str, Any]] | None] | None = None,
    ) -> None:
        self.operator, self.deployment = operator, deployment or Deployment()
        dag_id = operator.dag_id if operator.has_dag() else "adhoc"
        self.dag_run = self.deployment.dag_run(dag_id, run_id, dag_run_start)
        self.ti = TaskInstance(operator, self.deployment, dag_id, run_id, map_index)
        self.store = self.deployment.stores.setdefault((dag_id, run_id, operator.task_id, map_index), TaskStateStore())
        self.max_pokes, self.on_defer = max_pokes, on_defer
        self.deferrals: list[Deferral] = []
        self.answer = answer  # a person: (chosen options, params input) for a HITL request, or None
        self.hitl_requests: list[Any] = []  # CreateHITLDetailPayload, as the supervisor got them
        self.results: list[TryResult] = []
        self.triggerer_restarts = 0
        self._thread: threading.Thread | None = None
        self._result: TryResult | None = None
        self._executing: Any = None  # the operator whose execute (or resume method) runs now
        self._trigger: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None
        self._restart = False

    @property
    def deferred(self) -> bool:
        """Whether the running try waits in the triggerer now."""
        return self._trigger is not None

    # -- steps ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the current try (``ti.try_number``) in a worker thread."""
        assert self._thread is None, "a try is running"
        self._thread = threading.Thread(target=self._try, name=f"try-{self.ti.try_number}", daemon=True)
        self._result = None
        self._thread.start()

    def wait(self, timeout: float = 60.0) -> TryResult:
        assert self._thread is not None, "no try was started"
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._interrupt()
            raise TimeoutError(f"try {self.ti.try_number} of {self.ti.task_id} still running after {timeout:.0f}s")
        self._thread = None
        assert self._result is not None, "the harness failed (see the thread's exception)"
        self.results.append(self._result)
        return self._result

    def kill(self) -> None:
        """SIGTERM: ``on_kill`` runs, then the process dies (the try fails)."""
        task = self._executing
        if task is None or self._trigger is not None:
            raise RuntimeError("no execute runs in a worker now (deferred, or between runs)")
        task.on_kill()
        self._interrupt()

    def restart_triggerer(self) -> None:
        """The triggerer restarts: the trigger is cancelled, cleaned up and rebuilt from its kwargs."""
        if self._trigger is None:
            raise RuntimeError("the task is not deferred")
        loop, future = self._trigger
        self._restart = True
        loop.call_soon_threadsafe(future.cancel)

    # -- whole tries ----------------------------------------------------------------------------------

    def run(self, timeout: float = 60.0) -> TryResult:
        self.start()
        return self.wait(timeout)

    def retry(self, timeout: float = 60.0) -> TryResult:
        """Airflow retries a failed try: the next try number, the same series."""
        last = self.results[-1] if self.results else None
        if last is None or last.state != "up_for_retry":
            raise AssertionError(f"Airflow would not retry after {last!r}")
        self.ti.try_number += 1
        return self.run(timeout)

    def clear(self, timeout: float = 60.0) -> TryResult:
        """A person clears the task instance: ``max_tries = try_number + retries``, a new series."""
        self.ti.max_tries = self.ti.try_number + (self.operator.retries or 0)
        self.ti.try_number += 1
        return self.run(timeout)

    def kill_during(self, when: Callable[[], bool] | float, timeout: float = 60.0) -> TryResult:
        """Run a try and SIGTERM it while ``execute`` runs, once ``when()`` holds (or after ``when`` s)."""
        at = time.time() + when if isinstance(when, (int, float)) else None
        moment = (lambda: time.time() >= at) if at is not None else when
        self.start()
        give_up = time.time() + timeout
        while not (self._executing is not None and self._trigger is None and moment()):
            if not self._thread.is_alive() or time.time() > give_up:
                raise AssertionError(f"the moment to kill never came: {self.wait(1)!r}")
            time.sleep(0.02)
        self.kill()
        return self.wait(timeout)

    # -- the worker thread ----------------------------------------------------------------------------

    def _interrupt(self) -> None:
        if self._thread is not None and self._thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident), ctypes.py_object(Killed))

    def _run_once(self, pokes: int, method: str | None, kwargs: dict[str, Any] | None) -> Any:
        """One run of the task, in a fresh operator, as a new task process does it."""
        from airflow.sdk.bases.operator import ExecutorSafeguard

        task = self.ti.task = copy.deepcopy(self.operator)
        context = {
            "ti": self.ti,
            "task_instance": self.ti,
            "task": task,
            "dag": task.dag if task.has_dag() else None,
            "dag_run": self.dag_run,
            "run_id": self.ti.run_id,
            "logical_date": self.dag_run.logical_date,
            "params": {},
            "task_state_store": self.store,
            "task_reschedule_count": pokes,
        }
        task.render_template_fields(context)
        call = task.execute if method is None else functools.partial(task.resume_execution, method, kwargs)
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, task)
        self._executing = task
        try:
            with self._supervisor_records_hitl():
                value = ctx.run(call, context=context)
        finally:
            self._executing = None
        task.post_execute(context, value)
        if task.do_xcom_push and value is not None:
            self.ti.xcom_push("return_value", value)
        return value

    @contextlib.contextmanager
    def _supervisor_records_hitl(self) -> Iterator[None]:
        """``upsert_hitl_detail`` sends its request to the supervisor: here, to ``hitl_requests``."""
        try:
            from airflow.sdk.execution_time import hitl, task_runner
        except ImportError:  # before Airflow 3.1: no human-in-the-loop
            yield
            return
        real = hitl.upsert_hitl_detail
        supervisor = SimpleNamespace(send=lambda msg: self.hitl_requests.append(msg))

        def upsert_hitl_detail(*args: Any, **kwargs: Any) -> None:
            task_runner.SUPERVISOR_COMMS = supervisor
            try:
                real(*args, **kwargs)
            finally:
                del task_runner.SUPERVISOR_COMMS

        hitl.upsert_hitl_detail = upsert_hitl_detail
        try:
            yield
        finally:
            hitl.upsert_hitl_detail = real

    def _awaited_input(self, timeout: Any) -> dict[str, Any]:
        """The event a parked task resumes with: a person's answer, or at the timeout the scheduler's
        sweep's (the request's defaults, and each param's default value)."""
        from airflow.models.hitl import HITLDetail

        request = self.hitl_requests[-1]
        given = self.answer(request) if self.answer is not None else None
        if given is None:
            time.sleep(max(0.0, timeout.total_seconds()) if timeout is not None else 0.0)
            params = {
                key: value["value"] if isinstance(value, dict) and "value" in value else value
                for key, value in (request.params or {}).items()
            }
            detail = HITLDetail(chosen_options=list(request.defaults or []), params_input=params)
            detail.responded_at = datetime.now(timezone.utc)
            return detail.as_resume_event_payload(timedout=True)
        chosen, params = given
        detail = HITLDetail(chosen_options=chosen, params_input=params, responded_at=datetime.now(timezone.utc))
        detail.responded_by = {"id": "reviewer", "name": "reviewer"}
        return detail.as_resume_event_payload(timedout=False)

    def _try(self) -> None:
        from airflow.sdk.exceptions import (
            AirflowFailException,
            AirflowRescheduleException,
            AirflowSensorTimeout,
            AirflowSkipException,
            TaskDeferred,
        )
        from airflow.sdk.serde import deserialize, serialize

        try:
            from airflow.sdk.exceptions import TaskAwaitingInput
        except ImportError:  # before Airflow 3.3

            class TaskAwaitingInput(BaseException):  # type: ignore[no-redef]
                pass

        ti, began, pokes, method, kwargs = self.ti, time.time(), 0, None, None
        ti.start_date = datetime.now(timezone.utc)
        result: TryResult
        try:
            ti.clear_xcom()
            while True:
                try:
                    result = TryResult("success", self._run_once(pokes, method, kwargs))
                    break
                except TaskDeferred as deferred:
                    classpath, trigger_kwargs = deferred.trigger.serialize()
                    deferral = Deferral(classpath, serialize(trigger_kwargs), deferred.method_name, ti.xcom())
                    self.deferrals.append(deferral)
                    if self.on_defer is not None:
                        self.on_defer(deferral)
                    seconds = deferred.timeout.total_seconds() if deferred.timeout else None
                    method, event = self._fire(deferral, seconds)
                    kwargs = deserialize(serialize({**(deferred.kwargs or {}), **event}))
                except TaskAwaitingInput as awaiting:
                    event = self._awaited_input(awaiting.timeout)
                    method = awaiting.method_name
                    kwargs = deserialize(serialize({**(awaiting.kwargs or {}), "event": event}))
                except AirflowRescheduleException as reschedule:
                    pokes, method, kwargs = pokes + 1, None, None
                    ti.first_poke = ti.first_poke or ti.start_date
                    if pokes >= self.max_pokes:
                        result = TryResult("up_for_reschedule")
                        break
                    time.sleep(max(0.0, reschedule.reschedule_date.timestamp() - time.time()))
                    ti.clear_xcom()
        except AirflowSkipException as exc:
            result = TryResult("skipped", error=exc)
        except (AirflowFailException, AirflowSensorTimeout) as exc:
            result = TryResult("failed", error=exc)
        except BaseException as exc:  # Killed too: the process died
            retried = ti.max_tries != 0 and ti.try_number <= ti.max_tries
            result = TryResult("up_for_retry" if retried else "failed", error=exc)
        result.try_number, result.pokes, result.seconds = ti.try_number, pokes, time.time() - began
        self._result = result

    def _fire(self, deferral: Deferral, timeout: float | None) -> tuple[str, dict[str, Any]]:
        """The triggerer: build the trigger from its stored kwargs, run it to its first event."""
        from airflow.sdk._shared.module_loading import import_string
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
        from airflow.sdk.serde import deserialize

        deadline = None if timeout is None else time.time() + timeout
        while True:
            trigger = import_string(deferral.classpath)(**deserialize(deferral.kwargs))
            try:
                event = asyncio.run(self._first_event(trigger, deadline))
            except asyncio.TimeoutError:
                return TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}
            except Exception:
                trace = traceback.format_exc().splitlines()
                failure = {"error": TriggerFailureReason.TRIGGER_FAILURE, "traceback": trace}
                return TRIGGER_FAIL_REPR, failure
            if event is not None:
                return deferral.method_name, {"event": event.payload}
            self.triggerer_restarts += 1

    async def _first_event(self, trigger: Any, deadline: float | None) -> Any:
        """The trigger's first event; None when the triggerer restarted under it."""
        events = trigger.run()
        future = asyncio.ensure_future(events.__anext__())
        self._trigger = (asyncio.get_running_loop(), future)
        try:
            return await asyncio.wait_for(future, None if deadline is None else max(0.0, deadline - time.time()))
        except asyncio.CancelledError:
            if not self._restart:
                raise
            self._restart = False
            return None
        finally:
            self._trigger = None
            await events.aclose()
            await trigger.cleanup()
