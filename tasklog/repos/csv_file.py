"""``CSVFileRepo``: records in one CSV file with a header row.

Writes only append: each batch is one ``write`` under an exclusive ``flock``,
so several processes can append to one file without torn or interleaved
lines. Readers stream the file up to the size it had when the read began, which
is always a batch boundary. Deleting or updating rewrites the file into a
temporary file that replaces it atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import operator
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..query import Equal, Query, predicate, sort_rows
from ..schema import FieldInfo
from .base import ModelT, Repository, Row, plan_prune

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: one process per file)
    fcntl = None  # type: ignore[assignment]

__all__ = ["CSVFileRepo"]

_ENCODING = "utf-8"
_PASS_THROUGH: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float,)}
"""Field kinds whose values of these exact types the csv module writes as-is."""


def _lock(f: IO[Any], exclusive: bool) -> None:
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def _unlock(f: IO[Any]) -> None:
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return b""
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class _Limited(io.RawIOBase):
    """A raw binary reader that stops at a fixed size."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        self._left -= n
        return int(n)


class CSVFileRepo(Repository[ModelT]):
    """A store in one CSV file.

    Args:
        filename: the CSV file; created with a header row when missing. An
            existing file must have a header naming every model field (extra
            columns are kept and left empty by tasklog).
        model: the record model (default :class:`~tasklog.MinimalRunRecord`).
        id_field: see :class:`~tasklog.repos.base.Repository`.

    None is stored as an empty cell; so is an empty string, which comes back
    as None in a field that may be None. Lists and dicts are JSON text.
    """

    prefers_batches = True
    writes_in_caller = True

    def __init__(
        self,
        filename: str | os.PathLike[str],
        model: type[ModelT] | None = None,
        *,
        id_field: str | None = None,
    ) -> None:
        super().__init__(model, id_field=id_field)
        self.filename = Path(filename)
        self._thread_lock = threading.Lock()
        self._header = self._ensure_file()
        missing = [name for name in self.schema.names if name not in self._header]
        if missing:
            msg = (
                f"CSV file {str(self.filename)!r} lacks columns for fields of "
                f"{self.model.__name__}: {', '.join(missing)}. Add them to its header row "
                "or use a model without them."
            )
            raise ValueError(msg)
        self._col = {name: self._header.index(name) for name in self.schema.names}
        self._fields: list[FieldInfo] = [self.schema.fields[n] for n in self.schema.names]
        names = self.schema.names
        self._plain: Callable[[Row], Any] | None = None
        """Row -> cells, when the header is exactly the fields and each is str, int or float."""
        if tuple(self._header) == names and all(f.kind in _PASS_THROUGH for f in self._fields):
            self._plain = operator.itemgetter(*names) if len(names) > 1 else (
                lambda row: (row[names[0]],)
            )

    @property
    def store_key(self) -> tuple[str, str]:
        """The file's absolute path."""
        return ("csv", os.path.abspath(self.filename))

    # ------------------------------------------------------------- file io
    def _ensure_file(self) -> list[str]:
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        with open(self.filename, "a+", encoding=_ENCODING, newline="") as f:
            _lock(f, exclusive=True)
            try:
                f.seek(0)
                header = next(csv.reader(f), None)
                if header:
                    if header[0].startswith("\ufeff"):  # saved as "UTF-8 with BOM"
                        header[0] = header[0][1:]
                    if _last_byte(self.filename) not in (b"\n", b"\r"):
                        f.write("\n")  # a hand-written last line: end it before appending
                        f.flush()
                    return header
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    csv.writer(f, lineterminator="\n").writerow(self.schema.names)
                    f.flush()
                return list(self.schema.names)
            finally:
                _unlock(f)

    @contextlib.contextmanager
    def _locked_for_write(self) -> Iterator[IO[str]]:
        """The current file, opened for appending and exclusively locked."""
        with self._thread_lock:
            while True:
                f = open(self.filename, "a", encoding=_ENCODING, newline="")  # noqa: SIM115
                try:
                    _lock(f, exclusive=True)
                    try:
                        same = os.fstat(f.fileno()).st_ino == os.stat(self.filename).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        try:
                            yield f
                        finally:
                            _unlock(f)
                        return
                    _unlock(f)  # replaced by a rewrite meanwhile: open the new file
                finally:
                    f.close()

    def _encode(self, rows: list[Row]) -> str:
        """The CSV text of *rows*. The csv module writes a ``str``, ``int`` or
        ``float`` cell, and None, exactly as :meth:`FieldInfo.encode_text`
        would, so only other values go through it."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if self._plain is not None:  # every cell as-is, in file order: done in C
            writer.writerows(map(self._plain, rows))
            return out.getvalue()
        width = len(self._header)
        cols = [
            (self._col[info.name], info.name, _PASS_THROUGH.get(info.kind, ()), info.encode_text)
            for info in self._fields
        ]
        table = []
        for row in rows:
            cells: list[Any] = [""] * width
            for i, name, plain, encode in cols:
                value = row[name]
                cells[i] = value if value is None or type(value) in plain else encode(value)
            table.append(cells)
        writer.writerows(table)
        return out.getvalue()

    def _raw_rows(self, *, locked: bool = False) -> Iterator[list[str]]:
        """Data rows as lists of cells, up to a batch boundary, streaming.

        *locked* says the caller holds the write lock already (a rewrite).
        """
        try:
            raw = open(self.filename, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with raw:
            if locked:
                size = os.fstat(raw.fileno()).st_size
            else:
                _lock(raw, exclusive=False)
                try:
                    size = os.fstat(raw.fileno()).st_size
                finally:
                    _unlock(raw)
            buffered = io.BufferedReader(_Limited(raw, size), buffer_size=1 << 16)
            text = io.TextIOWrapper(buffered, encoding=_ENCODING, newline="")
            reader = csv.reader(text)
            next(reader, None)  # header
            for cells in reader:
                if cells:
                    yield cells

    def _decode(self, cells: list[str]) -> Row:
        row: Row = {}
        width = len(cells)
        for info in self._fields:
            i = self._col[info.name]
            row[info.name] = info.decode_text(cells[i]) if i < width else None
        return row

    def _matches(self, query: Query, *, locked: bool = False) -> Iterator[tuple[int, list[str]]]:
        """``(row number, cells)`` of matching rows, in file order."""
        names = query.fields
        infos = [(self._col[n], self.schema.fields[n]) for n in names]
        test = predicate(query.conditions, {n: i for i, n in enumerate(names)})
        for n, cells in enumerate(self._raw_rows(locked=locked)):
            if infos:
                width = len(cells)
                values = [info.decode_text(cells[i]) if i < width else None for i, info in infos]
                if not test(values):
                    continue
            yield n, cells

    # -------------------------------------------------------------- writes
    def insert_rows(self, rows: list[Row]) -> None:
        """Append rows in one locked write."""
        data = self._encode(rows)
        with self._locked_for_write() as f:
            f.write(data)
            f.flush()

    # --------------------------------------------------------------- reads
    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Stream matching rows (sorted results are collected first)."""
        if limit == 0:
            return
        matches = (cells for _, cells in self._matches(query))
        if query.order:
            rows = [self._decode(c) for c in matches]
            sort_rows(rows, query.order, lambda r, n: r[n])
            if reverse:
                rows.reverse()
            yield from rows[:limit] if limit is not None else rows
            return
        if reverse:
            tail = deque(matches, maxlen=limit)
            for cells in reversed(tail):
                yield self._decode(cells)
            return
        for n, cells in enumerate(matches):
            if limit is not None and n >= limit:
                return
            yield self._decode(cells)

    def count_rows(self, query: Query) -> int:
        """Count matches in one pass over the file (no CSV parsing for an unconditional count)."""
        if not query.conditions:
            lines = self._count_lines()
            return lines if lines is not None else sum(1 for _ in self._raw_rows())
        return sum(1 for _ in self._matches(query))

    def _count_lines(self) -> int | None:
        """Data rows counted as line ends, or None when the file needs the CSV parser.

        Without any quote, carriage return or blank line, every line is one row,
        so counting ``\\n`` bytes (up to the size at the start, like a read) is exact.
        """
        try:
            raw = open(self.filename, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return 0
        with raw:
            _lock(raw, exclusive=False)
            try:
                left = os.fstat(raw.fileno()).st_size
            finally:
                _unlock(raw)
            lines = 0
            last = b"\n"
            while left > 0:
                chunk = raw.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                if b'"' in chunk or b"\r" in chunk or b"\n\n" in last + chunk[:1]:
                    return None
                if b"\n\n" in chunk:
                    return None
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last != b"\n":
            lines += 1  # a last line without its line end
        return max(lines - 1, 0)  # the header

    # ----------------------------------------------------------- rewrites
    def _rewrite(self, plan: Callable[[], Callable[[int, list[str]], list[str] | None]]) -> int:
        """Rewrite the file atomically, under the write lock.

        *plan* runs under the lock and returns ``change(n, cells)``, which gives
        the new cells of row *n*, the same list to keep it, or None to drop it.
        """
        changed = 0
        with self._locked_for_write() as current:
            change = plan()
            fd, tmp = tempfile.mkstemp(
                dir=self.filename.parent, prefix=f".{self.filename.name}.", suffix=".tmp"
            )
            try:
                with open(fd, "w", encoding=_ENCODING, newline="") as out:
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(self._header)
                    for n, cells in enumerate(self._raw_rows(locked=True)):
                        new = change(n, cells)
                        if new is not cells:
                            changed += 1
                        if new is not None:
                            writer.writerow(new)
                    out.flush()
                    os.fsync(out.fileno())
                if changed:
                    os.chmod(tmp, os.stat(current.fileno()).st_mode & 0o777)
                    os.replace(tmp, self.filename)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return changed

    def _matching_numbers(self, query: Query) -> set[int]:
        return {n for n, _ in self._matches(query, locked=True)}

    def delete_rows(self, query: Query) -> int:
        """Delete matches by rewriting the file."""

        def plan() -> Callable[[int, list[str]], list[str] | None]:
            doomed = self._matching_numbers(query)
            return lambda n, cells: None if n in doomed else cells

        return self._rewrite(plan)

    def update_rows(self, query: Query, values: Row) -> int:
        """Update matches by rewriting the file."""
        encoded = [(self._col[k], self.schema.fields[k].encode_text(v)) for k, v in values.items()]
        width = len(self._header)

        def plan() -> Callable[[int, list[str]], list[str] | None]:
            targets = self._matching_numbers(query)

            def change(n: int, cells: list[str]) -> list[str]:
                if n not in targets:
                    return cells
                new = list(cells) + [""] * (width - len(cells))
                for i, text in encoded:
                    new[i] = text
                return new

            return change

        return self._rewrite(plan)

    def prune_rows(self, keep_runs: int | None, cutoff: float | None, task_name: str | None) -> int:
        """Delete old runs and records by rewriting the file."""
        query = Query(((("task_name", Equal(task_name)),)) if task_name is not None else ())
        fields = self.schema.fields

        def pick(cells: list[str], name: str) -> Any:
            if name not in self._col:
                return None
            i = self._col[name]
            return fields[name].decode_text(cells[i]) if i < len(cells) else None

        def plan() -> Callable[[int, list[str]], list[str] | None]:
            doomed = set(
                plan_prune(
                    (
                        (n, pick(c, "task_name"), pick(c, "run_id"), pick(c, "created"))
                        for n, c in self._matches(query, locked=True)
                    ),
                    keep_runs,
                    cutoff,
                )
            )
            return lambda n, cells: None if n in doomed else cells

        return self._rewrite(plan)

    def __repr__(self) -> str:
        """File and model."""
        return f"CSVFileRepo(filename={str(self.filename)!r}, model={self.model.__name__})"
