"""open_repo and basic_config: swapping storage by configuration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import store_url

from tasklog import (
    ConfigError,
    CSVFileRepo,
    MemoryRepo,
    RepoHandler,
    SQLRepo,
    TaskRunRecord,
    basic_config,
    contains,
    get_task_logger,
    greater_than,
    not_in,
    open_repo,
)
from tasklog.config import DEFAULT_MEMORY_SIZE


class TestOpenRepo:
    """open_repo picks a store by URL."""

    def test_memory(self) -> None:
        """memory:// opens an unbounded MemoryRepo with the default model."""
        repo = open_repo("memory://")
        assert (MemoryRepo, None, TaskRunRecord) == (type(repo), repo.max_size, repo.model)  # type: ignore[attr-defined]

    def test_memory_max_size(self) -> None:
        """memory://?max_size=N makes a ring buffer of N records."""
        repo = open_repo("memory://?max_size=2", model=TaskRunRecord)
        for i in range(3):
            repo.add({"task_name": "t", "action": "log", "created": float(i)})
        assert (2, TaskRunRecord, [1.0, 2.0]) == (
            repo.max_size, repo.model, [r.created for r in repo]  # type: ignore[attr-defined]
        )

    def test_memory_bad_option(self) -> None:
        """An unknown or malformed option is a ValueError."""
        with pytest.raises(ValueError, match="max_size"):
            open_repo("memory://?max_size=lots")
        with pytest.raises(ValueError, match="colour"):
            open_repo("memory://?colour=red")

    def test_csv_url(self, tmp_path: Path) -> None:
        """csv:///path opens a CSVFileRepo on that file."""
        path = tmp_path / "log.csv"
        repo = open_repo(f"csv://{path}")
        repo.add({"task_name": "t", "action": "log", "created": 1.0})
        assert (CSVFileRepo, path, True) == (type(repo), repo.filename, path.exists())  # type: ignore[attr-defined]

    def test_bare_csv_path(self, tmp_path: Path) -> None:
        """A bare path ending in .csv (str or Path) opens a CSVFileRepo."""
        path = tmp_path / "bare.csv"
        assert (CSVFileRepo, CSVFileRepo, path) == (
            type(open_repo(str(path))), type(open_repo(path)), open_repo(path).filename,  # type: ignore[attr-defined]
        )

    def test_sqlite_url_with_table(self, tmp_path: Path) -> None:
        """An SQLite URL with ?table= opens that table."""
        repo = open_repo(f"sqlite:///{tmp_path / 'x.db'}?table=jobs")
        assert isinstance(repo, SQLRepo)
        repo.add({"task_name": "t", "action": "log", "created": 1.0})
        assert ("jobs", "jobs", 1) == (repo.table_name, repo.table.name, len(repo))
        repo.close()

    def test_sqlite_default_table(self, tmp_path: Path) -> None:
        """The default SQL table is task_log."""
        repo = open_repo(f"sqlite:///{tmp_path / 'x.db'}")
        assert isinstance(repo, SQLRepo)
        assert "task_log" == repo.table_name
        repo.close()

    def test_postgresql_url(self, postgres_url: str) -> None:
        """A PostgreSQL URL opens an SQLRepo on PostgreSQL."""
        repo = open_repo(f"{postgres_url}?table=t_open_repo_pg", model=TaskRunRecord)
        assert isinstance(repo, SQLRepo)
        try:
            repo.add({"task_name": "t", "action": "log", "created": 1.0, "process": 5})
            assert ("postgresql", "t_open_repo_pg", [5]) == (
                repo.engine.dialect.name, repo.table_name, [r.process for r in repo]
            )
        finally:
            repo.drop()
            repo.close()

    def test_options_pass_through(self, tmp_path: Path) -> None:
        """Keyword options reach the store (id_field, max_size)."""
        repo = open_repo("memory://", max_size=5, id_field="created")
        repo.add({"task_name": "t", "action": "log", "created": 3.0})
        assert (5, "t") == (repo.max_size, repo[3.0].task_name)  # type: ignore[attr-defined]

    @pytest.mark.parametrize("url", ["mongodb://localhost/db", "ftp://x/y", "nosuchdb://"])
    def test_unknown_scheme(self, url: str) -> None:
        """An unknown scheme is a ValueError naming the known schemes."""
        with pytest.raises(ValueError, match="memory://") as info:
            open_repo(url)
        assert ("csv://" in str(info.value), "sqlite" in str(info.value), True) == (
            True, True, isinstance(info.value, ConfigError)
        )

    @pytest.mark.parametrize("url", ["", "just-a-name", "log.txt"])
    def test_not_a_url(self, url: str) -> None:
        """Text that is no URL and no .csv path is a ValueError."""
        with pytest.raises(ValueError, match="Known schemes"):
            open_repo(url)


