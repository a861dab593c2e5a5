"""Capture: a run keeps what *any* logger emits while it is active.

:func:`capture` puts one :class:`CaptureHandler` first on the root logger. For
each record that reaches it without a ``task_name`` (so not logged through a
task adapter or a run), it looks up the run active in the current context
(:func:`tasklog.runs.current_run`, a :mod:`contextvars` variable: each thread
and each asyncio task has its own). Outside a run it does nothing. Inside one
it stamps the record with the run's ``task_name``, ``run_id`` and fields
(action ``log``), keeps its line for ``run.output()``, and hands it to the
repository handlers the run's own records reach — except those the record
reaches anyway through its logger's propagation, so nothing is stored twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .repos import Repository
from .runs import _current
from .writer import writing

__all__ = ["CaptureHandler", "capture", "is_capturing"]

_install_lock = threading.Lock()


def _chain_handlers(name: str) -> set[int]:
    """Ids of the handlers a record of logger *name* reaches by propagation."""
    logger: Any
    if name == "root":
        logger = logging.getLogger()
    else:
        logger = logging.Logger.manager.loggerDict.get(name)
        if not isinstance(logger, logging.Logger):
            return set()
    found: set[int] = set()
    while logger is not None:
        found.update(id(h) for h in logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return found


def _repo_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The repository handlers a record of *logger* reaches, nearest first."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers.extend(
            h for h in current.handlers if isinstance(getattr(h, "repo", None), Repository)
        )
        if not current.propagate:
            break
        current = current.parent
    return handlers


class CaptureHandler(logging.Handler):
    """Store records of any logger emitted inside a run with that run (see the module)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Stamp *record* with the current run and store it where the run's records go."""
        run = _current.get()
        if run is None or writing():
            return
        if getattr(record, "task_name", None) is not None:
            return  # a task adapter's record: stored by its own logger's handlers
        try:
            record.task_name = run.task_name
            record.run_id = run.run_id
            record.action = "log"
            for key, value in (run.extra or {}).items():
                if not hasattr(record, key):
                    setattr(record, key, value)
            run._keep_captured(record)
            reached = _chain_handlers(record.name)
            for handler in _repo_handlers(run.logger):
                if id(handler) not in reached and record.levelno >= handler.level:
                    handler.handle(record)
        except RecursionError:  # pragma: no cover
            raise
        except Exception:
            self.handleError(record)


_handler: CaptureHandler | None = None


def capture(enable: bool = True) -> CaptureHandler | None:
    """Store what any logger emits inside a run with that run (or stop doing so).

    Installs one :class:`CaptureHandler` first on the root logger (calling it
    again does nothing more) and returns it; ``capture(False)`` removes it and
    returns None. ``basic_config(..., capture=True)`` calls it.

    A record still has to pass its logger's level to be captured: the root
    logger's default level is ``WARNING``, so set the level of the loggers
    whose ``INFO`` lines you want (``logging.getLogger("mylib").setLevel("INFO")``).
    Loggers with ``propagate = False`` are not captured.
    """
    global _handler
    root = logging.getLogger()
    with _install_lock:
        if not enable:
            if _handler is not None:
                root.removeHandler(_handler)
                _handler = None
            return None
        if _handler is None:
            _handler = CaptureHandler()
        if _handler not in root.handlers:
            # first, so a repo handler on the root sees the record already stamped
            root.handlers = [_handler, *root.handlers]
        return _handler


def is_capturing() -> bool:
    """Whether :func:`capture` is on (its handler is on the root logger)."""
    return _handler is not None and _handler in logging.getLogger().handlers
