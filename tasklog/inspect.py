"""Open a store tasklog wrote without knowing its model, and read runs back from it.

The command line reads "any table tasklog wrote, whatever its model": this
module looks at the columns an existing SQL table or CSV file has and picks a
model for them — one of tasklog's own when the columns are exactly its fields,
else a pydantic model built for those columns. It never creates a store for
reading: a missing table or file is a :class:`StoreNotFoundError`.

It also holds the read-side helpers the command needs that are not in the
repository API: the newest records of a repository, the latest record of
each task, and a task's runs (start, end, runtime and outcome).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, create_model

from .exceptions import ConfigError
from .query import in_
from .records import (
    LogRecord,
    MinimalRecord,
    MinimalRunRecord,
    RunRecord,
    TaskLogRecord,
    TaskRunRecord,
)
from .repos import Repository, open_repo, parse_sql_url
from .repos.base import CLOSING_ACTIONS

__all__ = [
    "CLOSING_ACTIONS",
    "KNOWN_MODELS",
    "RunInfo",
    "StoreNotFoundError",
    "has_task",
    "latest_per_task",
    "list_runs",
    "model_for_columns",
    "newest",
    "open_existing",
    "store_kind",
]

KNOWN_MODELS: tuple[type[BaseModel], ...] = (
    TaskRunRecord,
    RunRecord,
    TaskLogRecord,
    LogRecord,
    MinimalRunRecord,
    MinimalRecord,
)
"""tasklog's own models, richest first."""


_REQUIRED = ("task_name", "action", "created")
_ID_COLUMN = "_id"


class StoreNotFoundError(ConfigError):
    """The table or file to read does not exist (it is not created for reading)."""


def _known_annotations() -> dict[str, Any]:
    """The type of every field of tasklog's models, by name."""
    found: dict[str, Any] = {}
    for model in reversed(KNOWN_MODELS):
        for name, info in model.model_fields.items():
            found[name] = info.annotation
    return found


_KNOWN_TYPES = _known_annotations()


def _usable_name(name: str) -> bool:
    return (
        name.isidentifier()
        and not name.startswith("_")
        and not name.startswith("model_")
        and not hasattr(BaseModel, name)
    )


def model_for_columns(
    columns: Sequence[str], types: Mapping[str, Any] | None = None, *, where: str = "the store"
) -> type[BaseModel]:
    """A record model for a store with these *columns*.

    When the columns are exactly the fields of one of tasklog's models, that
    model. Otherwise a model made for these columns: tasklog's field types for
    the names it knows, *types* (or ``str``) for the others, and every field
    but ``task_name``, ``action`` and ``created`` optional.

    Raises:
        ConfigError: a column tasklog needs (``task_name``, ``action``,
            ``created``) is missing.
    """
    present = [c for c in columns if c != _ID_COLUMN]
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        msg = (
            f"{where} is not a tasklog store: it lacks the column(s) {', '.join(missing)} "
            f"(its columns: {', '.join(present) or 'none'})."
        )
        raise ConfigError(msg)
    for known in KNOWN_MODELS:
        if set(present) == set(known.model_fields):
            return known
    fields: dict[str, Any] = {}
    for name in present:
        if not _usable_name(name) or name in fields:
            continue
        if name in _REQUIRED:
            fields[name] = (_KNOWN_TYPES[name], ...)
            continue
        annotation = _KNOWN_TYPES.get(name) or (types or {}).get(name, str)
        fields[name] = (Optional[annotation], None)  # noqa: UP045  (built at run time)
    model: type[BaseModel] = create_model("StoredRecord", **fields)
    return model


def store_kind(url: str) -> str:
    """``"memory"``, ``"csv"``, ``"redis"`` or ``"sql"``: which kind of store *url* names.

    Raises:
        ConfigError: *url* names no store.
    """
    text = url.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "memory":
        return "memory"
    if scheme == "csv" or (not scheme and text.lower().endswith(".csv")):
        return "csv"
    if scheme in ("redis", "rediss"):
        return "redis"
    if not scheme:
        msg = (
            f"{text!r} is not a repository URL; use memory://, csv:///path/file.csv "
            "(or a path ending in .csv), redis://host:port/db?key=NAME, sqlite:///file.db "
            "or another SQLAlchemy URL."
        )
        raise ConfigError(msg)
    return "sql"


def _csv_path(url: str) -> Path:
    if url.lower().startswith("csv://"):
        parts = urlsplit(url)
        return Path((parts.netloc + parts.path) if parts.netloc else parts.path)
    return Path(url)


