"""The runs index of an SQL store: one row per run, kept beside the records.

``<table>_runs`` holds, for each ``(task_name, run_id)`` with a ``run`` or a
closing record: the run record's ``created`` (the earliest, when a run was
logged twice), its ``start``, ``host`` and ``process``; the first closing
record's action (``outcome``), ``created`` (``closing_created``), ``end`` and
``runtime`` (seconds); and ``secs``, the runtime the figures use (``runtime``,
else the closing record's ``created`` minus the run record's; NULL for a run
without a run record, which the figures leave out). Optional
columns exist where the records table has them.

The records stay the source of truth. :meth:`RunsIndex.upsert` folds a batch
into the index in the transaction that inserts it (``INSERT ... ON CONFLICT
DO UPDATE``: the earliest run record and the first closing record win
whatever the order batches arrive in); :meth:`RunsIndex.refresh` recomputes
the runs a delete or an update touched (the store learns which from the
statement's ``RETURNING``), from the records, in the same transaction;
:meth:`RunsIndex.build` fills a missing index from the records (a store
written by an older version). Reads about runs
(:mod:`tasklog.history`) then answer from indexed queries over runs instead
of the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["CLOSING", "RunsIndex"]

Row = dict[str, Any]
CLOSING: tuple[str, ...] = (
    "success", "fail", "crash", "inaction", "terminate", "missed", "skipped"
)
"""The closing actions (the same as :data:`tasklog.history.CLOSING_ACTIONS`)."""
_CLOSING = frozenset(CLOSING)
_FROM_RUN = ("start", "host", "process")
"""Optional columns taken from the run record."""
_FROM_CLOSING = ("end",)
"""Optional columns taken from the closing record (besides runtime)."""
_NUMERIC = ("timedelta", "float", "int")


class RunsIndex:
    """The runs index of *records* (a table with tasklog's key column ``id``).

    Args:
        records: the records table.
        id_column: its key column (insertion order).
        runtime_numeric: whether the records' ``runtime`` holds seconds
            (a ``timedelta`` or a number), so the index may read it.
    """

    def __init__(self, records: sa.Table, id_column: sa.Column[Any], runtime_numeric: bool) -> None:
        self.records = records
        self.id = id_column
        c = records.c
        self.optional = tuple(n for n in (*_FROM_RUN, *_FROM_CLOSING) if n in c)
        self.has_runtime = "runtime" in c and runtime_numeric
        self.sources = frozenset(("task_name", "run_id", "action", "created", "runtime",
                                  *self.optional))
        """The records' columns the index is computed from."""
        metadata = sa.MetaData()
        name = f"{records.name}_runs"
        columns: list[Any] = [
            sa.Column("task_name", c.task_name.type, primary_key=True),
            sa.Column("run_id", c.run_id.type, primary_key=True),
            sa.Column("created", sa.Double()),
            sa.Column("outcome", c.action.type),
            sa.Column("closing_created", sa.Double()),
            sa.Column("runtime", sa.Double()),
            sa.Column("secs", sa.Double()),
            *(sa.Column(n, c[n].type) for n in self.optional),
        ]
        indexes = [
            sa.Index(f"ix_{name}_created", "created"),
            sa.Index(f"ix_{name}_task_created", "task_name", "created"),
            sa.Index(f"ix_{name}_outcome_created", "outcome", "created"),
            sa.Index(f"ix_{name}_task_secs", "task_name", "secs"),
            sa.Index(f"ix_{name}_secs", "secs"),
            # covers the figures' GROUP BY task_name, outcome (read without the table)
            sa.Index(f"ix_{name}_figures", "task_name", "outcome", "created", "secs"),
            sa.Index(f"ix_{name}_run_id", "run_id"),
        ]
        self.table = sa.Table(name, metadata, *columns, *indexes)
        self.names = [col.name for col in self.table.columns]
        self._upsert: Any = None
        self._dialect = ""

    # ------------------------------------------------------------- schema
    def exists(self, engine: Engine | Connection) -> bool:
        """Whether the index table is in the database."""
        return sa.inspect(engine).has_table(self.table.name)

    def ensure(self, engine: Engine) -> None:
        """Create the index when it is missing (or lacks columns the model now has)
        and fill it from the records (one transaction; another process doing the
        same meanwhile is fine)."""
        stale = False
        if self.exists(engine):
            have = {col["name"] for col in sa.inspect(engine).get_columns(self.table.name)}
            if set(self.names) <= have and not self._orphaned(engine):
                for index in self.table.indexes:  # one added by a later version
                    index.create(engine, checkfirst=True)
                return
            # made for a model with fewer fields, or left by a dropped records
            # table: made again, from the records
            stale = True
        try:
            with engine.begin() as conn:
                if stale:
                    self.drop(conn)
                self.table.create(conn)
                self.build(conn)
        except exc.DatabaseError:
            if not self.exists(engine):
                raise

    def _orphaned(self, engine: Engine) -> bool:
        """Whether the index lists runs while the records table is empty (the
        records table was dropped and made again under it)."""
        with engine.connect() as conn:
            if conn.execute(sa.select(self.id).limit(1)).first() is not None:
                return False
            return conn.execute(sa.select(self.table.c.task_name).limit(1)).first() is not None

    def drop(self, engine: Engine | Connection) -> None:
        """Drop the index table (when it exists)."""
        sa.Table(self.table.name, sa.MetaData()).drop(engine, checkfirst=True)

    def build(self, conn: Connection, keys: sa.Table | None = None) -> None:
        """Insert the index rows computed from the records (of the runs in *keys*,
        a table of ``task_name, run_id``, or of every run)."""
        t = self.records
        scope: list[ColumnElement[bool]] = [
            t.c.run_id.is_not(None), t.c.action.in_(("run", *CLOSING))
        ]
        if keys is not None:
            scope.append(sa.tuple_(t.c.task_name, t.c.run_id).in_(
                sa.select(keys.c.task_name, keys.c.run_id)
            ))
        k = (
            sa.select(t.c.task_name, t.c.run_id)
            .where(*scope)
            .group_by(t.c.task_name, t.c.run_id)
            .subquery("k")
        )
        r, e = t.alias("r"), t.alias("e")
        rid = r.c[self.id.name]
        eid = e.c[self.id.name]
        first_run = (
            sa.select(rid)
            .where(r.c.task_name == k.c.task_name, r.c.run_id == k.c.run_id, r.c.action == "run")
            .order_by(r.c.created, rid)
            .limit(1)
            .scalar_subquery()
        )
        first_end = (
            sa.select(sa.func.min(eid))
            .where(e.c.task_name == k.c.task_name, e.c.run_id == k.c.run_id,
                   e.c.action.in_(CLOSING))
            .scalar_subquery()
        )
        pairs = sa.select(
            k.c.task_name, k.c.run_id, first_run.label("rid"), first_end.label("eid")
        ).subquery("p")
        r2, e2 = t.alias("r2"), t.alias("e2")
        runtime: Any = (
            sa.type_coerce(e2.c.runtime, sa.Double()) if self.has_runtime
            else sa.cast(sa.null(), sa.Double())
        )
        secs = sa.case(
            (sa.or_(e2.c.action.is_(None), r2.c.created.is_(None)), sa.null()),
            else_=sa.func.coalesce(runtime, e2.c.created - r2.c.created),
        )
        values: dict[str, Any] = {
            "task_name": pairs.c.task_name,
            "run_id": pairs.c.run_id,
            "created": r2.c.created,
            "outcome": e2.c.action,
            "closing_created": e2.c.created,
            "runtime": runtime,
            "secs": secs,
        }
        for name in self.optional:
            values[name] = (r2 if name in _FROM_RUN else e2).c[name]
        select = sa.select(*values.values()).select_from(
            pairs.outerjoin(r2, r2.c[self.id.name] == pairs.c.rid)
            .outerjoin(e2, e2.c[self.id.name] == pairs.c.eid)
        )
        conn.execute(self.table.insert().from_select(list(values), select))

    # -------------------------------------------------------------- writes
    def entries(self, rows: Iterable[Row]) -> list[Row]:
        """The index rows a batch brings: one per run, its earliest run record and
        its first closing record within the batch."""
        found: dict[tuple[Any, Any], Row] = {}
        optional = self.optional
        has_runtime = self.has_runtime
        for row in rows:
            action = row.get("action")
            if action != "run" and action not in _CLOSING:
                continue
            run_id = row.get("run_id")
            task = row.get("task_name")
            if run_id is None or task is None:
                continue
            entry = found.get((task, run_id))
            if entry is None:
                entry = found[(task, run_id)] = dict.fromkeys(self.names)
                entry["task_name"] = task
                entry["run_id"] = run_id
            created = row.get("created")
            if action == "run":
                if entry["created"] is None or (created is not None and created < entry["created"]):
                    entry["created"] = created
                    for name in optional:
                        if name in _FROM_RUN:
                            entry[name] = row.get(name)
            elif entry["outcome"] is None:
                entry["outcome"] = action
                entry["closing_created"] = created
                runtime = row.get("runtime") if has_runtime else None
                if isinstance(runtime, timedelta):
                    runtime = runtime.total_seconds()
                entry["runtime"] = runtime
                for name in optional:
                    if name in _FROM_CLOSING:
                        entry[name] = row.get(name)
        for entry in found.values():
            if entry["outcome"] is not None and entry["created"] is not None:
                if entry["runtime"] is not None:
                    entry["secs"] = float(entry["runtime"])
                elif entry["created"] is not None and entry["closing_created"] is not None:
                    entry["secs"] = float(entry["closing_created"]) - float(entry["created"])
        return list(found.values())

    def upsert(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Fold a batch of records into the index (call in the batch's transaction)."""
        entries = self.entries(rows)
        if entries:
            conn.execute(self._upsert_statement(conn.dialect.name), entries)

    def _upsert_statement(self, dialect: str) -> Any:
        if self._upsert is not None and self._dialect == dialect:
            return self._upsert
        t = self.table
        module: Any = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(t)
        ex = stmt.excluded
        earlier = sa.or_(
            t.c.created.is_(None), sa.and_(ex.created.is_not(None), ex.created < t.c.created)
        )
        still_open = t.c.outcome.is_(None)

        def pick(name: str) -> Any:
            if name in ("created", *_FROM_RUN):
                return sa.case((earlier, ex[name]), else_=t.c[name])
            return sa.case((still_open, ex[name]), else_=t.c[name])

        final = {
            name: pick(name)
            for name in ("created", "outcome", "closing_created", "runtime", *self.optional)
        }
        secs = sa.case(
            (sa.or_(final["outcome"].is_(None), final["created"].is_(None)), sa.null()),
            else_=sa.func.coalesce(final["runtime"], final["closing_created"] - final["created"]),
        )
        self._upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.task_name, t.c.run_id], set_={**final, "secs": secs}
        )
        self._dialect = dialect
        return self._upsert

    def refresh(self, conn: Connection, keys: set[tuple[Any, Any]]) -> None:
        """Recompute the index rows of the runs *keys* (``(task_name, run_id)``) from
        the records, in *conn*'s transaction (after a delete or an update)."""
        if not keys:
            return
        t = self.records
        meta = sa.MetaData()
        touched = sa.Table(
            "tasklog_touched_runs", meta,
            sa.Column("task_name", t.c.task_name.type), sa.Column("run_id", t.c.run_id.type),
            prefixes=["TEMPORARY"],
        )
        touched.create(conn)
        try:
            conn.execute(
                touched.insert(), [{"task_name": task, "run_id": run} for task, run in keys]
            )
            pair = sa.tuple_(self.table.c.task_name, self.table.c.run_id)
            conn.execute(self.table.delete().where(
                pair.in_(sa.select(touched.c.task_name, touched.c.run_id))
            ))
            self.build(conn, touched)
        finally:
            touched.drop(conn)
