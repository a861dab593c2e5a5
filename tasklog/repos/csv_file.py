"""``CSVFileRepo``: records in one CSV file with a header row.

Writes only append: each batch is one ``write`` under an exclusive ``flock``,
so several processes can append to one file without torn or interleaved
lines. Readers stream the file up to the size it had when the read began, which
is always a batch boundary. Deleting or updating rewrites the file into a
temporary file that replaces it atomically.

What a plain file can suffer, and what is done about it (all under the lock):

- *A writer killed mid-write* (SIGKILL, OOM) leaves a torn last row, perhaps
  inside an open quoted field that would swallow every later record. Before
  appending, a writer checks that the file ends on a complete record; a torn
  last row is moved to ``<file>.torn`` and cut off, with one warning. Readers
  skip a torn last row (one warning) until then.
- *A failed write* (a full disk) is rolled back: the file is truncated to the
  length it had before, so a retry never duplicates and nothing is half-written.
- *Rotation* (the file moved or deleted): every write opens the path afresh, so
  it notices a new inode, and an empty file gets the header row first.
- *Huge fields*: the csv module's field size limit (131,072 characters) is
  raised for the process, so a field of any size the writer wrote reads back.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import operator
import os
import sys
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..exceptions import StoreDataError
from ..query import Equal, Query, predicate, sort_rows
from ..schema import FieldInfo, Schema
from .base import ModelT, Repository, Row, WriteProfile, plan_prune

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: one process per file)
    fcntl = None  # type: ignore[assignment]

__all__ = ["CSVFileRepo"]

_ENCODING = "utf-8"
_WHAT = {
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
    "datetime": "an ISO 8601 date/time",
    "timedelta": "a number of seconds",
    "json": "valid JSON",
}
"""How a read error names what a column of each field kind holds."""
_PASS_THROUGH: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float,)}
"""Field kinds whose values of these exact types the csv module writes as-is."""


_LINE_ENDS = (b"\n", b"\r")
_CHUNK = 1 << 20
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def _allow_large_fields() -> None:
    """Raise the csv module's field size limit (process-wide) so any field reads back."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)


def _csv_text(table: Iterable[Any], *, quote_all: bool = False) -> str:
    """*table* as CSV text, one line a row.

    The csv module quotes a cell only for the line terminator's characters
    (``\n``), so a cell with a carriage return needs ``csv.QUOTE_ALL`` (which
    reads back the same: the reader does not tell ``""`` from an empty cell).
    """
    out = io.StringIO()
    if quote_all:
        csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(table)
    else:
        csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue()


def _lock(f: IO[Any] | int, exclusive: bool) -> None:
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def _unlock(f: IO[Any] | int) -> None:
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_UN)


