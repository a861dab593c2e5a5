"""RepoHandler: record to model mapping, error policy, concurrency, configuration."""

from __future__ import annotations

import io
import logging
import logging.config
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _workers import log_records
from conftest import store_url
from pydantic import BaseModel

from tasklog import (
    ActionFilter,
    CSVFileRepo,
    LogRecord,
    MemoryRepo,
    MinimalRecord,
    MinimalRunRecord,
    RepoHandler,
    RunRecord,
    SQLRepo,
    TaskRunRecord,
    open_repo,
)


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def _task(**extra: Any) -> dict[str, Any]:
    return {"task_name": "job", "action": "log", **extra}


class WithUser(BaseModel):
    """A user model with fields filled from ``extra``."""

    task_name: str
    action: str
    created: float
    message: str
    user: int
    tags: list[str] = []


class BrokenRepo(MemoryRepo[Any]):
    """A store whose every write fails."""

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Fail."""
        msg = "the disk is on fire"
        raise RuntimeError(msg)


class UnreachableRepo(MemoryRepo[Any]):
    """A store that is never reachable (a transient error, retried)."""

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Fail as a network would."""
        msg = "connection refused"
        raise ConnectionRefusedError(msg)


class FlakyRepo(MemoryRepo[Any]):
    """A store that is unreachable for its first two writes, then recovers."""

    failures = 2

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Fail transiently a few times, then store."""
        if self.failures:
            self.failures -= 1
            msg = "database restarting"
            raise ConnectionResetError(msg)
        super().insert_rows(rows)


class TestMapping:
    """A LogRecord becomes a model instance field by field."""

    def test_repo_object(self) -> None:
        """A handler built on a repository object stores into it; handler.repo is it."""
        repo = MemoryRepo()
        handler = RepoHandler(repo)
        _logger("t.map.obj", handler).info("hi", extra=_task(run_id="r1"))
        got = repo.filter_by().all()
        assert (repo, 1, "job", "log", "r1") == (
            handler.repo, len(got), got[0].task_name, got[0].action, got[0].run_id
        )

    def test_url(self, tmp_path: Path) -> None:
        """A handler built on a URL opens that repository (model as dotted path)."""
        handler = RepoHandler(f"sqlite:///{tmp_path / 'x.db'}", model="tasklog.TaskRunRecord")
        _logger("t.map.url", handler).info("hi", extra=_task())
        handler.flush()
        assert (SQLRepo, TaskRunRecord, ["hi"]) == (
            type(handler.repo), handler.repo.model, [r.message for r in handler.repo]
        )

    def test_log_record_fields(self) -> None:
        """message, formatted_message and the LogRecord attributes map by name."""
        repo = MemoryRepo(model=LogRecord)
        handler = RepoHandler(repo)
        handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        _logger("t.map.fields", handler).warning("x=%s", 5, extra=_task())
        got = repo.filter_by().first()
        assert got is not None
        assert (
            "x=5", "[WARNING] x=5", "x=%s", "WARNING", 30, "t.map.fields",
            "test_handler", os.getpid(), None,
        ) == (
            got.message, got.formatted_message, got.msg, got.levelname, got.levelno, got.name,
            got.module, got.process, got.exc_text,
        )

    def test_exc_text(self) -> None:
        """exc_text is the formatted traceback when the record carries exc_info."""
        repo = MemoryRepo(model=LogRecord)
        logger = _logger("t.map.exc", RepoHandler(repo))
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed", extra=_task(action="fail"))
        got = repo.filter_by().first()
        assert got is not None
        assert (True, True, "failed") == (
            got.exc_text.startswith("Traceback (most recent call last):"),
            got.exc_text.rstrip().endswith("ValueError: boom"),
            got.message,
        )

    def test_run_record_host(self) -> None:
        """RunRecord carries the host name and run id."""
        repo = MemoryRepo(model=RunRecord)
        _logger("t.map.host", RepoHandler(repo)).info("hi", extra=_task(run_id="r"))
        got = repo.filter_by().first()
        assert got is not None
        assert (socket.gethostname(), "r") == (got.host, got.run_id)

    def test_task_run_record_process(self) -> None:
        """TaskRunRecord carries host and process id; missing optional fields stay None."""
        repo = MemoryRepo(model=TaskRunRecord)
        _logger("t.map.proc", RepoHandler(repo)).info("hi %s", "there", extra=_task())
        got = repo.filter_by().first()
        assert got is not None
        assert (socket.gethostname(), os.getpid(), "hi there", None, None) == (
            got.host, got.process, got.message, got.start, got.exc_text
        )

    def test_user_model_extra_fields(self) -> None:
        """A user model's own fields are filled from extra; what it lacks is not stored."""
        repo = MemoryRepo(model=WithUser)
        _logger("t.map.user", RepoHandler(repo)).info(
            "hi", extra=_task(user=123, tags=["a"], ignored="x")
        )
        got = repo.filter_by().first()
        assert got is not None
        assert ({"task_name", "action", "created", "message", "user", "tags"}, 123, ["a"]) == (
            set(got.model_dump()), got.user, got.tags
        )

    def test_handler_model_for_repo_object(self) -> None:
        """model= on a repository object validates records against that model first."""
        repo = MemoryRepo(model=MinimalRecord)
        handler = RepoHandler(repo, model=WithUser, errors="ignore")
        logger = _logger("t.map.model", handler)
        logger.info("no user", extra=_task())
        logger.info("user", extra=_task(user=1))
        assert (1, 1) == (handler.counts["invalid"], len(repo))

    def test_unknown_model_path(self) -> None:
        """A dotted model path that names no model is a ValueError."""
        with pytest.raises(ValueError, match=r"no\.such\.Model"):
            RepoHandler(MemoryRepo(), model="no.such.Model")


