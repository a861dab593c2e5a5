"""``MemoryRepo``: records in this process's memory, optionally as a ring buffer.

Records are kept as compact tuples (models are built when read) and the fields
queries hit most — ``task_name``, ``action``, ``run_id`` — are indexed, so an
equality query does not scan every record.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from ..query import Equal, Query, predicate, sort_rows
from .base import ModelT, Repository, Row, plan_prune

__all__ = ["MemoryRepo"]

_INDEXED = ("task_name", "action", "run_id")
_COMPACT_MIN = 1024


class MemoryRepo(Repository[ModelT]):
    """An in-process store.

    Args:
        model: the record model (default :class:`~tasklog.MinimalRunRecord`).
        max_size: keep at most this many records, evicting the oldest (a
            ring buffer); None keeps everything.
        id_field: see :class:`~tasklog.repos.base.Repository`.
    """

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
        self._names = self.schema.names
        self._pos = {name: i for i, name in enumerate(self._names)}
        self._indexed = tuple(
            (name, self._pos[name]) for name in _INDEXED if name in self._pos
        )
        self._intern = tuple(
            i for name, i in self._indexed if self.schema.fields[name].kind == "str"
        )
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._rows: list[tuple[Any, ...] | None] = []
        self._offset = 0  # sequence number of self._rows[0]
        self._head = 0  # index of the first slot that may be live
        self._live = 0
        self._index: dict[str, dict[Any, array[int]]] = {name: {} for name, _ in self._indexed}
        self._index_ok = True

    # ------------------------------------------------------------ figures
    @property
    def utilization(self) -> float | None:
        """Share of ``max_size`` in use (0-1), or None when unbounded."""
        if self.max_size is None:
            return None
        return self._live / self.max_size

    # ------------------------------------------------------------- writes
    def insert_rows(self, rows: list[Row]) -> None:
        """Append rows, evicting the oldest when over ``max_size``."""
        names = self._names
        intern = sys.intern
        with self._lock:
            if not self._index_ok:
                self._rebuild()
            store = self._rows
            seq = self._offset + len(store)
            for row in rows:
                values = [row[n] for n in names]
                for i in self._intern:
                    v = values[i]
                    if type(v) is str:
                        values[i] = intern(v)
                tup = tuple(values)
                store.append(tup)
                for name, i in self._indexed:
                    bucket = self._index[name]
                    key = tup[i]
                    seqs = bucket.get(key)
                    if seqs is None:
                        bucket[key] = array("q", (seq,))
                    else:
                        seqs.append(seq)
                seq += 1
            self._live += len(rows)
            if self.max_size is not None and self._live > self.max_size:
                self._evict(self._live - self.max_size)

    def _evict(self, n: int) -> None:
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

    def _rebuild(self) -> None:
        self._index = {name: {} for name, _ in self._indexed}
        for name, i in self._indexed:
            bucket = self._index[name]
            for seq, row in enumerate(self._rows, start=self._offset):
                if row is not None:
                    bucket.setdefault(row[i], array("q")).append(seq)
        self._index_ok = True

    # -------------------------------------------------------------- reads
    def _candidates(self, query: Query) -> Iterable[tuple[int, tuple[Any, ...]]]:
        """Live ``(seq, row)`` pairs that may match, in insertion order (a snapshot)."""
        with self._lock:
            if not self._index_ok:
                self._rebuild()
            store, offset, head = self._rows, self._offset, self._head
            best: array[int] | None = None
            for name, op in query.conditions:
                if type(op) is Equal and name in self._index:
                    seqs = self._index[name].get(op.value)
                    if seqs is None:
                        return []
                    if best is None or len(seqs) < len(best):
                        best = seqs
            if best is None:
                return [
                    (offset + i, row)
                    for i, row in enumerate(store[head:], start=head)
                    if row is not None
                ]
            start = bisect_left(best, offset + head)
            found = []
            for seq in best[start:]:
                row = store[seq - offset]
                if row is not None:
                    found.append((seq, row))
            return found

    def _matching(self, query: Query) -> list[tuple[int, tuple[Any, ...]]]:
        test = predicate(query.conditions, self._pos)
        return [(seq, row) for seq, row in self._candidates(query) if test(row)]

    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Yield matching rows as dicts."""
        found = self._matching(query)
        rows = [row for _, row in found]
        if query.order:
            pos = self._pos
            sort_rows(rows, query.order, lambda r, n: r[pos[n]])
        if reverse:
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        names = self._names
        for row in rows:
            yield dict(zip(names, row, strict=True))

    def count_rows(self, query: Query) -> int:
        """Count matches (no scan for an unconditional count)."""
        if not query.conditions:
            return self._live
        return len(self._matching(query))

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
            if found and any(name in self._index for name in values):
                self._index_ok = False
            return len(found)

    def prune_rows(self, keep_runs: int | None, cutoff: float | None, task_name: str | None) -> int:
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
            return self._delete_seqs(plan)
