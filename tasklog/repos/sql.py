"""``SQLRepo``: records in a table of any database SQLAlchemy 2 speaks.

Every query runs in the database through SQLAlchemy Core: one ``WHERE`` clause
for the conditions, ``ORDER BY`` with the autoincrement key breaking ties,
``LIMIT``, ``COUNT``, ``DELETE`` and ``UPDATE``. Batches are inserted with one
``executemany`` in one transaction. The runs index is kept by
:mod:`tasklog.repos.sql_runs` and read by :mod:`tasklog.repos.sql_run_reads`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from .. import lifecycle
from ..exceptions import ConfigError
from ..query import (
    Between,
    Contains,
    Equal,
    GreaterEqual,
    GreaterThan,
    In,
    LessEqual,
    LessThan,
    NotEqual,
    NotIn,
    Operator,
    Query,
)
from ..schema import FieldInfo, Schema
from .base import ModelT, Repository, Row, WriteProfile
from .sql_insert import InsertPlan, insert, plan_insert
from .sql_run_reads import RunIndexReads
from .sql_runs import RunsIndex

__all__ = ["SQLRepo"]

ID_COLUMN = "_id"
_INDEXES = (("task_name", "action"), ("action", "created"), ("run_id",), ("created",))
"""(action, created) lets the newest runs (action "run", newest start first) come straight
from the index; an index on action alone made SQLite sort every run record per page."""
_SQLITE_BUSY_MS = 30_000


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime kept in UTC on every database; naive values are taken as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as UTC (naive UTC on SQLite, which keeps no zone)."""
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Seconds(sa.types.TypeDecorator[timedelta]):
    """A timedelta stored as float seconds, so databases can average and compare it."""

    impl = sa.Double()
    cache_ok = True

    def process_bind_param(self, value: timedelta | None, dialect: Dialect) -> float | None:
        """Store seconds."""
        return None if value is None else value.total_seconds()

    def process_result_value(self, value: float | None, dialect: Dialect) -> timedelta | None:
        """Read back a timedelta."""
        return None if value is None else timedelta(seconds=value)


def _bool(expr: Any) -> ColumnElement[bool]:
    """Narrow a comparison built from a column of unknown type."""
    result: ColumnElement[bool] = expr
    return result


def _column_type(info: FieldInfo, dialect: str) -> sa.types.TypeEngine[Any]:
    if info.kind == "str":
        return sa.Text(collation="C") if dialect == "postgresql" else sa.Text()
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "int": sa.BigInteger(),
        "float": sa.Double(),
        "bool": sa.Boolean(),
        "datetime": UTCDateTime(),
        "timedelta": Seconds(),
        "json": sa.JSON(),
    }
    return types[info.kind]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        with contextlib.suppress(Exception):  # a read-only file keeps its journal mode
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # 16 MB of page cache (allocated as used; the default is 2 MB), so that
        # the table pages an indexed query visits stay cached between queries
        cursor.execute("PRAGMA cache_size = -16000")
    finally:
        cursor.close()