_OPEN_FLAGS = (
    os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Up to *size* bytes at *offset* (``os.pread`` where there is one)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover  (Windows)
    return os.read(fd, size)  # pragma: no cover


def _write_all(fd: int, data: bytes) -> None:
    """Write all of *data* (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _scan(fd: int, start: int, end: int) -> tuple[bool, int, bytes]:
    """Quote parity of bytes ``[start, end)`` (*start* being a record boundary).

    Returns whether an odd number of quotes was seen (the end lies inside a
    quoted field, for a file written as RFC 4180 says), the offset just after
    the last line end outside quotes (*start* if none), and the last byte.
    """
    odd = False
    boundary = pos = start
    last = b""
    while pos < end:
        chunk = _pread(fd, min(_CHUNK, end - pos), pos)
        if not chunk:
            break
        if b'"' not in chunk:
            if not odd:
                i = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
                if i >= 0:
                    boundary = pos + i + 1
        else:
            pieces = chunk.split(b'"')
            offset = len(chunk)
            for k in range(len(pieces) - 1, -1, -1):  # piece k follows k quotes
                piece = pieces[k]
                offset -= len(piece)
                if odd == bool(k & 1):  # outside quotes
                    i = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
                    if i >= 0:
                        boundary = pos + offset + i + 1
                        break
                offset -= 1
            odd ^= bool((len(pieces) - 1) & 1)
        last = chunk[-1:]
        pos += len(chunk)
    return odd, boundary, last


def _torn_tail(fd: int, start: int, end: int, width: int) -> tuple[bool, int | None]:
    """Whether bytes ``[start, end)`` (from a record boundary) end on a complete record.

    Returns ``(True, None)`` when they do; ``(False, None)`` when the last row
    lacks only its line end (a hand-written last line: end it); ``(False,
    offset)`` when the last row, starting at *offset*, is torn: it ends inside a
    quoted field, or lacks cells. The csv module, as readers use it, decides.
    """
    odd, boundary, last = _scan(fd, start, end)
    if not odd and (last in _LINE_ENDS or start == end):
        return True, None  # the fast answer for every file tasklog wrote whole
    text = _pread(fd, end - boundary, boundary).decode("latin-1")  # one char per byte
    pos = boundary
    row_start: int | None = None
    row: list[str] = []

    def lines() -> Iterator[str]:
        nonlocal pos
        for line in io.StringIO(text, newline=""):
            yield line
            pos += len(line)

    reader = csv.reader(lines())
    while True:
        here = pos
        cells = next(reader, None)
        if cells is None:
            break
        if cells:
            row_start, row = here, cells
    if row_start is None:
        return True, None  # only blank lines
    tail = text[row_start - boundary :]
    open_quote = sum(1 for _ in csv.reader(io.StringIO(tail, newline=""))) == sum(
        1 for _ in csv.reader(io.StringIO(tail + "\nx\n", newline=""))
    )  # inside a quoted field, the added lines join the last row instead of adding rows
    if not open_quote and text.endswith(("\n", "\r")):
        return True, None
    if row_start == 0 or (not open_quote and len(row) >= width):
        return False, None  # the header, or a whole row without its line end
    return False, row_start


_checked: dict[tuple[int, int], tuple[int, bytes]] = {}
"""(device, inode) -> an offset known to be a record boundary, and the bytes before it."""
_checked_lock = threading.Lock()


def _known_boundary(fd: int, key: tuple[int, int], size: int) -> int:
    """The last record boundary this process verified in the file, or 0."""
    with _checked_lock:
        known = _checked.get(key)
    if known is None or known[0] > size:
        return 0
    offset, before = known
    return offset if _pread(fd, len(before), offset - len(before)) == before else 0


def _remember(fd: int, key: tuple[int, int], offset: int) -> None:
    before = _pread(fd, min(offset, 16), max(offset - 16, 0)) if offset else b""
    with _checked_lock:
        _checked[key] = (offset, before)


class _Limited(io.RawIOBase):
    """A raw binary reader that stops at a fixed size, noting quote parity and the last byte."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._left = size
        self.odd = False
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = int(self._raw.readinto(view))  # type: ignore[attr-defined]
        if n > 0:
            self._left -= n
            data = view[:n]
            self.odd ^= bool(bytes(data).count(b'"') & 1)
            self.last = bytes(data[n - 1 :])
        else:
            self._left = 0  # the file shrank (a torn tail cut off meanwhile)
        return n


class CSVFileRepo(Repository[ModelT]):
    """A store in one CSV file.

    Args:
        filename: the CSV file; created with a header row when missing. An
            existing file must have a header naming every model field (extra
            columns are kept and left empty by tasklog).
        model: the record model (default :class:`~tasklog.TaskRunRecord`).
        id_field: see :class:`~tasklog.repos.base.Repository`.

    None is stored as an empty cell; so is an empty string, which comes back
    as None in a field that may be None. Lists and dicts are JSON text.
    """

    write_profile = WriteProfile(batches=True, in_caller=True)

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
        self._warned: set[tuple[tuple[int, int], int]] = set()
        self._header = self._ensure_file()
        self._derive()

    def _adopt_model(self, previous: Schema) -> None:
        """Check the header against the new model and re-derive the column layout."""
        self._header = self._ensure_file()
        self._derive()

    def create(self) -> None:
        """Create the file with its header when it is missing (no-op otherwise)."""
        self._header = self._ensure_file()
        self._derive()

    def _derive(self) -> None:
        """The column layout of the model in this file's header; columns for
        optional fields the header lacks are added (the file rewritten once,
        atomically, under the lock; older rows read the fields' defaults).

        Raises:
            ValueError: the header lacks columns for required fields of the model.
        """
        missing = [name for name in self.schema.names if name not in self._header]
        required = [name for name in missing if self.schema.fields[name].required]
        if required:
            msg = (
                f"CSV file {str(self.filename)!r} lacks columns for required fields of "
                f"{self.model.__name__}: {', '.join(required)}. Add them to its header row "
                "or use a model without them."
            )
            raise ValueError(msg)
        if missing:
            self._add_columns(missing)
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
        """The file's resolved path (symlinks followed), however it was spelled."""
        key: tuple[str, str] | None = self.__dict__.get("_store_key")
        if key is None:
            key = self.__dict__["_store_key"] = ("csv", os.path.realpath(self.filename))
        return key

    def is_transient(self, error: BaseException) -> bool:
        """Whether a write that raised *error* may succeed when retried: an
        ``OSError`` (a full disk, a file locked or moved meanwhile)."""
        return isinstance(error, OSError)

    # ------------------------------------------------------------- file io
    def _ensure_file(self) -> list[str]:
        _allow_large_fields()
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        with open(self.filename, "a+", encoding=_ENCODING, newline="") as f:
            _lock(f, exclusive=True)
            try:
                f.seek(0)
                header = next(csv.reader(f), None)
                if header:
                    if header[0].startswith("\ufeff"):  # saved as "UTF-8 with BOM"
                        header[0] = header[0][1:]
                    return header  # a last line without its line end is ended before appending
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    csv.writer(f, lineterminator="\n").writerow(self.schema.names)
                    f.flush()
                return list(self.schema.names)
            finally:
                _unlock(f)

    def _add_columns(self, names: list[str]) -> None:
        """Rewrite the file with *names* added to its header (each row padded
        with empty cells), unless another process added them meanwhile."""

        def plan() -> Callable[[int, list[str]], list[str] | None]:
            with open(self.filename, encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f), None) or []
            self._header = header + [n for n in names if n not in header]
            width = len(self._header)
            return lambda n, cells: cells + [""] * (width - len(cells))

        self._rewrite(plan, force=True)

    @contextlib.contextmanager
    def _locked_for_write(self) -> Iterator[int]:
        """The current file, opened for appending, exclusively locked, and ending
        on a complete record (see :meth:`_prepare`): its descriptor."""
        with self._thread_lock:
            while True:
                fd = os.open(
                    self.filename, _OPEN_FLAGS, 0o666
                )
                try:
                    _lock(fd, exclusive=True)
                    try:
                        st = os.fstat(fd)
                        try:
                            current = os.stat(self.filename)
                            same = (st.st_dev, st.st_ino) == (current.st_dev, current.st_ino)
                        except FileNotFoundError:
                            same = False
                        if same:  # else replaced by a rewrite or moved meanwhile: open the new file
                            self._prepare(fd, st)
                            yield fd
                            return
                    finally:
                        _unlock(fd)
                finally:
                    os.close(fd)

    def _prepare(self, fd: int, st: os.stat_result) -> None:
        """Under the write lock: give an empty file (new, or recreated after
        rotation) its header row; end a last line that lacks its line end; fence
        off a torn last row (moved to ``<file>.torn``)."""
        key = (st.st_dev, st.st_ino)
        size = st.st_size
        if size == 0:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(self._header)
            try:
                _write_all(fd, out.getvalue().encode(_ENCODING))
            except BaseException:
                os.ftruncate(fd, 0)  # a full disk: no half header
                raise
            _remember(fd, key, os.fstat(fd).st_size)
            return
        start = _known_boundary(fd, key, size)
        if start == size:
            return
        whole, torn = _torn_tail(fd, start, size, len(self._header))
        if not whole:
            if torn is None:
                _write_all(fd, b"\n")
            else:
                self._fence(fd, torn, size)
        _remember(fd, key, os.fstat(fd).st_size)

    @property
    def torn_filename(self) -> Path:
        """Where torn rows cut off the end of the file are kept (``<file>.torn``)."""
        return self.filename.with_name(self.filename.name + ".torn")

    def _fence(self, fd: int, start: int, end: int) -> None:
        """Move the torn row ``[start, end)`` to :attr:`torn_filename`, then cut it off."""
        data = _pread(fd, end - start, start)
        kept = ""
        try:
            with open(self.torn_filename, "ab") as side:
                side.write(data if data.endswith(_LINE_ENDS) else data + b"\n")
            kept = f", kept in {str(self.torn_filename)!r}"
        except OSError as err:  # a full disk: the torn row is lost either way
            kept = f" (not kept: {err})"
        os.ftruncate(fd, start)
        self._warn(
            f"CSV file {str(self.filename)!r} ended in a torn row (a writer killed while "
            f"writing it); its {end - start} bytes from offset {start} were cut off{kept}."
        )

    def _warn(self, text: str) -> None:
        """One warning; never an exception, even where warnings are errors."""
        with contextlib.suppress(Warning):
            warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _encode(self, rows: list[Row]) -> str:
        """The CSV text of *rows*. The csv module writes a ``str``, ``int`` or
        ``float`` cell, and None, exactly as :meth:`FieldInfo.encode_text`
        would, so only other values go through it."""
        text = _csv_text(self._table(rows))
        if "\r" in text:  # rare: quote every cell, so a carriage return stays in its cell
            text = _csv_text(self._table(rows), quote_all=True)
        return text

    def _table(self, rows: list[Row]) -> Iterable[Any]:
        if self._plain is not None:  # every cell as-is, in file order: done in C
            return map(self._plain, rows)
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
        return table

    def _raw_rows(self, *, locked: bool = False) -> Iterator[list[str]]:
        """Data rows as lists of cells, up to a batch boundary, streaming.

        A torn last row (a writer killed mid-write, not yet fenced off by the
        next writer) is skipped with one warning. *locked* says the caller
        holds the write lock already (a rewrite).
        """
        _allow_large_fields()
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
            limited = _Limited(raw, size)
            buffered = io.BufferedReader(limited, buffer_size=1 << 16)
            text = io.TextIOWrapper(buffered, encoding=_ENCODING, newline="")
            reader = csv.reader(text)
            next(reader, None)  # header
            held: list[str] | None = None  # the last row waits until it is known whole
            for cells in reader:
                if cells:
                    if held is not None:
                        yield held
                    held = cells
            if held is None:
                return
            if limited.odd or limited.last not in _LINE_ENDS:
                st = os.fstat(raw.fileno())
                key = (st.st_dev, st.st_ino)
                start = _known_boundary(raw.fileno(), key, size)
                _, torn = _torn_tail(raw.fileno(), start, size, len(self._header))
                if torn is not None:
                    if (key, torn) not in self._warned:
                        self._warned.add((key, torn))
                        self._warn(
                            f"CSV file {str(self.filename)!r} ends in a torn row (a writer "
                            f"killed while writing it, at offset {torn}); it is skipped."
                        )
                    return
            yield held

    def _decode(self, n: int, cells: list[str]) -> Row:
        row: Row = {}
        width = len(cells)
        for info in self._fields:
            i = self._col[info.name]
            row[info.name] = self._cell(n, info, cells[i] if i < width else "")
        return row

    def _cell(self, n: int, info: FieldInfo, text: str) -> Any:
        """The value of cell *text* of data row *n* (from 0) in column *info*.

        Raises:
            StoreDataError: the text is not a value of the field's type; the
                message names the file, the row and the column.
        """
        try:
            return info.decode_text(text)
        except ValueError:
            msg = (
                f"CSV file {str(self.filename)!r}, row {n + 1} (after the header), column "
                f"{info.name!r}: {text!r} is not {_WHAT.get(info.kind, 'a valid ' + info.kind)}"
                f"{' (epoch seconds)' if info.name == 'created' else ''}."
            )
            raise StoreDataError(msg) from None

    def _matches(self, query: Query, *, locked: bool = False) -> Iterator[tuple[int, list[str]]]:
        """``(row number, cells)`` of matching rows, in file order."""
        names = query.fields
        infos = [(self._col[n], self.schema.fields[n]) for n in names]
        test = predicate(query.conditions, {n: i for i, n in enumerate(names)})
        for n, cells in enumerate(self._raw_rows(locked=locked)):
            if infos:
                width = len(cells)
                values = [self._cell(n, info, cells[i]) if i < width else None for i, info in infos]
                if not test(values):
                    continue
            yield n, cells

    # -------------------------------------------------------------- writes
    def insert_rows(self, rows: list[Row]) -> None:
        """Append rows in one locked write; a failed write (a full disk) is undone."""
        data = self._encode(rows).encode(_ENCODING)
        with self._locked_for_write() as fd:
            st = os.fstat(fd)
            try:
                _write_all(fd, data)
            except BaseException:
                os.ftruncate(fd, st.st_size)  # no half row, and nothing for a retry to repeat
                raise
            _remember(fd, (st.st_dev, st.st_ino), st.st_size + len(data))

    # --------------------------------------------------------------- reads
    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Stream matching rows (sorted results are collected first)."""
        if limit == 0:
            return
        matches = self._matches(query)
        if query.order:
            rows = [self._decode(n, c) for n, c in matches]
            sort_rows(rows, query.order, lambda r, n: r[n])
            if reverse:
                rows.reverse()
            yield from rows[:limit] if limit is not None else rows
            return
        if reverse:
            tail = deque(matches, maxlen=limit)
            for n, cells in reversed(tail):
                yield self._decode(n, cells)
            return
        for count, (n, cells) in enumerate(matches):
            if limit is not None and count >= limit:
                return
            yield self._decode(n, cells)

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
            return None  # a last line without its line end: whole, or torn?
        return max(lines - 1, 0)  # the header

    # ----------------------------------------------------------- rewrites
    def _rewrite(
        self,
        plan: Callable[[], Callable[[int, list[str]], list[str] | None]],
        *,
        force: bool = False,
    ) -> int:
        """Rewrite the file atomically, under the write lock.

        *plan* runs under the lock and returns ``change(n, cells)``, which gives
        the new cells of row *n*, the same list to keep it, or None to drop it.
        With *force* the file is replaced even when no row changed (a new header).
        """
        changed = 0
        with self._locked_for_write() as current:
            self._remove_stale_temporaries()
            change = plan()
            fd, tmp = tempfile.mkstemp(
                dir=self.filename.parent, prefix=f".{self.filename.name}.", suffix=".tmp"
            )
            try:
                with open(fd, "w", encoding=_ENCODING, newline="") as out:
                    writer = csv.writer(out, lineterminator="\n")
                    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
                    writer.writerow(self._header)
                    for n, cells in enumerate(self._raw_rows(locked=True)):
                        new = change(n, cells)
                        if new is not cells:
                            changed += 1
                        if new is not None:
                            cr = any("\r" in c for c in new if isinstance(c, str))
                            (quoted if cr else writer).writerow(new)
                    out.flush()
                    os.fsync(out.fileno())
                    st = os.fstat(out.fileno())
                    if changed or force:
                        os.chmod(tmp, os.fstat(current).st_mode & 0o777)
                        os.replace(tmp, self.filename)
                        _remember(out.fileno(), (st.st_dev, st.st_ino), st.st_size)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return changed

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files of rewrites that were killed (under the write
        lock, so no rewrite is under way: each holds the lock)."""
        pattern = os.path.join(
            glob.escape(str(self.filename.parent)), glob.escape(f".{self.filename.name}.") + "*.tmp"
        )
        for stale in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)

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

    def prune_rows(
        self,
        keep_runs: int | None,
        cutoff: float | None,
        task_name: str | None,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete old runs and records by rewriting the file."""
        query = Query(((("task_name", Equal(task_name)),)) if task_name is not None else ())
        fields = self.schema.fields

        def pick(cells: list[str], name: str) -> Any:
            if name not in self._col:
                return None
            i = self._col[name]
            return fields[name].decode_text(cells[i]) if i < len(cells) else None

        def doomed(locked: bool) -> set[int]:
            return set(
                plan_prune(
                    (
                        (n, pick(c, "task_name"), pick(c, "run_id"), pick(c, "created"))
                        for n, c in self._matches(query, locked=locked)
                    ),
                    keep_runs,
                    cutoff,
                )
            )

        if dry_run:
            return len(doomed(locked=False))

        def plan() -> Callable[[int, list[str]], list[str] | None]:
            chosen = doomed(locked=True)
            return lambda n, cells: None if n in chosen else cells

        return self._rewrite(plan)

    def __repr__(self) -> str:
        """File and model."""
        return f"CSVFileRepo(filename={str(self.filename)!r}, model={self.model.__name__})"


# ------------------------------------------------------------------ registry


def _path(url: str) -> Path:
    """The file a ``csv://`` URL or a bare path names."""
    from urllib.parse import urlsplit

    from ..exceptions import ConfigError

    if url.lower().startswith("csv://"):
        parts = urlsplit(url)
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
    else:
        path = url
    if not path:
        msg = f"{url!r} names no file; write csv:///path/to/file.csv."
        raise ConfigError(msg)
    return Path(path)


def open_url(url: str, model: type[Any] | None, options: dict[str, Any]) -> CSVFileRepo[Any]:
    """``csv:///path/file.csv`` or a path ending in ``.csv`` (see :mod:`.registry`).

    Without *model*, an existing file is read with a model matching its header.
    """
    from ..exceptions import StoreNotFoundError
    from .registry import DEFAULT_MODEL

    if model is None:
        try:
            return open_existing(url, dict(options))
        except StoreNotFoundError:
            model = DEFAULT_MODEL
    return CSVFileRepo(filename=_path(url), model=model, **options)


def open_existing(url: str, options: dict[str, Any]) -> CSVFileRepo[Any]:
    """An existing CSV file, with a model matching its header row.

    Raises:
        StoreNotFoundError: the file does not exist or is empty.
        ConfigError: it is a directory, unreadable, or not a tasklog store.
    """
    from ..exceptions import ConfigError, StoreNotFoundError
    from .registry import model_for_columns, no_table, not_a_directory

    no_table(url, options)
    path = _path(url)
    not_a_directory(path, "CSV file")
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
    return CSVFileRepo(filename=path, model=model, **options)
