"""Assertions on runs for tests: the ``task_records`` fixture's recorder and ``assert_ran``.

The pytest plugin (:mod:`tasklog.contrib.pytest_plugin`, registered when
tasklog is installed) gives each test that asks for it a ``task_records``
fixture: for the test, the task logger (``tasklog.task``) writes to a fresh
store — in memory, or a fresh table/file of the store ``--tasklog-repo URL``
names — and the test reads it back::

    def test_nightly(task_records):
        nightly()
        assert task_records.last_run("nightly").outcome == "success"
        assert_ran("nightly", times=1)
        assert_no_failures()

:func:`assert_ran` and :func:`assert_no_failures` read the store of the active
``task_records`` fixture, else the repository the task logger writes to.
Their failure messages show the runs' output, tracebacks included.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .adapter import find_repo_handler
from .capture import capture, is_capturing
from .handler import RepoHandler
from .history import RunInfo, list_runs
from .records import TaskRunRecord
from .repos import MemoryRepo, Repository, Result, open_repo

__all__ = [
    "TaskRecords",
    "TestRecord",
    "assert_no_failures",
    "assert_ran",
]

_FAILURES = ("fail", "crash")
_SHOWN = 5
"""How many runs a failure message shows in full."""


class TestRecord(TaskRunRecord):
    """The fixture's record model: :class:`~tasklog.TaskRunRecord` plus level and logger."""

    __test__ = False  # not a pytest test class

    levelname: str | None = None
    name: str | None = None


def _list_runs(repo: Repository[Any], task: str | None) -> list[RunInfo]:
    """The runs (of *task*, or of every task), oldest start first."""
    found = list_runs(repo, task_name=task, limit=None)
    found.sort(key=lambda info: (info.start, info.run_id))
    return found


def _describe(runs: Iterable[RunInfo], limit: int = _SHOWN) -> str:
    """The runs' output, for a failure message (the last *limit* in full)."""
    runs = list(runs)
    parts = []
    if len(runs) > limit:
        parts.append(f"(the last {limit} of {len(runs)} runs)")
        runs = runs[-limit:]
    for info in runs:
        outcome = info.outcome or "running"
        parts.append(f"--- run {info.run_id} of {info.task_name!r}: {outcome}")
        parts.append(info.output() or "(no records)")
    return "\n".join(parts)


class TaskRecords:
    """What the task logger stored during one test (the ``task_records`` fixture).

    Args:
        repo: the store the task logger writes to for the test.
    """

    __test__ = False

    def __init__(self, repo: Repository[Any]) -> None:
        self.repo = repo

    @property
    def records(self) -> list[Any]:
        """Every stored record, in order."""
        return self.repo.filter_by().all()

    def filter_by(self, **conditions: Any) -> Result[Any]:
        """The stored records matching *conditions* (the store's query syntax)."""
        return self.repo.filter_by(**conditions)

    def runs(self, task: str | None = None) -> list[RunInfo]:
        """The runs (of *task*, or of every task) in the order they started."""
        return _list_runs(self.repo, task)

    def last_run(self, task: str) -> RunInfo:
        """The newest run of *task* (a RunInfo with ``records()`` and ``output()``).

        Raises:
            AssertionError: *task* has no run (the message lists the tasks that ran).
        """
        runs = self.runs(task)
        if not runs:
            ran = sorted({r.task_name for r in self.repo.filter_by(action="run")})
            msg = f"Task {task!r} has no run; tasks that ran: {ran or 'none'}."
            raise AssertionError(msg)
        return runs[-1]

    def clear(self) -> None:
        """Forget every record stored so far."""
        self.repo.filter_by().delete()

    def __repr__(self) -> str:
        return f"<TaskRecords {self.repo!r}>"


# --------------------------------------------------------------- the fixture
_active: list[TaskRecords] = []
"""The recorders of the fixtures active now (the innermost last)."""


def _fresh_repo(url: str | None) -> tuple[Repository[Any], Path | None]:
    """A fresh store: memory, or a new table / file / key of the store *url* names."""
    if not url or url.split("://", 1)[0].lower() == "memory":
        return MemoryRepo(model=TestRecord), None
    name = f"tasklog_test_{uuid.uuid4().hex[:12]}"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "csv" or (not scheme and url.lower().endswith(".csv")):
        base = Path(url.split("://", 1)[1] if scheme else url)
        path = base.with_name(f"{base.stem}-{name}.csv")
        return open_repo(path, model=TestRecord), path
    if scheme == "redis":
        return open_repo(url, model=TestRecord, key=name), None
    return open_repo(url, model=TestRecord, table=name), None