def _sql_types(columns: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    import sqlalchemy as sa

    mapping: list[tuple[type[Any], Any]] = [
        (sa.Boolean, bool),
        (sa.Integer, int),
        (sa.Float, float),
        (sa.Numeric, float),
        (sa.DateTime, datetime),
        (sa.Interval, timedelta),
        (sa.JSON, Any),
    ]
    types: dict[str, Any] = {}
    for column in columns:
        kind = column["type"]
        types[column["name"]] = next((t for base, t in mapping if isinstance(kind, base)), str)
    return types


def open_existing(url: str, *, table: str | None = None) -> Repository[Any]:
    """Open an existing store for reading, with a model fitting its columns.

    Args:
        url: a repository URL (see :func:`tasklog.open_repo`).
        table: the SQL table (overrides ``?table=`` in *url*).

    ``memory://`` opens an empty store (memory does not outlive a process).

    Raises:
        StoreNotFoundError: the file, database or table does not exist.
        ConfigError: the URL is not usable, or the store is not a tasklog store.
    """
    text = str(url).strip()
    kind = store_kind(text)
    if table is not None and kind != "sql":
        msg = f"A table ({table!r}) applies to SQL databases only, not to {text!r}."
        raise ConfigError(msg)
    if kind == "memory":
        return open_repo(text, model=TaskRunRecord)
    if kind == "csv":
        return _open_csv(text)
    if kind == "redis":
        return _open_redis(text)
    return _open_sql(text, table)


def _not_a_directory(path: Path, what: str) -> None:
    if path.is_dir():
        msg = f"{what} {str(path)!r} is a directory; name a file."
        raise ConfigError(msg)


_KIND_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "datetime": datetime,
    "timedelta": timedelta, "json": Any,
}


def _open_redis(url: str) -> Repository[Any]:
    from .repos.redis_store import RedisRepo, _hide_password, parse_redis_url

    server, options = parse_redis_url(url)
    key = options.get("key", "tasklog")
    probe: RedisRepo[Any] = RedisRepo(server, key=key)
    try:
        fields = probe.stored_fields()
    except Exception as err:
        probe.close()
        msg = f"Cannot read Redis key {key!r} at {_hide_password(probe.url)}: {err}."
        raise ConfigError(msg) from None
    if not fields:
        probe.close()
        msg = f"Redis key {key!r} holds no tasklog records ({_hide_password(url)})."
        raise StoreNotFoundError(msg)
    probe.close()
    types = {name: _KIND_TYPES.get(kind, str) for name, kind in fields.items()}
    model = model_for_columns(list(fields), types, where=f"Redis key {key!r}")
    return RedisRepo(server, key=key, model=model)


def _open_csv(url: str) -> Repository[Any]:
    path = _csv_path(url)
    _not_a_directory(path, "CSV file")
    if not path.is_file():
        msg = f"CSV file {str(path)!r} does not exist."
        raise StoreNotFoundError(msg)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is no header
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        msg = f"Cannot read CSV file {str(path)!r}: {err}."
        raise ConfigError(msg) from None
    if not header:
        msg = f"CSV file {str(path)!r} is empty (no header row)."
        raise StoreNotFoundError(msg)
    model = model_for_columns(header, where=f"CSV file {str(path)!r}")
    return open_repo(url, model=model)


def _open_sql(url: str, table: str | None) -> Repository[Any]:
    import sqlalchemy as sa

    from .repos.sql import make_engine

    parsed, query_table = parse_sql_url(url)
    table = table or query_table or "task_log"
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = str(parsed.database)
        if database.startswith("file:"):
            database = database[5:].split("?", 1)[0]
        _not_a_directory(Path(database), "Database file")
        if not Path(database).is_file():
            msg = f"Database file {database!r} does not exist ({shown})."
            raise StoreNotFoundError(msg)
    try:
        engine = make_engine(parsed)
    except (sa.exc.ArgumentError, ImportError) as err:
        msg = f"Cannot use database URL {shown!r}: {err}."
        raise ConfigError(msg) from None
    try:
        inspector = sa.inspect(engine)
        if not inspector.has_table(table):
            tables = sorted(inspector.get_table_names())
            known = f"; its tables: {', '.join(tables)}" if tables else "; it has no tables"
            msg = f"Table {table!r} does not exist in {shown}{known}."
            raise StoreNotFoundError(msg)
        columns = inspector.get_columns(table)
    except sa.exc.SQLAlchemyError as err:
        msg = f"Cannot read {shown}: {getattr(err, 'orig', None) or err}."
        raise ConfigError(msg) from None
    finally:
        engine.dispose()
    names = [str(c["name"]) for c in columns]
    model = model_for_columns(names, _sql_types(columns), where=f"Table {table!r} in {shown}")
    return open_repo(
        parsed.render_as_string(hide_password=False), model=model, table=table, if_missing="raise"
    )


