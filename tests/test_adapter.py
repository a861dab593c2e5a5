"""TaskAdapter and get_task_logger: injecting the task, finding the repo, reading back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasklog import (
    Action,
    CSVFileRepo,
    MemoryRepo,
    RepoHandler,
    TaskAdapter,
    TaskRunRecord,
    get_task_logger,
    in_,
)


@dataclass
class FakeTask:
    """A task object as a scheduler has one: anything with a ``.name``."""

    name: str


def _repo_logger(name: str, repo: Any = None) -> tuple[logging.Logger, MemoryRepo[Any]]:
    repo = repo if repo is not None else MemoryRepo()
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(RepoHandler(repo))
    return logger, repo


class TestInjection:
    """The adapter stamps task_name (and run_id) on every record."""

    def test_task_name_and_default_action(self) -> None:
        """Records get the task's name and, without an action, action "log"."""
        logger, repo = _repo_logger("t.ad.inject")
        TaskAdapter(logger, "backup").info("hello")
        got = repo.filter_by().first()
        assert got is not None
        assert ("backup", "log", None) == (got.task_name, got.action, got.run_id)

    def test_run_id(self) -> None:
        """A run_id given to the adapter is stamped on its records."""
        logger, repo = _repo_logger("t.ad.runid")
        TaskAdapter(logger, "backup", run_id="r7").info("hello", extra={"action": "run"})
        got = repo.filter_by().first()
        assert got is not None
        assert ("r7", "run") == (got.run_id, got.action)

    def test_adapter_values_win_over_extra(self) -> None:
        """task_name and run_id of the adapter win over the call's extra; other keys pass."""
        logger, repo = _repo_logger("t.ad.win")
        adapter = TaskAdapter(logger, "backup", run_id="mine")
        adapter.info("x", extra={"task_name": "other", "run_id": "theirs", "action": "fail"})
        got = repo.filter_by().first()
        assert got is not None
        assert ("backup", "mine", "fail") == (got.task_name, got.run_id, got.action)

    def test_action_enum(self) -> None:
        """An Action member given as action is stored as its plain string."""
        logger, repo = _repo_logger("t.ad.enum")
        TaskAdapter(logger, "backup").info("x", extra={"action": Action.SUCCESS})
        got = repo.filter_by(action="success").first()
        assert got is not None
        assert ("success", str) == (got.action, type(got.action))

    def test_task_object(self) -> None:
        """task may be any object with a .name."""
        logger, repo = _repo_logger("t.ad.obj")
        adapter = TaskAdapter(logger, FakeTask("nightly"))
        adapter.warning("x")
        assert ("nightly", ["nightly"]) == (
            adapter.task_name, [r.task_name for r in repo]
        )

    def test_task_without_name(self) -> None:
        """A task that is neither a string nor has a .name is a TypeError."""
        with pytest.raises(TypeError, match="name"):
            TaskAdapter("t.ad.noname", 42, ignore_warnings=True)

    def test_logger_by_name(self) -> None:
        """The logger may be given by name."""
        _, repo = _repo_logger("t.ad.byname")
        adapter = TaskAdapter("t.ad.byname", "x")
        adapter.info("hi")
        assert (logging.getLogger("t.ad.byname"), 1) == (adapter.logger, len(repo))


class TestReading:
    """filter_by / get_records / get_latest read this task's records only."""

    @pytest.fixture(name="adapter")
    def _adapter(self) -> TaskAdapter:
        """An adapter for task "a" whose repo also holds records of task "b"."""
        logger, _ = _repo_logger("t.ad.read", MemoryRepo(model=TaskRunRecord))
        a = TaskAdapter(logger, "a")
        b = TaskAdapter(logger, "b")
        a.info("1", extra={"action": "run"})
        b.info("2", extra={"action": "run"})
        a.info("3", extra={"action": "fail"})
        a.info("4", extra={"action": "run"})
        b.info("5", extra={"action": "success"})
        a.info("6")
        return a

    def test_filter_by(self, adapter: TaskAdapter) -> None:
        """filter_by returns a Result of this task's records matching the conditions."""
        assert (4, 2) == (
            adapter.filter_by().count(), adapter.filter_by(action="run").count()
        )

    def test_filter_by_with_operator(self, adapter: TaskAdapter) -> None:
        """filter_by takes operators too."""
        got = adapter.filter_by(action=in_(["fail", "log"])).all()
        assert ["fail", "log"] == [r.action for r in got]

    def test_get_records(self, adapter: TaskAdapter) -> None:
        """get_records returns this task's records as a list, in order."""
        assert ["run", "fail", "run", "log"] == [r.action for r in adapter.get_records()]

    def test_get_latest(self, adapter: TaskAdapter) -> None:
        """get_latest returns the newest record, or the newest of an action."""
        latest = adapter.get_latest()
        latest_run = adapter.get_latest("run")
        latest_fail = adapter.get_latest(Action.FAIL)
        assert ("log", "run", "fail", None) == (
            latest.action, latest_run.action, latest_fail.action, adapter.get_latest("crash")
        )
        assert ["3", "4", "6"] == [latest_fail.message, latest_run.message, latest.message]

    def test_get_latest_empty(self) -> None:
        """get_latest gives None for a task with no records."""
        logger, _ = _repo_logger("t.ad.empty")
        assert None is TaskAdapter(logger, "nothing").get_latest()

    def test_reads_see_background_writes(self, tmp_path: Path) -> None:
        """A background handler's records are readable through the adapter at once."""
        logger = logging.getLogger("t.ad.bg")
        logger.setLevel(logging.INFO)
        logger.addHandler(RepoHandler(CSVFileRepo(tmp_path / "bg.csv"), mode="background"))
        adapter = TaskAdapter(logger, "bg")
        for i in range(30):
            adapter.info("line %s", i)
        assert (30, "log") == (len(adapter.get_records()), adapter.get_latest().action)


