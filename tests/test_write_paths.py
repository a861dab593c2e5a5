"""The fast write paths give exactly what the general ones give.

The handler skips pydantic for values that already have their field's exact
type; the CSV store counts line ends when no row can span lines; the SQL store
binds values itself. Each is checked against the general path here.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasklog import Action, CSVFileRepo, MemoryRepo, MinimalRunRecord, RepoHandler, TaskRunRecord
from tasklog.handler import _fast_plan


class _Color(str, Enum):
    RED = "red"


class _Validated(MinimalRunRecord):
    @field_validator("task_name")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class _Constrained(BaseModel):
    task_name: str = Field(max_length=3)
    action: str
    created: float


class _Stripped(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    task_name: str
    action: str
    created: float


class _Aliased(BaseModel):
    task_name: str = Field(alias="task")
    action: str
    created: float


@pytest.mark.parametrize("model", [_Validated, _Constrained, _Stripped, _Aliased])
def test_no_fast_path_for_models_that_change_values(model: type[BaseModel]) -> None:
    """Validators, constraints, value-changing settings or aliases turn the fast path off."""
    assert _fast_plan(model) is None


@pytest.mark.parametrize("model", [MinimalRunRecord, TaskRunRecord])
def test_fast_path_for_plain_models(model: type[BaseModel]) -> None:
    """The built-in models of plain fields take the fast path."""
    assert _fast_plan(model) is not None


_VALUES: list[dict[str, Any]] = [
    {"task_name": "t", "action": "run", "run_id": "r"},
    {"task_name": "t", "action": Action.FAIL},  # a str subclass
    {"task_name": _Color.RED, "action": "log", "run_id": None},
    {"task_name": "t", "action": "log", "run_id": 5},  # not a str: refused
    {"task_name": "t", "action": "log", "start": datetime(2024, 1, 1, 12)},  # naive
    {"task_name": "t", "action": "log", "start": datetime(2024, 1, 1, 12,
                                                          tzinfo=timezone(timedelta(hours=2)))},
    {"task_name": "t", "action": "log", "start": "2024-01-01T12:00:00Z"},
    {"task_name": "t", "action": "log", "runtime": timedelta(seconds=1.5), "process": True},
    {"task_name": "t", "action": "log", "runtime": 2, "process": 7},
    {"task_name": "t"},  # no action
]


@pytest.mark.parametrize("model", [MinimalRunRecord, TaskRunRecord])
@pytest.mark.parametrize("extra", _VALUES)
def test_handler_stores_what_add_many_stores(model: type[BaseModel], extra: dict[str, Any]) -> None:
    """A record logged through the handler is stored exactly as ``add_many`` of its
    fields would store it (or refused in both cases)."""
    logged: MemoryRepo[Any] = MemoryRepo(model=model)
    handler = RepoHandler(logged, errors="ignore")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__.update(extra)
    data = dict(handler.to_data(record))
    handler.emit(record)
    handler.flush()
    added: MemoryRepo[Any] = MemoryRepo(model=model)
    with contextlib.suppress(ValueError):
        added.add_many([data])
    got = list(logged.select_rows(logged.filter_by().query))
    want = list(added.select_rows(added.filter_by().query))
    assert ([(k, type(v)) for row in want for k, v in row.items()], want) == (
        [(k, type(v)) for row in got for k, v in row.items()], got
    )


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1,2\n3,4\n",
        "a,b\n1,2\n3,4",  # no line end at the end
        "a,b\n1,2\n\n3,4\n\n",  # blank lines are no rows
        'a,b\n"x\ny",2\n3,4\n',  # a quoted line end
        "a,b\r\n1,2\r\n3,4\r\n",
        "a,b\n",
        "",
    ],
)
def test_csv_count_matches_parsing(tmp_path: Path, text: str) -> None:
    """An unconditional count() of a CSV file equals the number of rows a read yields."""
    class AB(BaseModel):
        a: str
        b: str | None = None

    path = tmp_path / "f.csv"
    path.write_text(text, newline="")
    repo: CSVFileRepo[Any] = CSVFileRepo(path, model=AB)
    assert len(repo.filter_by().all()) == repo.filter_by().count()


class _Typed(BaseModel):
    task_name: str
    action: str
    created: float
    start: datetime | None = None
    runtime: timedelta | None = None
    ok: bool | None = None
    tags: list[str] | None = None


@pytest.mark.parametrize("store", ["memory", "csv", "sqlite", "postgresql", "redis"])
def test_bulk_insert_larger_than_one_statement(make_repo: Any, store: str) -> None:
    """A batch wider than one SQL statement's bound-variable limit is stored whole,
    in order, with every column's conversion (datetimes, seconds, booleans, JSON)."""
    repo = make_repo(store, model=_Typed)
    when = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    items = [
        _Typed(task_name=f"t{i % 7}", action="run", created=float(i),
               start=when + timedelta(seconds=i) if i % 3 else None,
               runtime=timedelta(seconds=i / 4) if i % 5 else None,
               ok=bool(i % 2) if i % 11 else None,
               tags=[str(i)] if i % 13 == 0 else None)
        for i in range(12_000)  # SQLite: 7 columns, at most 4680 rows per statement
    ]
    repo.add_many(items)
    assert repo.filter_by().all() == items


