"""The runs index of an SQL store: one row per run, kept beside the records.

``<table>_runs`` holds, for each ``(task_name, run_id)`` with a ``run`` or a
closing record: the run record's ``created`` (the earliest, when a run was
logged twice), its ``start``, ``host`` and ``process``; the first closing
record's action (``outcome``), ``created`` (``closing_created``), ``end`` and
``runtime`` (seconds); and ``secs``, the runtime the figures use (``runtime``,
else the closing record's ``created`` minus the run record's; NULL for a run
without a run record, which the figures leave out). Optional
columns exist where the records table has them.

The records stay the source of truth, and writing them costs nothing more:
the index is brought up to date when it is read. ``<table>_runs_state``
holds the highest record key folded in; :meth:`RunsIndex.catch_up` reads the
run and closing records stored since (a range of the records' primary key),
in key order, folds them into one entry per run and upserts those (``INSERT
... ON CONFLICT DO UPDATE``: the earliest run record and the first closing
record win), and moves the mark, in one transaction. Record keys are handed
out in commit order on SQLite (one writer at a time); on a database server a
writer's transaction holds a shared advisory lock (:meth:`RunsIndex.writing`)
and the catch-up takes it exclusively, so no record below the mark can still
be in flight. :meth:`RunsIndex.refresh` recomputes the runs a delete or an
update touched (the store learns which from the statement's ``RETURNING``)
from their records, in its transaction; :meth:`RunsIndex.ensure` builds a
missing index by folding every record (a store written by an older
version). ``<table>_runs_totals`` holds, per task and outcome, the runs, those
with a runtime and their runtimes' sum: each change to the index moves them
by what the runs it touched counted before and after (:meth:`RunsIndex._adjust`),
and a build makes them anew. Reads about runs (:mod:`tasklog.history`) then
answer from indexed queries over runs instead of the records.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

__all__ = ["RunsIndex", "versions_by_task"]

Row = dict[str, Any]
Tally = list[Any]
"""``[runs, runs with a runtime, sum of runtimes]``."""
_CHUNK = 5000
"""Records folded per statement."""
_TIDY_AFTER = 20_000
"""Records folded at once after which PostgreSQL's statistics are refreshed."""
_FROM_RUN = ("start", "host", "process")
"""Optional columns taken from the run record."""
_FROM_CLOSING = ("end",)
"""Optional columns taken from the closing record (besides runtime)."""


