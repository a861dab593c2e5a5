"""Writers: how a handler's rows reach its store.

One small interface (:class:`Writer`: ``put`` a row, ``flush``, ``close``
with a deadline, ``counts``) and one class per write mode, chosen once by
:func:`make_writer` from :class:`WriterOptions` and the store's
``write_profile``:

- :class:`SyncWriter`: each row is stored before ``put`` returns.
- :class:`BufferWriter`: rows are held until a batch is full or the store is
  read (stores only this process reads: memory).
- :class:`BackgroundWriter`: a writer thread stores batches, retries an
  unreachable store with back-off, isolates refused rows by bisection, paces
  logging calls that outrun it (``backlog``) and honours deadlines.
- :class:`CallerWriter`: a background writer whose full batches are written
  by the logging call that fills them, when the write is quick work under the
  GIL (a CSV append); a failing batch goes back to the thread.

Writers know the store only through the repository primitives
(``insert_rows``, ``is_transient``) and the rows only as dicts: validation
and reporting are callbacks of the handler. Counters are kept under one lock.
Fork, exit and SIGTERM reach writers through :mod:`tasklog.lifecycle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from . import lifecycle
from .mapper import Unchecked
from .repos import Repository
from .repos.base import PartlyStored

__all__ = [
    "BackgroundWriter",
    "BufferWriter",
    "CallerWriter",
    "SyncWriter",
    "Writer",
    "WriterOptions",
    "make_writer",
    "writing",
]

Mode = Literal["auto", "background", "buffer", "sync"]
Overflow = Literal["block", "drop"]
Row = dict[str, Any]
Validate = Callable[[list[Row]], list[Row]]
"""Turns queued items into valid rows; counts and reports the invalid ones."""
Report = Callable[[str, str], None]
"""``report(cause, text)``: tell the user once per cause."""

_STALLED = 0.25
"""Seconds after which a write in progress means a stalled store: logging calls stop pacing."""
_local = threading.local()
"""``_local.busy`` is true while this thread writes to a store: records logged
then (SQLAlchemy's own logs, say) are not fed back into the store."""


def writing() -> bool:
    """Whether this thread is writing to a store now (its own log records are skipped)."""
    return bool(getattr(_local, "busy", False))


@dataclass(frozen=True)
class WriterOptions:
    """How a :class:`~tasklog.RepoHandler` writes (``RepoHandler(repo, writer=WriterOptions(...))``;
    the same names as flat keywords also work, e.g. in ``dictConfig``).

    Attributes:
        mode: ``"background"`` writes batches from a writer thread, ``"sync"``
            writes each record before ``emit`` returns, ``"buffer"`` collects
            up to *batch_size* records and writes them from the logging call
            (or from a read of the store, whichever comes first). ``"auto"``
            picks background for stores that prefer batches (CSV, SQL, Redis)
            and buffer for stores only this process can read (memory).
        batch_size: most records per write; None takes the store's
            ``write_profile.batch_size``.
        flush_interval: longest time (s) a record waits in the queue.
        max_queue: most records waiting to be written; beyond it *overflow* applies.
        overflow: ``"block"`` makes the logging call wait up to *block_timeout*
            for room, then drop; ``"drop"`` drops at once. Drops are counted.
        block_timeout: see *overflow*; also how long a sync write retries.
        retry_max_delay: longest pause (s) between retries of a failing store.
        flush_timeout: longest time (s) ``flush`` waits; None waits until stored.
        close_timeout: longest time (s) ``close`` keeps retrying a failing store.
        backlog: while the store works, a logging call that finds this many
            records queued waits (at most *block_timeout*) until the writer
            has caught up to half of it (bounds what a SIGKILL loses).
        handle_sigterm: on SIGTERM with no handler of the application's own,
            store what background writers hold, then die of SIGTERM.
    """

    mode: Mode = "auto"
    batch_size: int | None = None
    flush_interval: float = 0.2
    max_queue: int = 100_000
    overflow: Overflow = "block"
    block_timeout: float = 5.0
    retry_max_delay: float = 5.0
    flush_timeout: float | None = None
    close_timeout: float = 10.0
    backlog: int = 10_000
    handle_sigterm: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "background", "buffer", "sync"):
            msg = f"mode must be 'auto', 'background', 'buffer' or 'sync', not {self.mode!r}."
            raise ValueError(msg)
        if self.overflow not in ("block", "drop"):
            msg = f"overflow must be 'block' or 'drop', not {self.overflow!r}."
            raise ValueError(msg)
        for name in ("batch_size", "max_queue"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                msg = f"{name} must be a positive integer, not {value!r}."
                raise ValueError(msg)

    def replace(self, **changes: Any) -> WriterOptions:
        """A copy with *changes* (None values are ignored: not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self


class Writer:
    """Stores rows in a repository: the interface every write mode implements.

    ``put(row)`` accepts one row (a dict of the model's fields, or an
    :class:`~tasklog.mapper.Unchecked` one still to validate); ``flush()``
    returns once what was accepted is stored or given up (bounded by
    ``flush_timeout``); ``close()`` stores what is held, retrying a failing
    store until ``close_timeout``, and drops the rest (counted); ``counts()``
    gives ``stored``, ``invalid``, ``dropped``, ``queued``, ``pending`` and
    ``retries``.
    """

    mode: ClassVar[str] = "sync"
    threaded: ClassVar[bool] = False
    """Whether rows are stored from a thread of the writer's own."""
    reads_flush: ClassVar[bool] = False
    """Whether a read of the store must first flush this writer."""

    def __init__(
        self, repo: Repository[Any], options: WriterOptions, validate: Validate, report: Report
    ) -> None:
        self.repo = repo
        self.options = options
        self.batch_size: int = options.batch_size or repo.write_profile.batch_size
        self.close_timeout = options.close_timeout
        self._validate = validate
        self._report = report
        self._counts_lock = threading.Lock()
        self._stored = self._invalid = self._dropped = self._retries = 0
        self.deadline = float("inf")
        """When retries stop (set by close, exit and SIGTERM)."""
        self.caller_writing: int | None = None
        """The thread writing a batch from a logging call (SIGTERM waits for it)."""
        self.closing = False
        self._failing = False
        self._write_started = 0.0

    # ---------------------------------------------------------- interface
    def put(self, row: Row) -> None:
        """Store *row* now (the sync mode)."""
        self._write([row])

    def flush(self) -> None:
        """Return once every row accepted so far is stored (or given up)."""

    def close(self) -> None:
        """Store what is held (bounded by ``close_timeout``); later rows are dropped."""
        self.closing = True

    def counts(self) -> Mapping[str, int]:
        """The writer's figures so far."""
        with self._counts_lock:
            figures = {
                "stored": self._stored,
                "invalid": self._invalid,
                "dropped": self._dropped,
                "retries": self._retries,
            }
        return {**figures, "queued": 0, "pending": 0}

    def add(self, name: str, n: int = 1) -> None:
        """Count *n* more ``invalid`` or ``dropped`` rows (from the handler too)."""
        with self._counts_lock:
            setattr(self, f"_{name}", getattr(self, f"_{name}") + n)

    def drop(self, n: int, why: str) -> None:
        """Count *n* rows dropped and report why."""
        self.add("dropped", n)
        self._report("dropped", f"{n} record(s) dropped: {why}")

    # lifecycle (tasklog.lifecycle calls these)
    def flush_for_exit(self) -> None:
        """Store what is held by ``deadline``, never blocking on a held lock."""

    def after_fork_in_child(self) -> None:
        """A forked child starts with nothing held and no thread of its own."""

    # ------------------------------------------------------------ storing
    def _write(self, items: list[Row]) -> None:
        """Validate and store *items*, retrying a store that is briefly unreachable."""
        prior = writing()
        _local.busy = True
        try:
            rows = self._validate(items)
            if rows:
                self._store(rows)
        finally:
            _local.busy = prior

    def _store(self, rows: list[Row]) -> None:
        """Insert *rows* as one batch; a refused batch is split to isolate the bad rows."""
        delay = 0.05
        give_up_at = 0.0
        while True:
            try:
                self._write_started = time.monotonic()
                try:
                    self.repo.insert_rows(rows)
                finally:
                    self._write_started = 0.0
            except PartlyStored as part:  # stored as smaller batches, up to a failure
                with self._counts_lock:
                    self._stored += part.stored
                self._store(rows[part.stored :])
                return
            except Exception as exc:
                if self.repo.is_transient(exc):
                    now = time.monotonic()
                    if not give_up_at:
                        give_up_at = self._retry_deadline(now)
                    if now <= give_up_at:
                        self.add("retries")
                        self._failing = True
                        self._report(
                            "transient",
                            f"the store is unreachable ({exc.__class__.__name__}); "
                            "retrying, records are kept meanwhile",
                        )
                        self._sleep(delay)
                        delay = min(delay * 2, self.options.retry_max_delay)
                        continue
                    self.drop(len(rows), f"the store stayed unreachable: {exc!r}")
                    return
                if len(rows) > 1:  # bisect: O(log n) more writes per refused record
                    half = len(rows) // 2
                    self._store(rows[:half])
                    self._store(rows[half:])
                    return
                self.add("invalid")
                self._report(
                    f"refused:{type(exc).__name__}",
                    f"the store refused a record: {exc!r}; counted in handler.counts['invalid']",
                )
                return
            else:
                with self._counts_lock:
                    self._stored += len(rows)
                self._failing = False
                return

    def _retry_deadline(self, now: float) -> float:
        """Until when a failing write is retried (a logging call waits at most block_timeout)."""
        return min(self.deadline, now + self.options.block_timeout)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class SyncWriter(Writer):
    """Each row is stored before ``put`` returns (retried up to ``block_timeout``)."""

    mode = "sync"


class BufferWriter(Writer):
    """Rows are held until a batch is full, the store is read, or the writer flushes.

    *lock* is the handler's lock (held by logging calls): a reader's flush
    waits for a logging call in progress. Rows still held when the writer is
    dropped without being closed are stored by a finalizer.
    """

    mode = "buffer"
    reads_flush = True

    def __init__(
        self,
        repo: Repository[Any],
        options: WriterOptions,
        validate: Validate,
        report: Report,
        lock: threading.RLock,
    ) -> None:
        super().__init__(repo, options, validate, report)
        self._lock = lock
        self._buffer: list[Row] = []
        self._finalizer = weakref.finalize(self, _store_orphans, repo, self._buffer)

    def put(self, row: Row) -> None:
        """Hold *row*; write the buffer once it holds a batch."""
        if type(row) is Unchecked:
            rows = self._validate([row])
            if not rows:
                return
            row = rows[0]
        buffer = self._buffer
        buffer.append(row)
        if len(buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffer now."""
        with self._lock:
            rows = self._buffer[:]
            self._buffer.clear()
            if rows:
                self._write(rows)

    def close(self) -> None:
        """Write the buffer; nothing is held afterwards."""
        super().close()
        self.flush()
        self._finalizer.detach()

    def counts(self) -> Mapping[str, int]:
        """Write the buffer first, as a read of the store would."""
        if self._buffer:
            self.flush()
        figures = dict(super().counts())
        figures["queued"] = figures["pending"] = len(self._buffer)
        return figures


class BackgroundWriter(Writer):
    """A writer thread stores batches of *batch_size* rows, at least every *flush_interval*.

    A logging call only appends to the queue; it waits when the queue is
    full (``overflow="block"``, up to ``block_timeout``) or, while the store
    works, far behind (``backlog``). The thread retries an unreachable store
    with back-off until ``deadline`` (set by close, exit or SIGTERM).
    """

    mode = "background"
    threaded = True
    reads_flush = True

    def __init__(
        self, repo: Repository[Any], options: WriterOptions, validate: Validate, report: Report
    ) -> None:
        super().__init__(repo, options, validate, report)
        self._backlog = max(self.batch_size, min(options.max_queue, options.backlog))
        self._init_state()

    def _init_state(self) -> None:
        self._queue: deque[Row] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._accepted = 0  # rows queued, ever (logging side, under the handler's lock)
        self._done = 0  # rows taken care of: stored, invalid or dropped
        self._thread: threading.Thread | None = None
        self.closing = False
        self.deadline = float("inf")
        self._wake = False
        self._signalled = False  # the thread was told a full batch waits
        self._write_lock = threading.Lock()  # held while taking and writing a batch: keeps order
        self.caller_writing = None
        self._failing = False  # the last write failed and is being retried
        self._pacing = False  # a logging call waits for the writer to catch up
        self._write_started = 0.0  # when the current write began (0: none)

    # ---------------------------------------------------------------- put
    def put(self, row: Row) -> None:
        """Queue *row* for the thread (starting it on first use)."""
        if self._thread is None:
            self._start()
        queue = self._queue
        if len(queue) >= self.options.max_queue and not self._wait_for_room():
            self.add("dropped")
            self._report(
                "overflow",
                f"the queue is full ({self.options.max_queue} records) and the store does not "
                "keep up; records are being dropped (see handler.counts['dropped'])",
            )
            return
        queue.append(row)
        self._accepted += 1
        n = len(queue)
        if n >= self.batch_size and not self._batch_full():
            return
        if n >= self._backlog and not self._failing and self._alive():
            self._pace()

    def _batch_full(self) -> bool:
        """A full batch waits: wake the thread. False when this call wrote it itself."""
        if not self._signalled:
            self._signalled = True
            with self._cv:
                self._cv.notify_all()
        return True

    def _pace(self) -> None:
        """Wait (at most block_timeout) while the thread, storing fine, is far behind.

        A thread that logs flat out can starve the writer of the GIL; then the
        queue, and what a SIGKILL would lose, grows up to ``max_queue``. Waiting
        here keeps it near ``backlog`` rows while the store works. An
        unreachable store does not pace, nor does one whose current write has
        taken longer than ``_STALLED`` (a SQLite file locked by another
        process, a server that stopped answering): its rows wait in the queue.
        """
        target = self._backlog // 2

        def done() -> bool:
            started = self._write_started
            stalled = started and time.monotonic() - started > _STALLED
            return len(self._queue) <= target or self._failing or self.closing or bool(stalled)

        deadline = time.monotonic() + self.options.block_timeout
        with self._cv:
            self._pacing = True
            try:
                self._cv.notify_all()
                while not done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    # woken by the thread's progress, or soon enough to see it stall
                    self._cv.wait(min(left, _STALLED / 2))
            finally:
                self._pacing = False

    def _wait_for_room(self) -> bool:
        if self.options.overflow == "drop":
            return False
        deadline = time.monotonic() + self.options.block_timeout
        with self._cv:
            self._cv.notify_all()
            while len(self._queue) >= self.options.max_queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    # ------------------------------------------------------------- thread
    def _start(self) -> None:
        with self._cv:
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=_thread_main, args=(weakref.ref(self),), name="tasklog-writer", daemon=True
            )
            self._thread = thread
        thread.start()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _await_work(self) -> bool:
        """Wait until a batch is due; False when closed and drained."""
        interval = self.options.flush_interval
        with self._cv:
            started = None
            while True:
                n = len(self._queue)
                if n >= self.batch_size or (n and (self.closing or self._wake)):
                    return True
                if n and started is not None and time.monotonic() - started >= interval:
                    return True
                if not n and self.closing:
                    return False
                if n and started is None:
                    started = time.monotonic()
                self._cv.wait(interval if n else 1.0)

    def _take(self) -> list[Row]:
        """Pop the oldest batch (the caller holds ``_write_lock``)."""
        with self._cv:
            self._wake = False
            queue = self._queue
            take = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(take)]
            self._signalled = len(queue) >= self.batch_size
            if self._pacing:
                self._cv.notify_all()
            return batch

    def _finish(self, n: int) -> None:
        with self._cv:
            self._done += n
            self._cv.notify_all()

    def _run_once(self) -> bool:
        """Write one batch when due; False when closed and drained."""
        if not self._await_work():
            return False
        with self._write_lock:
            batch = self._take()
            try:
                self._write(batch)
            finally:
                self._finish(len(batch))
        return True

    def _retry_deadline(self, now: float) -> float:
        if threading.current_thread() is self._thread:
            return self.deadline  # the thread retries until close, exit or SIGTERM
        return super()._retry_deadline(now)

    def _sleep(self, seconds: float) -> None:
        if threading.current_thread() is self._thread:
            with self._cv:
                self._cv.notify_all()  # a paced logging call stops waiting for a failing store
                self._cv.wait_for(lambda: time.monotonic() > self.deadline, timeout=seconds)
        else:
            time.sleep(seconds)

    # ------------------------------------------------------ flush & close
    def flush(self) -> None:
        """Wait until what was queued so far is stored (at most ``flush_timeout``,
        and no later than ``deadline``)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return
        target = self._accepted
        timeout = self.options.flush_timeout
        if self.deadline != float("inf"):  # exiting or closing: bounded
            left = max(0.0, self.deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        with self._cv:
            self._wake = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._done >= target or not self._alive(), timeout=timeout)

    def flush_for_exit(self) -> None:
        """Drain the queue by ``deadline`` (``close_timeout`` from now when unset),
        without blocking on a held lock."""
        if not self._alive():
            return
        if self.deadline == float("inf"):
            self.deadline = time.monotonic() + self.close_timeout
        target = self._accepted
        while self._done < target and self._alive():
            left = self.deadline - time.monotonic()
            if left <= 0:
                return
            if self._cv.acquire(timeout=min(left, 0.05)):
                try:
                    self._wake = True
                    self._cv.notify_all()
                    if self._done < target:
                        self._cv.wait(min(left, 0.05))
                finally:
                    self._cv.release()

    def close(self) -> None:
        """Store what is queued (retrying up to ``close_timeout``), stop the thread;
        what could not be stored is dropped and counted."""
        if self.closing:
            return
        with self._cv:
            if self.deadline == float("inf"):
                self.deadline = time.monotonic() + self.close_timeout
            self.closing = True
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.close_timeout + 1.0)
        # a logging call in another thread may be writing a batch: let it finish
        if self._write_lock.acquire(timeout=self.close_timeout):
            self._write_lock.release()
        left = len(self._queue)
        if left:
            self._queue.clear()
            self.drop(left, "the handler was closed before they could be stored")

    def counts(self) -> Mapping[str, int]:
        """``pending`` is what a SIGKILL now would lose: queued plus the batch being written."""
        figures = dict(super().counts())
        figures["queued"] = len(self._queue)
        figures["pending"] = self._accepted - self._done
        return figures

    def after_fork_in_child(self) -> None:
        """A forked child starts with an empty queue and no thread of its own yet."""
        self._init_state()


class CallerWriter(BackgroundWriter):
    """A background writer whose full batches are written by the logging call that fills them.

    For stores whose batch write is quick work under the GIL (a CSV append),
    handing each batch to the thread costs more than the write. A failing or
    refused batch goes back to the head of the queue for the thread, which
    retries and isolates bad rows, so the logging call never waits for an
    unreachable store.
    """

    mode = "background"

    def _batch_full(self) -> bool:
        if not self._failing and self._write_lock.acquire(blocking=False):
            self._write_from_caller()
            return False
        return super()._batch_full()

    def _write_from_caller(self) -> None:
        """Write the queue's oldest batch from this logging call (``_write_lock`` held)."""
        self.caller_writing = threading.get_ident()
        batch: list[Row] = []
        left: list[Row] = []  # what goes back to the queue unless stored
        try:
            batch = left = self._take()
            prior = writing()
            _local.busy = True
            try:
                left = self._validate(batch)  # the invalid ones are done with
                if left:
                    self.repo.insert_rows(left)
                    with self._counts_lock:
                        self._stored += len(left)
                left = []
            except Exception:  # the thread retries, isolates and reports it
                self._failing = True
            finally:
                _local.busy = prior
        finally:  # an exception (KeyboardInterrupt) requeues what was not stored
            with self._cv:
                self._queue.extendleft(reversed(left))
                self._done += len(batch) - len(left)
                self._cv.notify_all()
            self.caller_writing = None
            self._write_lock.release()
            lifecycle.run_deferred_sigterm()


def make_writer(
    repo: Repository[Any],
    options: WriterOptions,
    validate: Validate,
    report: Report,
    lock: threading.RLock,
) -> Writer:
    """The writer for *options* and *repo*'s write profile (chosen once).

    ``"auto"``: background for stores that prefer batches (written from the
    logging call when the profile says ``in_caller``), buffer for stores only
    this process reads, else sync.
    """
    profile = repo.write_profile
    mode = options.mode
    if mode == "auto":
        mode = "background" if profile.batches else "buffer" if profile.process_local else "sync"
    if mode == "background":
        kind = CallerWriter if profile.in_caller else BackgroundWriter
        return kind(repo, options, validate, report)
    if mode == "buffer":
        return BufferWriter(repo, options, validate, report, lock)
    return SyncWriter(repo, options, validate, report)


def _thread_main(ref: weakref.ref[BackgroundWriter]) -> None:
    _local.busy = True
    while True:
        writer = ref()
        if writer is None:
            return
        try:
            if not writer._run_once():
                return
        except Exception as exc:  # a bug must not stop the thread silently
            with contextlib.suppress(Exception):
                writer._report("writer", f"the writer thread hit an error: {exc!r}")
        del writer


def _store_orphans(repo: Repository[Any], rows: list[Row]) -> None:
    """Store what a buffer held when it was dropped without being closed."""
    if rows:
        with contextlib.suppress(Exception):  # at exit or in a finalizer: nothing to tell
            repo.insert_rows(rows[:])
        rows.clear()
