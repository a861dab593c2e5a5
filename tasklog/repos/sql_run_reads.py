"""The SQL store's reads of its runs index (:class:`tasklog.history.RunIndexQueries`).

:class:`RunIndexReads` is a part of :class:`~tasklog.repos.sql.SQLRepo`: the
runs listed, found, counted and summed from ``<table>_runs`` and its totals
(kept by :mod:`tasklog.repos.sql_runs`), each read returning None when the
store has no index, so that :mod:`tasklog.history` reads the records instead.
What a run is stays in :mod:`tasklog.history`; this module only asks the
database.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import ARRAY

from .base import Row
from .sql_runs import versions_by_task

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..schema import Schema
    from .sql_runs import RunsIndex

__all__ = ["RunIndexReads"]

_WINDOW = 50_000
"""Runs in a ``since`` window up to which the figures are computed from its
runs' rows (fetched by the ``created`` index) rather than by the database."""
_COUNTED = ("runs", "successes", "failures", "other", "finished")
"""The runs counted per task (:func:`tasklog.history.count_outcome`'s order)."""
_KEPT_FIGURES = ("p50_runtime", "p95_runtime", "max_runtime")
"""The figures of all time kept between reads (the rest come from the totals)."""


def _newest_first(i: sa.Table) -> tuple[Any, ...]:
    """The runs index's listing order: newest start first, ties by task and run id."""
    return i.c.created.desc(), i.c.task_name.desc(), i.c.run_id.desc()


def _stamp(versions: dict[Any, frozenset[Any]], task: Any) -> Any:
    """What the runs of *task* (of every task: None) are at now, from the
    totals' versions (None when there are none to go by)."""
    if not versions:
        return None
    if task is None:
        return frozenset((name, pair) for name, pairs in versions.items() for pair in pairs)
    return versions.get(task)