class TestRepoLookup:
    """The adapter finds its repository through the logger and its ancestors."""

    def test_repo_on_logger(self) -> None:
        """repo is the repository of the logger's RepoHandler."""
        logger, repo = _repo_logger("t.ad.look")
        assert repo is TaskAdapter(logger, "x").repo

    def test_repo_on_ancestor(self) -> None:
        """The repo is found on an ancestor while the logger propagates."""
        _, repo = _repo_logger("t.ad.parent")
        child = logging.getLogger("t.ad.parent.child.grandchild")
        adapter = TaskAdapter(child, "x")
        adapter.info("hi")
        assert (repo, True, 1) == (adapter.repo, adapter.is_readable, len(repo))

    def test_first_repo_handler_wins(self) -> None:
        """The first RepoHandler on the nearest logger is used."""
        _, parent_repo = _repo_logger("t.ad.first")
        _, child_repo = _repo_logger("t.ad.first.child")
        assert child_repo is TaskAdapter("t.ad.first.child", "x").repo
        assert parent_repo is not child_repo

    def test_not_propagating(self) -> None:
        """A logger that does not propagate cannot reach its ancestors' repo."""
        _repo_logger("t.ad.noprop")
        child = logging.getLogger("t.ad.noprop.child")
        child.propagate = False
        adapter = TaskAdapter(child, "x", ignore_warnings=True)
        with pytest.raises(LookupError, match=r"t\.ad\.noprop\.child"):
            adapter.repo  # noqa: B018
        assert False is adapter.is_readable

    def test_unreadable_lookup_error(self) -> None:
        """repo raises LookupError with a clear message when no RepoHandler is reachable."""
        logging.getLogger("t.ad.none").propagate = False
        adapter = TaskAdapter("t.ad.none", "x", ignore_warnings=True)
        with pytest.raises(LookupError, match="RepoHandler"):
            adapter.get_records()

    def test_warning_for_unreadable_logger(self) -> None:
        """Creating an adapter for an unreadable logger warns (UserWarning)."""
        logging.getLogger("t.ad.warn").propagate = False
        with pytest.warns(UserWarning, match="t.ad.warn"):
            TaskAdapter("t.ad.warn", "x")

    def test_no_warning_with_ignore_warnings(self) -> None:
        """ignore_warnings=True silences the warning (filterwarnings=error would raise)."""
        logging.getLogger("t.ad.quiet").propagate = False
        adapter = TaskAdapter("t.ad.quiet", "x", ignore_warnings=True)
        assert False is adapter.is_readable

    def test_set_repo_keeps_other_handlers(self) -> None:
        """set_repo replaces the repo handlers and keeps the other handlers."""
        logger, old_repo = _repo_logger("t.ad.set")
        other = logging.NullHandler()
        logger.addHandler(other)
        new_repo = MemoryRepo(model=TaskRunRecord)
        adapter = TaskAdapter(logger, "x")
        handler = adapter.set_repo(new_repo)
        adapter.info("hi")
        assert (
            new_repo, [other, handler], 0, 1
        ) == (adapter.repo, logger.handlers, len(old_repo), len(new_repo))

    def test_set_repo_url(self) -> None:
        """set_repo takes a URL too."""
        logging.getLogger("t.ad.seturl").propagate = False
        adapter = TaskAdapter("t.ad.seturl", "x", ignore_warnings=True)
        adapter.set_repo("memory://")
        logging.getLogger("t.ad.seturl").setLevel(logging.INFO)
        adapter.info("hi")
        assert (True, ["x"]) == (adapter.is_readable, [r.task_name for r in adapter.repo])


class TestGetTaskLogger:
    """get_task_logger returns an adapter on the task logger."""

    def test_default_logger(self) -> None:
        """The default logger is "tasklog.task"."""
        _repo_logger("tasklog.task")
        adapter = get_task_logger("job")
        assert (TaskAdapter, "tasklog.task", "job") == (
            type(adapter), adapter.logger.name, adapter.task_name
        )

    def test_named_logger_and_object(self) -> None:
        """A task object and a named logger."""
        _, repo = _repo_logger("t.ad.gtl")
        adapter = get_task_logger(FakeTask("obj"), logger="t.ad.gtl")
        adapter.info("hi")
        assert ["obj"] == [r.task_name for r in repo]

    def test_warns_when_unreadable(self) -> None:
        """get_task_logger warns for a logger that cannot be read."""
        logging.getLogger("t.ad.gtl.none").propagate = False
        with pytest.warns(UserWarning, match="cannot read") as caught:
            get_task_logger("x", logger="t.ad.gtl.none")
        assert [__file__] == [w.filename for w in caught]