class _Scalars(BaseModel):
    task_name: str
    action: str
    created: float
    message: str | None = None
    count: int | None = None
    ok: bool | None = None
    start: datetime | None = None
    runtime: timedelta | None = None


_AWKWARD = [
    "", "\\N", "\\", "\\.", "a,b", 'say "hi"', "tab\there", "line\nbreak", "cr\rlf\r\n",
    "  padded  ", "naïve ☃", "NULL", "null", "'quoted'", "1.5", "True",
]


@pytest.mark.parametrize("store", ["memory", "csv", "sqlite", "postgresql", "redis"])
def test_awkward_scalars_round_trip(make_repo: Any, store: str) -> None:
    """Text that looks like a NULL marker, a number, an end-of-data line or CSV
    syntax, special floats, huge integers and every scalar type come back exactly
    (on PostgreSQL they travel through COPY)."""
    repo = make_repo(store, model=_Scalars)
    when = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone.utc)
    items = [
        _Scalars(task_name=text or "t", action="log", created=float(i), message=text,
                 count=[0, -1, 2**62, None][i % 4], ok=[True, False, None][i % 3],
                 start=[when, None][i % 2], runtime=[timedelta(seconds=1.25), None][i % 2])
        for i, text in enumerate(_AWKWARD)
    ]
    items.append(_Scalars(task_name="t", action="log", created=float("inf")))
    items.append(_Scalars(task_name="t", action="log", created=-0.0, message=None))
    repo.add_many(items)
    got = repo.filter_by().all()
    if store == "csv":  # documented: CSV cannot tell "" from None in an optional field
        items[0] = items[0].model_copy(update={"message": None})
    assert got == items


class _Measured(BaseModel):
    task_name: str
    action: str
    created: float
    value: float | None = None


@pytest.mark.parametrize("store", ["memory", "csv", "sqlite", "postgresql", "redis"])
def test_nan_round_trips_except_on_sqlite(make_repo: Any, store: str) -> None:
    """NaN comes back as NaN, except on SQLite, which has no NaN and stores NULL:
    there an optional field reads back None and a required one is refused
    (documented in docs/stores.md)."""
    import math

    import sqlalchemy as sa

    repo = make_repo(store, model=_Measured)
    repo.add({"task_name": "t", "action": "log", "created": 1.0, "value": float("nan")})
    value = repo.filter_by().first().value
    if store == "sqlite":
        with pytest.raises(sa.exc.IntegrityError, match="NOT NULL"):
            repo.add({"task_name": "t", "action": "log", "created": float("nan")})
        assert value is None
    else:
        repo.add({"task_name": "t", "action": "log", "created": float("nan")})
        assert (True, True) == (math.isnan(value), math.isnan(repo.filter_by().last().created))
