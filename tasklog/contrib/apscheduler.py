"""APScheduler 3.x: every job execution is a tasklog run.

``install(scheduler)`` adds one listener and wraps the scheduler's pool
executors. For each scheduled run time of a job it logs, on the task logger:

- ``run`` when the execution is submitted (or, if APScheduler reports its end
  first, just before the closing record);
- then ``success``, ``fail`` (the job's traceback in ``exc_text``), ``missed``
  (the run time was missed by more than ``misfire_grace_time``) or
  ``skipped`` (``max_instances`` executions were already running).

``task_name`` is the job's id; ``run_id`` is ``"{job id}@{scheduled run time,
ISO 8601}"``. APScheduler delivers ``EVENT_JOB_EXECUTED`` before
``EVENT_JOB_SUBMITTED`` for a fast job, and ``EVENT_JOB_ERROR`` from the worker
thread; the hook logs ``run`` first whatever the order and ignores the late
submission.

While the job's function runs, its run is current in the worker
(:meth:`tasklog.Run.activate`): ``tasklog.current_run().info(...)`` logs into
the run and, with :func:`tasklog.capture`, so does any logger. This holds in
the thread pool and in the process pool (there the records go wherever the
worker process's logging sends them).
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta, timezone
from typing import Any

try:
    from apscheduler.events import (
        EVENT_EXECUTOR_ADDED,
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        EVENT_JOB_SUBMITTED,
    )
    from apscheduler.executors.base import BaseExecutor, run_job
    from apscheduler.executors.debug import DebugExecutor
    from apscheduler.executors.pool import BasePoolExecutor, ProcessPoolExecutor
except ImportError as exc:  # pragma: no cover
    msg = (
        "tasklog.contrib.apscheduler needs APScheduler 3.x: "
        "pip install 'tasklog[apscheduler]'."
    )
    raise ImportError(msg) from exc

from ..adapter import TaskAdapter
from ..records import Action
from ..runs import Run

__all__ = ["TasklogListener", "install", "run_id_for"]

_MASK = (
    EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
    | EVENT_JOB_MAX_INSTANCES | EVENT_EXECUTOR_ADDED
)
_REMEMBER = 10_000
"""How many executions are remembered (open, or closed awaiting their submission)."""

def run_id_for(job_id: str, run_time: datetime) -> str:
    """The run id of one execution: ``"{job_id}@{run_time ISO 8601}"``."""
    return f"{job_id}@{run_time.isoformat()}"


# ------------------------------------------------------------- worker side
class _JobView:
    """A job whose ``func`` is replaced; everything else is the job's."""

    def __init__(self, job: Any, func: Callable[..., Any]) -> None:
        self._job = job
        self.func = func

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


