"""``MemoryRepo``: records in this process's memory, optionally as a ring buffer.

Records are kept as compact tuples (models are built when read) and the fields
queries hit most — ``task_name``, ``action`` and ``run_id`` — are indexed, so
an equality query does not scan every record. An index maps a value to the
sequence numbers of its records: a plain ``int`` while there is one, an
``array('q')`` from the second on (most run ids have few records). When a model
has both ``task_name`` and ``action``, one index of the pair serves both fields
(a task's records are the merged buckets of its pairs), so a write updates two
indexes, not four. ``task_name`` and ``action`` strings are interned.

Reads about runs (:mod:`tasklog.history`) are answered from a runs index
(:class:`~tasklog.repos.memory_runs.RunsFold`) that a read brings up to date
with the records appended since the last one; any other change to the records
makes the next read fold them all again.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, Union

from ..query import Equal, Query, predicate, sort_rows
from ..schema import Schema
from .base import ModelT, Repository, Row, WriteProfile, plan_prune
from .memory_runs import RunsFold

__all__ = ["MemoryRepo"]

_INDEXED = ("task_name", "action", "run_id")
_RUN_FIELDS = ("task_name", "action", "created", "run_id")
_PAIR = ("task_name", "action")
_COMPACT_MIN = 1024
_MISSING = object()

Seqs = Union[int, "array[int]"]


IndexSpec = tuple[Callable[[tuple[Any, ...]], Any], dict[Any, Seqs]]
"""How an index is kept: the key of a row tuple, and the bucket of key -> seqs."""


def _seqs(entry: Seqs) -> Sequence[int]:
    return (entry,) if type(entry) is int else entry  # type: ignore[return-value]


class MemoryRepo(Repository[ModelT]):
    """An in-process store.

    Args:
        model: the record model (default :class:`~tasklog.TaskRunRecord`).
        max_size: keep at most this many records, evicting the oldest (a
            ring buffer); None keeps everything.
        id_field: see :class:`~tasklog.repos.base.Repository`.
    """

    write_profile = WriteProfile(process_local=True)

    def __init__(
        self,
        model: type[ModelT] | None = None,
        max_size: int | None = None,
        *,
        id_field: str | None = None,
    ) -> None:
        super().__init__(model, id_field=id_field)
        if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
            msg = f"max_size must be a positive integer or None, not {max_size!r}."
            raise ValueError(msg)
        self.max_size = max_size
        self._lock = threading.RLock()
        self._generation = 0
        """Counts changes other than appends (they make the runs index fold anew)."""
        self._fold: RunsFold | None = None
        self._fold_generation = -1
        self._fold_mark = 0
        """The sequence number of the next record the runs index has to fold."""
        self._derive(self.schema.names)
        self._clear()

    def _derive(self, columns: tuple[str, ...]) -> None:
        """The layout of stored rows: *columns* (the model's fields, and those of
        earlier models after ``repo.model`` was reassigned), positions, indexes."""
        fields = self.schema.fields
        self._names = columns
        self._pos = {name: i for i, name in enumerate(columns)}
        has_pair = all(n in fields for n in _PAIR)
        self._pair = tuple(self._pos[n] for n in _PAIR) if has_pair else ()
        self._indexed = tuple(
            (name, self._pos[name])
            for name in _INDEXED
            if name in fields
            and fields[name].kind != "json"  # unhashable values
            and not (has_pair and name in _PAIR)
        )
        self._intern = tuple(
            self._pos[name]
            for name in _PAIR
            if name in fields and fields[name].kind == "str"
        )
        self._exact = columns == self.schema.names
        """Whether rows hold exactly the model's fields (else a row is projected)."""
        if self._exact:
            self._get: Callable[[Row], Any] = itemgetter(*columns)
            self._single = len(columns) == 1
        else:
            self._get = lambda row: tuple([row.get(n) for n in columns])
            self._single = False

    def _clear(self) -> None:
        self._generation += 1
        self._rows: list[tuple[Any, ...] | None] = []
        self._offset = 0  # sequence number of self._rows[0]
        self._head = 0  # index of the first slot that may be live
        self._live = 0
        self._index: dict[str, dict[Any, Seqs]] = {name: {} for name, _ in self._indexed}
        self._pair_index: dict[tuple[Any, Any], Seqs] = {}
        self._pair_keys: tuple[dict[Any, list[Any]], ...] = ({}, {})
        """Per part of the pair (task_name, action): value -> the pair keys holding it."""
        self._index_ok = True
        self._specs = self._index_specs()

    def _index_specs(self) -> list[IndexSpec]:
        """``(key of a row, bucket)`` of every index: each field's, then the pair's."""
        specs: list[IndexSpec] = [
            (itemgetter(i), self._index[name]) for name, i in self._indexed
        ]
        if self._pair:
            specs.append((itemgetter(*self._pair), self._pair_index))
        return specs

    def _adopt_model(self, previous: Schema) -> None:
        """Add the new model's fields to the stored rows (with their default);
        the fields it lacks are kept, for a later model that has them again.

        Raises:
            ValueError: a field the new model requires is not stored.
        """
        fields = self.model.model_fields
        old = self._names
        missing = [n for n in self.schema.names if n not in old and fields[n].is_required()]
        with self._lock:
            if missing and self._live:
                msg = (
                    f"The stored records have no {', '.join(missing)}, which "
                    f"{self.model.__name__} requires."
                )
                raise ValueError(msg)
            added = tuple(n for n in self.schema.names if n not in old)
            if added:
                defaults = tuple(fields[n].get_default(call_default_factory=True) for n in added)
                self._rows[:] = [None if row is None else row + defaults for row in self._rows]
            self._derive(old + added)
            self._rebuild()

    # ------------------------------------------------------------ figures
    @property
    def utilization(self) -> float | None:
        """Share of ``max_size`` in use (0-1), or None when unbounded."""
        if self.max_size is None:
            return None
        self.sync()
        return self._live / self.max_size

    # ------------------------------------------------------------- writes
    def insert_rows(self, rows: list[Row]) -> None:
        """Append rows, evicting the oldest when over ``max_size``."""
        get = self._get
        single = self._single
        intern_at = self._intern
        intern = sys.intern
        with self._lock:
            if not self._index_ok:
                self._rebuild()
            store = self._rows
            start = self._offset + len(store)
            head_pair = intern_at == (0, 1)
            added: list[tuple[Any, ...]] = []
            append = added.append
            for row in rows:
                tup: tuple[Any, ...] = (get(row),) if single else get(row)
                if head_pair and type(tup[0]) is str and type(tup[1]) is str:
                    tup = (intern(tup[0]), intern(tup[1]), *tup[2:])
                elif intern_at:
                    values = list(tup)
                    for i in intern_at:
                        v = values[i]
                        if type(v) is str:
                            values[i] = intern(v)
                    tup = tuple(values)
                append(tup)
            store.extend(added)
            self._index_rows(range(start, start + len(added)), added)
            self._live += len(rows)
            if self.max_size is not None and self._live > self.max_size:
                self._evict(self._live - self.max_size)

    def _evict(self, n: int) -> None:
        self._generation += 1
        store = self._rows
        head = self._head
        while n > 0:
            if store[head] is not None:
                store[head] = None
                n -= 1
                self._live -= 1
            head += 1
        self._head = head
        if head > _COMPACT_MIN and head * 2 > len(store):
            self._compact()

    def _compact(self) -> None:
        self._rows = [r for r in self._rows[self._head :] if r is not None]
        self._offset = 0
        self._head = 0
        self._rebuild()

    def _new_pair(self, key: tuple[Any, Any]) -> None:
        for part, value in zip(self._pair_keys, key, strict=True):
            part.setdefault(value, []).append(key)

    def _rebuild(self) -> None:
        self._generation += 1
        self._index = {name: {} for name, _ in self._indexed}
        self._pair_index = {}
        self._pair_keys = ({}, {})
        self._specs = self._index_specs()
        self._index_ok = True
        numbered = enumerate(self._rows, start=self._offset)
        live = [(seq, row) for seq, row in numbered if row is not None]
        if live:
            seqs, rows = zip(*live, strict=True)
            self._index_rows(seqs, rows)

    def _index_rows(self, seqs: Sequence[int], rows: Sequence[tuple[Any, ...]]) -> None:
        """Add *rows*, numbered *seqs*, to every index (the write path: kept inline)."""
        pair_index = self._pair_index
        for key_of, bucket in self._specs:
            for seq, row in zip(seqs, rows, strict=True):
                key = key_of(row)
                entry = bucket.get(key)
                if entry is None:
                    bucket[key] = seq
                    if bucket is pair_index:
                        self._new_pair(key)
                elif type(entry) is int:
                    bucket[key] = array("q", (entry, seq))
                else:
                    entry.append(seq)  # type: ignore[union-attr]

    # -------------------------------------------------------------- reads
    def _snapshot(
        self, query: Query
    ) -> tuple[list[tuple[Any, ...] | None], int, int, int, Sequence[int] | None]:
        """``(store, offset, head, end, seqs)``: what a read looks at, taken under the lock.

        *seqs* are the sequence numbers an index gives for the query's equality
        conditions (the smallest such set), or None when the whole store
        ``store[head:end]`` must be scanned. Later writes do not change them:
        appends go past *end*, and a compaction builds a new list.
        """
        with self._lock:
            if not self._index_ok:
                self._rebuild()
            store, offset, head = self._rows, self._offset, self._head
            end = len(store)
            equal = {name: op.value for name, op in query.conditions if type(op) is Equal}
            best: Sequence[int] | None = None
            for parts in self._lookups(equal):
                if parts is None:  # an unhashable literal: no index can hold it
                    continue
                size = sum(len(_seqs(p)) for p in parts)
                if best is not None and size >= len(best):
                    continue
                if not parts:
                    return store, offset, head, end, ()
                if len(parts) == 1:
                    best = _seqs(parts[0])
                else:  # several pairs of one task (or action): merge their sorted runs
                    best = sorted(chain.from_iterable(_seqs(p) for p in parts))
            if best is None:
                return store, offset, head, end, None
            first = bisect_left(best, offset + head)
            return store, offset, head, end, best[first:]

    def _lookups(self, equal: dict[str, Any]) -> Iterator[list[Seqs] | None]:
        """For each index that serves *equal*, the buckets holding its matches."""
        pair = self._pair_index
        if self._pair:
            values = [equal.get(name, _MISSING) for name in _PAIR]
            if all(value is not _MISSING for value in values):
                yield self._buckets(pair, [tuple(values)])
            else:
                for part, value in zip(self._pair_keys, values, strict=True):
                    if value is not _MISSING:
                        try:
                            yield [pair[key] for key in part.get(value, ())]
                        except TypeError:
                            yield None
        for name, value in equal.items():
            index = self._index.get(name)
            if index is not None:
                yield self._buckets(index, [value])

    @staticmethod
    def _buckets(index: dict[Any, Seqs], keys: list[Any]) -> list[Seqs] | None:
        try:
            return [index[key] for key in keys if key in index]
        except TypeError:
            return None

    def _scan(self, query: Query, reverse: bool = False) -> Iterator[tuple[int, tuple[Any, ...]]]:
        """Matching live ``(seq, row)`` pairs, lazily, in (reversed) insertion order."""
        store, offset, head, end, seqs = self._snapshot(query)
        test = predicate(query.conditions, self._pos) if query.conditions else None
        if seqs is None:
            positions: Iterable[int] = range(end - 1, head - 1, -1) if reverse else range(head, end)
            for i in positions:
                row = store[i]
                if row is not None and (test is None or test(row)):
                    yield offset + i, row
            return
        for seq in reversed(seqs) if reverse else seqs:
            row = store[seq - offset]
            if row is not None and (test is None or test(row)):
                yield seq, row

    def _matching(self, query: Query) -> list[tuple[int, tuple[Any, ...]]]:
        return list(self._scan(query))

    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Yield matching rows as dicts (a limited, unsorted read stops early)."""
        names = self._names
        if not self._exact:
            pos = self._pos
            wanted = [(n, pos[n]) for n in self.schema.names]
            for row in self._select(query, limit=limit, reverse=reverse):
                yield {n: row[i] for n, i in wanted}
            return
        yield from self._select(query, limit=limit, reverse=reverse, names=names)

    def _select(
        self,
        query: Query,
        *,
        limit: int | None,
        reverse: bool,
        names: tuple[str, ...] | None = None,
    ) -> Iterator[Any]:
        """Matching rows as dicts of *names*, or as stored tuples without *names*."""
        if query.order:
            rows = [row for _, row in self._scan(query)]
            pos = self._pos
            sort_rows(rows, query.order, lambda r, n: r[pos[n]])
            if reverse:
                rows.reverse()
            if limit is not None:
                rows = rows[:limit]
            for row in rows:
                yield row if names is None else dict(zip(names, row, strict=True))
            return
        if limit == 0:
            return
        for n, (_, row) in enumerate(self._scan(query, reverse), start=1):
            yield row if names is None else dict(zip(names, row, strict=True))
            if limit is not None and n >= limit:
                return

    def count_rows(self, query: Query) -> int:
        """Count matches (no scan for an unconditional count)."""
        if not query.conditions:
            return self._live
        return sum(1 for _ in self._scan(query))

    def delete_rows(self, query: Query) -> int:
        """Delete matches."""
        with self._lock:
            found = self._matching(query)
            return self._delete_seqs(seq for seq, _ in found)

    def _delete_seqs(self, seqs: Iterable[int]) -> int:
        n = 0
        offset = self._offset
        for seq in seqs:
            if self._rows[seq - offset] is not None:
                self._rows[seq - offset] = None
                n += 1
        if n:
            self._live -= n
            self._generation += 1
            self._index_ok = False
            dead = len(self._rows) - self._head - self._live
            if dead > _COMPACT_MIN and dead > self._live:
                self._compact()
        return n

    def update_rows(self, query: Query, values: Row) -> int:
        """Set fields of matches."""
        changes = [(self._pos[name], value) for name, value in values.items()]
        with self._lock:
            found = self._matching(query)
            offset = self._offset
            for seq, row in found:
                new = list(row)
                for i, value in changes:
                    new[i] = value
                self._rows[seq - offset] = tuple(new)
            if found:
                self._generation += 1
            indexed = {*self._index, *(_PAIR if self._pair else ())}
            if found and any(name in indexed for name in values):
                self._index_ok = False
            return len(found)

    # -------------------------------------------------------------- runs
    def _stored_at(self, seq: int) -> tuple[Any, ...]:
        row = self._rows[seq - self._offset]
        assert row is not None
        return row

    def _row_at(self, seq: int) -> Row:
        row = self._rows[seq - self._offset]
        assert row is not None
        if self._exact:
            return dict(zip(self._names, row, strict=True))
        pos = self._pos
        return {name: row[pos[name]] for name in self.schema.names}

    def _runs(self) -> RunsFold | None:
        """The runs index, brought up to date (call with the lock held); None when
        the model cannot describe runs or a record's task or run id is not a string."""
        if not all(name in self.schema.fields for name in _RUN_FIELDS):
            return None
        if not self._index_ok:
            self._rebuild()
        store, offset = self._rows, self._offset
        fold = self._fold
        if fold is None or self._fold_generation != self._generation:
            fold = self._fold = RunsFold(self._pos, self._row_at, self._stored_at)
            self._fold_generation = self._generation
            self._fold_mark = offset + self._head
        start = self._fold_mark - offset
        fold.fold(
            (offset + i, row) for i in range(start, len(store)) if (row := store[i]) is not None
        )
        self._fold_mark = offset + len(store)
        return fold if fold.usable else None

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
        """Runs from the runs index (see :class:`tasklog.history.RunIndexQueries`)."""
        with self._lock:
            fold = self._runs()
            if fold is None:
                return None
            return fold.run_rows(
                task_names=task_names, outcomes=outcomes, running=running,
                low=low, high=high, bound=bound, limit=limit,
            )

    def run_row(self, run_id: str) -> list[tuple[Row, Row | None]] | None:
        """The run *run_id* from the runs index (a list of one pair, or empty)."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.run_row(run_id)

    def recent_run_rows(
        self, task_names: list[str], n: int
    ) -> list[tuple[Row, Row | None]] | None:
        """The newest *n* runs of each task, from the runs index."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.recent_rows(task_names, n)

    def newest_closed_rows(
        self, task_names: list[str], outcomes: list[str]
    ) -> list[tuple[Row, Row | None]] | None:
        """Per task, the run with one of *outcomes* that ended last."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.newest_closed(task_names, outcomes)

    def run_starts(
        self, *, task_name: str | None, low: float
    ) -> list[tuple[Any, float, str | None]] | None:
        """The start, ``created`` and outcome of the runs started since *low*."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.starts_since(task_name, low)

    def run_figures(
        self, *, task_name: str | None = None, since: float | None = None,
        with_total: bool = True,
    ) -> tuple[list[Row], Row] | None:
        """Run figures per task and in total from the runs index (the total in
        full whatever *with_total* says: it costs no more here)."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.figures(task_name=task_name, since=since)

    def open_run_rows(self, task_names: list[str] | None) -> list[Row] | None:
        """The start rows of open runs, from the runs index."""
        with self._lock:
            fold = self._runs()
            return None if fold is None else fold.open_rows(task_names)

    def aggregate_runs(
        self, *, task_name: str | None = None, since: float | None = None, by_task: bool = True
    ) -> list[Row] | None:
        """Run figures from the runs index (see :func:`tasklog.history.aggregate_runs`)."""
        found = self.run_figures(task_name=task_name, since=since)
        if found is None:
            return None
        per_task, total = found
        return per_task if by_task else [total]

    def latest_per_task_rows(self) -> list[Row] | None:
        """The newest record of each task, from the ``(task_name, action)`` index."""
        with self._lock:
            if not self._pair:
                return None
            if not self._index_ok:
                self._rebuild()
            store, offset = self._rows, self._offset
            pair = self._pair_index
            found: list[Row] = []
            for keys in self._pair_keys[0].values():
                newest = -1
                for key in keys:
                    seqs = _seqs(pair[key])
                    for seq in reversed(seqs):  # evicted rows are None
                        if seq <= newest:
                            break
                        if store[seq - offset] is not None:
                            newest = seq
                            break
                if newest >= 0:
                    found.append(self._row_at(newest))
            return found

    @property
    def store_key(self) -> tuple[str, int]:
        """This object: a memory store is never shared by two repositories."""
        return ("memory", id(self))

    def is_transient(self, error: BaseException) -> bool:
        """An ``OSError`` (never raised by memory itself; by a store built on it)."""
        return isinstance(error, OSError)

    def prune_rows(
        self,
        keep_runs: int | None,
        cutoff: float | None,
        task_name: str | None,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete old runs and records."""
        pos = self._pos
        query = Query(((("task_name", Equal(task_name)),)) if task_name is not None else ())
        with self._lock:
            found = self._matching(query)
            plan = plan_prune(
                (
                    (
                        seq,
                        row[pos["task_name"]] if "task_name" in pos else None,
                        row[pos["run_id"]] if "run_id" in pos else None,
                        row[pos["created"]] if "created" in pos else None,
                    )
                    for seq, row in found
                ),
                keep_runs,
                cutoff,
            )
            return len(plan) if dry_run else self._delete_seqs(plan)


# ------------------------------------------------------------------ registry


def open_url(url: str, model: type[Any] | None, options: dict[str, Any]) -> MemoryRepo[Any]:
    """``memory://`` (``?max_size=N``): a new, empty store (see :mod:`.registry`).

    Raises:
        ConfigError: an unknown or invalid URL option.
    """
    from urllib.parse import parse_qsl, urlsplit

    from ..exceptions import ConfigError
    from .registry import DEFAULT_MODEL

    query = dict(parse_qsl(urlsplit(url).query))
    if "max_size" in query:
        text = query.pop("max_size")
        try:
            options.setdefault("max_size", int(text))
        except ValueError:
            msg = f"URL option max_size={text!r} must be an integer."
            raise ConfigError(msg) from None
    if query:
        msg = f"Unknown option(s) in {url!r}: {', '.join(query)}; memory:// knows max_size."
        raise ConfigError(msg)
    return MemoryRepo(model=model or DEFAULT_MODEL, **options)


def open_existing(url: str, options: dict[str, Any]) -> MemoryRepo[Any]:
    """A memory store never outlives its process: an empty one, of the richest model."""
    from ..records import TaskRunRecord
    from .registry import no_table

    no_table(url, options)
    return open_url(url, TaskRunRecord, options)
