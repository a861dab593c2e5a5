"""Bulk ``INSERT`` for :class:`~tasklog.repos.sql.SQLRepo`: the measured fast paths
and SQLAlchemy's ``table.insert()`` as the fallback.

The statement is built once per table and model, and the columns' bind
processors (UTC datetimes, seconds, JSON, booleans) are applied here, so each
batch is one driver call: ``COPY ... FROM STDIN`` with psycopg 3, one multi-row
``INSERT`` per batch on SQLite, else one ``executemany`` of the driver's own
parameter style. A driver whose parameter style is not known here (or
``USE_FAST_PATHS = False``) gets ``conn.execute(table.insert(), rows)``.
Errors are raised as SQLAlchemy's exceptions, and a connection lost on the
way is invalidated, as with ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

__all__ = ["USE_FAST_PATHS", "InsertPlan", "insert", "plan_insert"]

Row = dict[str, Any]

USE_FAST_PATHS = True
"""False makes every new plan use ``table.insert()`` (the fallback; for tests)."""


class InsertPlan:
    """A table's bulk ``INSERT``, compiled once, and how to turn rows into its parameters.

    ``fast`` is False when the driver's parameter style is not one of the
    known ones: :func:`insert` then uses ``table.insert()``.
    """

    def __init__(self, engine: Engine, table: sa.Table, names: Sequence[str]) -> None:
        dialect = engine.dialect
        quote = dialect.identifier_preparer.quote
        names = list(names)
        self.names = names
        self.values_of = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        style = dialect.paramstyle
        keys = [f"p{i}" for i in range(len(names))]
        marks = {
            "qmark": ["?"] * len(names),
            "format": ["%s"] * len(names),
            "numeric": [f":{i + 1}" for i in range(len(names))],
            "numeric_dollar": [f"${i + 1}" for i in range(len(names))],
            "named": [f":{k}" for k in keys],
            "pyformat": [f"%({k})s" for k in keys],
        }.get(style)
        self.fast = USE_FAST_PATHS and marks is not None
        self.copy_sql: str | None = None
        self.per_statement = 1
        if marks is None or not self.fast:
            return
        self.processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        ]
        qtable = dialect.identifier_preparer.format_table(table)
        cols = ", ".join(quote(name) for name in names)
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            self.copy_sql = f"COPY {qtable} ({cols}) FROM STDIN"
        self.named = style in ("named", "pyformat") and self.copy_sql is None
        self.keys = keys
        self.sql = f"INSERT INTO {qtable} ({cols}) VALUES ({', '.join(marks)})"
        # sqlite3 releases the GIL around every statement's step, and getting
        # it back behind a busy logging thread costs up to a switch interval:
        # one statement of many rows per batch needs one step. The number of
        # bound variables is capped by the SQLite build (999 before 3.32).
        if dialect.name == "sqlite":
            self.per_statement = max(1, _sqlite_variable_limit(engine) // len(names))
        self._procs = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        self._row_marks = f"({', '.join(marks)})"
        self._head = f"INSERT INTO {qtable} ({cols}) VALUES "
        self._values_sql: dict[int, str] = {}

    def values_sql(self, n: int) -> str:
        """A multi-row ``INSERT`` for *n* rows (positional parameters)."""
        sql = self._values_sql.get(n)
        if sql is None:
            if len(self._values_sql) >= 16:  # batch sizes vary when idle: keep a few
                self._values_sql.clear()
            sql = self._values_sql[n] = self._head + ", ".join([self._row_marks] * n)
        return sql

    def flat_params(self, rows: list[Row]) -> tuple[Any, ...]:
        """The bound values of *rows*, one after the other (for :meth:`values_sql`)."""
        flat = list(chain.from_iterable(map(self.values_of, rows)))
        width = len(self.names)
        for i, proc in self._procs:
            flat[i::width] = map(proc, flat[i::width])
        return tuple(flat)

    def params(self, rows: list[Row]) -> list[Any]:
        """One tuple (or dict, for named parameter styles) of bound values per row."""
        get = self.values_of
        if not self._procs and not self.named:
            return list(map(get, rows))
        out: list[Any] = []
        for row in rows:
            values = list(get(row))
            for i, proc in self._procs:
                values[i] = proc(values[i])
            out.append(dict(zip(self.keys, values, strict=True)) if self.named else tuple(values))
        return out


def plan_insert(engine: Engine, table: sa.Table, names: Sequence[str]) -> InsertPlan:
    """The insert plan for *names* of *table* on *engine* (build once, reuse)."""
    return InsertPlan(engine, table, names)


def insert(
    engine: Engine,
    table: sa.Table,
    plan: InsertPlan,
    rows: list[Row],
    first: Callable[[Connection], None] | None = None,
) -> None:
    """Insert *rows* (dicts holding at least ``plan.names``) in one transaction;
    *first* (the runs index's writer lock) runs in it before them."""
    with engine.begin() as conn:
        if first is not None:
            first(conn)
        _insert(engine, conn, table, plan, rows)


def _insert(
    engine: Engine, conn: Connection, table: sa.Table, plan: InsertPlan, rows: list[Row]
) -> None:
    if not plan.fast:
        get = plan.values_of
        names = plan.names
        conn.execute(table.insert(), [dict(zip(names, get(row), strict=True)) for row in rows])
        return
    if plan.per_statement > 1:  # SQLite: multi-row VALUES, one statement per batch
        step = plan.per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            conn.exec_driver_sql(plan.values_sql(len(chunk)), plan.flat_params(chunk))
        return
    params = plan.params(rows)
    if plan.copy_sql is None:
        conn.exec_driver_sql(plan.sql, params)
        return
    dbapi_conn: Any = conn.connection.dbapi_connection
    try:
        with dbapi_conn.cursor() as cursor, cursor.copy(plan.copy_sql) as copy:
            write = copy.write_row
            for values in params:
                write(values)
    except engine.dialect.loaded_dbapi.Error as err:
        dialect = engine.dialect
        lost = dialect.is_disconnect(err, dbapi_conn, None)
        if lost:
            conn.invalidate()
        raise exc.DBAPIError.instance(
            plan.copy_sql, None, err, dialect.loaded_dbapi.Error,
            connection_invalidated=lost, dialect=dialect,
        ) from None


def _sqlite_variable_limit(engine: Engine) -> int:
    """Most bound variables one statement may have on *engine*'s SQLite build."""
    with engine.connect() as conn:
        dbapi_conn: Any = conn.connection.dbapi_connection
        getlimit = getattr(dbapi_conn, "getlimit", None)  # Python 3.11+
        if getlimit is not None:
            return int(getlimit(9))  # SQLITE_LIMIT_VARIABLE_NUMBER
    version = getattr(engine.dialect.loaded_dbapi, "sqlite_version_info", (0,))
    return 32766 if version >= (3, 32) else 999