# ----------------------------------------------------------------- reading


def newest(repo: Repository[Any], n: int, **conditions: Any) -> list[Any]:
    """The last *n* records (in insertion order) matching *conditions*, oldest first.

    Streams: a CSV file is read once keeping *n* rows; SQL asks the database
    for the last *n* rows.
    """
    if n <= 0:
        return []
    result = repo.filter_by(**conditions)
    repo.sync()
    rows = list(repo.select_rows(result.query, limit=n, reverse=True))
    build = repo.model.model_validate
    return [build(row) for row in reversed(rows)]


def latest_per_task(repo: Repository[Any]) -> list[Any]:
    """The newest record of each task, sorted by task name.

    On an SQL store one grouped query; elsewhere one streaming pass.
    """
    from .repos import SQLRepo

    if isinstance(repo, SQLRepo) and _ID_COLUMN in repo.table.c:
        import sqlalchemy as sa

        t = repo.table
        last = sa.select(sa.func.max(t.c[_ID_COLUMN])).group_by(t.c.task_name)
        names = repo.schema.names
        stmt = sa.select(*(t.c[n] for n in names)).where(t.c[_ID_COLUMN].in_(last))
        repo.sync()
        with repo.engine.connect() as conn:
            rows = [dict(zip(names, row, strict=True)) for row in conn.execute(stmt)]
        records = [repo.model.model_validate(row) for row in rows]
    else:
        found: dict[str, Any] = {}
        for record in repo:
            found[record.task_name] = record
        records = list(found.values())
    return sorted(records, key=lambda r: r.task_name)


def has_task(repo: Repository[Any], task_name: str) -> bool:
    """Whether *repo* holds any record of *task_name*."""
    return repo.filter_by(task_name=task_name).first() is not None


@dataclass(frozen=True)
class RunInfo:
    """One run of a task: its start and closing records, summarised."""

    run_id: str
    task_name: str
    start: datetime
    end: datetime | None
    runtime: timedelta | None
    outcome: str | None
    """The closing action (``success``, ``fail``, ...), or None while running."""

    def as_json(self) -> dict[str, Any]:
        """The run as a JSON object (§6): ISO 8601 times, runtime in seconds."""
        return {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "runtime": None if self.runtime is None else self.runtime.total_seconds(),
            "outcome": self.outcome,
        }


def _when(record: Any, field: str) -> datetime:
    value = getattr(record, field, None)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(record.created), tz=timezone.utc)


def list_runs(repo: Repository[Any], task_name: str, limit: int | None = None) -> list[RunInfo]:
    """The runs of *task_name*, newest first (at most *limit*).

    A run starts with its ``run`` record and ends with its closing record;
    ``start``/``end``/``runtime`` fields are used when the model has them,
    else the records' ``created`` times stand in.

    Raises:
        ConfigError: the store has no ``run_id`` column.
    """
    if "run_id" not in repo.model.model_fields:
        msg = (
            f"The store's records ({repo.model.__name__}) have no run_id, so they form no "
            "runs; use 'tail' or 'errors' to read them."
        )
        raise ConfigError(msg)
    starts = (
        newest(repo, limit, task_name=task_name, action="run")
        if limit
        else (repo.filter_by(task_name=task_name, action="run").all())
    )
    starts.reverse()
    ids = [r.run_id for r in starts if r.run_id is not None]
    closing: dict[str, Any] = {}
    for chunk in _chunks(ids, 500):
        for record in repo.filter_by(
            task_name=task_name, run_id=in_(chunk), action=in_(CLOSING_ACTIONS)
        ):
            closing.setdefault(record.run_id, record)
    runs = []
    for start in starts:
        if start.run_id is None:
            continue
        begun = _when(start, "start")
        end_record = closing.get(start.run_id)
        end = runtime = None
        outcome = None
        if end_record is not None:
            outcome = str(end_record.action)
            end = _when(end_record, "end")
            value = getattr(end_record, "runtime", None)
            runtime = value if isinstance(value, timedelta) else end - begun
        runs.append(RunInfo(start.run_id, task_name, begun, end, runtime, outcome))
    return runs


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