def _in_run(open_run: Callable[[], Run], func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        with open_run().activate():
            return func(*args, **kwargs)

    return call


def _run_job(
    tasklog_logger: str, listener_key: int | None, job: Any, jobstore_alias: str,
    run_times: list[datetime], logger_name: str,
) -> list[Any]:
    """APScheduler's ``run_job``, one run time at a time, each inside its run.

    In the scheduler's process the listener opens the run (logs ``run``) as
    the job starts, so the job's own lines follow it. Module level, so a
    process pool can pickle it (with the job, as it does APScheduler's own).
    """
    events: list[Any] = []
    listener = _listeners.get(listener_key) if listener_key is not None else None
    job_id = str(job.id)
    for run_time in run_times:
        run_id = run_id_for(job_id, run_time)
        if listener is not None:
            open_run = functools.partial(listener._started, job_id, run_id)
        else:
            adapter = TaskAdapter(tasklog_logger, job_id, ignore_warnings=True)
            open_run = functools.partial(Run, adapter, run_id)
        view = _JobView(job, _in_run(open_run, job.func))
        events.extend(run_job(view, jobstore_alias, [run_time], logger_name))
    return events


def _wrap_executor(executor: BaseExecutor, listener: TasklogListener) -> None:
    """Make *executor* run jobs through :func:`_run_job` (pool and debug executors)."""
    if getattr(executor, "_tasklog_wrapped", False):
        return
    if isinstance(executor, DebugExecutor):
        target = functools.partial(_run_job, listener.logger.name, id(listener))

        def submit_debug(job: Any, run_times: list[datetime]) -> None:
            try:
                events = target(job, job._jobstore_alias, run_times, executor._logger.name)
            except BaseException as exc:
                executor._run_job_error(job.id, exc, exc.__traceback__)
            else:
                executor._run_job_success(job.id, events)

        executor._do_submit_job = submit_debug
    elif isinstance(executor, BasePoolExecutor):
        process = isinstance(executor, ProcessPoolExecutor)
        pool_target = functools.partial(
            _run_job, listener.logger.name, None if process else id(listener)
        )

        def submit_once(job: Any, run_times: list[datetime]) -> None:
            def callback(future: Any) -> None:
                exc, tb = (
                    future.exception_info()
                    if hasattr(future, "exception_info")
                    else (future.exception(), getattr(future.exception(), "__traceback__", None))
                )
                if exc:
                    executor._run_job_error(job.id, exc, tb)
                else:
                    executor._run_job_success(job.id, future.result())

            future = executor._pool.submit(
                pool_target, job, job._jobstore_alias, run_times, executor._logger.name
            )
            future.add_done_callback(callback)

        def submit_pool(job: Any, run_times: list[datetime]) -> None:
            if not process:
                submit_once(job, run_times)
                return
            try:
                submit_once(job, run_times)
            except BrokenProcessPool:  # as APScheduler's ProcessPoolExecutor does
                executor._logger.warning(
                    "Process pool is broken; replacing pool with a fresh instance"
                )
                pool = executor._pool
                executor._pool = pool.__class__(
                    pool._max_workers, **executor.pool_kwargs
                )
                submit_once(job, run_times)

        executor._do_submit_job = submit_pool
    else:
        return  # other executors: runs are still logged, the job's lines carry no run
    executor._tasklog_wrapped = True


# ---------------------------------------------------------- scheduler side
class _Entry:
    """One execution the listener knows of."""

    __slots__ = ("closed", "run", "submitted")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.submitted = False
        self.closed = False


class TasklogListener:
    """The scheduler listener that logs each execution's ``run`` and closing record."""

    def __init__(self, scheduler: Any, logger: str | logging.Logger = "tasklog.task") -> None:
        self.scheduler = scheduler
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __call__(self, event: Any) -> None:
        """Handle one APScheduler event (never raises into the scheduler)."""
        try:
            self._handle(event)
        except Exception:  # logging never raises into the application
            logging.getLogger(__name__).exception("tasklog could not log APScheduler event")

    def _handle(self, event: Any) -> None:
        code = event.code
        if code == EVENT_EXECUTOR_ADDED:
            executor = self.scheduler._executors.get(event.alias)
            if executor is not None:
                _wrap_executor(executor, self)
        elif code == EVENT_JOB_SUBMITTED:
            for run_time in event.scheduled_run_times:
                self._submitted(event.job_id, run_id_for(event.job_id, run_time))
        elif code == EVENT_JOB_MAX_INSTANCES:
            for run_time in event.scheduled_run_times:
                self._close(
                    event.job_id, run_id_for(event.job_id, run_time), Action.SKIPPED.value,
                    "Run skipped: the job's max_instances executions are still running",
                    runtime=timedelta(0), final=True,
                )
        elif code == EVENT_JOB_EXECUTED:
            self._close(event.job_id, run_id_for(event.job_id, event.scheduled_run_time),
                        Action.SUCCESS.value, "Run succeeded in {took}")
        elif code == EVENT_JOB_ERROR:
            exc = event.exception
            described = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            exc_text = "Traceback (most recent call last):\n" + (event.traceback or "") + "".join(
                traceback.format_exception_only(type(exc), exc)
            ).rstrip("\n")
            self._close(event.job_id, run_id_for(event.job_id, event.scheduled_run_time),
                        Action.FAIL.value, f"Run failed after {{took}}: {described}",
                        logging.ERROR, exc_text)
        elif code == EVENT_JOB_MISSED:
            late = datetime.now(timezone.utc) - event.scheduled_run_time
            self._close(event.job_id, run_id_for(event.job_id, event.scheduled_run_time),
                        Action.MISSED.value, f"Run time missed by {late.total_seconds():.3f}s",
                        runtime=timedelta(0))

    # Each execution: opened (``run`` logged) by the first of submission, job
    # start, or end; closed by its end; forgotten once both its submission
    # and its end have been seen (the submission may come last).
    def _entry(self, job_id: str, run_id: str) -> _Entry:
        entry = self._entries.get(run_id)
        if entry is None:
            run = Run(TaskAdapter(self.logger, job_id, ignore_warnings=True), run_id=run_id)
            entry = self._entries[run_id] = _Entry(run)
            run._log_started()
            while len(self._entries) > _REMEMBER:
                self._entries.popitem(last=False)
        return entry

    def _submitted(self, job_id: str, run_id: str) -> None:
        with self._lock:
            entry = self._entry(job_id, run_id)
            entry.submitted = True
            if entry.closed:
                del self._entries[run_id]

    def _started(self, job_id: str, run_id: str) -> Run:
        """The job starts in this process: open its run now; return it (to activate)."""
        with self._lock:
            return self._entry(job_id, run_id).run

    def _close(
        self, job_id: str, run_id: str, action: str, message: str,
        level: int = logging.INFO, exc_text: str | None = None, *,
        runtime: timedelta | None = None, final: bool = False,
    ) -> None:
        with self._lock:
            entry = self._entry(job_id, run_id)
            if entry.closed:
                return
            entry.closed = True
            if entry.submitted or final:
                del self._entries[run_id]
            entry.run._log_closed(action, message, level=level, exc_text=exc_text,
                                  runtime=runtime)


_listeners: dict[int, TasklogListener] = {}
"""The listeners installed in this process, by id, for jobs starting in it."""


def install(scheduler: Any, *, logger: str | logging.Logger = "tasklog.task") -> TasklogListener:
    """Log every job execution of *scheduler* (APScheduler 3.x) as a run on *logger*.

    Call it before or after ``scheduler.start()``; executors added later are
    wrapped too. Returns the listener (``scheduler.remove_listener(listener)``
    stops the records; the executors stay wrapped).
    """
    listener = TasklogListener(scheduler, logger)
    _listeners[id(listener)] = listener
    for executor in list(scheduler._executors.values()):
        _wrap_executor(executor, listener)
    scheduler.add_listener(listener, _MASK)
    return listener
