"""The writers (tasklog.writer) on their own, without a handler, and how a handler picks one."""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from typing import Any

import pytest

import tasklog
from tasklog.repos.base import WriteProfile
from tasklog.writer import (
    BackgroundWriter,
    BufferWriter,
    CallerWriter,
    SyncWriter,
    Writer,
    WriterOptions,
    make_writer,
)

Row = dict[str, Any]


class Outage(Exception):
    """What the fake store raises while it is unreachable."""


class FakeStore:
    """A store that is unreachable for its first *failures* writes, refuses rows
    marked ``bad``, or hangs (every write transient) with *down*."""

    def __init__(
        self, profile: WriteProfile | None = None, failures: int = 0, down: bool = False
    ) -> None:
        self.write_profile = profile or WriteProfile()
        self.failures = failures
        self.down = down
        self.rows: list[Row] = []
        self.writes = 0
        self.lock = threading.Lock()

    def insert_rows(self, rows: list[Row]) -> None:
        with self.lock:
            self.writes += 1
            if self.down or self.failures > 0:
                self.failures -= 1
                raise Outage("unreachable")
            if any(row.get("bad") for row in rows):
                msg = "refused"
                raise ValueError(msg)
            self.rows.extend(rows)

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, Outage)


def _writer(kind: type[Writer], store: FakeStore, **options: Any) -> Any:
    reports: list[str] = []
    opts = WriterOptions(**options)
    args: list[Any] = [store, opts, lambda items: items, lambda c, t: reports.append(c)]
    if kind is BufferWriter:
        args.append(threading.RLock())
    writer = kind(*args)
    writer.reports = reports
    return writer


def test_a_briefly_unreachable_store_is_retried_and_nothing_is_lost() -> None:
    store = FakeStore(failures=3)
    writer = _writer(SyncWriter, store, retry_max_delay=0.01)
    writer.put({"n": 1})
    assert store.rows == [{"n": 1}]
    counts = writer.counts()
    assert (counts["stored"], counts["retries"], counts["dropped"]) == (1, 3, 0)
    assert writer.reports == ["transient", "transient", "transient"]


def test_a_store_that_stays_down_drops_after_block_timeout_and_says_so() -> None:
    store = FakeStore(down=True)
    writer = _writer(SyncWriter, store, block_timeout=0.2, retry_max_delay=0.05)
    started = time.monotonic()
    writer.put({"n": 1})
    assert time.monotonic() - started < 2
    assert writer.counts()["dropped"] == 1
    assert "dropped" in writer.reports


def test_bisection_stores_the_good_rows_of_a_refused_batch() -> None:
    store = FakeStore()
    writer = _writer(BufferWriter, store, batch_size=16)
    rows = [{"n": i, "bad": i == 11} for i in range(16)]
    for row in rows:
        writer.put(row)
    assert [r["n"] for r in store.rows] == [i for i in range(16) if i != 11]
    counts = writer.counts()
    assert (counts["stored"], counts["invalid"]) == (15, 1)
    assert writer.reports == ["refused:ValueError"]


def test_buffer_holds_rows_until_a_batch_or_a_flush() -> None:
    store = FakeStore()
    writer = _writer(BufferWriter, store, batch_size=3)
    writer.put({"n": 1})
    writer.put({"n": 2})
    assert store.rows == []
    assert writer.counts()["stored"] == 2  # counts() writes the buffer, as a read would
    writer.put({"n": 3})
    writer.close()
    assert [r["n"] for r in store.rows] == [1, 2, 3]


def test_close_on_a_hung_store_returns_by_its_deadline_and_counts_the_rest() -> None:
    store = FakeStore(down=True)
    writer = _writer(BackgroundWriter, store, close_timeout=0.5, retry_max_delay=0.05)
    for i in range(10):
        writer.put({"n": i})
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 3
    counts = writer.counts()
    assert counts["stored"] == 0
    assert counts["dropped"] == 10
    assert counts["pending"] == 0


def test_background_flush_waits_until_stored() -> None:
    store = FakeStore(failures=2)
    writer = _writer(BackgroundWriter, store, flush_interval=10, retry_max_delay=0.01)
    for i in range(5):
        writer.put({"n": i})
    writer.flush()
    assert [r["n"] for r in store.rows] == list(range(5))
    assert writer.counts()["pending"] == 0
    writer.close()


@pytest.mark.parametrize("kind", [BackgroundWriter, CallerWriter])
def test_counts_are_exact_under_eight_threads(kind: type[Writer]) -> None:
    store = FakeStore()
    writer = _writer(kind, store, batch_size=50, flush_interval=0.01)

    def work(t: int) -> None:
        for i in range(1000):
            writer.put({"n": (t, i)})
            writer.add("invalid")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    writer.close()
    counts = writer.counts()
    assert (counts["stored"], counts["invalid"], counts["dropped"]) == (8000, 8000, 0)
    assert len({r["n"] for r in store.rows}) == 8000


@pytest.mark.parametrize(
    ("mode", "profile", "kind"),
    [
        ("auto", WriteProfile(batches=True), BackgroundWriter),
        ("auto", WriteProfile(batches=True, in_caller=True), CallerWriter),
        ("auto", WriteProfile(process_local=True), BufferWriter),
        ("auto", WriteProfile(), SyncWriter),
        ("sync", WriteProfile(batches=True), SyncWriter),
        ("buffer", WriteProfile(batches=True), BufferWriter),
        ("background", WriteProfile(), BackgroundWriter),
    ],
)
def test_the_mode_is_chosen_once_from_options_and_profile(
    mode: Any, profile: WriteProfile, kind: type[Writer]
) -> None:
    writer = make_writer(
        FakeStore(profile), WriterOptions(mode=mode), lambda i: i, lambda c, t: None,  # type: ignore[arg-type]
        threading.RLock(),
    )
    assert type(writer) is kind
    writer.close()


def test_bad_writer_options_name_the_problem() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        WriterOptions(mode="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        WriterOptions(batch_size=0)
    with pytest.raises(TypeError, match="writer must be a WriterOptions"):
        tasklog.RepoHandler("memory://", writer={"mode": "sync"})  # type: ignore[arg-type]


def test_handler_takes_grouped_options_and_flat_ones_override_them() -> None:
    grouped = tasklog.RepoHandler("memory://", writer=WriterOptions(mode="sync", batch_size=7))
    assert type(grouped.writer) is SyncWriter
    assert grouped.batch_size == 7
    mixed = tasklog.RepoHandler(
        "memory://", writer=WriterOptions(mode="sync", batch_size=7), batch_size=9
    )
    assert (type(mixed.writer), mixed.batch_size) == (SyncWriter, 9)
    for handler in (grouped, mixed):
        handler.close()


def test_dictconfig_flat_writer_keywords(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'dc.db'}"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "tasks": {
                "()": "tasklog.RepoHandler", "repo": url, "mode": "buffer",
                "batch_size": 2, "close_timeout": 1.0,
            },
        },
        "loggers": {"tasklog.dc": {"handlers": ["tasks"], "level": "INFO"}},
    })
    logger = logging.getLogger("tasklog.dc")
    handler = logger.handlers[0]
    try:
        assert isinstance(handler, tasklog.RepoHandler)
        assert type(handler.writer) is BufferWriter
        assert handler.writer.options.close_timeout == 1.0
        logger.info("one", extra={"task_name": "dc", "action": "log"})
        logger.info("two", extra={"task_name": "dc", "action": "log"})
        assert [r.message for r in handler.repo.filter_by(task_name="dc")] == ["one", "two"]
    finally:
        logger.removeHandler(handler)
        handler.close()
