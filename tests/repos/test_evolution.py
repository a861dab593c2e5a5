"""Default model TaskRunRecord, opening a store by its own columns, and schema evolution
(SQL ADD COLUMN, CSV header rewritten once) of stores written by the previous release."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import RepoFactory, store_url
from pydantic import BaseModel

from tasklog import (
    CSVFileRepo,
    MemoryRepo,
    MinimalRunRecord,
    RepoHandler,
    SQLRepo,
    TaskRunRecord,
    basic_config,
    get_task_logger,
    open_repo,
)
from tasklog.repos import open_existing


class OldTaskRunRecord(BaseModel):
    """TaskRunRecord as the previous release wrote it (no levelname)."""

    task_name: str
    action: str
    created: float
    start: datetime | None = None
    end: datetime | None = None
    runtime: timedelta | None = None
    message: str = ""
    exc_text: str | None = None
    run_id: str | None = None
    host: str | None = None
    process: int | None = None


FILE_STORES = ("csv", "sqlite", "postgresql")


@pytest.fixture(name="file_store", params=FILE_STORES)
def _file_store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _drop(repo: Any) -> None:
    if isinstance(repo, SQLRepo) and repo.engine.dialect.name == "postgresql":
        repo.drop()


class TestDefaultModel:
    """TaskRunRecord is the default of every repository class, the handler and config."""

    def test_classes(self, tmp_path: Path) -> None:
        """MemoryRepo, CSVFileRepo, SQLRepo, open_repo on a new store."""
        sql = SQLRepo(url=f"sqlite:///{tmp_path / 'a.db'}")
        try:
            assert [TaskRunRecord] * 4 == [
                MemoryRepo().model, CSVFileRepo(tmp_path / "a.csv").model, sql.model,
                open_repo(tmp_path / "b.csv").model,
            ]
        finally:
            sql.close()

    def test_handler_and_basic_config_keep_why_it_failed(self, tmp_path: Path) -> None:
        """A failing run stores its message, level and traceback by default."""
        url = f"sqlite:///{tmp_path / 'app.db'}"
        handler = basic_config(url, logger="t.evolution.default")
        assert TaskRunRecord is handler.repo.model
        log = get_task_logger("nightly", logger="t.evolution.default")

        def nightly() -> None:
            with log.run() as run:
                run.info("processing 42 items")
                _ = 1 / 0

        with pytest.raises(ZeroDivisionError):
            nightly()
        handler.flush()
        records = list(handler.repo)
        assert ["run", "log", "fail"] == [r.action for r in records]
        assert "processing 42 items" == records[1].message
        assert ("INFO", "ERROR") == (records[1].levelname, records[2].levelname)
        assert "ZeroDivisionError" in (records[2].exc_text or "")
        other = RepoHandler("memory://")
        try:
            assert TaskRunRecord is other.repo.model
        finally:
            other.close()


class TestOwnColumns:
    """Opening an existing store without model= reads it with its own columns."""

    def test_open_repo_reads_stored_model(
        self, file_store: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """A MinimalRunRecord store opened without a model stays MinimalRunRecord."""
        url = store_url(file_store, tmp_path, request)
        first = open_repo(url, model=MinimalRunRecord)
        first.add({"task_name": "t", "action": "run", "created": 1.0, "run_id": "r"})
        again = open_repo(url)
        try:
            assert MinimalRunRecord is again.model
            assert [MinimalRunRecord(task_name="t", action="run", created=1.0, run_id="r")] == list(
                again
            )
        finally:
            again.close()
            _drop(first)
            first.close()


class TestEvolution:
    """A store written with fewer columns gets the optional ones, keeping every row."""

    @pytest.mark.parametrize("old", [MinimalRunRecord, OldTaskRunRecord])
    def test_reopen_with_richer_model(
        self, file_store: str, tmp_path: Path, request: pytest.FixtureRequest, old: Any
    ) -> None:
        """Old rows read the new fields' defaults; new rows store them; nothing is lost."""
        url = store_url(file_store, tmp_path, request)
        first = open_repo(url, model=old)
        first.add_many([
            {"task_name": "t", "action": "run", "created": 1.0, "run_id": "r"},
            {"task_name": "t", "action": "fail", "created": 2.0, "run_id": "r"},
        ])
        first.close()
        repo = open_repo(url, model=TaskRunRecord)
        try:
            repo.add({"task_name": "t", "action": "log", "created": 3.0, "run_id": "s",
                      "message": "hello", "levelname": "WARNING"})
            got = list(repo)
            assert [("run", "", None), ("fail", "", None), ("log", "hello", "WARNING")] == [
                (r.action, r.message, r.levelname) for r in got
            ]
            # another object opening it later sees the evolved columns, without a model
            reread = open_existing(url)
            try:
                assert "levelname" in reread.model.model_fields
                assert 3 == len(reread)
            finally:
                reread.close()
        finally:
            _drop(repo)
            repo.close()

    def test_csv_header_rewritten_once(self, tmp_path: Path) -> None:
        """The header is rewritten once (atomically: a new file); rows are padded."""
        path = tmp_path / "old.csv"
        old = CSVFileRepo(path, model=MinimalRunRecord)
        old.add({"task_name": "t", "action": "run", "created": 1.0, "run_id": "r"})
        before = os.stat(path).st_ino
        CSVFileRepo(path, model=TaskRunRecord)
        after = os.stat(path).st_ino
        CSVFileRepo(path, model=TaskRunRecord)
        assert before != after
        assert after == os.stat(path).st_ino  # no second rewrite
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("task_name,action,created,run_id,")
        assert "levelname" in lines[0].split(",")
        assert len(lines[0].split(",")) == len(lines[1].split(","))
        # the old object still appends (its narrower rows read defaults)
        old.add({"task_name": "t", "action": "success", "created": 2.0, "run_id": "r"})
        assert ["run", "success"] == [r.action for r in CSVFileRepo(path, model=TaskRunRecord)]

    def test_sql_columns_added(self, make_repo: RepoFactory) -> None:
        """ALTER TABLE ADD COLUMN: the new columns exist, nullable, and are indexed."""
        first = make_repo("sqlite", model=MinimalRecordLike)
        first.add({"task_name": "t", "action": "run", "created": 1.0})
        repo = SQLRepo(first.engine, table=first.table_name, model=TaskRunRecord)  # type: ignore[attr-defined]
        inspector = sa.inspect(repo.engine)
        columns = {c["name"]: c for c in inspector.get_columns(repo.table_name)}
        indexed = {ix["column_names"][0] for ix in inspector.get_indexes(repo.table_name)}
        assert {"run_id", "levelname", "host", "process"} <= set(columns)
        assert columns["levelname"]["nullable"]
        assert "run_id" in indexed
        assert [("t", None, "")] == [(r.task_name, r.run_id, r.message) for r in repo]

    def test_evolve_schema_after_model_change(
        self, file_store: str, make_repo: RepoFactory
    ) -> None:
        """A model set after construction gets its columns, as on opening."""
        repo = make_repo(file_store, model=MinimalRunRecord)
        repo.add({"task_name": "t", "action": "run", "created": 1.0, "run_id": "r"})
        repo.model = TaskRunRecord
        repo.add({"task_name": "t", "action": "log", "created": 2.0, "levelname": "INFO"})
        assert [None, "INFO"] == [r.levelname for r in repo]


class MinimalRecordLike(BaseModel):
    """Three columns only."""

    task_name: str
    action: str
    created: float


def test_levelname_from_logging(make_repo: RepoFactory) -> None:
    """TaskLogRecord has levelname, filled from the log record."""
    repo = make_repo("memory", model=TaskRunRecord)
    logger = logging.getLogger("t.evolution.level")
    logger.propagate = False
    handler = RepoHandler(repo)
    logger.addHandler(handler)
    logger.warning("careful", extra={"task_name": "x", "action": "log"})
    handler.flush()
    assert ["WARNING"] == [r.levelname for r in repo]
