"""The runs index of the memory store: one entry per run, folded from its records.

What a run is (:mod:`tasklog.history`): the records of one task that share a
``run_id``; it starts at its earliest ``run`` record and ends at its first
closing record (in insertion order), whose action is its outcome; its runtime
is that record's ``runtime`` when it holds seconds, else the difference of
their ``created``. :class:`RunsFold` keeps, for each run, the sequence
numbers of those two records, and from them the runs sorted by start (in all,
per task, per outcome, open ones apart) and per-task figures (counts, and
runtimes kept sorted, so a percentile is a lookup).

The memory store folds the records appended since the last read about runs,
when such a read comes (writing costs nothing more); any other change to the
records (delete, update, eviction, a new model) makes it fold them all again.
The answers equal :mod:`tasklog.history`'s generic ones over the records.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from heapq import merge
from itertools import islice
from operator import itemgetter
from typing import Any

from .base import Row

__all__ = ["RunsFold"]

_REBUILD_AFTER = 2000
"""Runs changed by one fold beyond which the sorted views are made anew (a sort)
rather than updated one by one."""

Key = tuple[float, str, str]
"""A run's place in the listings: ``(start created, task, run id)``."""
_created = itemgetter(0)


class _Run:
    """One run: its start record and first closing record, as sequence numbers."""

    __slots__ = ("created", "end", "ended", "outcome", "seconds", "start")

    def __init__(self) -> None:
        self.start: int | None = None
        self.created = 0.0
        self.end: int | None = None
        self.ended = 0.0
        self.outcome: str | None = None
        self.seconds: float | None = None
        """The closing record's ``runtime`` in seconds, when it has one."""