class RunsIndex:
    """The runs index of *records* (a table with tasklog's key column ``id``).

    Args:
        records: the records table.
        id_column: its key column (insertion order).
        runtime_numeric: whether the records' ``runtime`` holds seconds
            (a ``timedelta`` or a number), so the index may read it.
    """

    def __init__(self, records: sa.Table, id_column: sa.Column[Any], runtime_numeric: bool) -> None:
        from ..history import CLOSING_ACTIONS, runtime_seconds  # what a run is, said once

        self.closing = frozenset(CLOSING_ACTIONS)
        """The actions that end a run."""
        self._runtime_seconds = runtime_seconds
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
            # the run of each task (and outcome) that ended last
            sa.Index(f"ix_{name}_task_closed", "task_name", "closing_created"),
            sa.Index(f"ix_{name}_task_outcome_closed", "task_name", "outcome", "closing_created"),
        ]
        self.table = sa.Table(name, metadata, *columns, *indexes)
        self.state = sa.Table(
            f"{name}_state", metadata, sa.Column("folded", sa.BigInteger())
        )
        """One row: the highest record key folded into the index."""
        self.totals = sa.Table(
            f"{name}_totals", metadata,
            sa.Column("task_name", c.task_name.type, primary_key=True),
            sa.Column("outcome", c.action.type, primary_key=True),
            sa.Column("runs", sa.BigInteger(), nullable=False),
            sa.Column("timed", sa.BigInteger(), nullable=False),
            sa.Column("secs_sum", sa.Double(), nullable=False),
            sa.Column("version", sa.BigInteger(), nullable=False),
        )
        """Per task and outcome (``""`` while open): the runs with a run record,
        those with a runtime, and the sum of their runtimes — kept by every
        change to the index, so the figures of all time read these few rows.
        ``version`` changes with every change to the row: a new row (also
        one made again after it went, or by a rebuild) starts at the clock in
        nanoseconds, each change adds one. A task's versions thus tell
        whether its runs changed since they were last read (see
        :meth:`versions`)."""
        self.lock_key = zlib.crc32(name.encode()) - 2**31
        """The advisory lock of the catch-up on a database server."""
        self.names = [col.name for col in self.table.columns]
        self._upsert: Any = None
        self._dialect = ""
        self.figures_kept: dict[Any, tuple[Any, dict[str, Any]]] = {}
        """Per scope (a task, or None for all): the versions its percentiles
        and maximum of all time were read at, and those figures (kept by
        :meth:`tasklog.repos.sql.SQLRepo.run_figures`)."""
        self._making = threading.Lock()
        """One :meth:`ensure` at a time in this process (the server's threads)."""

    # ------------------------------------------------------------- schema
    def exists(self, engine: Engine | Connection) -> bool:
        """Whether the index table is in the database."""
        return sa.inspect(engine).has_table(self.table.name)

    def ensure(self, engine: Engine) -> None:
        """Create the index when it is missing (or lacks columns the model now has)
        and fill it from the records (one transaction; another thread or process
        doing the same meanwhile is fine)."""
        with self._making:
            try:
                self._ensure(engine)
            except exc.DatabaseError:
                # another process made a table between our look and our CREATE:
                # look again, once, now that it has
                time.sleep(0.05)
                self._ensure(engine)

    def _ensure(self, engine: Engine) -> None:
        stale = False
        if self.exists(engine):
            have = {col["name"] for col in sa.inspect(engine).get_columns(self.table.name)}
            if set(self.names) <= have and not self._orphaned(engine):
                for index in self.table.indexes:  # one added by a later version
                    try:
                        index.create(engine, checkfirst=True)
                    except exc.DatabaseError:  # made meanwhile by another repository
                        made = sa.inspect(engine).get_indexes(self.table.name)
                        if index.name not in {found["name"] for found in made}:
                            raise
                found = sa.inspect(engine)
                if found.has_table(self.state.name) and found.has_table(self.totals.name) and {
                    col["name"] for col in found.get_columns(self.totals.name)
                } >= set(self.totals.c.keys()):
                    return
            # made for a model with fewer fields, left by a dropped records
            # table, or by a version without the mark or the totals (or their
            # versions): made again, from the records
            stale = True
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self.lock_key)))
                if stale:
                    self.drop(conn)
                # the mark's table first: SQLite makes tables outside the
                # transaction, and a reader that sees the index must find it
                self.state.create(conn, checkfirst=True)
                self.totals.create(conn, checkfirst=True)
                self.table.create(conn)
                # written first, so that SQLite takes its write lock before the
                # records are read: a change to them waits for the fold, or it
                # for the change (which then sees the index and refreshes it)
                conn.execute(self.state.delete())
                top = conn.execute(sa.select(sa.func.max(self.id))).scalar()
                folded = (
                    self._fold(conn, [self.id <= top], counted=False) if top is not None else 0
                )
                self._recount(conn)
                self._set_mark(conn, top)
        except exc.DatabaseError:
            if not self.exists(engine):
                raise
            return
        self._tidy(engine, folded)

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
        self.state.drop(engine, checkfirst=True)
        self.totals.drop(engine, checkfirst=True)

    def _fold(
        self, conn: Connection, where: list[Any], keys: set[tuple[Any, Any]] | None = None,
        *, by_key: bool = False, counted: bool = True,
    ) -> int:
        """Fold the run and closing records matching *where* (of the runs *keys*
        only, when given) into the index, in key order, a chunk at a time;
        return how many records were folded. With *by_key* (*where* is a short
        range of record keys) the action and run id are tested here, not in
        the query, so the database reads the range by primary key rather than
        through the ``action`` index. With *counted*, the totals follow."""
        t = self.records
        names = ["task_name", "run_id", "action", "created", *self.optional]
        if self.has_runtime:
            names.append("runtime")
        scope = list(where)
        if not by_key:
            scope += [t.c.run_id.is_not(None), t.c.action.in_(("run", *self.closing))]
        stmt = sa.select(*(t.c[n] for n in names)).where(*scope).order_by(self.id)
        chunk: list[Row] = []
        count = 0
        for values in conn.execute(stmt):
            row = dict(zip(names, values, strict=True))
            if by_key and (row["run_id"] is None or (
                    row["action"] != "run" and row["action"] not in self.closing)):
                continue
            if keys is not None and (row["task_name"], row["run_id"]) not in keys:
                continue
            chunk.append(row)
            count += 1
            if len(chunk) >= _CHUNK:
                self.upsert(conn, chunk, counted=counted)
                chunk = []
        if chunk:
            self.upsert(conn, chunk, counted=counted)
        return count

    def _tidy(self, engine: Engine, folded: int) -> None:
        """After a large fold on PostgreSQL, vacuum and analyze the index table so
        its plans and index-only scans are right at once (not after autovacuum)."""
        if folded < _TIDY_AFTER or engine.dialect.name != "postgresql":
            return
        name = engine.dialect.identifier_preparer.format_table(self.table)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {name}")

    # ------------------------------------------------------ keeping it true
    def writing(self, conn: Connection) -> None:
        """Called first in each transaction that inserts records: on a database
        server, take the shared side of the catch-up's lock."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(self.lock_key)))

    def catch_up(self, engine: Engine) -> None:
        """Fold the records stored since the last call into the index."""
        with engine.connect() as conn:  # the common case: nothing new, no lock
            mark = conn.execute(sa.select(self.state.c.folded)).scalar()
            top = conn.execute(sa.select(sa.func.max(self.id))).scalar()
        if top is None or (mark is not None and top <= mark):
            return
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self.lock_key)))
            # the first statement writes, so SQLite takes its write lock (waiting
            # for it) before it reads the mark: one catch-up at a time
            conn.execute(self.state.update().values(folded=self.state.c.folded))
            mark = conn.execute(sa.select(self.state.c.folded)).scalar()
            top = conn.execute(sa.select(sa.func.max(self.id))).scalar()
            if top is None or (mark is not None and top <= mark):
                return
            floor = [self.id > mark] if mark is not None else []
            # a full history (no mark yet) through the action index, else by key
            folded = self._fold(conn, [*floor, self.id <= top], by_key=mark is not None)
            self._set_mark(conn, top)
        self._tidy(engine, folded)

    def deleted(self, conn: Connection) -> None:
        """After a delete (its runs refreshed), in its transaction: SQLite gives a
        new record the key after the highest one left, so when the newest
        records went, the mark comes down to that key (every record up to it
        is folded), or new records would reuse keys below it and never be
        folded. A database server never reuses a key."""
        if conn.dialect.name != "sqlite":
            return
        top = conn.execute(sa.select(sa.func.max(self.id))).scalar()
        mark = self.state.c.folded
        conn.execute(self.state.update().where(mark > (-1 if top is None else top))
                     .values(folded=top))

    def _set_mark(self, conn: Connection, top: Any) -> None:
        if conn.execute(self.state.update().values(folded=top)).rowcount == 0:
            conn.execute(self.state.insert().values(folded=top))

    def entries(self, rows: Iterable[Row]) -> list[Row]:
        """The index rows a batch brings: one per run, its earliest run record and
        its first closing record within the batch."""
        found: dict[tuple[Any, Any], Row] = {}
        optional = self.optional
        has_runtime = self.has_runtime
        for row in rows:
            action = row.get("action")
            if action != "run" and action not in self.closing:
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
                entry["runtime"] = (
                    self._runtime_seconds(row.get("runtime")) if has_runtime else None
                )
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

    def upsert(self, conn: Connection, rows: Sequence[Row], *, counted: bool = True) -> None:
        """Fold a batch of records into the index (call in the batch's transaction);
        with *counted*, the totals follow the runs it changes."""
        entries = self.entries(rows)
        if not entries:
            return
        keys = {(entry["task_name"], entry["run_id"]) for entry in entries}
        before = self._tally(conn, keys) if counted else {}
        conn.execute(self._upsert_statement(conn.dialect.name), entries)
        if counted:
            self._adjust(conn, before, self._tally(conn, keys))

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
        i, t = self.table, self.records
        before = self._tally(conn, keys)
        ids = sorted({run_id for _, run_id in keys})
        for at in range(0, len(ids), 500):  # through the run_id indexes
            part = ids[at : at + 500]
            gone = [(task, run) for task, run in keys if run in set(part)]
            conn.execute(i.delete().where(
                i.c.run_id.in_(part), sa.tuple_(i.c.task_name, i.c.run_id).in_(gone)
            ))
            self._fold(conn, [t.c.run_id.in_(part)], keys, counted=False)
        self._adjust(conn, before, self._tally(conn, keys))

    # ------------------------------------------------------------- totals
    def _recount(self, conn: Connection) -> None:
        """Make the totals anew from the whole index (one ``GROUP BY``)."""
        i, totals = self.table, self.totals
        outcome = sa.func.coalesce(i.c.outcome, "")
        conn.execute(totals.delete())
        conn.execute(totals.insert().from_select(
            ["task_name", "outcome", "runs", "timed", "secs_sum", "version"],
            sa.select(
                i.c.task_name, outcome, sa.func.count(), sa.func.count(i.c.secs),
                sa.func.coalesce(sa.func.sum(i.c.secs), 0.0),
                sa.literal(time.time_ns(), sa.BigInteger()),
            ).where(i.c.created.is_not(None)).group_by(i.c.task_name, outcome),
        ))

    def _tally(self, conn: Connection, keys: set[tuple[Any, Any]]) -> dict[tuple[Any, str], Tally]:
        """What the runs *keys* add to the totals now: per task and outcome, the
        runs, those with a runtime, and their runtimes' sum."""
        i = self.table
        found: dict[tuple[Any, str], Tally] = {}
        ids = sorted({run_id for _, run_id in keys})
        for at in range(0, len(ids), 500):
            stmt = sa.select(i.c.task_name, i.c.run_id, i.c.outcome, i.c.secs).where(
                i.c.run_id.in_(ids[at : at + 500]), i.c.created.is_not(None)
            )
            for task, run_id, outcome, secs in conn.execute(stmt):
                if (task, run_id) not in keys:
                    continue
                tally = found.setdefault((task, outcome or ""), [0, 0, 0.0])
                tally[0] += 1
                if secs is not None:
                    tally[1] += 1
                    tally[2] += float(secs)
        return found

    def _adjust(
        self,
        conn: Connection,
        before: dict[tuple[Any, str], Tally],
        after: dict[tuple[Any, str], Tally],
    ) -> None:
        """Move the totals by *after* minus *before*, and the version of each row
        the touched runs count in, even when its sums stay (runtimes may have
        moved between runs); in key order, so two transactions adjusting the
        same rows never wait for each other in a circle."""
        none: Tally = [0, 0, 0.0]
        changes = []
        born = time.time_ns()
        for key in sorted(before.keys() | after.keys()):
            old, new = before.get(key, none), after.get(key, none)
            changes.append({
                "task_name": key[0], "outcome": key[1], "runs": new[0] - old[0],
                "timed": new[1] - old[1], "secs_sum": new[2] - old[2], "version": born,
            })
        if not changes:
            return
        totals = self.totals
        module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = module.insert(totals)
        ex = stmt.excluded
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[totals.c.task_name, totals.c.outcome],
            set_={
                "runs": totals.c.runs + ex.runs,
                "timed": totals.c.timed + ex.timed,
                "secs_sum": totals.c.secs_sum + ex.secs_sum,
                "version": totals.c.version + 1,
            },
        ), changes)
        conn.execute(totals.delete().where(totals.c.runs <= 0))

    def totals_rows(self, conn: Connection, task_name: str | None) -> list[tuple[Any, ...]]:
        """``(task, outcome or None, runs, timed, sum of runtimes, version)`` of all time."""
        totals = self.totals
        stmt = sa.select(
            totals.c.task_name, totals.c.outcome, totals.c.runs, totals.c.timed,
            totals.c.secs_sum, totals.c.version,
        )
        if task_name is not None:
            stmt = stmt.where(totals.c.task_name == task_name)
        return [
            (task, outcome or None, runs, timed, secs, version)
            for task, outcome, runs, timed, secs, version in conn.execute(stmt)
        ]

    def versions(self, conn: Connection) -> dict[Any, frozenset[tuple[str | None, int]]]:
        """Each task's versions now (see :func:`versions_by_task`)."""
        totals = self.totals
        return versions_by_task(conn.execute(
            sa.select(totals.c.task_name, totals.c.outcome, totals.c.version)
        ))


def versions_by_task(
    rows: Iterable[Sequence[Any]],
) -> dict[Any, frozenset[tuple[str | None, int]]]:
    """Each task's ``(outcome, version)`` pairs from totals rows ``(task,
    outcome, version)``: equal on two reads when (and only when) none of the
    task's runs changed in between."""
    found: dict[Any, set[tuple[str | None, int]]] = {}
    for task, outcome, version in rows:
        found.setdefault(task, set()).add((outcome or None, version))
    return {task: frozenset(pairs) for task, pairs in found.items()}