def make_engine(url: str | sa.URL, **kwargs: Any) -> Engine:
    """Create an engine for *url*, with the settings tasklog relies on.

    SQLite files get WAL mode and a busy timeout so several processes can
    write one file; an in-memory SQLite database is shared by all threads.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            kwargs.setdefault("poolclass", StaticPool)
            kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = sa.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # a pooled connection may be stale after a server restart: test it when taken
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


class SQLRepo(RunIndexReads, Repository[ModelT]):
    """A store in one SQL table.

    Args:
        engine: an SQLAlchemy :class:`~sqlalchemy.engine.Engine`, or None with *url*.
        url: a database URL, used when no engine is given.
        table: the table name (default ``task_log``).
        model: the record model (default :class:`~tasklog.TaskRunRecord`).
        if_missing: ``"create"`` makes a missing table; ``"raise"`` refuses.
        id_field: see :class:`~tasklog.repos.base.Repository`.
        conn_string: Red Bird's name for *url*.
        engine_options: keyword arguments for :func:`sqlalchemy.create_engine`
            with *url* (``{"echo": True}``). Any other keyword argument is a
            :class:`TypeError`, as with every repository.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        url: str | sa.URL | None = None,
        table: str = "task_log",
        model: type[ModelT] | None = None,
        if_missing: Literal["create", "raise"] = "create",
        id_field: str | None = None,
        conn_string: str | sa.URL | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, id_field=id_field)
        if conn_string is not None:
            if url is not None and url != conn_string:
                msg = "Give the database URL once: url= or conn_string= (Red Bird's name)."
                raise ValueError(msg)
            url = conn_string
        if if_missing not in ("create", "raise"):
            msg = f"if_missing must be 'create' or 'raise', not {if_missing!r}."
            raise ValueError(msg)
        if engine is None and url is None:
            msg = "SQLRepo needs an engine or a url, e.g. url='sqlite:///app.db'."
            raise ConfigError(msg)
        if engine is not None and (url is not None or engine_options):
            msg = "SQLRepo takes an engine or a url (with engine_options), not both."
            raise TypeError(msg)
        self._owns_engine = engine is None
        if engine is None:
            assert url is not None
            try:
                engine = make_engine(url, **dict(engine_options or {}))
            except (exc.ArgumentError, exc.NoSuchModuleError) as err:
                msg = f"Cannot use database URL {str(url)!r}: {err}."
                raise ConfigError(msg) from None
        elif engine.dialect.name == "sqlite" and not event.contains(
            engine, "connect", _sqlite_pragmas
        ):
            event.listen(engine, "connect", _sqlite_pragmas)
        self.engine: Engine = engine
        self.table_name = table
        self._dialect = engine.dialect.name
        self._pending: str | None = None
        """``if_missing`` of a table still to open: the server was down at start."""
        self._json_each = True
        """Whether SQLite has ``json_each`` (tried until it fails)."""
        # 5000 records a batch on database servers (each batch costs round trips)
        self.write_profile = WriteProfile(
            batches=True, batch_size=1000 if self._dialect == "sqlite" else 5000
        )
        try:
            self.table = self._open_table(table, if_missing)
        except _UnreachableError:
            # the application starts anyway: writes are retried until the server is back
            self.table = self._define(table, with_id=True)
            self._pending = if_missing
        except BaseException:
            if self._owns_engine:
                engine.dispose()  # do not leak the connections of a repo never returned
            raise
        self._derive()
        lifecycle.on_fork_in_child(self._after_fork)

    def _ensure_open(self) -> None:
        """Open the table now if the server was down when the repository was made.

        Raises:
            sqlalchemy.exc.OperationalError: still unreachable (transient: a
                writer retries).
        """
        if self._pending is None:
            return
        try:
            self.table = self._open_table(self.table_name, self._pending)
        except _UnreachableError as err:
            cause = err.__cause__
            raise (cause if isinstance(cause, Exception) else err) from None
        self._pending = None
        self._derive()

    def _derive(self) -> None:
        """The model's columns in the table, and a fresh insert plan."""
        self._cols = [self.table.c[name] for name in self.schema.names]
        self._names = self.schema.names
        self._id = self.table.c.get(ID_COLUMN)
        self._insert_plan = None
        c = self.table.c
        runs = None
        keys = ("task_name", "action", "created", "run_id")
        if self._id is not None and all(n in c for n in keys):
            info = self.schema.fields.get("runtime")
            numeric = info is not None and info.kind in ("timedelta", "float", "int")
            runs = RunsIndex(self.table, self._id, numeric)
        self._runs = runs
        self._runs_ready = False

    def _index(self) -> RunsIndex | None:
        """The runs index, made (and filled from the records) on first use, and
        brought up to date with the records stored since it was last read."""
        runs = self._runs
        if runs is None:
            return None
        try:
            if not self._runs_ready:
                runs.ensure(self.engine)
                self._runs_ready = True
            runs.catch_up(self.engine)
        except sa.exc.DBAPIError as exc:
            if self.is_transient(exc) and not _read_only(exc):
                raise
            return None  # a read-only database: the reads go through the records
        return runs

    def _runs_table(self) -> sa.Table | None:
        """The runs index's table, up to date (see :meth:`_index`); None without one."""
        self._ensure_open()
        runs = self._index()
        return None if runs is None else runs.table

    def _adopt_model(self, previous: Schema) -> None:
        """Check the table against the new model, as on opening.

        Raises:
            ConfigError: the table has a column that needs a value (NOT NULL)
                for a field the new model lacks.
        """
        table = self._open_table(self.table_name, "create")
        try:
            columns = sa.inspect(self.engine).get_columns(self.table_name)
        except exc.SQLAlchemyError as err:
            msg = f"Cannot read table {self.table_name!r}: {getattr(err, 'orig', None) or err}."
            raise ConfigError(msg) from None
        needed = [
            str(c["name"]) for c in columns
            if not c.get("nullable", True)
            and c["name"] not in self.schema.fields
            and c["name"] != ID_COLUMN
        ]
        if needed:
            msg = (
                f"Table {self.table_name!r} needs values for {', '.join(needed)}, which "
                f"{self.model.__name__} does not have; use a model with them."
            )
            raise ConfigError(msg)
        self.table = table
        self._derive()

    def create(self) -> None:
        """Create the table when it is missing (no-op otherwise)."""
        self.table = self._open_table(self.table_name, "create")
        self._derive()

    @property
    def store_key(self) -> tuple[Any, ...]:
        """The database's identity and the table: an SQLite file by its resolved
        path (symlinks too), an in-memory SQLite database by its engine, a
        server's database by host, port and name (not by driver, user or password)."""
        key: tuple[Any, ...] | None = self.__dict__.get("_store_key")
        if key is None:
            key = self.__dict__["_store_key"] = self._identity()
        return key

    def _identity(self) -> tuple[Any, ...]:
        url = self.engine.url
        backend = url.get_backend_name()
        database = url.database or ""
        if backend == "sqlite":
            if database in ("", ":memory:") or "mode=memory" in database:
                return ("sqlite-memory", id(self.engine), self.table_name)
            return ("sqlite", os.path.realpath(_sqlite_path(database)), self.table_name)
        return (backend, url.host, url.port, database, self.table_name)

    # --------------------------------------------------------------- schema
    def _define(self, table: str, with_id: bool) -> sa.Table:
        metadata = sa.MetaData()
        columns: list[sa.Column[Any]] = []
        if with_id:
            columns.append(
                sa.Column(
                    ID_COLUMN,
                    sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                    primary_key=True,
                    autoincrement=True,
                )
            )
        for info in self.schema.fields.values():
            columns.append(
                sa.Column(
                    info.name,
                    _column_type(info, self._dialect),
                    # a field with a default may be missing from a later model (repo.model = X)
                    nullable=info.nullable or not info.required,
                )
            )
        indexes = [
            sa.Index(
                f"ix_{table}_{'_'.join(fields)}",
                *fields,
                *([ID_COLUMN] if self._dialect != "sqlite" else []),
            )
            for fields in (_INDEXES if with_id else ())
            if all(f in self.schema.fields for f in fields)
        ]
        return sa.Table(table, metadata, *columns, *indexes)

    def _open_table(self, table: str, if_missing: str) -> sa.Table:
        try:
            existing = self._existing_columns(table)
            if existing is None:
                if if_missing == "raise":
                    msg = (
                        f"Table {table!r} does not exist in {self._url_text()}; "
                        "create it or pass if_missing='create'."
                    )
                    raise ConfigError(msg)
                t = self._define(table, with_id=True)
                try:
                    t.metadata.create_all(self.engine)
                except exc.DatabaseError:  # another process created it meanwhile
                    existing = self._existing_columns(table)
                    if existing is None:
                        raise
                else:
                    return t
        except (exc.OperationalError, exc.InterfaceError) as err:
            msg = f"Cannot open table {table!r} in {self._url_text()}: {err.orig or err}."
            if _unreachable(err, self._dialect):
                raise _UnreachableError(msg) from err
            raise ConfigError(msg) from None
        missing = [name for name in self.schema.names if name not in existing]
        required = [name for name in missing if self.schema.fields[name].required]
        if required:
            msg = (
                f"Table {table!r} in {self._url_text()} lacks columns for required fields of "
                f"{self.model.__name__}: {', '.join(required)}. Add the columns, or use a "
                "model without them or another table."
            )
            raise ConfigError(msg)
        t = self._define(table, with_id=ID_COLUMN in existing)
        if missing:
            self._add_columns(t, missing)
        return t

    def _add_columns(self, t: sa.Table, names: list[str]) -> None:
        """``ALTER TABLE ... ADD COLUMN`` (nullable) for each of *names*, with the
        field's default as the column default so that older rows read it; and the
        indexes on them. Another process adding them meanwhile is fine."""
        dialect = self.engine.dialect
        quote = dialect.identifier_preparer.quote
        table = dialect.identifier_preparer.format_table(t)
        for name in names:
            column = t.c[name]
            kind = column.type.compile(dialect=dialect)
            sql = f"ALTER TABLE {table} ADD COLUMN {quote(name)} {kind}"
            default = self.model.model_fields[name].default
            if isinstance(default, (str, int, float)) and not isinstance(default, bool):
                literal = sa.literal(default).compile(
                    dialect=dialect, compile_kwargs={"literal_binds": True}
                )
                sql += f" DEFAULT {literal}"
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(sql)
            except exc.DatabaseError:
                present = self._existing_columns(t.name) or set()
                if name not in present:
                    raise
        for index in t.indexes:
            if any(c.name in names for c in index.columns):
                with contextlib.suppress(exc.DatabaseError):  # made by another process
                    index.create(self.engine, checkfirst=True)

    def _existing_columns(self, table: str) -> set[str] | None:
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(table):
            return None
        return {c["name"] for c in inspector.get_columns(table)}

    def _url_text(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # ---------------------------------------------------------- expressions
    def _condition(self, name: str, op: Operator) -> ColumnElement[bool]:
        col = self.table.c[name]
        if isinstance(op, Equal):
            return col.is_(None) if op.value is None else col == op.value
        if isinstance(op, NotEqual):
            return col.is_not(None) if op.value is None else sa.or_(col != op.value, col.is_(None))
        if isinstance(op, NotIn):
            if op.has_none:
                return sa.and_(col.not_in(op.non_null), col.is_not(None))
            return sa.or_(col.not_in(op.non_null), col.is_(None))
        if isinstance(op, In):
            if op.has_none:
                return sa.or_(col.in_(op.non_null), col.is_(None))
            return col.in_(op.non_null)
        if isinstance(op, GreaterThan):
            return _bool(col > op.value)
        if isinstance(op, GreaterEqual):
            return _bool(col >= op.value)
        if isinstance(op, LessThan):
            return _bool(col < op.value)
        if isinstance(op, LessEqual):
            return _bool(col <= op.value)
        if isinstance(op, Between):
            # not col.between(): PostgreSQL rejects "BETWEEN $1 COLLATE "C" AND ..."
            return sa.and_(col >= op.low, col <= op.high)
        if isinstance(op, Contains):
            text = sa.literal(op.substring, sa.Text())
            if self._dialect == "sqlite":
                return sa.func.instr(col, text) > 0
            if self._dialect == "postgresql":
                return sa.func.strpos(col, text) > 0
            return col.contains(op.substring, autoescape=True)
        msg = f"Operator {type(op).__name__} is not supported by SQLRepo."
        raise TypeError(msg)

    def _where(self, query: Query) -> list[ColumnElement[bool]]:
        return [self._condition(name, op) for name, op in query.conditions]

    def _ordering(self, query: Query, reverse: bool) -> list[Any]:
        clauses: list[Any] = []
        for name, desc in query.order:
            col = self.table.c[name]
            down = desc != reverse
            clauses.append(col.desc().nulls_last() if down else col.asc().nulls_first())
        if self._id is not None:
            clauses.append(self._id.desc() if reverse else self._id.asc())
        elif self._dialect == "sqlite":
            rowid: sa.ColumnClause[Any] = sa.literal_column("rowid")
            clauses.append(rowid.desc() if reverse else rowid)
        return clauses

    # --------------------------------------------------------------- writes
    _insert_plan: InsertPlan | None = None

    def insert_rows(self, rows: list[Row]) -> None:
        """Insert *rows* in one transaction, with the driver's fastest bulk path
        (see :mod:`tasklog.repos.sql_insert`)."""
        self._ensure_open()
        if not rows:
            return
        plan = self._insert_plan
        if plan is None:
            plan = self._insert_plan = plan_insert(self.engine, self.table, self._names)
        runs = self._runs
        insert(self.engine, self.table, plan, rows, runs.writing if runs is not None else None)

    def is_transient(self, error: BaseException) -> bool:
        """Whether *error* means the database is unreachable or busy (worth retrying)."""
        if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
            return True
        return isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError))

    # ---------------------------------------------------------------- reads
    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Stream matching rows from the database."""
        self._ensure_open()
        stmt = sa.select(*self._cols).where(*self._where(query))
        stmt = stmt.order_by(*self._ordering(query, reverse))
        if limit is not None:
            stmt = stmt.limit(limit)
        names = self._names
        # closing the result closes a server-side cursor (PostgreSQL) even when
        # the caller abandons the iteration
        with (
            self.engine.connect() as conn,
            conn.execution_options(yield_per=1000).execute(stmt) as result,
        ):
            for rows in result.partitions():  # fetchmany-sized chunks, not a fetch per row
                for row in rows:
                    yield dict(zip(names, row, strict=True))

    def count_rows(self, query: Query) -> int:
        """``SELECT count(*)`` in the database."""
        self._ensure_open()
        stmt = sa.select(sa.func.count()).select_from(self.table).where(*self._where(query))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def delete_rows(self, query: Query) -> int:
        """``DELETE`` in the database (and the runs it touches recomputed in the index)."""
        self._ensure_open()
        return self._change(self.table.delete().where(*self._where(query)), moves=False)

    def update_rows(self, query: Query, values: Row) -> int:
        """``UPDATE`` in the database (and, when it changes what the runs index is
        computed from, the runs it touches recomputed)."""
        self._ensure_open()
        stmt = self.table.update().where(*self._where(query)).values(**values)
        runs = self._runs
        if runs is None or not set(values) & runs.sources:
            with self.engine.begin() as conn:
                return int(conn.execute(stmt).rowcount)
        return self._change(stmt, moves=bool({"task_name", "run_id"} & set(values)))

    def _change(self, stmt: Any, *, moves: bool) -> int:
        """Run *stmt* (a delete or an update) in one
        transaction, with the runs it touches recomputed in the runs index: their
        keys come from ``RETURNING`` (and, when the update *moves* rows to other
        runs or the database has no ``RETURNING``, from a select before it).

        A store without an index yet gets none made here (the first read of
        runs makes it from the records); one that another process makes
        meanwhile learns of the change all the same."""
        runs = self._runs
        made = runs is not None and (self._runs_ready or runs.exists(self.engine))
        if made:
            runs = self._index()  # caught up first (None: a database tasklog may not write)
        t = self.table
        with self.engine.begin() as conn:
            if runs is None:
                return int(conn.execute(stmt).rowcount)
            runs.writing(conn)  # on a server, a first build elsewhere and this change take turns
            dialect = conn.dialect
            returning = (
                dialect.delete_returning if isinstance(stmt, sa.Delete)
                else dialect.update_returning
            )
            keys: set[tuple[Any, Any]] = set()
            if moves or not returning:
                where = stmt.whereclause
                before = sa.select(t.c.task_name, t.c.run_id).distinct().where(
                    t.c.run_id.is_not(None), *([where] if where is not None else [])
                )
                keys.update(tuple(row) for row in conn.execute(before))
            if returning:
                found = conn.execute(stmt.returning(t.c.task_name, t.c.run_id)).all()
                count = len(found)
                keys.update((task, run) for task, run in found if run is not None)
            else:
                count = int(conn.execute(stmt).rowcount)
            if made or runs.exists(conn):
                runs.refresh(conn, keys)
                if isinstance(stmt, sa.Delete):
                    runs.deleted(conn)
            return count

    def prune_rows(
        self,
        keep_runs: int | None,
        cutoff: float | None,
        task_name: str | None,
        *,
        dry_run: bool = False,
    ) -> int:
        """One ``DELETE`` that ranks runs with a window function in the database
        (a ``SELECT count(*)`` of the same rows with *dry_run*)."""
        self._ensure_open()
        t = self.table
        scope = [t.c.task_name == task_name] if task_name is not None and "task_name" in t.c else []
        doomed: list[ColumnElement[bool]] = []
        if cutoff is not None and "created" in t.c:
            doomed.append(t.c.created < cutoff)
        if keep_runs is not None and self._id is not None:
            doomed.append(self._beyond_newest_runs(keep_runs, scope))
        if not doomed:
            return 0
        if dry_run:
            count = sa.select(sa.func.count()).select_from(t).where(*scope, sa.or_(*doomed))
            with self.engine.connect() as conn:
                return int(conn.execute(count).scalar_one())
        return self._change(t.delete().where(*scope, sa.or_(*doomed)), moves=False)

    def _beyond_newest_runs(
        self, keep_runs: int, scope: list[ColumnElement[bool]]
    ) -> ColumnElement[bool]:
        """Records of runs beyond the newest *keep_runs* of their task."""
        t = self.table
        assert self._id is not None
        task = t.c.task_name if "task_name" in t.c else sa.literal(None)
        run = t.c.run_id if "run_id" in t.c else sa.literal(None)
        solo = sa.case((run.is_(None), self._id), else_=sa.null())
        runs = (
            sa.select(
                task.label("task"),
                run.label("run"),
                solo.label("solo"),
                sa.func.max(self._id).label("last_id"),
            )
            .where(*scope)
            .group_by(task, run, solo)
            .subquery("runs")
        )
        ranked = sa.select(
            runs.c.task,
            runs.c.run,
            runs.c.solo,
            sa.func.row_number()
            .over(partition_by=runs.c.task, order_by=runs.c.last_id.desc())
            .label("rank"),
        ).subquery("ranked")
        inner = t.alias("inner")
        inner_task = inner.c.task_name if "task_name" in inner.c else sa.literal(None)
        inner_run = inner.c.run_id if "run_id" in inner.c else sa.literal(None)
        old = (
            sa.select(inner.c[ID_COLUMN])
            .join(
                ranked,
                sa.and_(
                    sa.or_(
                        inner_task == ranked.c.task,
                        sa.and_(inner_task.is_(None), ranked.c.task.is_(None)),
                    ),
                    sa.or_(
                        inner_run == ranked.c.run,
                        sa.and_(inner_run.is_(None), inner.c[ID_COLUMN] == ranked.c.solo),
                    ),
                ),
            )
            .where(ranked.c.rank > keep_runs)
        )
        return self._id.in_(old)

    # ------------------------------------------- runs (tasklog.history.RunQueries)
    def latest_per_task_rows(self) -> list[Row] | None:
        """The newest row of each task (None without a key column).

        The task names, and the actions, come from loose index scans (one seek
        per distinct value); each task's newest key is the largest of its
        ``(task_name, action)`` pairs' newest keys, one seek each at the end
        of that pair's stretch of the index (a task's newest key alone would
        walk all its entries).
        """
        self._ensure_open()
        if self._id is None or "task_name" not in self.table.c:
            return None
        t = self.table
        inner = t.alias("n")
        names = self._distinct(t.c.task_name, inner.c.task_name, "names")
        if "action" not in t.c:
            last = (
                sa.select(sa.func.max(inner.c[ID_COLUMN]))
                .where(inner.c.task_name == names.c.value)
                .scalar_subquery()
            )
            keys = sa.select(last).where(names.c.value.is_not(None))
        else:
            actions = self._distinct(t.c.action, inner.c.action, "actions")
            name = names.c.value.label("name")

            def newest(*where: Any) -> Any:
                return (
                    sa.select(sa.func.max(inner.c[ID_COLUMN]))
                    .where(inner.c.task_name == names.c.value, *where)
                    .scalar_subquery()
                    .label("k")
                )

            parts: list[Any] = [
                sa.select(name, newest(inner.c.action == actions.c.value))
                .select_from(names.join(actions, sa.true()))  # every task with every action
                .where(names.c.value.is_not(None), actions.c.value.is_not(None))
            ]
            if t.c.action.nullable:
                parts.append(
                    sa.select(name, newest(inner.c.action.is_(None)))
                    .where(names.c.value.is_not(None))
                )
            pairs = sa.union_all(*parts).subquery("pairs")
            keys = sa.select(sa.func.max(pairs.c.k)).group_by(pairs.c.name)
        stmt = sa.select(*self._cols).where(self._id.in_(keys))
        with self.engine.connect() as conn:
            return [dict(zip(self._names, row, strict=True)) for row in conn.execute(stmt)]

    @staticmethod
    def _distinct(column: Any, alias_column: Any, name: str) -> Any:
        """A recursive CTE of *column*'s distinct non-null values (its column
        ``value``, ending with a NULL): one index seek per value."""
        values = sa.select(sa.func.min(column).label("value")).cte(name, recursive=True)
        step = sa.select(
            sa.select(sa.func.min(alias_column)).where(alias_column > values.c.value)
            .scalar_subquery()
        ).where(values.c.value.is_not(None))
        return values.union_all(step)

    def drop(self) -> None:
        """Drop the store's tables from the database: the records and their runs
        index (for tests and throwaway stores; the repository is unusable after)."""
        with self.engine.begin() as conn:
            if self._runs is not None:
                self._runs.drop(conn)
            self.table.drop(conn, checkfirst=True)
        self._runs_ready = False

    def close(self) -> None:
        """Dispose of the engine if this repository created it."""
        if self._owns_engine:
            self.engine.dispose()

    def _after_fork(self) -> None:
        self.engine.dispose(close=False)

    def __repr__(self) -> str:
        """Database, table and model."""
        return (
            f"SQLRepo(url={self._url_text()!r}, table={self.table_name!r}, "
            f"model={self.model.__name__})"
        )


def _read_only(error: BaseException) -> bool:
    """Whether *error* says the database may not be written (a read-only file,
    a read-only transaction or role)."""
    text = str(getattr(error, "orig", error)).lower()
    return "readonly" in text or "read-only" in text or "permission denied" in text


# ------------------------------------------------------------------ registry


def parse_sql_url(url: str) -> tuple[sa.URL, str | None]:
    """Split an SQLAlchemy URL into the database URL and its ``?table=`` option.

    Raises:
        ValueError: the URL cannot be parsed or names no known database
            (:class:`~tasklog.exceptions.ConfigError`).
    """
    from .registry import known_schemes

    try:
        parsed = sa.make_url(url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        msg = f"Cannot parse repository URL {url!r}. {known_schemes()}"
        raise ConfigError(msg) from None
    value = parsed.query.get("table")
    table = value if isinstance(value, str) or value is None else value[-1]
    parsed = parsed.difference_update_query(["table"])
    try:
        parsed.get_dialect()
    except exc.NoSuchModuleError:
        msg = (
            f"Unknown repository URL scheme {parsed.drivername!r} in {url!r}. {known_schemes()}"
        )
        raise ConfigError(msg) from None
    unknown = [key for key in parsed.query if key not in _url_options(parsed)]
    if unknown:
        allowed = ", ".join(sorted(_url_options(parsed) | {"table"}))
        msg = (
            f"Unknown option(s) {', '.join(repr(k) for k in unknown)} in {url!r}; "
            f"{parsed.get_backend_name()} URLs take {allowed}."
        )
        raise ConfigError(msg)
    return parsed, table


_SQLITE_OPTIONS = frozenset({
    "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements",
    "uri", "mode", "cache", "nolock", "immutable", "vfs", "modeof",
})
"""What pysqlite and SQLite URI file names accept in an SQLAlchemy SQLite URL."""


def _url_options(parsed: sa.URL) -> frozenset[str]:
    """The query options *parsed*'s driver accepts (anything, when it cannot tell)."""
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and driver == "pysqlite":
        return _SQLITE_OPTIONS
    if backend == "postgresql" and driver == "psycopg":
        try:
            from psycopg import pq
        except ImportError:  # pragma: no cover  (psycopg is what the URL names)
            return frozenset(parsed.query)
        keywords = {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
        return frozenset(keywords | {"client_encoding", "options"})
    return frozenset(parsed.query)


def open_url(url: str, model: type[Any] | None, options: dict[str, Any]) -> SQLRepo[Any]:
    """Any SQLAlchemy URL, with ``?table=NAME`` (see :mod:`.registry`).

    Without *model*, an existing table is read with a model matching its columns.
    """
    from ..exceptions import StoreNotFoundError
    from .registry import DEFAULT_MODEL

    parsed, table = parse_sql_url(url)
    if table is not None:
        options.setdefault("table", table)
    if model is None:
        try:
            return _open_existing(parsed, options)
        except (StoreNotFoundError, _UnreachableError):  # a server down at start: opened when back
            model = DEFAULT_MODEL
    return SQLRepo(url=parsed, model=model, **options)


def open_existing(url: str, options: dict[str, Any]) -> SQLRepo[Any]:
    """An existing table, with a model matching its columns.

    Raises:
        StoreNotFoundError: the database file or the table does not exist.
        ConfigError: the URL is not usable, or the table is not a tasklog store.
    """
    parsed, table = parse_sql_url(url)
    options = dict(options)
    if options.get("table") is None and table is not None:
        options["table"] = table
    try:
        return _open_existing(parsed, options)
    except _UnreachableError as err:
        raise ConfigError(str(err)) from None


def _open_existing(parsed: sa.URL, options: dict[str, Any]) -> SQLRepo[Any]:
    from pathlib import Path

    from ..exceptions import StoreNotFoundError
    from .registry import model_for_columns, not_a_directory

    options = dict(options)
    table = options.pop("table", None) or "task_log"
    options.pop("if_missing", None)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = _sqlite_path(str(parsed.database))
        not_a_directory(Path(database), "Database file")
        if not Path(database).is_file():
            msg = f"Database file {database!r} does not exist ({shown})."
            raise StoreNotFoundError(msg)
    try:
        engine = make_engine(parsed)
    except (exc.ArgumentError, ImportError) as err:
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
    except exc.SQLAlchemyError as err:
        msg = f"Cannot read {shown}: {getattr(err, 'orig', None) or err}."
        if _unreachable(err, engine.dialect.name):
            raise _UnreachableError(msg) from err
        raise ConfigError(msg) from None
    finally:
        engine.dispose()
    names = [str(c["name"]) for c in columns]
    model = model_for_columns(names, _python_types(columns), where=f"Table {table!r} in {shown}")
    return SQLRepo(url=parsed, model=model, table=table, if_missing="raise", **options)


class _UnreachableError(Exception):
    """The database server cannot be reached now (it may be later)."""


def _unreachable(error: BaseException, dialect: str) -> bool:
    """Whether *error*, met when opening a table, means a server that is down
    or busy rather than a URL or table that can never work.

    SQLite has no server: only a locked file is worth waiting for.
    """
    if not isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
        return False
    if dialect == "sqlite":
        return "locked" in str(getattr(error, "orig", error)).lower()
    return True


def _sqlite_path(database: str) -> str:
    """The file of an SQLite database name (``file:`` URIs too)."""
    return database[5:].split("?", 1)[0] if database.startswith("file:") else database


def _python_types(columns: list[Any]) -> dict[str, Any]:
    """The Python type of each reflected column, by name (``str`` when unknown)."""
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
