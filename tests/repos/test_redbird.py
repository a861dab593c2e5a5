"""Red Bird's repository API as Rocketry's docs and tests use it, on every store.

Modelled on that usage (issue 12): ``repo.model`` reassigned after construction
(Rocketry's multilaunch docs), ``SQLRepo(conn_string=...)``, unknown keyword
arguments, ``repo.create()`` (the "robust applications" cookbook), and record
models whose ``before`` validators convert what the logging call passes.
The query operators (``between(..., none_as_open=True)``, ``skip()``) are in
the conformance suite.
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, field_validator, model_validator, validator

from tasklog import (
    CSVFileRepo,
    MemoryRepo,
    MinimalRecord,
    MinimalRunRecord,
    RepoHandler,
    Repository,
    SQLRepo,
    open_repo,
)

UTC = timezone.utc


def _logger(store: str) -> logging.Logger:
    logger = logging.getLogger(f"test.redbird.{store}.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class Wide(BaseModel):
    """MinimalRunRecord and more (nullable, so narrower models can write the table)."""

    task_name: str
    action: str
    created: float
    run_id: str | None = None
    message: str | None = None


# ------------------------------------------------- 1. reassigning repo.model
class TestReassignModel:
    """``session.get_repo().model = MinimalRunRecord`` (Rocketry's multilaunch docs)."""

    def test_multilaunch_docs(self, make_repo: Any, store: str) -> None:
        """A handler on the repo writes rows of the new model after the reassignment:
        the run_id logged afterwards is stored, what was logged before is kept."""
        repo = make_repo(store, model=MinimalRunRecord)  # a store a previous launch made
        repo.model = MinimalRecord  # Rocketry's default model
        handler = RepoHandler(repo=repo)
        logger = _logger(store)
        logger.addHandler(handler)
        logger.info("started", extra={"task_name": "a", "action": "run", "run_id": "lost"})
        assert [type(r) for r in repo.filter_by().all()] == [MinimalRecord]

        repo.model = MinimalRunRecord
        assert repo.model is MinimalRunRecord
        logger.info("started", extra={"task_name": "a", "action": "run", "run_id": "r2"})
        logger.info("done", extra={"task_name": "a", "action": "success", "run_id": "r2"})

        records = repo.filter_by(task_name="a").all()
        assert [type(r) for r in records] == [MinimalRunRecord] * 3
        assert [r.run_id for r in records] == [None, "r2", "r2"]
        assert [r.action for r in repo.filter_by(run_id="r2").all()] == ["run", "success"]
        assert handler.counts["stored"] == 3
        assert handler.counts["invalid"] == 0

    def test_add_and_read_use_the_new_model(self, make_repo: Any, store: str) -> None:
        """repo.add and every read (filter_by, iter, first/last, order_by) use the new model."""
        repo = make_repo(store, model=Wide)
        repo.add({"task_name": "a", "action": "run", "created": 1.0, "run_id": "r1",
                  "message": "hello"})
        repo.model = MinimalRunRecord
        repo.add(MinimalRunRecord(task_name="b", action="run", created=2.0, run_id="r2"))
        assert [type(r) for r in repo] == [MinimalRunRecord] * 2
        assert repo.filter_by().last() == MinimalRunRecord(
            task_name="b", action="run", created=2.0, run_id="r2"
        )
        with pytest.raises(ValueError, match="message"):  # not a field of the new model
            repo.filter_by(message="hello")
        repo.model = Wide  # back: what the wider model stored is still there
        first = repo.filter_by().first()
        assert first is not None
        assert first.message == "hello"
        assert [r.run_id for r in repo.filter_by().order_by("-created").all()] == ["r2", "r1"]

    def test_model_that_adds_fields(self, make_repo: Any, store: str) -> None:
        """Rocketry's very case: a store of MinimalRecord (Rocketry's default) switched
        to MinimalRunRecord with a handler on it. The store gains the run_id column
        (CSV header rewritten, SQL ALTER TABLE), older records read its default."""
        repo = make_repo(store, model=MinimalRecord)
        handler = RepoHandler(repo=repo)
        logger = _logger(store)
        logger.addHandler(handler)
        logger.info("x", extra={"task_name": "a", "action": "run", "run_id": "dropped"})
        repo.model = MinimalRunRecord
        logger.info("x", extra={"task_name": "a", "action": "run", "run_id": "r"})
        handler.flush()
        repo.add({"task_name": "a", "action": "success", "created": 2e9, "run_id": "r"})
        assert [(type(r), r.run_id) for r in repo] == [
            (MinimalRunRecord, None), (MinimalRunRecord, "r"), (MinimalRunRecord, "r")
        ]
        assert [r.action for r in repo.filter_by(run_id="r")] == ["run", "success"]
        if store in ("sqlite", "postgresql"):
            assert "run_id" in {c["name"] for c in sa.inspect(repo.engine).get_columns(
                repo.table_name)}
        if store == "csv":
            assert repo.filename.read_text().splitlines()[0] == "task_name,action,created,run_id"
        assert handler.counts["invalid"] == 0

    def test_model_with_a_required_field_the_store_lacks(
        self, make_repo: Any, store: str
    ) -> None:
        """A store holding records without a field the new model requires refuses it,
        naming the field, and keeps the old model (and keeps working)."""

        class Owned(BaseModel):
            task_name: str
            action: str
            created: float
            owner: str

        repo = make_repo(store, model=MinimalRecord)
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        with pytest.raises(ValueError, match="owner"):
            repo.model = Owned
        assert repo.model is MinimalRecord
        repo.add({"task_name": "a", "action": "run", "created": 2.0})
        assert [type(r) for r in repo] == [MinimalRecord] * 2

    def test_required_field_missing_from_held_records(self) -> None:
        """MemoryRepo refuses a model whose required field its records lack."""

        class Needs(BaseModel):
            task_name: str
            action: str
            created: float
            owner: str

        repo = MemoryRepo(model=MinimalRecord)
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        with pytest.raises(ValueError, match="owner"):
            repo.model = Needs
        assert repo.model is MinimalRecord
        assert len(repo) == 1

    def test_not_a_model(self, repo: Repository[Any]) -> None:
        """Only pydantic models can be the model (Red Bird's dict models are not)."""
        with pytest.raises(TypeError, match="pydantic"):
            repo.model = dict  # type: ignore[assignment]
        assert repo.model is MinimalRunRecord

    def test_handler_with_its_own_model_keeps_it(self, make_repo: Any, store: str) -> None:
        """A handler given model= validates with it; the repo's reassigned model is
        what the rows are stored and read as."""
        repo = make_repo(store, model=Wide)
        handler = RepoHandler(repo=repo, model=MinimalRunRecord, mode="sync")
        logger = _logger(store)
        logger.addHandler(handler)
        repo.model = MinimalRunRecord
        logger.info("x", extra={"task_name": "a", "action": "run", "run_id": "r"})
        assert handler.model is MinimalRunRecord
        assert [(type(r), r.run_id) for r in repo] == [(MinimalRunRecord, "r")]


# ------------------------------------------ 2. Red Bird's keyword arguments
class TestKeywordArguments:
    """``SQLRepo(conn_string=...)`` and unknown keyword arguments."""

    def test_conn_string_sqlite(self, tmp_path: Path) -> None:
        """Red Bird's argument name for the database URL."""
        url = f"sqlite:///{tmp_path / 'app.db'}"
        repo = SQLRepo(conn_string=url, table="tasks", model=MinimalRecord)
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        assert repo.model is MinimalRecord
        assert [r.task_name for r in SQLRepo(conn_string=url, table="tasks",
                                            model=MinimalRecord)] == ["a"]
        memory = SQLRepo(conn_string="sqlite://", model=MinimalRecord)
        memory.add({"task_name": "b", "action": "run", "created": 1.0})
        assert len(memory) == 1

    def test_conn_string_postgresql(self, postgres_url: str) -> None:
        """conn_string works for any database URL."""
        table = f"t_{uuid.uuid4().hex[:12]}"
        repo = SQLRepo(conn_string=postgres_url, table=table, model=MinimalRecord)
        try:
            repo.add({"task_name": "a", "action": "run", "created": 1.0})
            assert len(repo) == 1
        finally:
            repo.drop()
            repo.close()

    def test_url_and_conn_string_together(self) -> None:
        """Both names at once is a mistake, not a silent choice."""
        with pytest.raises(ValueError, match="conn_string"):
            SQLRepo(url="sqlite://", conn_string="sqlite:///other.db")

    def test_model_orm_is_refused(self) -> None:
        """Red Bird's ORM model argument is a TypeError naming it, not ignored."""
        engine = sa.create_engine("sqlite://")

        class Orm:
            pass

        with pytest.raises(TypeError, match="model_orm"):
            SQLRepo(engine=engine, model_orm=Orm)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="session"):
            SQLRepo(engine=engine, session=object())  # type: ignore[call-arg]

    def test_unknown_argument_to_every_store(
        self, store: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """Every repository class names an unknown keyword argument in a TypeError."""
        make: Any
        if store == "memory":
            make = lambda: MemoryRepo(model=MinimalRecord, kwds_csv={})  # noqa: E731
        elif store == "csv":
            make = lambda: CSVFileRepo(tmp_path / "x.csv", kwds_csv={})  # noqa: E731
        elif store in ("sqlite", "postgresql"):
            make = lambda: SQLRepo(url="sqlite://", kwds_csv={})  # noqa: E731
        else:
            from tasklog.repos import RedisRepo

            url = request.getfixturevalue("redis_url")
            make = lambda: RedisRepo(url, key="x", kwds_csv={})  # noqa: E731
        with pytest.raises(TypeError, match="kwds_csv"):
            make()

    def test_unknown_option_through_open_repo(
        self, store: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """open_repo passes options on to the store, which names an unknown one."""
        from conftest import store_url

        with pytest.raises(TypeError, match="echo_pool"):
            open_repo(store_url(store, tmp_path, request), echo_pool=True)

    def test_engine_options(self, tmp_path: Path) -> None:
        """Engine options are passed as one explicit mapping (also through open_repo);
        URL options keep working."""
        url = f"sqlite:///{tmp_path / 'app.db'}"
        repo = SQLRepo(url=url, engine_options={"echo": True})
        assert repo.engine.echo is True
        opened = open_repo(url + "?table=jobs", engine_options={"pool_pre_ping": True})
        assert isinstance(opened, SQLRepo)
        assert opened.table_name == "jobs"
        assert opened.engine.pool._pre_ping is True  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="engine"):
            SQLRepo(engine=repo.engine, engine_options={"echo": False})


# ---------------------------------------------------------- 4. repo.create()
class TestCreate:
    """``repo.create()``: make the store when missing, else do nothing."""

    def test_create_is_idempotent(self, make_repo: Any, store: str) -> None:
        """On a store that exists (and holds records) create() changes nothing."""
        repo = make_repo(store, model=MinimalRecord)
        repo.create()
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        repo.create()
        repo.create()
        assert [r.task_name for r in repo] == ["a"]

    def test_create_csv_file(self, tmp_path: Path) -> None:
        """The cookbook's pattern: a CSV file removed (or never written) is made with
        its header row, ready for other programs to read."""
        path = tmp_path / "logs" / "repo.csv"
        repo = CSVFileRepo(filename=path, model=MinimalRecord)
        path.unlink()
        repo.create()
        assert path.read_text() == "task_name,action,created\n"
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        repo.create()
        assert path.read_text() == "task_name,action,created\na,run,1.0\n"
        path.write_text("")  # emptied: the header is written again
        repo.create()
        assert path.read_text() == "task_name,action,created\n"

    @pytest.mark.parametrize("store", ["sqlite", "postgresql"])
    def test_create_sql_table(self, make_repo: Any, store: str) -> None:
        """A dropped table is created again, with its key and indexes, even by a repo
        opened with if_missing='raise'."""
        made = make_repo(store, model=MinimalRecord)
        repo = SQLRepo(made.engine, table=made.table_name, model=MinimalRecord,
                       if_missing="raise")
        repo.drop()
        assert not sa.inspect(repo.engine).has_table(repo.table_name)
        repo.create()
        inspector = sa.inspect(repo.engine)
        assert inspector.has_table(repo.table_name)
        assert "_id" in {c["name"] for c in inspector.get_columns(repo.table_name)}
        assert inspector.get_indexes(repo.table_name)
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        repo.create()
        assert [r.task_name for r in made] == ["a"]

    @pytest.mark.parametrize("store", ["memory", "redis"])
    def test_create_memory_and_redis(self, make_repo: Any, store: str) -> None:
        """Memory needs no making; Redis registers the model's fields under its key."""
        repo = make_repo(store, model=MinimalRecord)
        repo.create()
        assert len(repo) == 0
        if store == "redis":
            assert list(repo.stored_fields()) == ["task_name", "action", "created"]


# ----------------------------------------------- SQLite: the standard library
def test_sqlite_file_readable_without_tasklog(tmp_path: Path) -> None:
    """create() makes a table other programs can read at once (no record needed)."""
    path = tmp_path / "app.db"
    repo = SQLRepo(conn_string=f"sqlite:///{path}", table="tasks", model=MinimalRecord)
    repo.drop()
    repo.create()
    with sqlite3.connect(path) as conn:
        cols = [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]
    assert cols == ["_id", "task_name", "action", "created"]
    repo.close()
    os.unlink(path)



# ------------------------------------- 5. reads do not re-run before validators
_calls: list[str] = []


class SessionRecord(BaseModel):
    """Rocketry's session-log record shape: ``start`` is logged as a timestamp."""

    task_name: str
    action: str
    created: float
    start: datetime | None = None
    run_id: str | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _from_timestamp(cls, value: Any) -> Any:
        _calls.append("start")
        if value is not None:
            value = datetime.fromtimestamp(value)  # a datetime here is a TypeError
        return value


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)

    class V1StyleRecord(BaseModel):
        """The same with pydantic-v1's ``@validator(..., pre=True)``, as Rocketry wrote it."""

        task_name: str
        action: str
        created: float
        start: datetime | None = None

        @validator("start", pre=True)
        def _from_timestamp(cls, value: Any) -> Any:
            _calls.append("v1")
            if value is not None:
                value = datetime.fromtimestamp(value)
            return value


