"""Celery: every task execution is a tasklog run.

``install(app)`` connects Celery's task signals for *app*'s tasks:

================  ===========================================================
signal            record (``task_name`` the task's name, ``run_id`` its id)
================  ===========================================================
``task_prerun``   ``run`` (a retry's later attempt: a ``log`` record instead)
``task_success``  ``success``
``task_failure``  ``fail``, the traceback in ``exc_text``
``task_retry``    ``retry`` (the run stays open: the next attempt continues it)
``task_revoked``  ``terminate`` (after a ``run`` record when it never started)
================  ===========================================================

Between ``task_prerun`` and ``task_postrun`` the run is current in the worker
(:meth:`tasklog.Run.activate`), so the task's own lines carry it: those of
``celery.utils.log.get_task_logger`` loggers always, those of any other logger
with :func:`tasklog.capture` on. Celery's worker replaces the root logger's
handlers when it sets up logging (``worker_hijack_root_logger``); the hook
puts capture back afterwards, and re-arms itself in each prefork child
(``worker_process_init``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

try:
    from celery import signals
except ImportError as exc:  # pragma: no cover
    msg = "tasklog.contrib.celery needs Celery: pip install 'tasklog[celery]'."
    raise ImportError(msg) from exc

from ..adapter import TaskAdapter
from ..capture import CaptureHandler, capture, is_capturing
from ..records import Action
from ..runs import Run

__all__ = ["CeleryHooks", "install"]

_TASK_LOGGER = "celery.task"
"""The parent of ``get_task_logger`` loggers (it does not propagate to the root)."""


def _described(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _traceback_text(einfo: Any) -> str | None:
    text = getattr(einfo, "traceback", None)
    return str(text).rstrip("\n") if text else None


class CeleryHooks:
    """The signal receivers of one Celery app (made by :func:`install`)."""

    def __init__(self, app: Any, logger: str | logging.Logger = "tasklog.task") -> None:
        self.app = app
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        self.capture_all = is_capturing()
        self._lock = threading.Lock()
        self._active: dict[str, tuple[Run, contextlib.ExitStack]] = {}
        self._task_capture = CaptureHandler()

    # ----------------------------------------------------------------- arming
    def arm(self) -> None:
        """Connect the receivers (idempotent) and capture the task loggers' lines."""
        uid = f"tasklog-{id(self)}"
        connections = [
            (signals.task_prerun, self.on_prerun),
            (signals.task_postrun, self.on_postrun),
            (signals.task_success, self.on_success),
            (signals.task_failure, self.on_failure),
            (signals.task_retry, self.on_retry),
            (signals.task_revoked, self.on_revoked),
            (signals.worker_process_init, self.on_process_init),
            (signals.after_setup_logger, self.on_logging_setup),
            (signals.after_setup_task_logger, self.on_logging_setup),
        ]
        for signal, receiver in connections:
            signal.connect(receiver, weak=False, dispatch_uid=f"{uid}-{signal.name}")
        self._arm_logging()

    def _arm_logging(self) -> None:
        task_logger = logging.getLogger(_TASK_LOGGER)
        if self._task_capture not in task_logger.handlers:
            task_logger.handlers = [self._task_capture, *task_logger.handlers]
        if self.capture_all or is_capturing():
            self.capture_all = True
            capture()

    def on_process_init(self, **_: Any) -> None:
        """A new prefork child: forget the parent's runs, re-arm."""
        with self._lock:
            self._active = {}
        self.arm()

    def on_logging_setup(self, **_: Any) -> None:
        """Celery (re)configured logging: put capture back."""
        self._arm_logging()

    # ---------------------------------------------------------------- helpers
    def _ours(self, task: Any) -> bool:
        return task is None or getattr(task, "app", None) is self.app

    def _run(self, task_name: str, task_id: str) -> Run:
        return Run(TaskAdapter(self.logger, task_name, ignore_warnings=True), run_id=task_id)

    def _safely(self, what: str, func: Any, *args: Any) -> None:
        try:
            func(*args)
        except Exception:  # logging never raises into the worker
            logging.getLogger(__name__).exception("tasklog could not log Celery %s", what)

    def _find(self, task: Any, task_id: str | None) -> Run | None:
        if task_id is None:
            task_id = getattr(getattr(task, "request", None), "id", None)
        with self._lock:
            entry = self._active.get(task_id) if task_id else None
        return entry[0] if entry else None

    def _deactivate(self, run: Run) -> None:
        """The attempt is over: Celery's own lines about it are not the run's."""
        with self._lock:
            entry = self._active.get(run.run_id)
        if entry is not None and entry[0] is run:
            with contextlib.suppress(ValueError):  # reset from another context
                entry[1].close()

    # -------------------------------------------------------------- receivers
    def on_prerun(self, sender: Any = None, task_id: str | None = None, task: Any = None,
                  **_: Any) -> None:
        """``task_prerun``: log ``run`` and make the run current."""
        task = task or sender
        if not self._ours(task) or task_id is None:
            return
        self._safely("task_prerun", self._prerun, task, task_id)

    def _prerun(self, task: Any, task_id: str) -> None:
        run = self._run(task.name, task_id)
        retries = int(getattr(task.request, "retries", 0) or 0)
        if retries:
            run._log_started(action=Action.LOG.value, message=f"Retry {retries} started",
                             register=False)
        else:
            run._log_started(register=False)  # Celery reports terminations (task_revoked)
        stack = contextlib.ExitStack()
        stack.enter_context(run.activate())
        with self._lock:
            self._active[task_id] = (run, stack)

    def on_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        """``task_postrun``: the run is no longer current."""
        if task_id is None:
            return
        with self._lock:
            entry = self._active.pop(task_id, None)
        if entry is not None:
            with contextlib.suppress(ValueError):  # reset from another context
                entry[1].close()

    def on_success(self, sender: Any = None, **_: Any) -> None:
        """``task_success``: log ``success``."""
        run = self._find(sender, None) if self._ours(sender) else None
        if run is not None:
            self._safely("task_success", run._log_closed, Action.SUCCESS.value,
                         "Run succeeded in {took}")
            self._deactivate(run)

    def on_failure(self, sender: Any = None, task_id: str | None = None,
                   exception: BaseException | None = None, einfo: Any = None,
                   **_: Any) -> None:
        """``task_failure``: log ``fail`` with the traceback."""
        if not self._ours(sender):
            return
        run = self._find(sender, task_id)
        if run is None and task_id is not None and sender is not None:
            run = self._run(sender.name, task_id)  # failed outside prerun/postrun
            self._safely("task_failure", lambda: run._log_started(register=False))
        if run is not None:
            self._safely(
                "task_failure", lambda: run._log_closed(
                    Action.FAIL.value, f"Run failed after {{took}}: {_described(exception)}",
                    level=logging.ERROR, exc_text=_traceback_text(einfo),
                ),
            )
            self._deactivate(run)

    def on_retry(self, sender: Any = None, request: Any = None, reason: Any = None,
                 einfo: Any = None, **_: Any) -> None:
        """``task_retry``: log ``retry``; the run stays open for the next attempt."""
        if not self._ours(sender):
            return
        run = self._find(sender, getattr(request, "id", None))
        if run is not None:
            text = f"Retry requested: {reason}" if reason else "Retry requested"
            self._safely("task_retry", lambda: run._log_action(
                logging.WARNING, Action.RETRY.value, text, exc_text=_traceback_text(einfo),
            ))
            self._deactivate(run)

    def on_revoked(self, sender: Any = None, request: Any = None, terminated: bool = False,
                   signum: Any = None, expired: bool = False, **_: Any) -> None:
        """``task_revoked``: log ``terminate`` (and ``run`` first if it never started)."""
        if not self._ours(sender):
            return
        self._safely("task_revoked", self._revoked, sender, request, terminated, signum,
                     expired)

    def _revoked(self, sender: Any, request: Any, terminated: bool, signum: Any,
                 expired: bool) -> None:
        task_id = getattr(request, "id", None)
        name = getattr(request, "task", None) or getattr(sender, "name", None)
        if not task_id or not name:
            return
        run = self._find(sender, task_id)
        if terminated:
            how = f"Run terminated (revoked, signal {signum})"
        elif expired:
            how = "Run expired before it started"
        else:
            how = "Run revoked before it started"
        if run is None:
            run = self._run(str(name), str(task_id))
            if not terminated:  # it never ran: its run starts and ends here
                run._log_started(register=False)
        run._log_closed(Action.TERMINATE.value, how)


def install(app: Any, *, logger: str | logging.Logger = "tasklog.task") -> CeleryHooks:
    """Log every task execution of Celery *app* as a run on *logger*.

    Call it where the worker imports the app (the app's module). Returns the
    hooks; they stay connected for the life of the process.
    """
    hooks = CeleryHooks(app, logger)
    hooks.arm()
    return hooks
