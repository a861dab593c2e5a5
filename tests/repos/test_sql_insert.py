"""The SQL store's bulk insert: the fast paths and the ``table.insert()`` fallback agree."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import RepoFactory

from tasklog import TaskLogRecord
from tasklog.repos import WriteProfile, sql_insert

SQL_STORES = ("sqlite", "postgresql")


def _records() -> list[TaskLogRecord]:
    start = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    return [
        TaskLogRecord(
            task_name=f"task-{i % 3}", action="run" if i % 2 else "success",
            created=1_767_323_045.5 + i, start=start,
            end=None if i % 2 else start + timedelta(seconds=i),
            runtime=None if i % 2 else timedelta(seconds=i, microseconds=250),
            message=f"item {i} \t 'quoted' \\ ünï", exc_text=None if i % 4 else "boom",
        )
        for i in range(25)
    ]


def _stored(repo: Any) -> list[dict[str, Any]]:
    return [r.model_dump() for r in repo.filter_by().all()]


@pytest.mark.parametrize("store", SQL_STORES)
def test_fallback_rows_round_trip_like_the_fast_path(
    make_repo: RepoFactory, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = make_repo(store, model=TaskLogRecord)
    fast.add_many(_records())
    assert fast._insert_plan.fast  # type: ignore[attr-defined]

    monkeypatch.setattr(sql_insert, "USE_FAST_PATHS", False)
    slow = make_repo(store, model=TaskLogRecord)
    slow.add_many(_records())
    assert not slow._insert_plan.fast  # type: ignore[attr-defined]

    expected = [r.model_dump() for r in _records()]
    assert expected == _stored(fast) == _stored(slow)


def test_unknown_parameter_style_falls_back(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    table = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Integer), sa.Column("b", sa.String))
    table.create(engine)
    engine.dialect.paramstyle = "unheard-of"
    plan = sql_insert.plan_insert(engine, table, ["a", "b"])
    assert not plan.fast
    engine.dialect.paramstyle = "qmark"
    sql_insert.insert(engine, table, plan, [{"a": 1, "b": "x", "extra": 0}, {"a": 2, "b": None}])
    with engine.connect() as conn:
        assert [(1, "x"), (2, None)] == [tuple(r) for r in conn.execute(sa.select(table))]
    engine.dispose()


@pytest.mark.parametrize("store", SQL_STORES)
def test_indexes_are_built(make_repo: RepoFactory, store: str) -> None:
    repo: Any = make_repo(store)
    names = {ix["name"] for ix in sa.inspect(repo.engine).get_indexes(repo.table_name)}
    table = repo.table_name
    wanted = {f"ix_{table}_task_name_action", f"ix_{table}_action_created", f"ix_{table}_created"}
    assert wanted <= names


def test_each_store_declares_a_write_profile(make_repo: RepoFactory, store: str) -> None:
    profile = make_repo(store).write_profile
    assert isinstance(profile, WriteProfile)
    expected = {
        "memory": WriteProfile(process_local=True),
        "csv": WriteProfile(batches=True, in_caller=True),
        "sqlite": WriteProfile(batches=True, batch_size=1000),
        "postgresql": WriteProfile(batches=True, batch_size=5000),
        "redis": WriteProfile(batches=True, batch_size=5000),
    }[store]
    assert expected == profile