class TestErrors:
    """errors="warn" / "ignore" / "raise", counts, and a broken store."""

    def test_warn_once_per_cause(self, capsys: pytest.CaptureFixture[str]) -> None:
        """errors="warn" reports each cause once on stderr and counts every record."""
        handler = RepoHandler(MemoryRepo())
        logger = _logger("t.err.warn", handler)
        for _ in range(3):
            logger.info("no task")
        for _ in range(2):
            logger.info("no action", extra={"task_name": "t"})
        logger.info("ok", extra=_task())
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tasklog")]
        assert (2, 5, 1) == (len(lines), handler.counts["invalid"], handler.counts["stored"])

    def test_ignore(self, capsys: pytest.CaptureFixture[str]) -> None:
        """errors="ignore" counts silently."""
        handler = RepoHandler(MemoryRepo(), errors="ignore")
        _logger("t.err.ignore", handler).info("no task")
        assert ("", 1) == (capsys.readouterr().err, handler.counts["invalid"])

    def test_raise(self) -> None:
        """errors="raise" raises from the logging call."""
        logger = _logger("t.err.raise", RepoHandler(MemoryRepo(), errors="raise"))
        with pytest.raises(ValueError, match="task_name"):
            logger.info("no task")

    def test_invalid_errors_option(self) -> None:
        """An unknown errors= value is a ValueError."""
        with pytest.raises(ValueError, match="errors"):
            RepoHandler(MemoryRepo(), errors="loud")  # type: ignore[arg-type]

    def test_counts(self) -> None:
        """counts has stored, invalid and dropped."""
        handler = RepoHandler(MemoryRepo(), errors="ignore")
        logger = _logger("t.err.counts", handler)
        logger.info("ok", extra=_task())
        logger.info("ok", extra=_task())
        logger.info("bad")
        counts = handler.counts
        assert (2, 1, 0) == (counts["stored"], counts["invalid"], counts["dropped"])

    @pytest.mark.parametrize("mode", ["sync", "background"])
    def test_broken_store_never_raises(
        self, mode: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """emit never raises into the caller when the store's writes fail."""
        handler = RepoHandler(BrokenRepo(), mode=mode)  # type: ignore[arg-type]
        logger = _logger(f"t.err.broken.{mode}", handler)
        for i in range(3):
            logger.info("x %s", i, extra=_task())
        handler.flush()
        counts = handler.counts
        assert (0, 3, True) == (
            counts["stored"], counts["invalid"] + counts["dropped"],
            "disk is on fire" in capsys.readouterr().err,
        )

    @pytest.mark.parametrize("mode", ["sync", "buffer", "background"])
    def test_warn_in_background(self, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Invalid records are counted and reported once in both write modes."""
        handler = RepoHandler(MemoryRepo(), mode=mode)  # type: ignore[arg-type]
        logger = _logger(f"t.err.bgwarn.{mode}", handler)
        for _ in range(4):
            logger.info("no task")
        handler.flush()
        lines = [ln for ln in capsys.readouterr().err.splitlines() if "task_name" in ln]
        assert (1, 4) == (len(lines), handler.counts["invalid"])

    @pytest.mark.parametrize("mode", ["sync", "buffer", "background"])
    def test_transient_outage_is_retried(self, mode: str) -> None:
        """Records written while the store is briefly unreachable are retried, not lost."""
        repo = FlakyRepo()
        handler = RepoHandler(repo, mode=mode, retry_max_delay=0.01, errors="ignore")  # type: ignore[arg-type]
        logger = _logger(f"t.err.flaky.{mode}", handler)
        for i in range(3):
            logger.info("x", extra=_task(run_id=str(i)))
        handler.flush()
        assert (["0", "1", "2"], 3, 0) == (
            [r.run_id for r in repo], handler.counts["stored"], handler.counts["dropped"]
        )

    def test_bad_message_args_never_raise(self) -> None:
        """A record whose message cannot be formatted is not stored and does not raise."""
        repo = MemoryRepo(model=LogRecord)
        handler = RepoHandler(repo, errors="ignore")
        _logger("t.err.args", handler).info("%s %s", "only one", extra=_task())
        assert (0, 1) == (len(repo), handler.counts["invalid"] + handler.counts["dropped"])

    def test_unreachable_store_never_raises(self) -> None:
        """A store that stays unreachable makes records dropped, counted, never raised."""
        handler = RepoHandler(UnreachableRepo(), mode="sync", block_timeout=0.1,
                              retry_max_delay=0.02, errors="ignore")
        _logger("t.err.unreachable", handler).info("x", extra=_task())
        assert (0, 1) == (handler.counts["stored"], handler.counts["dropped"])

    def test_extra_collision_is_logging_error(self) -> None:
        """A record whose extra has no task fields does not disturb the handler."""
        handler = RepoHandler(MemoryRepo(), errors="ignore")
        _logger("t.err.plain", handler).info("plain %s", "line")
        assert {"stored": 0, "invalid": 1, "dropped": 0} == {
            k: handler.counts[k] for k in ("stored", "invalid", "dropped")
        }


class TestReadsSeeWrites:
    """A query right after logging sees the records, even from a background writer."""

    @pytest.mark.parametrize("mode", ["sync", "background"])
    def test_query_after_logging(
        self, make_repo: Any, store: str, mode: str
    ) -> None:
        """Records logged just before a query are returned by it, on every store."""
        repo = make_repo(store)
        handler = RepoHandler(repo, mode=mode)  # type: ignore[arg-type]
        logger = _logger(f"t.rsw.{store}.{mode}", handler)
        for i in range(50):
            logger.info("x", extra=_task(run_id=str(i)))
        assert (50, "49") == (
            repo.filter_by(task_name="job").count(), repo.filter_by().last().run_id
        )

    @pytest.mark.parametrize("store_name", ["csv", "sqlite"])
    def test_other_repo_object_sees_writes(
        self, store_name: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """Another repository object on the same file/table sees a background handler's records."""
        url = store_url(store_name, tmp_path, request)
        handler = RepoHandler(url, mode="background")
        logger = _logger(f"t.rsw.other.{store_name}", handler)
        reader = open_repo(url)
        try:
            for _ in range(20):
                logger.info("x", extra=_task())
            assert 20 == len(reader)
        finally:
            reader.close()

    def test_flush_and_close(self, tmp_path: Path) -> None:
        """flush() stores all accepted records; close() is idempotent; later records are ignored."""
        repo = CSVFileRepo(tmp_path / "f.csv")
        handler = RepoHandler(repo, mode="background", flush_interval=60)
        logger = _logger("t.rsw.flush", handler)
        for _ in range(10):
            logger.info("x", extra=_task())
        handler.flush()
        stored = handler.counts["stored"]
        handler.close()
        handler.close()
        logger.info("after close", extra=_task())
        assert (10, 10) == (stored, len(CSVFileRepo(tmp_path / "f.csv")))

    def test_close_releases_repo_opened_from_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """close() closes a repository the handler opened from a URL, not one it was given."""
        closed: list[Any] = []

        class Closing(MemoryRepo[Any]):
            def close(self) -> None:
                closed.append(self)

        monkeypatch.setattr("tasklog.handler.open_repo", lambda url, **options: Closing())
        owned = RepoHandler("memory://")
        given = RepoHandler(Closing())
        owned.close()
        given.close()
        assert [owned.repo] == closed

    def test_close_stores_queued_records(self, tmp_path: Path) -> None:
        """close() writes what is still queued before it returns."""
        path = tmp_path / "c.csv"
        handler = RepoHandler(CSVFileRepo(path), mode="background", flush_interval=60)
        logger = _logger("t.rsw.close", handler)
        for _ in range(25):
            logger.info("x", extra=_task())
        logger.removeHandler(handler)
        handler.close()
        assert (25, 25) == (handler.counts["stored"], len(CSVFileRepo(path)))


class BatchSpy(MemoryRepo[Any]):
    """A memory store that remembers the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Note the batch, then store it."""
        self.batches.append(len(rows))
        super().insert_rows(rows)


class TestBufferMode:
    """mode="buffer" (the default for memory): batches written by the logging
    calls themselves, and every read of the store sees them first."""

    def test_memory_store_is_buffered_by_default(self) -> None:
        """A memory store gets buffer mode; CSV and SQL stores the writer thread."""
        memory = RepoHandler(MemoryRepo())
        sql = RepoHandler("sqlite://")
        assert ((True, False), (False, True)) == (
            (memory.buffered, memory.background), (sql.buffered, sql.background)
        )
        memory.close()
        sql.close()

    def test_batches_and_reads(self) -> None:
        """Full batches are written as they fill; a read writes the rest first."""
        repo = BatchSpy()
        handler = RepoHandler(repo, batch_size=10)
        logger = _logger("t.buffer.batches", handler)
        for i in range(25):
            logger.info("x", extra=_task(run_id=str(i)))
        written = list(repo.batches)
        seen = [r.run_id for r in repo.filter_by(task_name="job")]
        assert ([10, 10], [10, 10, 5], [str(i) for i in range(25)], 25) == (
            written, repo.batches, seen, handler.counts["stored"]
        )

    @pytest.mark.parametrize(
        "read",
        [len, lambda r: r.filter_by().count(), lambda r: len(r.filter_by(action="log").all()),
         lambda r: r.filter_by().last() and 3, lambda r: round(r.utilization * 10)],
    )
    def test_every_read_sees_buffered_records(self, read: Any) -> None:
        """Counting, querying, .last() and utilization all see records still buffered."""
        repo = MemoryRepo(max_size=10)
        logger = _logger("t.buffer.reads", RepoHandler(repo))
        for _ in range(3):
            logger.info("x", extra=_task())
        assert read(repo) == 3

    def test_dropped_handler_stores_its_buffer(self) -> None:
        """A handler dropped without close() still stores what it held."""
        import gc

        repo = MemoryRepo()
        handler = RepoHandler(repo)
        logger = _logger("t.buffer.dropped", handler)
        logger.info("x", extra=_task())
        logger.removeHandler(handler)
        del handler
        gc.collect()
        assert [r.task_name for r in repo] == ["job"]

    def test_close_writes_the_buffer(self, tmp_path: Path) -> None:
        """mode="buffer" works on any store; close() writes what is held."""
        url = f"csv://{tmp_path / 'b.csv'}"
        handler = RepoHandler(url, mode="buffer")
        logger = _logger("t.buffer.close", handler)
        for i in range(5):
            logger.info("x", extra=_task(run_id=str(i)))
        handler.close()
        assert [str(i) for i in range(5)] == [r.run_id for r in open_repo(url)]

    def test_readers_and_writers_in_threads(self) -> None:
        """Threads logging while others read lose nothing and never deadlock."""
        repo = MemoryRepo()
        handler = RepoHandler(repo, batch_size=7)
        logger = _logger("t.buffer.threads", handler)
        done = threading.Event()
        seen: list[list[int]] = [[], []]  # what each reader counted, in order

        def write(n: int) -> None:
            for i in range(300):
                logger.info("x", extra=_task(run_id=f"{n}-{i}"))

        def read(counts: list[int]) -> None:
            while not done.is_set():
                counts.append(repo.filter_by(task_name="job").count())

        readers = [threading.Thread(target=read, args=(counts,)) for counts in seen]
        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join(60)
        done.set()
        for t in readers:
            t.join(60)
        assert (1200, [sorted(c) for c in seen], False) == (
            len({r.run_id for r in repo}), seen, any(t.is_alive() for t in readers + writers)
        )  # no reader ever sees fewer records than before


class ThreadSpyCSV(CSVFileRepo[Any]):
    """A CSV store that notes which thread wrote each batch, and can fail."""

    def __init__(self, path: Path, fail: list[BaseException] | None = None) -> None:
        super().__init__(path)
        self.writers: list[tuple[str, int]] = []
        self.fail = fail or []

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Note the thread, fail if told to, else append."""
        self.writers.append((threading.current_thread().name, len(rows)))
        if self.fail:
            raise self.fail.pop(0)
        super().insert_rows(rows)


class TestWritesInCaller:
    """A store whose writes are quick (CSV) is written by the logging call that
    fills a batch; the writer thread keeps the timed flush and the retries."""

    def test_full_batches_written_by_the_logging_thread(self, tmp_path: Path) -> None:
        """Full batches are written in the logging thread, in order, nothing lost."""
        repo = ThreadSpyCSV(tmp_path / "c.csv")
        handler = RepoHandler(repo, batch_size=100, flush_interval=60)
        logger = _logger("t.caller.batches", handler)
        for i in range(350):
            logger.info("x", extra=_task(run_id=str(i)))
        in_caller = list(repo.writers)
        handler.flush()
        assert (
            [("MainThread", 100)] * 3, ("tasklog-writer", 50), [str(i) for i in range(350)]
        ) == (in_caller, repo.writers[-1], [r.run_id for r in repo])

    def test_failing_write_is_handed_to_the_writer(self, tmp_path: Path) -> None:
        """A failed write in the logging call is tried once there, then retried by the
        writer thread; order is kept and nothing is lost."""
        repo = ThreadSpyCSV(tmp_path / "c.csv", fail=[ConnectionResetError("down")] * 3)
        handler = RepoHandler(repo, batch_size=10, retry_max_delay=0.01, errors="ignore")
        logger = _logger("t.caller.fail", handler)
        for i in range(25):
            logger.info("x", extra=_task(run_id=str(i)))
        handler.flush()
        by_caller = [n for name, n in repo.writers if name == "MainThread"]
        assert (1, [str(i) for i in range(25)], 25, 0) == (
            len(by_caller), [r.run_id for r in repo], handler.counts["stored"],
            handler.counts["dropped"],
        )

    def test_interrupted_write_is_requeued(self, tmp_path: Path) -> None:
        """KeyboardInterrupt during a write from the logging call reaches the program,
        and the batch goes back to the queue: a later flush stores it, in order."""
        repo = ThreadSpyCSV(tmp_path / "c.csv", fail=[KeyboardInterrupt()])
        handler = RepoHandler(repo, batch_size=10, flush_interval=60)
        logger = _logger("t.caller.interrupt", handler)
        interrupted = []
        for i in range(15):
            try:
                logger.info("x", extra=_task(run_id=str(i)))
            except KeyboardInterrupt:
                interrupted.append(i)
        handler.flush()
        assert ([9], [str(i) for i in range(15)], 15) == (
            interrupted, [r.run_id for r in repo], handler.counts["stored"]
        )


class TestBatchSize:
    """The default batch size comes from the store; an explicit one wins."""

    def test_store_default_and_override(self, make_repo: Any, store: str) -> None:
        """Database servers get 5000 (each batch costs round trips; Redis packs one
        part while it stores the one before), others 1000."""
        repo = make_repo(store)
        default = RepoHandler(repo)
        chosen = RepoHandler(repo, batch_size=7)
        assert ((5000 if store in ("postgresql", "redis") else 1000), 7) == (
            default.batch_size, chosen.batch_size
        )
        default.close()
        chosen.close()

    def test_bad_batch_size(self) -> None:
        """A batch size that is not a positive integer is a ValueError naming it."""
        with pytest.raises(ValueError, match="batch_size"):
            RepoHandler(MemoryRepo(), batch_size=0)


class TestConcurrency:
    """Many threads and processes logging at once lose nothing."""

    def test_threads(self, make_repo: Any, store: str) -> None:
        """8 threads logging concurrently lose and duplicate nothing, on every store."""
        repo = make_repo(store)
        handler = RepoHandler(repo)
        logger = _logger(f"t.conc.{store}", handler)
        per_thread = 150

        def work(n: int) -> None:
            for i in range(per_thread):
                logger.info("x", extra=_task(task_name=f"th{n}", run_id=f"{n}-{i}"))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        handler.flush()
        run_ids = sorted(r.run_id for r in repo)
        expected = sorted(f"{n}-{i}" for n in range(8) for i in range(per_thread))
        assert (expected, 8 * per_thread) == (run_ids, handler.counts["stored"])

    @pytest.mark.slow
    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_processes(self, method: str, tmp_path: Path) -> None:
        """4 processes writing one SQLite file and one CSV file lose and duplicate nothing."""
        if method not in multiprocessing.get_all_start_methods():
            pytest.skip(f"no {method} start method on this platform")
        urls = [f"sqlite:///{tmp_path / 'mp.db'}", f"csv://{tmp_path / 'mp.csv'}"]
        for url in urls:  # create the stores first, as an application's setup would
            open_repo(url).close()
        ctx = multiprocessing.get_context(method)
        count = 500
        procs = [ctx.Process(target=log_records, args=(k, count, urls)) for k in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        expected = sorted(f"{k}-{i}" for k in range(4) for i in range(count))
        got = []
        for url in urls:
            repo = open_repo(url)
            got.append(sorted(r.run_id for r in repo))
            repo.close()
        assert ([0, 0, 0, 0], [expected, expected]) == ([p.exitcode for p in procs], got)


    @pytest.mark.slow
    @pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
    def test_fork_inherits_running_handler(self, tmp_path: Path) -> None:
        """Children forked while the handler's writer runs store their records, each once."""
        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("no fork on this platform")
        url = f"sqlite:///{tmp_path / 'fork.db'}"
        handler = RepoHandler(url, mode="background", flush_interval=60)
        logger = _logger("t.conc.fork", handler)
        for i in range(10):
            logger.info("parent", extra=_task(run_id=f"parent-{i}"))  # queued, writer running

        def child(k: int) -> None:
            for i in range(200):
                logger.info("child", extra=_task(run_id=f"{k}-{i}"))
            handler.close()

        procs = [multiprocessing.get_context("fork").Process(target=child, args=(k,))
                 for k in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        handler.flush()
        got = sorted(r.run_id for r in handler.repo)
        expected = sorted([f"parent-{i}" for i in range(10)]
                          + [f"{k}-{i}" for k in range(3) for i in range(200)])
        assert ([0, 0, 0], expected) == ([p.exitcode for p in procs], got)

    @pytest.mark.slow
    def test_records_stored_at_exit(self, tmp_path: Path) -> None:
        """Records accepted before the interpreter exits normally are stored (no close call)."""
        path = tmp_path / "exit.csv"
        code = (
            "import logging, tasklog\n"
            f"h = tasklog.RepoHandler({str(path)!r}, mode='background', flush_interval=60)\n"
            "log = logging.getLogger('t'); log.addHandler(h); log.setLevel(logging.INFO)\n"
            "for i in range(300):\n"
            "    log.info('x', extra={'task_name': 'exit', 'action': 'log'})\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=False)
        assert (0, "", 300) == (done.returncode, done.stderr, len(CSVFileRepo(path)))


class TestConfiguration:
    """dictConfig, ActionFilter and SQLAlchemy's own logging."""

    def test_dict_config(self, tmp_path: Path) -> None:
        """dictConfig builds a RepoHandler from a URL and a dotted model path."""
        url = f"sqlite:///{tmp_path / 'app.db'}"
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "repo": {
                        "()": "tasklog.RepoHandler",
                        "repo": url,
                        "model": "tasklog.MinimalRunRecord",
                        "level": "INFO",
                    }
                },
                "loggers": {
                    "t.dictconfig": {"handlers": ["repo"], "level": "DEBUG", "propagate": False}
                },
            }
        )
        logger = logging.getLogger("t.dictconfig")
        logger.debug("below level", extra=_task())
        logger.info("stored", extra=_task(run_id="r"))
        handler = logger.handlers[0]
        assert isinstance(handler, RepoHandler)
        handler.flush()
        assert (MinimalRunRecord, ["r"]) == (
            handler.repo.model, [r.run_id for r in handler.repo]
        )

    def test_action_filter(self) -> None:
        """ActionFilter routes only fail and crash records to another handler."""
        stream = io.StringIO()
        alert = logging.StreamHandler(stream)
        alert.setFormatter(logging.Formatter("%(action)s %(message)s"))
        alert.addFilter(ActionFilter("fail", "crash"))
        repo = MemoryRepo()
        logger = _logger("t.filter", RepoHandler(repo))
        logger.addHandler(alert)
        for action in ("run", "fail", "log", "crash", "success"):
            logger.info(action, extra=_task(action=action))
        logger.info("no action at all")
        assert (["fail fail", "crash crash"], 5) == (stream.getvalue().splitlines(), len(repo))

    def test_action_filter_accepts_enum(self) -> None:
        """ActionFilter takes Action members as well as strings."""
        from tasklog import Action

        record = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
        record.action = "fail"
        assert (True, False) == (
            ActionFilter(Action.FAIL).filter(record), ActionFilter(Action.CRASH).filter(record)
        )

    def test_action_filter_from_dict_config(self) -> None:
        """dictConfig builds an ActionFilter from an ``actions`` list."""
        stream = io.StringIO()
        logging.config.dictConfig({
            "version": 1,
            "incremental": False,
            "disable_existing_loggers": False,
            "filters": {"alerts": {"()": "tasklog.ActionFilter", "actions": ["fail", "crash"]}},
            "handlers": {
                "alert": {"class": "logging.StreamHandler", "stream": stream,
                          "filters": ["alerts"]},
            },
            "loggers": {"t.filter.dict": {"handlers": ["alert"], "level": "INFO",
                                          "propagate": False}},
        })
        logger = logging.getLogger("t.filter.dict")
        for action in ("run", "fail", "success", "crash"):
            logger.info(action, extra=_task(action=action))
        assert ["fail", "crash"] == stream.getvalue().splitlines()

    @pytest.mark.parametrize("mode", ["sync", "background"])
    def test_sqlalchemy_logging_does_not_recurse(self, tmp_path: Path, mode: str) -> None:
        """A RepoHandler on root with sqlalchemy.engine at INFO does not store its own SQL logs."""

        class AnyLine(BaseModel):
            name: str
            message: str

        repo = SQLRepo(url=f"sqlite:///{tmp_path / 'r.db'}", model=AnyLine)
        handler = RepoHandler(repo, mode=mode, errors="ignore")  # type: ignore[arg-type]
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            logging.getLogger("t.app").info("hello")
            handler.flush()
        finally:
            root.removeHandler(handler)
            logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
        messages = [r.message for r in repo.filter_by(name="t.app")]
        handler.close()
        repo.close()
        assert ["hello"] == messages


def test_counts_is_mapping() -> None:
    """handler.counts is a mapping with stored/invalid/dropped."""
    counts = RepoHandler(MemoryRepo()).counts
    assert set() == {"stored", "invalid", "dropped"} - set(counts)


def test_repr_mentions_repo(tmp_path: Path) -> None:
    """The handler's repr names its repository."""
    handler = RepoHandler(CSVFileRepo(tmp_path / "r.csv"))
    assert (True, True) == ("RepoHandler" in repr(handler), "CSVFileRepo" in repr(handler))
    handler.close()