class RunIndexReads:
    """The runs index's reads of :class:`~tasklog.repos.sql.SQLRepo` (mixed into it)."""

    if TYPE_CHECKING:  # what SQLRepo provides
        schema: Schema
        engine: Engine
        _dialect: str
        _json_each: bool

        def _ensure_open(self) -> None: ...
        def _index(self) -> RunsIndex | None: ...
        def _runs_table(self) -> sa.Table | None: ...

    def _run_pairs(self, stmt: Any) -> list[tuple[Row, Row | None]]:
        """``(run row, closing row or None)`` pairs, as the records would give them,
        from a select of the runs index."""
        fields = self.schema.fields
        runtime = fields.get("runtime")
        as_delta = runtime is not None and runtime.kind == "timedelta"
        keep: list[str] = [n for n in ("start", "host", "process") if n in fields]
        keep_end: list[str] = [n for n in ("end",) if n in fields]
        pairs: list[tuple[Row, Row | None]] = []
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            at = {name: k for k, name in enumerate(result.keys())}
            task, run, made, outcome = at["task_name"], at["run_id"], at["created"], at["outcome"]
            closed, took = at["closing_created"], at["runtime"]
            # a field the index lacks (a column added to the records later) is None
            kept = [(name, at.get(name)) for name in keep]
            kept_end = [(name, at.get(name)) for name in keep_end]
            for row in result.all():  # one fetch; values by position
                start: Row = {
                    "task_name": row[task], "run_id": row[run], "action": "run",
                    "created": row[made],
                }
                for field, k in kept:
                    start[field] = None if k is None else row[k]
                end: Row | None = None
                if row[outcome] is not None:
                    value = row[took]
                    if value is not None and as_delta:
                        value = timedelta(seconds=value)
                    end = {
                        "task_name": row[task], "run_id": row[run], "action": row[outcome],
                        "created": row[closed], "runtime": value,
                    }
                    for field, k in kept_end:
                        end[field] = None if k is None else row[k]
                pairs.append((start, end))
        return pairs

    def _run_pairs_of(self, selects: list[Any]) -> list[tuple[Row, Row | None]]:
        """The pairs of several limited selects of the runs index, read with one
        ``UNION ALL`` per 100 of them (SQLite allows 500 in a compound select)."""
        found: list[tuple[Row, Row | None]] = []
        for at in range(0, len(selects), 100):
            parts = [sa.select(part.subquery()) for part in selects[at : at + 100]]
            found.extend(self._run_pairs(sa.union_all(*parts) if len(parts) > 1 else parts[0]))
        return found

    def run_rows(
        self,
        *,
        task_names: list[str] | None,
        outcomes: list[str] | None,
        running: bool,
        low: float | None,
        high: float | None,
        bound: tuple[float, str, str] | None,
        limit: int | None,
    ) -> list[tuple[Row, Row | None]] | None:
        """Runs newest start first from the runs index (see
        :class:`tasklog.history.RunIndexQueries`); None without one."""
        i = self._runs_table()
        if i is None:
            return None
        where: list[Any] = [i.c.created.is_not(None)]
        if task_names is not None:
            where.append(i.c.task_name.in_(task_names))
        if outcomes is not None or running:
            chosen = [i.c.outcome.in_(outcomes)] if outcomes else []
            if running:
                chosen.append(i.c.outcome.is_(None))
            where.append(sa.or_(*chosen))
        if low is not None:
            where.append(i.c.created >= low)
        if high is not None:
            where.append(i.c.created <= high)
        if bound is not None:
            where.append(
                sa.tuple_(i.c.created, i.c.task_name, i.c.run_id) < sa.tuple_(*bound)
            )
        stmt = sa.select(i).where(*where).order_by(*_newest_first(i))
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._run_pairs(stmt)

    def run_row(self, run_id: str) -> list[tuple[Row, Row | None]] | None:
        """The run *run_id* from the runs index: a list of its pair (empty when
        there is no such run); None without an index."""
        i = self._runs_table()
        if i is None:
            return None
        stmt = (
            sa.select(i)
            .where(i.c.run_id == run_id, i.c.created.is_not(None))
            .order_by(i.c.created, i.c.task_name)
            .limit(1)
        )
        return self._run_pairs(stmt)

    def recent_run_rows(
        self, task_names: list[str], n: int
    ) -> list[tuple[Row, Row | None]] | None:
        """The newest *n* runs of each task from the runs index, each task's
        newest first: a ``LIMIT`` per task (each a short walk of ``(task_name,
        created)``) in one statement whatever the number of tasks (the names
        a bound array or JSON text: the statement is the same for any tasks) —
        on PostgreSQL a ``LATERAL`` subquery, on SQLite a correlated ``IN``
        over ``json_each`` —, elsewhere one per 100 tasks; None without an index."""
        i = self._runs_table()
        if i is None:
            return None
        if self._dialect == "postgresql":
            names = sa.bindparam("names", list(task_names), type_=ARRAY(i.c.task_name.type))
            wanted = sa.func.unnest(names).table_valued("name").alias("wanted")
            # the task first in the order: the plan then walks (task_name, created)
            newest = (
                sa.select(i).where(i.c.task_name == wanted.c.name, i.c.created.is_not(None))
                .order_by(i.c.task_name.desc(), *_newest_first(i)).limit(n).lateral("newest")
            )
            return self._run_pairs(
                sa.select(newest).select_from(wanted.join(newest, sa.true()))
                .order_by(newest.c.task_name, newest.c.created.desc(), newest.c.run_id.desc())
            )
        if self._dialect == "sqlite" and self._json_each:
            listed = sa.func.json_each(sa.bindparam("names", json.dumps(list(task_names))))
            wanted = listed.table_valued("value", "key").alias("wanted")
            found = i.alias("newest")
            chosen = (  # correlated with wanted: read once per task
                sa.select(i.c.run_id)
                .where(i.c.task_name == wanted.c.value, i.c.created.is_not(None))
                .order_by(*_newest_first(i)).limit(n)
            )
            on = sa.and_(found.c.task_name == wanted.c.value, found.c.run_id.in_(chosen))
            try:
                return self._run_pairs(
                    sa.select(found).select_from(wanted.join(found, on))
                    .order_by(wanted.c.key, found.c.created.desc(), found.c.run_id.desc())
                )
            except exc.OperationalError as err:
                if "json_each" not in str(err):
                    raise
                self._json_each = False  # an SQLite built without JSON: the general form
        return self._run_pairs_of([
            sa.select(i).where(i.c.task_name == task, i.c.created.is_not(None))
            .order_by(*_newest_first(i)).limit(n)
            for task in task_names
        ])

    def newest_closed_rows(
        self, task_names: list[str], outcomes: list[str]
    ) -> list[tuple[Row, Row | None]] | None:
        """Per task, the run with one of *outcomes* that ended last, from the runs
        index: one seek per task into its ``(task_name, closing_created)`` index
        (any closing action), else per task and outcome into ``(task_name,
        outcome, closing_created)``, in one statement per 100 seeks; None
        without an index."""
        from ..history import CLOSING_ACTIONS

        i = self._runs_table()
        if i is None:
            return None
        every = set(outcomes) >= set(CLOSING_ACTIONS)
        chosen: list[Any] = [None] if every else list(outcomes)
        best: dict[Any, tuple[Row, Row | None]] = {}
        found = self._run_pairs_of([
            sa.select(i)
            .where(
                i.c.task_name == task,
                i.c.closing_created.is_not(None) if outcome is None else i.c.outcome == outcome,
                i.c.created.is_not(None),
            )
            .order_by(i.c.closing_created.desc())
            .limit(1)
            for task in task_names
            for outcome in chosen
        ])
        for start, end in found:
            assert end is not None
            held = best.get(start["task_name"])
            if held is None or float(end["created"]) > float(held[1]["created"]):  # type: ignore[index]
                best[start["task_name"]] = (start, end)
        return list(best.values())

    def run_starts(
        self, *, task_name: str | None, low: float
    ) -> list[tuple[Any, float, str | None]] | None:
        """The start, ``created`` and outcome of the runs started since *low*,
        from the runs index (its ``created`` or ``(task_name, created)`` index);
        None without one."""
        i = self._runs_table()
        if i is None:
            return None
        start = i.c.start if "start" in i.c else sa.null()
        stmt = sa.select(start, i.c.created, i.c.outcome).where(i.c.created >= low)
        if task_name is not None:
            stmt = stmt.where(i.c.task_name == task_name)
        with self.engine.connect() as conn:
            return [(when, float(made), outcome) for when, made, outcome in conn.execute(stmt)]

    def open_run_rows(self, task_names: list[str] | None) -> list[Row] | None:
        """Runs without a closing record, from the runs index (its ``(outcome,
        created)`` index), as their ``run`` rows; None without an index."""
        found = self.run_rows(
            task_names=task_names, outcomes=None, running=True, low=None, high=None,
            bound=None, limit=None,
        )
        return None if found is None else [start for start, _ in found]

    def aggregate_runs(
        self, *, task_name: str | None = None, since: float | None = None, by_task: bool = True
    ) -> list[Row] | None:
        """Run figures from the runs index (see :func:`tasklog.history.aggregate_runs`);
        None without an index."""
        found = self.run_figures(task_name=task_name, since=since, by_task=by_task)
        if found is None:
            return None
        per_task, total = found
        return per_task if by_task else [total]

    def run_figures(
        self, *, task_name: str | None = None, since: float | None = None, by_task: bool = True,
        with_total: bool = True,
    ) -> tuple[list[Row], Row] | None:
        """Run figures per task (empty unless *by_task*) and in total, from the runs
        index (see :func:`tasklog.history.run_figures`); None without an index.
        Without *with_total*, the total's percentiles and maximum of all time
        are not read (None) unless kept from an earlier read.

        Of all time, counts and sums are the index's totals (a row per task
        and outcome); over a window, one ``GROUP BY task_name, outcome`` that
        reads only the index's ``(task_name, outcome, created, secs)`` index.
        The total adds them up. Each nearest-rank percentile is an ``ORDER BY
        secs LIMIT 1 OFFSET k`` through the ``(task_name, secs)`` or ``(secs)``
        index, walked from the nearer end, and each maximum the last entry of
        those, all of them in one statement.
        """
        self._ensure_open()
        from ..history import count_outcome, nearest_rank, summarize_runs

        runs = self._index()
        if runs is None:
            return None
        i = runs.table
        where: list[Any] = [i.c.created.is_not(None)]
        if task_name is not None:
            where.append(i.c.task_name == task_name)
        if since is not None:
            where.append(i.c.created >= since)
            window = sa.select(i.c.task_name, i.c.outcome, i.c.secs).where(*where)
            with self.engine.connect() as conn:
                size = conn.execute(
                    sa.select(sa.func.count()).select_from(window.limit(_WINDOW + 1).subquery())
                ).scalar_one()
                if size <= _WINDOW:  # a short window: its runs, summed up here
                    triples = conn.execute(window).all()
                    total = summarize_runs(triples, by_task=False)[0]
                    return (summarize_runs(triples) if by_task else []), total
        def blank(task: str | None) -> Row:
            return {"task_name": task, "counts": [0] * 5, "n": 0, "sum": 0.0,
                    "max_runtime": None}

        total = blank(None)
        figures: dict[str, Row] = {}
        with self.engine.connect() as conn:
            found: list[tuple[Any, ...]]
            stamps: dict[Any, frozenset[Any]] = {}  # each task's versions, of all time
            if since is None:
                totals = runs.totals_rows(conn, task_name)
                found = [(*row[:5], None) for row in totals]
                stamps = versions_by_task((row[0], row[1], row[5]) for row in totals)
            else:
                found = [tuple(row) for row in conn.execute(
                    sa.select(
                        i.c.task_name, i.c.outcome, sa.func.count(), sa.func.count(i.c.secs),
                        sa.func.sum(i.c.secs), sa.func.max(i.c.secs),
                    )
                    .where(*where)
                    .group_by(i.c.task_name, i.c.outcome)
                )]
            for task, outcome, n, timed, seconds, longest in found:
                targets = [total, figures.setdefault(task, blank(task))] if by_task else [total]
                for row in targets:
                    count_outcome(row["counts"], outcome, n)
                    if timed:
                        row["n"] += timed
                        row["sum"] += float(seconds)
                        if longest is not None:
                            row["max_runtime"] = (
                                float(longest) if row["max_runtime"] is None
                                else max(row["max_runtime"], float(longest))
                            )
            # secs is set only for runs with a run record, so "created IS NOT
            # NULL" is implied and the percentiles read only the secs indexes
            timed_scope = [i.c.secs.is_not(None), *where[1:]]
            wanted: list[tuple[Row, str, Any]] = []  # (row, figure, its scalar subquery)
            # of all time, a scope's percentiles and maximum are kept until its
            # tasks' versions change (scope: a task, or None for every task)
            fresh: dict[Any, tuple[Any, Row]] = {}
            for row in [*figures.values(), total]:
                row.update(zip(_COUNTED, row.pop("counts"), strict=True))
                n = row.pop("n")
                row["mean_runtime"] = row.pop("sum") / n if n else None
                held = row["task_name"] if row["task_name"] is not None else task_name
                stamp = _stamp(stamps, held)
                kept = runs.figures_kept.get(held)
                if stamp is not None and kept is not None and kept[0] == stamp:
                    row.update(kept[1])
                    continue
                if row is total and not with_total:
                    row.update(dict.fromkeys(_KEPT_FIGURES))  # not wanted: not read
                    continue
                scope = list(timed_scope)
                if row["task_name"] is not None and task_name is None:
                    scope.append(i.c.task_name == row["task_name"])
                for percent in (50, 95):
                    row[f"p{percent}_runtime"] = None
                    if n:
                        nth = self._nth_runtime(i, scope, nearest_rank(percent, n), n)
                        wanted.append((row, f"p{percent}_runtime", nth))
                if n and row["max_runtime"] is None:  # the totals have no maxima
                    longest = sa.select(i.c.secs).where(*scope).order_by(i.c.secs.desc())
                    wanted.append((row, "max_runtime", longest.limit(1).scalar_subquery()))
                if stamp is not None:
                    fresh[held] = (stamp, row)
            for at in range(0, len(wanted), 200):  # the percentiles in one round trip
                part = wanted[at : at + 200]
                values = conn.execute(sa.select(*(q for _, _, q in part))).one()
                for (row, name, _), value in zip(part, values, strict=True):
                    row[name] = float(value)
            if fresh:  # kept only if no change was committed while they were read
                now = runs.versions(conn)
                for held, (stamp, row) in fresh.items():
                    if _stamp(now, held) == stamp:
                        runs.figures_kept[held] = (stamp, {
                            name: row[name] for name in _KEPT_FIGURES
                        })
        names = ("task_name", "runs", "successes", "failures", "other", "finished",
                 "mean_runtime", "p50_runtime", "p95_runtime", "max_runtime")
        per_task = [{name: figures[task][name] for name in names} for task in sorted(figures)]
        return per_task, {name: total[name] for name in names}

    @staticmethod
    def _nth_runtime(i: sa.Table, scope: list[Any], rank: int, n: int) -> Any:
        """A scalar subquery: the *rank*-th smallest ``secs`` (1-based) of *n* in
        *scope*, walking the index from the nearer end."""
        if rank <= n - rank + 1:
            order, offset = i.c.secs.asc(), rank - 1
        else:
            order, offset = i.c.secs.desc(), n - rank
        stmt = sa.select(i.c.secs).where(*scope).order_by(order).limit(1).offset(offset)
        return stmt.scalar_subquery()
