"""Runs: one execution of a task, from its ``run`` record to its closing record.

``with task_logger.run() as run:`` (or ``async with``, or ``@task_logger.task``)
logs ``run`` on entry and one closing record on exit:

- normally: ``success``;
- :class:`~tasklog.TaskInaction`: ``inaction``, and the exception is swallowed;
- :class:`~tasklog.CancelRun`: every record of the run is deleted, and the
  exception is swallowed;
- any other :class:`Exception`: ``fail`` with the traceback, re-raised;
- ``KeyboardInterrupt``, ``SystemExit``, ``asyncio.CancelledError``:
  ``terminate``, re-raised.

The run object is itself a logger adapter: its records carry the run's
``run_id`` and fields, and it keeps the run's output as text lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .adapter import TaskAdapter
from .exceptions import CancelRun, TaskInaction
from .lifecycle import add_sigterm_hook
from .records import Action
from .repos import Repository

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "RESERVED_FIELDS",
    "Run",
    "RunLogger",
    "current_run",
    "format_line",
    "format_records",
    "run_decorator",
    "terminate_open_runs",
]

F = TypeVar("F", bound=Callable[..., Any])

RESERVED_FIELDS: frozenset[str] = frozenset(
    set(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))
    | {"message", "asctime", "taskName"}
    | {"task_name", "run_id", "action", "start", "end", "runtime"}
)
"""Names a run's fields and bound context cannot use: the attributes of a
:class:`logging.LogRecord` (the stdlib refuses them in ``extra``) and the
fields a run sets itself."""

_now: Callable[[], float] = time.time
"""The clock of output lines (a module attribute so tests can fix it)."""

_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "tasklog_current_run", default=None
)


_open: weakref.WeakValueDictionary[int, Run] = weakref.WeakValueDictionary()
"""The runs of this process that started and have not ended (for SIGTERM)."""


def terminate_open_runs(reason: str = "SIGTERM") -> list[str]:
    """Log ``terminate`` for every run of this process that is still open; return their ids.

    tasklog calls it when the process gets SIGTERM (where it may install its
    own handler: the main thread, no handler of the application's). An
    application with a SIGTERM handler of its own calls it there, then
    :func:`logging.shutdown` (or each handler's ``flush``) to store what is
    queued. A run ended this way logs nothing more when its block exits.
    """
    ended = []
    for run in sorted(_open.values(), key=lambda r: r._state.began or 0.0):
        if run._terminate(reason):
            ended.append(run.run_id)
    return ended


def current_run() -> Run | None:
    """The innermost run open in this thread or asyncio task, or None.

    A function decorated with ``@task_logger.task`` can log into its run with
    ``current_run().info(...)``.
    """
    return _current.get()


def _check_fields(fields: Mapping[str, Any], what: str) -> None:
    for key in fields:
        if key in RESERVED_FIELDS:
            msg = (
                f"{what} cannot use the name {key!r}: it is a logging.LogRecord attribute "
                "or a field the run sets itself; choose another name."
            )
            raise ValueError(msg)


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():.3f}s"


def format_line(
    created: float, levelname: str, label: str, message: str, exc_text: str | None = None
) -> str:
    """One line of run output: ``[2024-03-04 12:00:00.000] [INFO] [task] message``.

    The time is local time with milliseconds; a traceback (*exc_text*)
    follows on the next lines.
    """
    moment = datetime.fromtimestamp(created)
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d}"
    line = f"[{stamp}] [{levelname}] [{label}] {message}"
    return f"{line}\n{exc_text}" if exc_text else line


_ERROR_ACTIONS = frozenset({Action.FAIL.value, Action.CRASH.value})


def format_records(records: Iterable[Any]) -> str:
    """Stored records (of any model) as run output lines, one per record.

    The level is the record's ``levelname`` when the model has one, else
    ``ERROR`` for ``fail`` and ``crash`` and ``INFO`` for the rest; the text is
    its ``message`` when it has one, else its action.
    """
    lines = []
    for record in records:
        action = str(getattr(record, "action", "") or "")
        level = getattr(record, "levelname", None) or (
            "ERROR" if action in _ERROR_ACTIONS else "INFO"
        )
        message = getattr(record, "message", None) or action
        lines.append(
            format_line(
                float(record.created),
                str(level),
                str(getattr(record, "task_name", "")),
                str(message),
                getattr(record, "exc_text", None),
            )
        )
    return "\n".join(lines)


def _format_exception(exc_info: Any) -> str | None:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    if exc_info[0] is None:
        return None
    return logging.Formatter().formatException(exc_info)


class _RunState:
    """What a run and the adapters bound from it share."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.start: datetime | None = None
        self.began: float | None = None  # perf_counter at entry
        self.runtime: timedelta | None = None  # set at exit

    def elapsed(self) -> timedelta:
        if self.runtime is not None:
            return self.runtime
        if self.began is None:
            return timedelta(0)
        return timedelta(seconds=time.perf_counter() - self.began)


class RunLogger(TaskAdapter):
    """A logger adapter for one run: every record carries its ``run_id`` and context.

    :class:`Run` is one; :meth:`bind` makes more that share the run's output.
    Each record logged through it is also kept as a line of :meth:`output`.
    """

    run_id: str
    """The id shared by every record of this run."""

    def __init__(
        self,
        logger: logging.Logger,
        task_name: str,
        state: _RunState,
        *,
        extra: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            logger, task_name, run_id=state.run_id, ignore_warnings=True, extra=extra
        )
        self._state = state
        self.context: dict[str, Any] = dict(context or {})
        label = self.task_name
        if self.context:
            label += "[" + ",".join(f"{k}={v}" for k, v in self.context.items()) + "]"
        self._label = label

    @property
    def duration(self) -> timedelta:
        """Time since the run began (its runtime once it has ended)."""
        return self._state.elapsed()

    # --------------------------------------------------------------- logging
    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log through the logger and keep the line for :meth:`output`."""
        if not self.isEnabledFor(level):
            return
        msg, processed = self.process(msg, kwargs)
        self._keep(level, msg, args, processed.get("exc_info"))
        processed["stacklevel"] = int(processed.get("stacklevel", 1)) + 1
        self.logger.log(level, msg, *args, **processed)

    def _keep(self, level: int, msg: object, args: tuple[object, ...], exc_info: Any) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        line = format_line(
            _now(), logging.getLevelName(level), self._label, text,
            _format_exception(exc_info),
        )
        with self._state.lock:
            self._state.lines.append(line)

    def _log_action(
        self, level: int, action: str, msg: str, fields: Mapping[str, Any] | None = None,
        exc_info: Any = None, exc_text: str | None = None,
    ) -> None:
        extra = dict(fields or {})
        extra["action"] = action
        if exc_text is None:
            self.log(level, msg, extra=extra, exc_info=exc_info, stacklevel=2)
            return
        # A traceback known only as text (from a scheduler's event, another process)
        if not self.isEnabledFor(level):
            return
        msg, processed = self.process(msg, {"extra": extra})
        with self._state.lock:
            self._state.lines.append(
                format_line(_now(), logging.getLevelName(level), self._label, str(msg), exc_text)
            )
        record = self.logger.makeRecord(
            self.logger.name, level, __file__, 0, msg, (), None, "_log_action",
            processed["extra"],
        )
        record.exc_text = exc_text
        self.logger.handle(record)

    def _keep_captured(self, record: logging.LogRecord) -> None:
        """Keep a line for a record another logger emitted while this run was active."""
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break the run
            text = str(record.msg)
        exc_text = record.exc_text or _format_exception(record.exc_info)
        line = format_line(record.created, record.levelname, self._label, text, exc_text)
        with self._state.lock:
            self._state.lines.append(line)

    # -------------------------------------------------------------- helpers
    def bind(self, **context: Any) -> RunLogger:
        """A child adapter whose records also carry *context* (e.g. ``user=123``).

        Its lines show the context after the task name: ``[task[user=123]]``.

        Raises:
            ValueError: a key is a :class:`logging.LogRecord` attribute or a
                field the run sets itself (see :data:`RESERVED_FIELDS`).
        """
        _check_fields(context, "bind()")
        extra = {**(self.extra or {}), **context}
        return RunLogger(
            self.logger, self.task_name, self._state,
            extra=extra, context={**self.context, **context},
        )

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Log one ``progress`` record: ``30/100 (30.0%) message``.

        ``done`` and ``total`` are also stored in model fields of those names.
        """
        if total:
            text = f"{done}/{total} ({100 * done / total:.1f}%)"
        elif total is not None:
            text = f"{done}/{total}"
        else:
            text = f"{done}"
        if message:
            text = f"{text} {message}"
        self._log_action(logging.INFO, Action.PROGRESS.value, text, {"done": done, "total": total})

    def statistics(self, figures: Mapping[str, Any]) -> None:
        """Log one ``statistics`` record with *figures*.

        The message lists them as ``key=value`` pairs; each is also stored in
        the model field of the same name, when the model has one.

        Raises:
            ValueError: a key is a :class:`logging.LogRecord` attribute or a
                field the run sets itself (see :data:`RESERVED_FIELDS`).
        """
        _check_fields(figures, "statistics()")
        text = " ".join(f"{key}={value}" for key, value in figures.items())
        self._log_action(logging.INFO, Action.STATISTICS.value, text, figures)

    def records(self) -> list[Any]:
        """This run's stored records, in order."""
        return self.filter_by(run_id=self.run_id).all()

    def output(self) -> str:
        """This run's log as lines ``[2024-03-04 12:00:00.000] [INFO] [task] message``.

        Local time; a traceback follows its line. Records logged through this
        run (and adapters bound from it) in this process are included, and,
        with :func:`tasklog.capture`, what other loggers emitted while the run
        was active, in order.
        """
        with self._state.lock:
            return "\n".join(self._state.lines)

    def __repr__(self) -> str:
        """Logger, task and run id."""
        name = type(self).__name__
        return f"<{name} {self.logger.name!r} task={self._label!r} run_id={self.run_id!r}>"


class Run(RunLogger):
    """One run of a task: a context manager (sync and async) and a logger adapter.

    Usually made by :meth:`tasklog.TaskAdapter.run`::

        with task_logger.run(attempt=2) as run:
            run.info("Processing")

    Args:
        adapter: the task's adapter (its logger and task name are used).
        run_id: the run's id; a new unique one (a UUID4 hex) when None.
        heartbeat: log one ``heartbeat`` record per this interval (a
            ``timedelta`` or seconds) while the run is open, from a daemon
            thread, so a long quiet run is not taken for a dead one.
        **fields: stored on every record of the run, where the model has
            those fields (e.g. ``attempt=2``).

    Raises:
        ValueError: a field name is a :class:`logging.LogRecord` attribute or
            a field the run sets itself (see :data:`RESERVED_FIELDS`), or
            *heartbeat* is not a positive interval.
    """

    def __init__(
        self, adapter: TaskAdapter, run_id: str | None = None, *,
        heartbeat: timedelta | float | None = None, **fields: Any,
    ) -> None:
        _check_fields(fields, "A run field")
        interval = heartbeat.total_seconds() if isinstance(heartbeat, timedelta) else heartbeat
        if interval is not None and not interval > 0:
            msg = f"heartbeat must be a positive interval, not {heartbeat!r}."
            raise ValueError(msg)
        extra = {**(adapter.extra or {}), **fields}
        for key in ("task_name", "run_id", "action"):
            extra.pop(key, None)
        state = _RunState(run_id if run_id is not None else uuid.uuid4().hex)
        super().__init__(adapter.logger, adapter.task_name, state, extra=extra)
        self.fields: dict[str, Any] = dict(fields)
        self._entered = False
        self._token: contextvars.Token[Run | None] | None = None
        self._heartbeat_interval = interval
        self._closed = False
        """Whether the closing record was logged (by the block's exit or by SIGTERM)."""
        self._close_lock = threading.Lock()
        self._heartbeat_stop: threading.Event | None = None
        self._heartbeat_thread: threading.Thread | None = None

    @contextlib.contextmanager
    def activate(self) -> Iterator[Self]:
        """Make this run the current one in this context, logging nothing.

        While the block runs, :func:`current_run` returns this run and, with
        :func:`tasklog.capture`, records of any logger are stored with its
        ``task_name`` and ``run_id``. For hooks whose ``run`` and closing
        records come from elsewhere (a scheduler's events)::

            with run.activate():
                job()
        """
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    # ------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        interval = self._heartbeat_interval
        if interval is None:
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                self._log_action(
                    logging.INFO, Action.HEARTBEAT.value,
                    f"Still running after {_seconds(self.duration)}",
                )

        thread = threading.Thread(
            target=beat, name=f"tasklog-heartbeat-{self.run_id}", daemon=True
        )
        self._heartbeat_stop, self._heartbeat_thread = stop, thread
        thread.start()

    def _stop_heartbeat(self) -> None:
        stop, thread = self._heartbeat_stop, self._heartbeat_thread
        if stop is None or thread is None:
            return
        stop.set()
        if thread is not threading.current_thread():
            thread.join()
        self._heartbeat_stop = self._heartbeat_thread = None

    # ------------------------------------------------- records from hooks
    def _log_started(
        self, start: datetime | None = None, *, action: str = Action.RUN.value,
        message: str | None = None, register: bool = True,
    ) -> None:
        """Log the ``run`` record without making the run current (scheduler hooks).

        A hook resuming a run logged elsewhere (a retry) gives another
        *action* and *message*; the run's clock starts here either way. With
        *register*, SIGTERM ends the run like one opened by ``with`` (a hook
        whose framework reports terminations itself passes False).
        """
        state = self._state
        self._entered = True
        state.start = start or datetime.now(timezone.utc)
        state.began = time.perf_counter() - max(
            0.0, (datetime.now(timezone.utc) - state.start).total_seconds()
        )
        described = " ".join(f"{k}={v}" for k, v in self.fields.items())
        text = f"Run started ({described})" if described else "Run started"
        self._log_action(logging.INFO, action, message or text, {"start": state.start})
        if register:
            _open[id(self)] = self
            add_sigterm_hook(_any_open, terminate_open_runs)

    def _log_closed(
        self, action: str, message: str, *, level: int = logging.INFO,
        exc_text: str | None = None, runtime: timedelta | None = None,
    ) -> None:
        """Log a closing record (*action*) without touching the context (scheduler hooks).

        *message* may hold ``{took}``, replaced by the runtime. Nothing is
        logged when the run has ended already (SIGTERM logged ``terminate``).
        """
        with self._close_lock:
            _open.pop(id(self), None)
            if self._closed:
                return
            self._closed = True
        state = self._state
        if runtime is None:
            runtime = self._state.elapsed() if state.began is not None else timedelta(0)
        state.runtime = runtime
        start = state.start or datetime.now(timezone.utc) - runtime
        times = {"start": start, "end": start + runtime, "runtime": runtime}
        self._log_action(
            level, action, message.replace("{took}", _seconds(runtime)), times, exc_text=exc_text
        )

    # -------------------------------------------------------------- lifecycle
    def _begin(self) -> None:
        if self._entered:
            msg = f"Run {self.run_id!r} was already started; make a new run for each execution."
            raise RuntimeError(msg)
        self._entered = True
        state = self._state
        state.start = datetime.now(timezone.utc)
        state.began = time.perf_counter()
        described = " ".join(f"{k}={v}" for k, v in self.fields.items())
        text = f"Run started ({described})" if described else "Run started"
        self._log_action(logging.INFO, Action.RUN.value, text, {"start": state.start})
        self._token = _current.set(self)
        _open[id(self)] = self
        add_sigterm_hook(_any_open, terminate_open_runs)
        self._start_heartbeat()

    def _finish(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Log the closing record; return whether to swallow the exception."""
        self._stop_heartbeat()
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        with self._close_lock:
            _open.pop(id(self), None)
            if self._closed:  # SIGTERM logged ``terminate`` already
                return False
            self._closed = True
            return self._close(exc_type, exc, tb)

    def _terminate(self, reason: str) -> bool:
        """Log ``terminate`` now (SIGTERM) unless the run has ended; return whether it did."""
        stop = self._heartbeat_stop
        if stop is not None:
            stop.set()
        with self._close_lock:
            _open.pop(id(self), None)
            if self._closed:
                return False
            self._closed = True
            state = self._state
            runtime = timedelta(seconds=time.perf_counter() - (state.began or 0.0))
            state.runtime = runtime
            start = state.start or datetime.now(timezone.utc)
            self._log_action(
                logging.WARNING, Action.TERMINATE.value,
                f"Run terminated after {_seconds(runtime)}: {reason}",
                {"start": start, "end": start + runtime, "runtime": runtime},
            )
            return True

    def _close(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Log the closing record for how the block ended (see the module's table)."""
        state = self._state
        runtime = timedelta(seconds=time.perf_counter() - (state.began or 0.0))
        state.runtime = runtime
        times = {
            "start": state.start,
            "end": (state.start or datetime.now(timezone.utc)) + runtime,
            "runtime": runtime,
        }
        took = _seconds(runtime)
        if exc is None:
            self._log_action(logging.INFO, Action.SUCCESS.value, f"Run succeeded in {took}", times)
            return False
        if isinstance(exc, CancelRun):
            self._forget()
            return True
        if isinstance(exc, TaskInaction):
            reason = f": {exc}" if str(exc) else ""
            self._log_action(
                logging.INFO, Action.INACTION.value, f"Run had nothing to do{reason}", times
            )
            return True
        described = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        exc_info = (exc_type, exc, tb)
        if isinstance(exc, Exception):
            self._log_action(
                logging.ERROR, Action.FAIL.value, f"Run failed after {took}: {described}",
                times, exc_info,
            )
        else:  # KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit
            self._log_action(
                logging.INFO, Action.TERMINATE.value,
                f"Run terminated after {took}: {described}", times, exc_info,
            )
        return False

    def _forget(self) -> None:
        """Delete every record of this run from every repository its records reach."""
        seen: set[int] = set()
        for repo in _reachable_repos(self.logger):
            if id(repo) in seen or "run_id" not in repo.schema.fields:
                continue
            seen.add(id(repo))
            repo.filter_by(run_id=self.run_id).delete()

    def __enter__(self) -> Self:
        """Log ``run`` and return the run."""
        self._begin()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Log the closing record (see the module's table of actions)."""
        return self._finish(exc_type, exc, tb)

    async def __aenter__(self) -> Self:
        """Log ``run`` and return the run."""
        self._begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Log the closing record (see the module's table of actions)."""
        return self._finish(exc_type, exc, tb)


def _any_open() -> bool:
    return bool(_open)


def _reachable_repos(logger: logging.Logger) -> list[Repository[Any]]:
    """Every repository a record logged on *logger* reaches."""
    repos: list[Repository[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            repo = getattr(handler, "repo", None)
            if isinstance(repo, Repository):
                repos.append(repo)
        if not current.propagate:
            break
        current = current.parent
    return repos


def run_decorator(
    adapter: TaskAdapter, func: F, *, heartbeat: timedelta | float | None = None, **fields: Any
) -> F:
    """Wrap *func* (sync or async) so that each call is one run of *adapter*'s task.

    The wrapper returns what *func* returns, or None when the run was
    swallowed (``TaskInaction``, ``CancelRun``). Inside, :func:`current_run`
    gives the run.
    """
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            async with Run(adapter, heartbeat=heartbeat, **fields):
                return await func(*args, **kwargs)
            return None

        return cast(F, run_async)

    @functools.wraps(func)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        with Run(adapter, heartbeat=heartbeat, **fields):
            return func(*args, **kwargs)
        return None

    return cast(F, run_sync)