class _Session:
    """Points the task logger at a fresh store for one test, and back."""

    def __init__(self, url: str | None, logger: str = "tasklog.task") -> None:
        self.logger = logging.getLogger(logger)
        self.repo, self._file = _fresh_repo(url)
        self.recorder = TaskRecords(self.repo)
        self._handler = RepoHandler(self.repo, mode="sync", errors="raise")
        self._saved: tuple[list[logging.Handler], int] | None = None
        self._capturing = is_capturing()

    def start(self) -> TaskRecords:
        logger = self.logger
        self._saved = (list(logger.handlers), logger.level)
        for handler in list(logger.handlers):
            if isinstance(getattr(handler, "repo", None), Repository):
                logger.removeHandler(handler)
        logger.addHandler(self._handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        capture()
        _active.append(self.recorder)
        return self.recorder

    def stop(self) -> None:
        if self.recorder in _active:
            _active.remove(self.recorder)
        if not self._capturing:
            capture(False)
        logger = self.logger
        logger.removeHandler(self._handler)
        if self._saved is not None:
            handlers, level = self._saved
            for handler in handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.setLevel(level)
        self._handler.close()
        try:
            drop = getattr(self.repo, "drop", None)
            if callable(drop):  # a database table (and its runs index)
                drop()
            elif self._file is None and not isinstance(self.repo, MemoryRepo):
                self.repo.filter_by().delete()
        finally:
            self.repo.close()
            if self._file is not None:
                self._file.unlink(missing_ok=True)


def recording(url: str | None = None) -> Iterator[TaskRecords]:
    """The ``task_records`` fixture's body: a recorder for the duration of one test."""
    session = _Session(url)
    try:
        yield session.start()
    finally:
        session.stop()


# ---------------------------------------------------------------- assertions
def _repo() -> Repository[Any]:
    if _active:
        return _active[-1].repo
    handler = find_repo_handler(logging.getLogger("tasklog.task"))
    if handler is None:
        msg = (
            "No runs to check: use the task_records fixture, or configure the task logger "
            "(tasklog.basic_config())."
        )
        raise AssertionError(msg)
    repo: Repository[Any] = handler.repo  # type: ignore[attr-defined]
    return repo


def _tally(runs: Iterable[RunInfo]) -> str:
    counts: dict[str, int] = {}
    for info in runs:
        key = info.outcome or "running"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no runs"


def assert_ran(
    task: str, outcome: str | None = "success", times: int | None = None
) -> list[RunInfo]:
    """Assert that *task* has runs that ended with *outcome*: at least one, or exactly *times*.

    *outcome* is a closing action (``"success"``, ``"fail"``, ...),
    ``"running"`` for runs still open, or None for any. Returns the matching
    runs. The failure message shows the task's runs' output and tracebacks.
    """
    __tracebackhide__ = True
    runs = _list_runs(_repo(), task)
    wanted = [
        r for r in runs
        if outcome is None or (r.outcome or "running") == str(outcome)
    ]
    ok = bool(wanted) if times is None else len(wanted) == times
    if not ok:
        what = "any" if outcome is None else repr(str(outcome))
        expected = "at least one" if times is None else f"exactly {times}"
        header = (
            f"Expected {expected} run of task {task!r} with outcome {what}; "
            f"found {len(wanted)} ({len(runs)} runs: {_tally(runs)})."
        )
        shown = [r for r in runs if r not in wanted] or runs
        detail = _describe(shown) if shown else "The task did not run at all."
        raise AssertionError(f"{header}\n{detail}")
    return wanted


def assert_no_failures(task: str | None = None) -> None:
    """Assert that no run (of *task*, or of any task) ended in ``fail`` or ``crash``.

    The failure message shows each failed run's output and traceback.
    """
    __tracebackhide__ = True
    runs = _list_runs(_repo(), task)
    failed = [r for r in runs if r.outcome in _FAILURES]
    if failed:
        scope = f"task {task!r}" if task is not None else "the tasks"
        header = f"{len(failed)} of {len(runs)} runs of {scope} failed."
        raise AssertionError(f"{header}\n{_describe(failed)}")