class Status(str, enum.Enum):
    """A text enum: stored as its value, read back as the enum."""

    OK = "ok"
    BAD = "bad"


class Tagged(BaseModel):
    """Fields whose stored values need converting on read (enum, list, Literal, timedelta)."""

    task_name: str
    action: str
    created: float
    status: Status | None = None
    tags: list[str] = []
    kind: Literal["x", "y"] = "x"
    took: timedelta | None = None

    @model_validator(mode="before")
    @classmethod
    def _needs_text_tags(cls, data: Any) -> Any:
        _calls.append("model")
        if isinstance(data, dict) and not isinstance(data.get("tags", ""), str):
            msg = "tags are written as comma-separated text"
            raise ValueError(msg)  # so running it on a stored row would fail
        return data

    @field_validator("tags", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        _calls.append("tags")
        return [t for t in value.split(",") if t]


class TestReadsDoNotValidateAgain:
    """Stored values are not handed back to the model's before validators."""

    @pytest.mark.parametrize("model", [SessionRecord, V1StyleRecord])
    def test_timestamp_validator(self, make_repo: Any, store: str, model: Any) -> None:
        """Written through a handler and with add(), read back with every read method."""
        repo = make_repo(store, model=model)
        handler = RepoHandler(repo=repo)
        logger = _logger(store)
        logger.addHandler(handler)
        ts = 1_700_000_000.5
        logger.info("x", extra={"task_name": "a", "action": "run", "start": ts})
        handler.flush()
        repo.add({"task_name": "b", "action": "run", "created": 2.0, "start": ts + 1})
        repo.add({"task_name": "c", "action": "run", "created": 3.0})
        _calls.clear()
        records = repo.filter_by().all()
        assert _calls == []
        assert [type(r) for r in records] == [model] * 3
        expected = datetime.fromtimestamp(ts).replace(tzinfo=UTC)  # naive is taken as UTC
        by_task = {r.task_name: r for r in records}
        assert by_task["a"].start == expected
        assert by_task["b"].start == expected + timedelta(seconds=1)
        assert by_task["c"].start is None
        assert repo.filter_by(task_name="b").first().start == expected + timedelta(seconds=1)
        assert repo.filter_by().last().task_name == "c"
        assert [r.task_name for r in repo.filter_by().order_by("-start")] == ["b", "a", "c"]
        assert len(list(repo)) == 3
        assert _calls == []
        assert by_task["a"].model_fields_set == set(model.model_fields)
        assert by_task["b"] == model.model_validate(
            {"task_name": "b", "action": "run", "created": 2.0, "start": ts + 1}
        ).model_copy(update={"start": expected + timedelta(seconds=1)})

    def test_values_of_other_types_are_still_converted(
        self, make_repo: Any, store: str
    ) -> None:
        """Values the store gives back in another type (enum values, JSON, text) become
        the field's type, without running the model's validators."""
        repo = make_repo(store, model=Tagged)
        repo.add({"task_name": "a", "action": "run", "created": 1.0, "status": "bad",
                  "tags": "p,q", "kind": "y", "took": timedelta(seconds=1.5)})
        repo.add({"task_name": "b", "action": "run", "created": 2.0, "tags": ""})
        _calls.clear()
        first, second = repo.filter_by().all()
        assert _calls == []
        assert first.status is Status.BAD
        assert first.tags == ["p", "q"]
        assert first.kind == "y"
        assert first.took == timedelta(seconds=1.5)
        assert (second.status, second.tags, second.kind, second.took) == (None, [], "x", None)
        assert first.model_dump() == {
            "task_name": "a", "action": "run", "created": 1.0, "status": Status.BAD,
            "tags": ["p", "q"], "kind": "y", "took": timedelta(seconds=1.5),
        }
        assert list(first.model_dump()) == list(Tagged.model_fields)  # field order kept

    def test_hand_written_csv_is_converted(self, tmp_path: Path) -> None:
        """A CSV file written by hand (text everywhere) reads as the model's types."""
        path = tmp_path / "hand.csv"
        path.write_text(
            "created,task_name,action,start,run_id\n"
            "1.5,a,run,2024-01-02T03:04:05+00:00,\n"
            "2,b,fail,,r1\n"
        )
        _calls.clear()
        records = CSVFileRepo(path, model=SessionRecord).filter_by().all()
        assert _calls == []
        assert records[0].start == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert records[0].run_id is None
        assert (records[1].created, records[1].run_id) == (2.0, "r1")
        assert type(records[1].created) is float

    def test_sqlite_values_of_another_type(self, tmp_path: Path) -> None:
        """SQLite keeps what it is given: an integer in a REAL column, text for a
        datetime written by another program. Reads convert them."""
        path = tmp_path / "app.db"
        repo = SQLRepo(conn_string=f"sqlite:///{path}", table="t", model=SessionRecord)
        repo.add({"task_name": "a", "action": "run", "created": 1.0, "start": 1.0})
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO t (task_name, action, created, start) "
                         "VALUES ('b', 'run', 2, '2024-01-02 03:04:05.000000')")
        _calls.clear()
        records = repo.filter_by().all()
        assert _calls == []
        assert type(records[1].created) is float
        assert records[1].start == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        repo.close()

    def test_private_attributes_and_post_init(self, make_repo: Any, store: str) -> None:
        """A model with private attributes and model_post_init is built as pydantic builds it."""

        class WithPrivate(BaseModel):
            task_name: str
            action: str
            created: float
            _seen: int = 0

            def model_post_init(self, context: Any) -> None:
                self._seen = 1

        repo = make_repo(store, model=WithPrivate)
        repo.add({"task_name": "a", "action": "run", "created": 1.0})
        (record,) = repo.filter_by().all()
        assert record._seen == 1
        record._seen = 5
        assert record._seen == 5