class TestBasicConfig:
    """basic_config attaches a RepoHandler to the task logger."""

    def test_default_is_bounded_memory(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no repo and no TASKLOG_REPO, a bounded in-memory repo is used."""
        monkeypatch.delenv("TASKLOG_REPO", raising=False)
        handler = basic_config()
        logger = logging.getLogger("tasklog.task")
        assert (MemoryRepo, DEFAULT_MEMORY_SIZE, True, logging.INFO) == (
            type(handler.repo), handler.repo.max_size, handler in logger.handlers,  # type: ignore[attr-defined]
            logger.level,
        )

    def test_env_variable(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """TASKLOG_REPO decides the repository when none is given."""
        monkeypatch.setenv("TASKLOG_REPO", f"sqlite:///{tmp_path / 'env.db'}?table=env")
        handler = basic_config()
        get_task_logger("job").info("hi")
        assert isinstance(handler.repo, SQLRepo)
        assert ("env", ["job"]) == (
            handler.repo.table_name, [r.task_name for r in handler.repo]
        )

    def test_explicit_repo_wins_over_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An explicit repo object is used even when TASKLOG_REPO is set."""
        monkeypatch.setenv("TASKLOG_REPO", "memory://?max_size=3")
        repo = MemoryRepo()
        assert repo is basic_config(repo).repo

    def test_called_twice_replaces_handler(self) -> None:
        """Calling basic_config again replaces the handler it installed; others stay."""
        logger = logging.getLogger("tasklog.task")
        other = logging.NullHandler()
        logger.addHandler(other)
        first = basic_config("memory://")
        second = basic_config("memory://", level=logging.DEBUG)
        repo_handlers = [h for h in logger.handlers if isinstance(h, RepoHandler)]
        assert ([second], True, logging.DEBUG) == (
            repo_handlers, other in logger.handlers, logger.level
        )
        assert first is not second

    def test_model_and_logger(self) -> None:
        """model (as a dotted path) and logger are honoured."""
        handler = basic_config("memory://", model="tasklog.TaskRunRecord", logger="t.cfg.own")
        get_task_logger("job", logger="t.cfg.own").info("hi")
        got = handler.repo.filter_by().first()
        assert (TaskRunRecord, True, "hi") == (
            handler.repo.model, handler in logging.getLogger("t.cfg.own").handlers, got.message
        )


def _program(url: str) -> dict[str, Any]:
    """The same small program, whatever the store."""
    handler = basic_config(url, model=TaskRunRecord)
    backup = get_task_logger("backup")
    report = get_task_logger("report")
    for i in range(3):
        backup.info("run %s", i, extra={"action": "run", "run_id": f"b{i}"})
        if i == 1:
            backup.error("disk 100%_full", extra={"action": "fail", "run_id": f"b{i}"})
        else:
            backup.info("done", extra={"action": "success", "run_id": f"b{i}"})
    report.info("run", extra={"action": "run"})
    repo = handler.repo
    result = {
        "count": len(repo),
        "backup": [(r.action, r.run_id) for r in backup.get_records()],
        "latest": backup.get_latest("success").run_id,
        "fails": [r.message for r in repo.filter_by(message=contains("100%_"))],
        "newest": [r.task_name for r in repo.filter_by().order_by("-created").limit(2)],
        "no_run_id": repo.filter_by(run_id=None).count(),
        "others": repo.filter_by(action=not_in(["run", "success"])).count(),
        "later": repo.filter_by(created=greater_than(0)).count(),
    }
    result["deleted"] = repo.filter_by(task_name="report").delete()
    result["updated"] = repo.filter_by(action="fail").update(action="crash")
    result["after"] = [r.action for r in repo.filter_by().order_by("action")]
    handler.close()
    return result


def test_same_program_on_every_store(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same program gives the same query results on memory, CSV, SQLite and PostgreSQL."""
    expected = _program("memory://")
    url = store_url(store, tmp_path, request)
    try:
        got = _program(url)
    finally:
        if store == "postgresql":
            repo = open_repo(url)
            assert isinstance(repo, SQLRepo)
            repo.drop()
            repo.close()
    assert expected == got
    assert 7 == expected["count"]
