"""Red Bird's API as Rocketry's docs and tests use it, on every store (issue 12)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import RepoFactory
from pydantic import BaseModel, field_validator

from tasklog import (
    MinimalRecord,
    MinimalRunRecord,
    RepoHandler,
    SQLRepo,
    TaskRunRecord,
    between,
    greater_equal,
    skip,
)
from tasklog.query import Skip


def _record(i: int, **extra: Any) -> dict[str, Any]:
    return {"task_name": f"t{i % 2}", "action": "run", "created": 1000.0 + i, **extra}


class TestModelReassignment:
    """``repo.model = X`` after construction (Rocketry's multilaunch docs)."""

    def test_reads_use_the_new_model(self, make_repo: RepoFactory, store: str) -> None:
        """Records written with a rich model read back as the model assigned later."""
        repo = make_repo(store, model=TaskRunRecord)
        repo.add(_record(1, run_id="a", message="hello"))
        repo.model = MinimalRunRecord
        assert MinimalRunRecord is repo.model
        found = repo.filter_by(run_id="a").all()
        assert [MinimalRunRecord] == [type(r) for r in found]
        assert "a" == found[0].run_id

    def test_writes_use_the_new_model(self, make_repo: RepoFactory, store: str) -> None:
        """After switching to a smaller model and back, every record and column is kept."""
        repo = make_repo(store, model=TaskRunRecord)
        repo.add(_record(1, run_id="a", message="first"))
        repo.model = MinimalRunRecord
        repo.add(MinimalRunRecord(**_record(2, run_id="b")))
        repo.model = TaskRunRecord
        records = repo.filter_by().all()
        assert ["a", "b"] == [r.run_id for r in records]
        assert ["first", ""] == [r.message for r in records]

    def test_handler_follows_the_reassigned_model(
        self, make_repo: RepoFactory, store: str
    ) -> None:
        """A handler writing to the repo writes the new model's fields after the switch."""
        repo = make_repo(store, model=TaskRunRecord)
        repo.model = MinimalRunRecord
        logger = logging.getLogger(f"tasklog.test.reassign.{store}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = RepoHandler(repo, errors="raise")
        logger.addHandler(handler)
        logger.info("one", extra={"task_name": "t", "action": "run", "run_id": "r1"})
        repo.model = TaskRunRecord
        logger.info("two", extra={"task_name": "t", "action": "success", "run_id": "r2"})
        handler.flush()
        records = repo.filter_by().all()
        assert [("r1", ""), ("r2", "two")] == [(r.run_id, r.message) for r in records]

    def test_store_that_cannot_hold_the_model_keeps_the_old_one(
        self, make_repo: RepoFactory, store: str
    ) -> None:
        """A model with a required field the stored records lack is refused; nothing changes."""

        class Strict(MinimalRecord):
            owner: str

        repo = make_repo(store, model=MinimalRunRecord)
        repo.add(_record(1))
        with pytest.raises(ValueError, match="owner"):
            repo.model = Strict
        assert MinimalRunRecord is repo.model
        assert 1 == len(repo.filter_by().all())

    def test_not_a_model(self, make_repo: RepoFactory, store: str) -> None:
        """Assigning something that is not a pydantic model class is a TypeError."""
        repo = make_repo(store)
        with pytest.raises(TypeError, match="pydantic model class"):
            repo.model = dict  # type: ignore[assignment]


class TestOperators:
    """``between(..., none_as_open=True)`` and ``skip()``."""

    @pytest.fixture(name="filled")
    def _filled(self, make_repo: RepoFactory, store: str) -> Any:
        repo = make_repo(store)
        repo.add_many([_record(i) for i in range(6)])
        return repo

    def test_open_upper_bound(self, filled: Any) -> None:
        """A None upper bound means "from low on"."""
        found = filled.filter_by(created=between(1003, None, none_as_open=True)).all()
        assert [1003.0, 1004.0, 1005.0] == [r.created for r in found]

    def test_open_lower_bound(self, filled: Any) -> None:
        """A None lower bound means "up to high"."""
        found = filled.filter_by(created=between(None, 1001, none_as_open=True)).all()
        assert [1000.0, 1001.0] == [r.created for r in found]

    def test_both_bounds_open(self, filled: Any) -> None:
        """Two open bounds match everything."""
        assert 6 == filled.filter_by(created=between(None, None, none_as_open=True)).count()

    def test_closed_bounds_still_inclusive(self, filled: Any) -> None:
        """Without None, none_as_open changes nothing."""
        found = filled.filter_by(created=between(1001, 1002, none_as_open=True)).all()
        assert [1001.0, 1002.0] == [r.created for r in found]

    def test_skip_matches_everything(self, filled: Any) -> None:
        """``skip()`` leaves a condition out, None values included."""
        assert 6 == filled.filter_by(run_id=skip()).count()
        assert 3 == filled.filter_by(task_name="t0", created=skip()).count()
        assert 6 == len(filled.filter_by(action=skip()).order_by("-created").all())

    def test_skip_checks_the_field_name(self, filled: Any) -> None:
        """An unknown field is refused even with ``skip()``."""
        with pytest.raises(ValueError, match="valid fields"):
            filled.filter_by(nope=skip())

    def test_rocketry_time_window(self, filled: Any) -> None:
        """Rocketry's FastAPI demo: ``created`` from a datetime on, end left open."""
        start = datetime.fromtimestamp(1004, tz=timezone.utc).timestamp()
        found = filled.filter_by(
            task_name="t0", created=between(start, None, none_as_open=True)
        ).all()
        assert [1004.0] == [r.created for r in found]


def test_between_without_none_as_open_names_the_option() -> None:
    """A None bound without none_as_open says how to leave it open."""
    with pytest.raises(ValueError, match="none_as_open=True"):
        between(1, None)


def test_skip_is_an_operator() -> None:
    """``skip()`` and ``between(None, None, none_as_open=True)`` are the same condition."""
    assert isinstance(skip(), Skip)
    assert isinstance(between(None, None, none_as_open=True), Skip)
    assert greater_equal(3) == between(3, None, none_as_open=True)


class TestCreate:
    """``repo.create()`` (Rocketry's "robust applications" cookbook)."""

    def test_create_is_a_noop_on_an_existing_store(
        self, make_repo: RepoFactory, store: str
    ) -> None:
        """Creating an existing store keeps its records."""
        repo = make_repo(store)
        repo.add(_record(1))
        repo.create()
        repo.create()
        assert 1 == repo.filter_by().count()

    def test_create_remakes_a_missing_csv_file(self, make_repo: RepoFactory) -> None:
        """A CSV file deleted under the repo is made again, with its header."""
        repo = make_repo("csv")
        repo.filename.unlink()
        repo.create()
        header = repo.filename.read_text().splitlines()[0]
        assert list(repo.schema.names) == header.split(",")
        repo.add(_record(1))
        assert 1 == len(repo)

    def test_create_remakes_a_missing_table(self, make_repo: RepoFactory) -> None:
        """An SQL table dropped under the repo is made again."""
        repo = make_repo("sqlite")
        repo.drop()
        repo.create()
        repo.add(_record(1))
        assert 1 == len(repo)


class TestConstructorArguments:
    """Red Bird's argument names, and unknown ones refused."""

    def test_conn_string(self, tmp_path: Any) -> None:
        """``SQLRepo(conn_string=...)`` is Red Bird's name for ``url=``."""
        repo = SQLRepo(conn_string=f"sqlite:///{tmp_path / 'rb.db'}", model=MinimalRunRecord)
        try:
            repo.add(_record(1))
            assert 1 == len(repo)
        finally:
            repo.close()

    def test_unknown_keyword_is_a_type_error(self, tmp_path: Any) -> None:
        """``model_orm=`` (an ORM class, Red Bird's) is refused by name, not ignored."""
        with pytest.raises(TypeError, match="model_orm"):
            SQLRepo(url=f"sqlite:///{tmp_path / 'rb.db'}", model_orm=object)  # type: ignore[call-arg]

    def test_unknown_keyword_on_every_store(self, make_repo: RepoFactory, store: str) -> None:
        """Every repository class refuses a keyword it does not know."""
        with pytest.raises(TypeError, match="bogus"):
            make_repo(store, bogus=1)

    def test_engine_options(self, tmp_path: Any) -> None:
        """Engine settings go in ``engine_options``."""
        repo = SQLRepo(
            url=f"sqlite:///{tmp_path / 'rb.db'}", engine_options={"echo": False}
        )
        try:
            assert repo.engine.echo is False
        finally:
            repo.close()


class Session(BaseModel):
    """A Rocketry-style record model: ``start`` given as a timestamp and converted."""

    task_name: str
    action: str
    created: float
    start: datetime | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _from_timestamp(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if isinstance(value, datetime):
            msg = "expected a timestamp; reads must not validate stored values again"
            raise TypeError(msg)
        return value


def test_reads_do_not_rerun_before_validators(make_repo: RepoFactory, store: str) -> None:
    """A ``before`` validator that expects a timestamp is not handed the datetime it made."""
    repo = make_repo(store, model=Session)
    now = time.time()
    repo.add({"task_name": "t", "action": "run", "created": now, "start": now})
    found = repo.filter_by(task_name="t").all()
    assert 1 == len(found)
    assert datetime.fromtimestamp(now, tz=timezone.utc) == found[0].start
    assert found[0] == repo.filter_by().last()