class RunsFold:
    """The runs of an in-process store's records.

    Args:
        pos: the position of each field in a stored row.
        row_at: the row (a dict of the model's fields) of a sequence number.
        stored: the stored row (a tuple, see *pos*) of a sequence number.
    """

    def __init__(
        self,
        pos: dict[str, int],
        row_at: Callable[[int], Row],
        stored: Callable[[int], tuple[Any, ...]],
    ) -> None:
        from ..history import (  # what a run is, said once
            CLOSING_ACTIONS,
            count_outcome,
            figures_row,
            runtime_seconds,
        )

        self._count_outcome = count_outcome
        self._figures_row = figures_row
        self._runtime_seconds = runtime_seconds

        self._closing = frozenset(CLOSING_ACTIONS)
        self._task = pos["task_name"]
        self._action = pos["action"]
        self._made = pos["created"]
        self._run_id = pos["run_id"]
        self._runtime = pos.get("runtime")
        self._start_at = pos.get("start")
        self._row_at = row_at
        self._stored = stored
        self.usable = True
        """False once a record's task or run id is not a string (the generic path answers)."""
        self.runs: dict[tuple[str, str], _Run] = {}
        self._by_run_id: dict[str, list[str]] = {}
        self._views_of: dict[tuple[str, str], tuple[Key, str | None, float | None] | None] = {}
        self._starts: list[Key] = []
        self._by_task: dict[str, list[Key]] = {}
        self._by_outcome: dict[str | None, list[Key]] = {}
        self._secs: dict[str | None, list[float]] = {None: []}
        self._counts: dict[str, list[int]] = {}
        """Per task: runs, successes, failures, other, finished."""
        self._closed: dict[tuple[str, str], tuple[float, tuple[str, str]]] = {}
        """Per task and outcome: the newest closing ``created`` of a listed run, and its run."""

    # ------------------------------------------------------------ folding
    def fold(self, numbered: Iterable[tuple[int, tuple[Any, ...]]]) -> None:
        """Fold stored rows, given as ``(seq, row)`` in insertion order."""
        t, a, c, r = self._task, self._action, self._made, self._run_id
        runs, by_run_id, closing = self.runs, self._by_run_id, self._closing
        held, seconds = self._runtime, self._runtime_seconds
        touched: set[tuple[str, str]] = set()
        for seq, row in numbered:
            action = row[a]
            if action != "run" and action not in closing:
                continue
            run_id = row[r]
            if run_id is None:
                continue
            task = row[t]
            if type(task) is not str or type(run_id) is not str:
                self.usable = False
                return
            key = (task, run_id)
            run = runs.get(key)
            if run is None:
                run = runs[key] = _Run()
                by_run_id.setdefault(run_id, []).append(task)
            if action == "run":
                created = float(row[c])
                if run.start is not None and created >= run.created:
                    continue
                run.start, run.created = seq, created
            elif run.end is None:
                run.end, run.ended, run.outcome = seq, float(row[c]), action
                run.seconds = seconds(row[held]) if held is not None else None
            else:
                continue
            touched.add(key)
        if len(touched) > _REBUILD_AFTER:
            self._make_views()
        else:
            for key in touched:
                self._move(key)

    def _view(self, key: tuple[str, str]) -> tuple[Key, str | None, float | None] | None:
        """Where run *key* shows: its listing key, outcome and runtime (None
        without a ``run`` record: such a run is neither listed nor counted)."""
        run = self.runs[key]
        if run.start is None:
            return None
        secs = None
        if run.outcome is not None:
            secs = run.seconds if run.seconds is not None else run.ended - run.created
        return (run.created, key[0], key[1]), run.outcome, secs

    def _make_views(self) -> None:
        """Make every sorted view and count from the runs (a sort)."""
        views = {key: self._view(key) for key in self.runs}
        self._views_of = views
        shown = [view for view in views.values() if view is not None]
        self._starts = sorted(view[0] for view in shown)
        self._by_task = {}
        self._by_outcome = {}
        self._secs = {None: []}
        self._counts = {}
        self._closed = {}
        for key, view in views.items():
            if view is not None and view[1] is not None:
                self._note_closed(key, view[1])
        for place, outcome, secs in shown:  # in start order: each list stays sorted
            self._add_counts(place[1], outcome, secs, +1, sort=False)
        for place in self._starts:
            outcome = views[(place[1], place[2])][1]  # type: ignore[index]
            self._by_task.setdefault(place[1], []).append(place)
            self._by_outcome.setdefault(outcome, []).append(place)
        for times in self._secs.values():
            times.sort()

    def _move(self, key: tuple[str, str]) -> None:
        """Take run *key*'s former place out of the views and put its new one in."""
        old = self._views_of.get(key)
        new = self._view(key)
        self._views_of[key] = new
        if old is not None:
            place, outcome, secs = old
            for listing in (self._starts, self._by_task[place[1]], self._by_outcome[outcome]):
                del listing[bisect_left(listing, place)]
            self._add_counts(place[1], outcome, secs, -1)
        if new is not None:
            place, outcome, secs = new
            if outcome is not None:
                self._note_closed(key, outcome)
            insort(self._starts, place)
            insort(self._by_task.setdefault(place[1], []), place)
            insort(self._by_outcome.setdefault(outcome, []), place)
            self._add_counts(place[1], outcome, secs, +1)

    def _note_closed(self, key: tuple[str, str], outcome: str) -> None:
        """Keep run *key* as its task's newest closed run of *outcome* if it is
        (runs only gain closings between two builds, so the newest only moves on)."""
        ended = self.runs[key].ended
        held = self._closed.get((key[0], outcome))
        if held is None or ended > held[0]:
            self._closed[(key[0], outcome)] = (ended, key)

    def _add_counts(
        self, task: str, outcome: str | None, secs: float | None, sign: int, *, sort: bool = True
    ) -> None:
        self._count_outcome(self._counts.setdefault(task, [0, 0, 0, 0, 0]), outcome, sign)
        if secs is None:
            return
        for times in (self._secs.setdefault(task, []), self._secs[None]):
            if not sort:
                times.append(secs)
            elif sign > 0:
                insort(times, secs)
            else:
                del times[bisect_left(times, secs)]

    # ------------------------------------------------------------ reading
    def _pair(self, place: Key) -> tuple[Row, Row | None]:
        run = self.runs[(place[1], place[2])]
        assert run.start is not None
        return self._row_at(run.start), None if run.end is None else self._row_at(run.end)

    def run_rows(
        self,
        *,
        task_names: list[str] | None,
        outcomes: list[str] | None,
        running: bool,
        low: float | None,
        high: float | None,
        bound: Key | None,
        limit: int | None,
    ) -> list[tuple[Row, Row | None]]:
        """See :meth:`tasklog.history.RunIndexQueries.run_rows`."""
        tasks = None if task_names is None else set(task_names)
        wanted: set[str | None] | None = None
        if outcomes is not None or running:
            wanted = {*(outcomes or ()), *((None,) if running else ())}
        by_task = [self._by_task.get(task, []) for task in tasks] if tasks is not None else None
        by_outcome = (
            [self._by_outcome.get(o, []) for o in wanted] if wanted is not None else None
        )
        sources = [self._starts]
        if by_task is not None and (
            by_outcome is None or sum(map(len, by_task)) <= sum(map(len, by_outcome))
        ):
            sources, tasks = by_task, None
        elif by_outcome is not None:
            sources, wanted = by_outcome, None
        views = self._views_of

        def newest_first(listing: list[Key]) -> Iterator[Key]:
            top = len(listing)
            if high is not None:
                top = bisect_right(listing, high, key=_created)
            if bound is not None:
                top = min(top, bisect_left(listing, bound))
            bottom = 0 if low is None else bisect_left(listing, low, key=_created)
            return (listing[i] for i in range(top - 1, bottom - 1, -1))

        walks = [newest_first(listing) for listing in sources if listing]
        places: Iterator[Key] = walks[0] if len(walks) == 1 else merge(*walks, reverse=True)
        if tasks is not None:
            places = (place for place in places if place[1] in tasks)
        if wanted is not None:
            places = (p for p in places if views[(p[1], p[2])][1] in wanted)  # type: ignore[index]
        return [self._pair(place) for place in islice(places, limit)]

    def run_row(self, run_id: str) -> list[tuple[Row, Row | None]]:
        """The run *run_id* (its earliest start, by task name on a tie) as a list of one pair."""
        places = [
            view[0] for task in self._by_run_id.get(run_id, ())
            if (view := self._views_of.get((task, run_id))) is not None
        ]
        return [self._pair(min(places))] if places else []

    def recent_rows(self, task_names: list[str], n: int) -> list[tuple[Row, Row | None]]:
        """The newest *n* runs of each task (each task's newest first)."""
        found: list[tuple[Row, Row | None]] = []
        for task in task_names:
            listing = self._by_task.get(task, [])
            found.extend(self._pair(place) for place in reversed(listing[-n:] if n else []))
        return found

    def starts_since(
        self, task_name: str | None, low: float
    ) -> list[tuple[Any, float, str | None]]:
        """``(start field or None, created, outcome)`` of the runs started since *low*."""
        listing = self._starts if task_name is None else self._by_task.get(task_name, [])
        at, stored, runs = self._start_at, self._stored, self.runs
        found = []
        for place in listing[bisect_left(listing, low, key=_created):]:
            run = runs[(place[1], place[2])]
            start = None if at is None or run.start is None else stored(run.start)[at]
            found.append((start, place[0], run.outcome))
        return found

    def newest_closed(
        self, task_names: list[str], outcomes: list[str]
    ) -> list[tuple[Row, Row | None]]:
        """Per task, the run with one of *outcomes* whose closing record is newest."""
        found = []
        for task in task_names:
            held = [self._closed[(task, o)] for o in outcomes if (task, o) in self._closed]
            if held:
                key = max(held, key=itemgetter(0))[1]
                view = self._views_of[key]
                assert view is not None
                found.append(self._pair(view[0]))
        return found

    def open_rows(self, task_names: list[str] | None) -> list[Row]:
        """The start rows of the open runs of these tasks (all with None)."""
        tasks = None if task_names is None else set(task_names)
        return [
            self._pair(place)[0] for place in self._by_outcome.get(None, ())
            if tasks is None or place[1] in tasks
        ]

    def figures(
        self, *, task_name: str | None, since: float | None
    ) -> tuple[list[Row], Row]:
        """:func:`tasklog.history.run_figures`' answer."""
        from ..history import summarize_runs

        if since is not None:  # the runs of the window, from the start order
            listing = self._starts if task_name is None else self._by_task.get(task_name, [])
            views = self._views_of
            window = listing[bisect_left(listing, since, key=_created):]
            triples = [
                (place[1], *views[(place[1], place[2])][1:])  # type: ignore[index]
                for place in window
            ]
            total = summarize_runs(triples, by_task=False)[0]
            return summarize_runs(triples), total
        tasks = sorted(self._counts) if task_name is None else [task_name]
        per_task = [
            self._figures_row(task, self._counts[task], self._secs.get(task, []))
            for task in tasks if self._counts.get(task, [0])[0] > 0
        ]
        if task_name is not None:
            total = dict(per_task[0]) if per_task else self._figures_row(None, [0] * 5, [])
            total["task_name"] = None
            return per_task, total
        sums = [sum(column) for column in zip(*self._counts.values(), strict=True)]
        return per_task, self._figures_row(None, sums or [0] * 5, self._secs[None])
