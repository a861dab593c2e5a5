"""``RepoHandler``: a stdlib logging handler that stores records in a repository.

The caller's ``emit`` only turns the :class:`logging.LogRecord` into a dict of
the model's fields. For stores whose writes have a fixed cost (CSV, SQL) a
writer thread then validates the records and writes them in batches through
``Repository.insert_rows`` (the batch primitive behind ``add_many``); other
stores are written at once. Failures never reach the code that logs: they are
counted in :attr:`RepoHandler.counts` and reported on stderr once per cause.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from . import lifecycle
from .lifecycle import add_sigterm_hook as add_sigterm_hook  # where it used to live
from .mapper import RowMapper, Unchecked
from .mapper import fast_plan as _fast_plan  # noqa: F401  (tests import it from here)
from .repos import Repository, open_repo

__all__ = ["ActionFilter", "RepoHandler", "resolve_model"]

ErrorPolicy = Literal["warn", "ignore", "raise"]
Mode = Literal["auto", "background", "buffer", "sync"]
Overflow = Literal["block", "drop"]

_STALLED = 0.25
"""Seconds after which a write in progress means a stalled store: logging calls stop pacing."""
_local = threading.local()
"""``_local.busy`` is true while this thread writes to a store: records logged
then (SQLAlchemy's own logs, say) are not fed back into the store."""


def resolve_model(model: type[BaseModel] | str | None) -> type[BaseModel] | None:
    """Return a model class given as a class or a dotted path (``"pkg.mod.Model"``).

    Raises:
        ValueError: the path does not name a pydantic model class.
    """
    if model is None or isinstance(model, type):
        return model
    module_name, _, attr = str(model).rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        msg = f"Cannot use model {model!r}: give a pydantic model class or its dotted path."
        raise ValueError(msg)
    return found


class ActionFilter(logging.Filter):
    """Pass only records whose ``action`` is one of *actions*.

    Route, for example, ``fail`` and ``crash`` records to a mail or chat handler.
    The actions may also be given as ``actions=[...]``, which is how
    :func:`logging.config.dictConfig` passes them.
    """

    def __init__(self, *args: str, actions: Iterable[str] = ()) -> None:
        super().__init__()
        self.actions = frozenset(str(a) for a in (*args, *actions))

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record's action is one of the chosen ones."""
        action = getattr(record, "action", None)
        return action is not None and str(action) in self.actions


class RepoHandler(logging.Handler):
    """Store log records in a repository.

    Args:
        repo: a repository, or a URL for :func:`tasklog.open_repo`.
        level: the handler's level.
        model: the record model (a class or a dotted path). With a URL it is
            the repository's model; with a repository object, records are
            validated against it before they are added (default: ``repo.model``).
        errors: what to do with a record that does not fit the model:
            ``"warn"`` reports each cause once on stderr, ``"ignore"`` only
            counts, ``"raise"`` raises from ``emit`` (for tests).
        mode: ``"background"`` writes batches from a writer thread, ``"sync"``
            writes each record before ``emit`` returns, ``"buffer"`` collects
            up to *batch_size* records and writes them from the logging call
            (or from a read of the store, whichever comes first). ``"auto"``
            picks background for stores that prefer batches (CSV, SQL) and
            buffer for stores only this process can read (memory).
        batch_size: most records per write; None takes the store's
            ``write_profile.batch_size`` (5000 for database servers, where each batch
            costs round trips, 1000 for the others).
        flush_interval: longest time (s) a record waits in the queue.
        max_queue: most records waiting to be written; beyond it *overflow* applies.
        overflow: ``"block"`` makes the logging call wait up to *block_timeout*
            for room, then drop; ``"drop"`` drops at once. Drops are counted.
        block_timeout: see *overflow*.
        retry_max_delay: longest pause (s) between retries of a failing store.
        flush_timeout: longest time (s) :meth:`flush` waits; None waits until stored.
        close_timeout: longest time (s) :meth:`close` keeps retrying a failing store.
        backlog: while the store works, a logging call that finds this many
            records queued waits (at most *block_timeout*) until the writer
            has caught up to half of it. This bounds what a SIGKILL loses when
            a program logs faster than the store writes. An unreachable store
            is not waited for (its records fill the queue up to *max_queue*).
        handle_sigterm: when the process gets SIGTERM and nobody else handles
            it (its handler is still the default), first store what the
            background writers hold (up to *close_timeout*), then die of SIGTERM
            as the process would have. Installed only from the main thread and
            only over ``SIG_DFL``; ``False`` leaves signals alone.
        **options: passed to :func:`tasklog.open_repo` with a URL.
    """

    def __init__(
        self,
        repo: Repository[Any] | str,
        level: int | str = logging.NOTSET,
        *,
        model: type[BaseModel] | str | None = None,
        errors: ErrorPolicy = "warn",
        mode: Mode = "auto",
        batch_size: int | None = None,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        overflow: Overflow = "block",
        block_timeout: float = 5.0,
        retry_max_delay: float = 5.0,
        flush_timeout: float | None = None,
        close_timeout: float = 10.0,
        backlog: int = 10_000,
        handle_sigterm: bool = True,
        **options: Any,
    ) -> None:
        if errors not in ("warn", "ignore", "raise"):
            msg = f"errors must be 'warn', 'ignore' or 'raise', not {errors!r}."
            raise ValueError(msg)
        if mode not in ("auto", "background", "buffer", "sync"):
            msg = f"mode must be 'auto', 'background', 'buffer' or 'sync', not {mode!r}."
            raise ValueError(msg)
        if overflow not in ("block", "drop"):
            msg = f"overflow must be 'block' or 'drop', not {overflow!r}."
            raise ValueError(msg)
        for name, value in (("batch_size", batch_size), ("max_queue", max_queue)):
            if value is not None and (not isinstance(value, int) or value < 1):
                msg = f"{name} must be a positive integer, not {value!r}."
                raise ValueError(msg)
        resolved = resolve_model(model)
        self._owns_repo = isinstance(repo, str)
        """A repo opened here from a URL is closed by :meth:`close`."""
        if isinstance(repo, str):
            if resolved is not None:
                options["model"] = resolved
            repo = open_repo(repo, **options)
        elif options:
            msg = f"Unknown RepoHandler option(s): {', '.join(options)}."
            raise TypeError(msg)
        # only now, with every argument checked and the store open: a handler that
        # could not be made must not stay in logging's list (flushed and closed at exit)
        super().__init__(level)
        self.repo: Repository[Any] = repo
        self.model: type[BaseModel] = resolved or repo.model
        self.errors: ErrorPolicy = errors
        profile = repo.write_profile
        self.background = mode == "background" or (mode == "auto" and profile.batches)
        self.buffered = mode == "buffer" or (
            mode == "auto" and not self.background and profile.process_local
        )
        self._buffer: list[dict[str, Any]] = []
        """Rows a buffered handler holds; stored by :meth:`flush`, or by a
        finalizer should the handler be dropped without being closed."""
        self.batch_size: int = batch_size or profile.batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.overflow: Overflow = overflow
        self.block_timeout = block_timeout
        self.retry_max_delay = retry_max_delay
        self.flush_timeout = flush_timeout
        self.close_timeout = close_timeout
        self._backlog = max(self.batch_size, min(max_queue, backlog))
        self._follows_repo = self.model is repo.model
        """Whether the handler writes the repository's own model, and so
        follows it when it is reassigned (``repo.model = RunRecord``)."""
        self._caller_writes = profile.in_caller
        self._bind_model(self.model)
        self._reported: set[str] = set()
        self._stored = self._invalid = self._dropped = self._retries = 0
        self._init_writer_state()
        if self.background or self.buffered:
            repo.add_before_read(self.flush)
        if self.background and handle_sigterm:
            lifecycle.install_sigterm()
        self._finalizer = (
            weakref.finalize(self, _store_orphans, repo, self._buffer) if self.buffered else None
        )
        lifecycle.track_writer(self)

    def _bind_model(self, model: type[BaseModel]) -> None:
        """Make rows of *model*: the field plan and the one-pass fast path."""
        self.model = model
        self._mapper = RowMapper(model, self.repo)

    def _init_writer_state(self) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._accepted = 0  # records queued, ever (emit side, under self.lock)
        self._done = 0  # records taken care of: stored, invalid or dropped
        self._writer: threading.Thread | None = None
        self._closing = False
        self._deadline = float("inf")
        self._wake = False
        self._signalled = False  # the writer was told a full batch waits
        self._write_lock = threading.Lock()  # held while taking and writing a batch: keeps order
        self._caller_writing: int | None = None  # the thread writing a batch from emit
        self._failing = False  # the last write failed and is being retried
        self._pacing = False  # a logging call waits for the writer to catch up
        self._write_started = 0.0  # when the writer's current write began (0: none)
        self._counts_lock = threading.Lock()

    # ------------------------------------------------------------- figures
    @property
    def counts(self) -> Mapping[str, int]:
        """``stored``, ``invalid``, ``dropped``, ``queued`` and ``retries`` so far.

        ``pending`` is what a SIGKILL now would lose: records accepted but not
        yet stored (or given up), i.e. ``queued`` plus the batch being written.
        A buffered handler first writes its buffer, as a read of its store would.
        """
        if self.buffered and self._buffer:
            self.flush()
        return {
            "stored": self._stored,
            "invalid": self._invalid,
            "dropped": self._dropped,
            "queued": len(self._queue) + len(self._buffer),
            "pending": self._accepted - self._done if self.background else len(self._buffer),
            "retries": self._retries,
        }

    # ---------------------------------------------------------------- emit
    def to_data(self, record: logging.LogRecord) -> dict[str, Any]:
        """The model's fields taken from *record* (not yet validated)."""
        return self._mapper.to_data(self, record)

    def emit(self, record: logging.LogRecord) -> None:
        """Store *record*, or queue it for the writer. Never raises (unless ``errors="raise"``)."""
        if getattr(_local, "busy", False):
            return
        if self._closing:  # logged after close() or logging.shutdown (from a __del__, say)
            self._count_dropped(1)
            self._report(
                "closed",
                "a record was logged after the handler was closed (close() or "
                "logging.shutdown at exit) and is not stored; counted in "
                "handler.counts['dropped']",
            )
            return
        try:
            if self._follows_repo and self.repo.model is not self.model:
                self._bind_model(self.repo.model)  # repo.model was reassigned
            try:
                data = self._mapper.prepare(self, record)
            except RecursionError:
                raise
            except Exception as exc:  # its message cannot be made: wrong format args, __str__
                if self.errors == "raise":
                    raise
                self._count_invalid()
                self._report(
                    f"unmappable:{type(exc).__name__}",
                    f"a record could not be turned into a row ({exc!r}) and is not stored; "
                    "further such records are only counted in handler.counts['invalid']",
                )
                return
            if self.errors == "raise":
                self._mapper.check(data)
            if self.background:
                self._enqueue(data)
            elif self.buffered:
                self._hold(data)
            else:
                self._write([data])
        except ValidationError:
            if self.errors == "raise":
                raise
            self._count_invalid()
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception as exc:
            if self.errors == "raise":
                raise
            self._count_dropped(1)
            self._report(f"emit:{type(exc).__name__}", f"a record could not be handled: {exc!r}")

    def _hold(self, data: dict[str, Any]) -> None:
        """Buffer mode: keep the row; write the buffer once it holds a batch."""
        if type(data) is Unchecked:
            rows = self._rows([data])
            if not rows:
                return
            data = rows[0]
        buffer = self._buffer
        buffer.append(data)
        if len(buffer) >= self.batch_size:
            self._write_buffer()

    def _write_buffer(self) -> None:
        self.acquire()  # emit holds it already; a reader's flush waits for emit
        try:
            rows = self._buffer[:]
            self._buffer.clear()
            if rows:
                self._write(rows)
        finally:
            self.release()

    def _enqueue(self, data: dict[str, Any]) -> None:
        if self._writer is None:
            self._start_writer()
        queue = self._queue
        if len(queue) >= self.max_queue and not self._wait_for_room():
            self._count_dropped(1)
            self._report(
                "overflow",
                f"the queue is full ({self.max_queue} records) and the store does not keep up; "
                "records are being dropped (see handler.counts['dropped'])",
            )
            return
        queue.append(data)
        self._accepted += 1
        n = len(queue)
        if n >= self.batch_size:
            if (
                self._caller_writes
                and not self._failing
                and self._write_lock.acquire(blocking=False)
            ):
                self._write_from_caller()
                return
            if not self._signalled:
                self._signalled = True
                with self._cv:
                    self._cv.notify_all()
        if n >= self._backlog and not self._failing and self._writer_alive():
            self._pace()

    def _write_from_caller(self) -> None:
        """Write the queue's oldest batch from this logging call (``_write_lock`` held).

        For stores whose batch write is quick work under the GIL (a CSV
        append), handing each batch to the writer thread costs more than the
        write. A failing or refused batch goes back to the head of the queue
        for the writer thread, which retries and isolates bad records, so the
        logging call never waits for an unreachable store.
        """
        self._caller_writing = threading.get_ident()
        batch: list[dict[str, Any]] = []
        left: list[dict[str, Any]] = []  # what goes back to the queue unless stored
        try:
            batch = left = self._take()
            prior = getattr(_local, "busy", False)
            _local.busy = True
            try:
                left = self._rows(batch)  # the invalid ones are done with
                if left:
                    self.repo.insert_rows(left)
                    self._stored += len(left)
                left = []
            except Exception:  # the writer thread retries, isolates and reports it
                self._failing = True
            finally:
                _local.busy = prior
        finally:  # an exception (KeyboardInterrupt) requeues what was not stored
            with self._cv:
                self._queue.extendleft(reversed(left))
                self._done += len(batch) - len(left)
                self._cv.notify_all()
            self._caller_writing = None
            self._write_lock.release()
            lifecycle.run_deferred_sigterm()

    def _pace(self) -> None:
        """Wait (at most block_timeout) while the writer, storing fine, is far behind.

        A thread that logs flat out can starve the writer of the GIL; then the
        queue, and what a SIGKILL would lose, grows up to ``max_queue``. Waiting
        here keeps it near ``backlog`` records while the store works. An
        unreachable store does not pace, nor does one whose current write
        has taken longer than ``_STALLED`` (a SQLite file locked by another
        process, a server that stopped answering): its records wait in the queue.
        """
        target = self._backlog // 2

        def done() -> bool:
            started = self._write_started
            stalled = started and time.monotonic() - started > _STALLED
            return len(self._queue) <= target or self._failing or self._closing or bool(stalled)

        deadline = time.monotonic() + self.block_timeout
        with self._cv:
            self._pacing = True
            try:
                self._cv.notify_all()
                while not done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    # woken by the writer's progress, or soon enough to see it stall
                    self._cv.wait(min(left, _STALLED / 2))
            finally:
                self._pacing = False

    def _wait_for_room(self) -> bool:
        if self.overflow == "drop":
            return False
        deadline = time.monotonic() + self.block_timeout
        with self._cv:
            self._cv.notify_all()
            while len(self._queue) >= self.max_queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    # -------------------------------------------------------------- writing
    def _rows(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate the :class:`~tasklog.mapper.Unchecked` *items* into rows;
        count and report the invalid ones."""
        return self._mapper.rows(items, self._invalid_item)

    def _invalid_item(self, exc: ValidationError) -> None:
        self._count_invalid()
        if self.errors == "warn":
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ())) or "record"
            self._report(
                f"invalid:{where}:{err.get('type')}",
                f"a record does not fit {self.model.__name__} and is not stored "
                f"({where}: {err.get('msg')}); further such records are only counted "
                "in handler.counts['invalid']",
            )

    def _write(self, items: list[dict[str, Any]]) -> None:
        """Validate and store *items*, retrying a store that is briefly unreachable."""
        prior = getattr(_local, "busy", False)
        _local.busy = True
        try:
            rows = self._rows(items)
            if rows:
                self._store(rows)
        finally:
            _local.busy = prior

    def _store(self, rows: list[dict[str, Any]]) -> None:
        """Insert *rows* as one batch; a refused batch is split to isolate the bad rows."""
        delay = 0.05
        sync_deadline = 0.0
        while True:
            try:
                self._write_started = time.monotonic()
                try:
                    self.repo.insert_rows(rows)
                finally:
                    self._write_started = 0.0
            except Exception as exc:
                if self.repo.is_transient(exc):
                    now = time.monotonic()
                    if not sync_deadline:
                        sync_deadline = now + self.block_timeout
                    give_up = now > (self._deadline if self.background else sync_deadline)
                    if not give_up:
                        self._retries += 1
                        self._failing = True
                        self._report(
                            "transient",
                            f"the store is unreachable ({exc.__class__.__name__}); "
                            "retrying, records are kept meanwhile",
                        )
                        self._sleep(delay)
                        delay = min(delay * 2, self.retry_max_delay)
                        continue
                    self._drop(len(rows), f"the store stayed unreachable: {exc!r}")
                    return
                if len(rows) > 1:  # bisect: O(log n) more writes per refused record
                    half = len(rows) // 2
                    self._store(rows[:half])
                    self._store(rows[half:])
                    return
                self._count_invalid()
                self._report(
                    f"refused:{type(exc).__name__}",
                    f"the store refused a record: {exc!r}; counted in handler.counts['invalid']",
                )
                return
            else:
                self._stored += len(rows)
                self._failing = False
                return

    def _sleep(self, seconds: float) -> None:
        if threading.current_thread() is self._writer:
            with self._cv:
                self._cv.notify_all()  # a paced logging call stops waiting for a failing store
                self._cv.wait_for(lambda: time.monotonic() > self._deadline, timeout=seconds)
        else:
            time.sleep(seconds)

    def _count_invalid(self, n: int = 1) -> None:
        with self._counts_lock:  # counted from logging calls and the writer thread
            self._invalid += n

    def _count_dropped(self, n: int) -> None:
        with self._counts_lock:
            self._dropped += n

    def _drop(self, n: int, why: str) -> None:
        self._count_dropped(n)
        self._report("dropped", f"{n} record(s) dropped: {why}")

    # --------------------------------------------------------- writer thread
    def _start_writer(self) -> None:
        with self._cv:
            if self._writer is not None:
                return
            thread = threading.Thread(
                target=_writer_main, args=(weakref.ref(self),), name="tasklog-writer", daemon=True
            )
            self._writer = thread
        thread.start()

    def _await_work(self) -> bool:
        """Wait until a batch is due; False when closed and drained."""
        with self._cv:
            started = None
            while True:
                n = len(self._queue)
                if n >= self.batch_size or (n and (self._closing or self._wake)):
                    return True
                if n and started is not None and time.monotonic() - started >= self.flush_interval:
                    return True
                if not n and self._closing:
                    return False
                if n and started is None:
                    started = time.monotonic()
                self._cv.wait(self.flush_interval if n else 1.0)

    def _take(self) -> list[dict[str, Any]]:
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

    # --------------------------------------------------------- flush & close
    def flush(self) -> None:
        """Return once every record accepted so far is stored (or given up)."""
        if self.buffered:
            self._write_buffer()
            return
        if not self.background or self._writer is None:
            return
        if threading.current_thread() is self._writer:
            return
        target = self._accepted
        timeout = self.flush_timeout
        if self._deadline != float("inf"):  # exiting or closing: bounded
            left = max(0.0, self._deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        with self._cv:
            self._wake = True
            self._cv.notify_all()
            self._cv.wait_for(
                lambda: self._done >= target or not self._writer_alive(), timeout=timeout
            )

    def _flush_for_exit(self) -> None:
        """Drain the queue within ``close_timeout``, without blocking on a held lock."""
        if not self.background or not self._writer_alive():
            return
        if self._deadline == float("inf"):
            self._deadline = time.monotonic() + self.close_timeout
        target = self._accepted
        while self._done < target and self._writer_alive():
            left = self._deadline - time.monotonic()
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

    def _writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def close(self) -> None:
        """Write what is queued (retrying up to ``close_timeout``), stop the writer, close."""
        if not self._closing:
            with self._cv:
                if self._deadline == float("inf"):
                    self._deadline = time.monotonic() + self.close_timeout
                self._closing = True
                self._cv.notify_all()
            writer = self._writer
            if writer is not None and writer is not threading.current_thread():
                writer.join(self.close_timeout + 1.0)
            # a logging call in another thread may be writing a batch: let it finish
            if self._write_lock.acquire(timeout=self.close_timeout):
                self._write_lock.release()
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._drop(left, "the handler was closed before they could be stored")
            if self.buffered:
                self._write_buffer()
            if self._finalizer is not None:
                self._finalizer.detach()
            if self.background or self.buffered:
                self.repo.remove_before_read(self.flush)
            lifecycle.untrack_writer(self)
            if self._owns_repo:
                with contextlib.suppress(Exception):
                    self.repo.close()
        super().close()

    # ------------------------------------------------------------ reporting
    def _report(self, cause: str, text: str) -> None:
        if self.errors != "warn" or cause in self._reported:
            return
        self._reported.add(cause)
        with contextlib.suppress(Exception):  # stderr itself is gone: nothing left to tell
            sys.stderr.write(f"tasklog: {self.name or 'RepoHandler'} ({self.repo!r}): {text}\n")

    def _after_fork_in_child(self) -> None:
        """A forked child starts with an empty queue and no writer of its own yet."""
        self._init_writer_state()

    def __repr__(self) -> str:
        """Handler, level and repository."""
        level = logging.getLevelName(self.level)
        return f"<RepoHandler {self.repo!r} ({level})>"


def _writer_main(ref: weakref.ref[RepoHandler]) -> None:
    _local.busy = True
    while True:
        handler = ref()
        if handler is None:
            return
        try:
            if not handler._await_work():
                return
            with handler._write_lock:
                batch = handler._take()
                try:
                    handler._write(batch)
                finally:
                    handler._finish(len(batch))
        except Exception as exc:  # a bug must not stop the writer silently
            handler._report("writer", f"the writer thread hit an error: {exc!r}")
        del handler


def _store_orphans(repo: Repository[Any], rows: list[dict[str, Any]]) -> None:
    """Store what a buffered handler held when it was dropped without being closed."""
    if rows:
        with contextlib.suppress(Exception):  # at exit or in a finalizer: nothing to tell
            repo.insert_rows(rows[:])
        rows.clear()
