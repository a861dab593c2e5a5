"""``TaskAdapter``: a logger adapter that stamps a task's name on records and reads them back."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .handler import RepoHandler
from .repos import Repository, Result

if TYPE_CHECKING:
    from .runs import Run

    _AdapterBase = logging.LoggerAdapter[logging.Logger]
else:
    _AdapterBase = logging.LoggerAdapter

__all__ = ["TaskAdapter", "find_repo_handler", "get_task_logger"]

F = TypeVar("F", bound=Callable[..., Any])


def find_repo_handler(logger: logging.Logger) -> logging.Handler | None:
    """The first handler with a repository on *logger* or, while it propagates, its ancestors."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(getattr(handler, "repo", None), Repository):
                return handler
        if not current.propagate:
            return None
        current = current.parent
    return None


def _task_name(task: Any) -> str:
    if isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        msg = f"A task is a name or an object with a .name string, not {task!r}."
        raise TypeError(msg)
    return name


class TaskAdapter(_AdapterBase):
    """A :class:`logging.LoggerAdapter` for one task.

    Every record it logs carries ``task_name`` (and ``run_id`` when set); these
    win over the call's ``extra``. A record without an ``action`` gets ``log``.

    Args:
        logger: the logger (or its name) whose handlers store the records.
        task: the task's name, or any object with a ``.name``.
        run_id: stamp this run id on every record.
        ignore_warnings: do not warn when the logger has no repository to read.
    """

    def __init__(
        self,
        logger: logging.Logger | str,
        task: Any,
        *,
        run_id: str | None = None,
        ignore_warnings: bool = False,
        extra: Mapping[str, Any] | None = None,
        _stacklevel: int = 2,
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.task_name = _task_name(task)
        self.run_id = run_id
        stamped: dict[str, Any] = dict(extra or {})
        stamped["task_name"] = self.task_name
        if run_id is not None:
            stamped["run_id"] = run_id
        super().__init__(logger, stamped)
        self.ignore_warnings = ignore_warnings
        if not ignore_warnings and not self.is_readable:
            warnings.warn(
                f"Logger {logger.name!r} has no RepoHandler (on itself or, while it propagates, "
                f"its ancestors), so task {self.task_name!r} cannot read its records back. "
                "Add one with tasklog.basic_config() or TaskAdapter.set_repo(), or pass "
                "ignore_warnings=True.",
                UserWarning,
                stacklevel=_stacklevel,
            )

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the adapter's fields into ``extra``; the adapter's values win."""
        extra = dict(kwargs.get("extra") or {})
        extra.update(self.extra or {})
        extra.setdefault("action", "log")
        kwargs["extra"] = extra
        return msg, kwargs

    # ----------------------------------------------------------- reading back
    @property
    def repo(self) -> Repository[Any]:
        """The repository of the first repo handler this logger's records reach.

        Raises:
            LookupError: no handler with a repository is reachable.
        """
        handler = find_repo_handler(self.logger)
        if handler is None:
            msg = (
                f"Logger {self.logger.name!r} has no RepoHandler (on itself or, while it "
                "propagates, its ancestors); add one with tasklog.basic_config() or set_repo()."
            )
            raise LookupError(msg)
        repo: Repository[Any] = handler.repo  # type: ignore[attr-defined]
        return repo

    @property
    def is_readable(self) -> bool:
        """Whether the records this adapter logs can be read back."""
        return find_repo_handler(self.logger) is not None

    def set_repo(self, repo: Repository[Any] | str, **options: Any) -> RepoHandler:
        """Replace the logger's repo handlers with one for *repo*; other handlers stay."""
        for handler in list(self.logger.handlers):
            if isinstance(getattr(handler, "repo", None), Repository):
                self.logger.removeHandler(handler)
                handler.close()
        new = RepoHandler(repo, **options)
        self.logger.addHandler(new)
        return new

    def filter_by(self, **conditions: Any) -> Result[Any]:
        """This task's records matching *conditions*."""
        conditions["task_name"] = self.task_name
        return self.repo.filter_by(**conditions)

    def get_records(self, **conditions: Any) -> list[Any]:
        """This task's records matching *conditions*, as a list."""
        return self.filter_by(**conditions).all()

    def get_latest(self, action: str | None = None) -> Any:
        """This task's newest record (of *action*, when given), or None."""
        conditions = {} if action is None else {"action": str(action)}
        return self.filter_by(**conditions).last()

    # ------------------------------------------------------------------ runs
    def run(
        self, run_id: str | None = None, *, heartbeat: timedelta | float | None = None,
        **fields: Any,
    ) -> Run:
        """A run of this task: ``with task_logger.run() as run: ...`` (or ``async with``).

        *heartbeat* (a ``timedelta`` or seconds) logs one ``heartbeat`` record
        per interval while the run is open; *fields* go on every record.
        """
        from .runs import Run

        return Run(self, run_id=run_id, heartbeat=heartbeat, **fields)

    @overload
    def task(self, func: F, /) -> F: ...

    @overload
    def task(
        self, func: None = None, /, *, heartbeat: timedelta | float | None = None,
        **fields: Any,
    ) -> Callable[[F], F]: ...

    def task(
        self, func: F | None = None, /, *, heartbeat: timedelta | float | None = None,
        **fields: Any,
    ) -> F | Callable[[F], F]:
        """Decorate a sync or async function so that each call is a logged run.

        Use it bare (``@task_logger.task``) or called, with the run's options
        (``@task_logger.task()``, ``@task_logger.task(attempt=1, heartbeat=60)``).
        """
        from .runs import _check_fields, run_decorator

        if func is not None:
            if not callable(func):
                msg = f"task() decorates a function, not {func!r}; pass run fields by name."
                raise TypeError(msg)
            decorated: F = run_decorator(self, func, heartbeat=heartbeat, **fields)
            return decorated
        _check_fields(fields, "A run field")

        def decorate(function: F) -> F:
            return run_decorator(self, function, heartbeat=heartbeat, **fields)

        return decorate

    def __repr__(self) -> str:
        """Logger and task."""
        return f"<TaskAdapter {self.logger.name!r} task={self.task_name!r}>"


def get_task_logger(
    task: Any, logger: str | logging.Logger = "tasklog.task", **kwargs: Any
) -> TaskAdapter:
    """A :class:`TaskAdapter` for *task* on *logger* (default ``tasklog.task``)."""
    kwargs.setdefault("_stacklevel", 3)
    return TaskAdapter(logger, task, **kwargs)
