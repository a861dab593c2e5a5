"""What the handler counts and how long a logging call may wait (issue 13, items 5 and 6)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasklog import MemoryRepo, RepoHandler, SQLRepo, TaskRunRecord


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


class _Unprintable:
    def __str__(self) -> str:
        msg = "no text for this object"
        raise RuntimeError(msg)


class TestUnmappableRecords:
    """A record whose message cannot be made is invalid, not dropped."""

    def test_wrong_format_arguments(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``logger.info("%d", "x")`` is counted invalid and reported once."""
        repo = MemoryRepo(model=TaskRunRecord)
        handler = RepoHandler(repo)
        logger = _logger("tasklog.test.unmappable.args", handler)
        extra = {"task_name": "t", "action": "log"}
        logger.info("%d items", "many", extra=extra)
        logger.info("%d items", "more", extra=extra)
        logger.info("fine", extra=extra)
        handler.flush()
        counts = handler.counts
        assert (2, 0, 1) == (counts["invalid"], counts["dropped"], counts["stored"])
        err = capsys.readouterr().err
        assert 1 == err.count("could not be turned into a row")
        assert ["fine"] == [r.message for r in repo.filter_by()]

    def test_str_raises(self) -> None:
        """A message object whose ``__str__`` raises is counted invalid."""
        repo = MemoryRepo(model=TaskRunRecord)
        handler = RepoHandler(repo, errors="ignore")
        logger = _logger("tasklog.test.unmappable.str", handler)
        logger.info(_Unprintable(), extra={"task_name": "t", "action": "log"})
        handler.flush()
        assert (1, 0) == (handler.counts["invalid"], handler.counts["dropped"])

    def test_raise_policy_raises(self) -> None:
        """With ``errors="raise"`` the formatting error reaches the caller (for tests)."""
        handler = RepoHandler(MemoryRepo(model=TaskRunRecord), errors="raise")
        logger = _logger("tasklog.test.unmappable.raise", handler)
        with pytest.raises(TypeError):
            logger.info("%d items", "x", extra={"task_name": "t", "action": "log"})


def test_record_after_close_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    """A record handled after ``close()`` is counted as dropped and reported."""
    handler = RepoHandler(MemoryRepo(model=TaskRunRecord))
    handler.close()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "late", None, None)
    record.task_name = "t"
    record.action = "log"
    handler.handle(record)
    assert 1 == handler.counts["dropped"]
    assert "after the handler was closed" in capsys.readouterr().err


def test_record_from_del_after_shutdown_is_reported(tmp_path: Path) -> None:
    """A record logged from ``__del__`` after ``logging.shutdown`` does not vanish silently."""
    script = textwrap.dedent(f"""
        import atexit, logging, tasklog
        handler = tasklog.basic_config("csv://{tmp_path / 'late.csv'}")
        log = tasklog.get_task_logger("late")

        class Resource:
            def __del__(self):
                log.info("closing a resource", extra={{"action": "log"}})

        keep = Resource()
        atexit.register(lambda: None)  # logging.shutdown runs before module teardown
        log.info("early", extra={{"action": "log"}})
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == done.returncode, done.stderr
    assert "after the handler was closed" in done.stderr
    lines = (tmp_path / "late.csv").read_text().splitlines()
    assert 2 == len(lines)  # the header and the record logged before shutdown


@pytest.mark.slow
def test_locked_sqlite_does_not_stall_logging_calls(tmp_path: Path) -> None:
    """While another process holds ``BEGIN EXCLUSIVE``, logging calls do not wait for it.

    Before the fix, once ``backlog`` records were queued every logging call
    waited ``block_timeout`` (5 s) for a writer sitting in SQLite's busy wait.
    """
    db = tmp_path / "locked.db"
    repo = SQLRepo(url=f"sqlite:///{db}", model=TaskRunRecord)
    handler = RepoHandler(repo, backlog=2_000, block_timeout=5.0)
    logger = _logger("tasklog.test.locked", handler)
    extra = {"task_name": "t", "action": "log"}
    logger.info("before", extra=extra)
    handler.flush()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sqlite3, sys, time
                con = sqlite3.connect({str(db)!r}, isolation_level=None)
                con.execute("BEGIN EXCLUSIVE")
                print("locked", flush=True)
                time.sleep(4)
                con.execute("COMMIT")
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "locked" == holder.stdout.readline().strip()
        slowest = 0.0
        for i in range(8_000):
            began = time.monotonic()
            logger.info("during %d", i, extra=extra)
            slowest = max(slowest, time.monotonic() - began)
        assert holder.poll() is None, "the lock was released before the records were logged"
        # the bug made calls wait block_timeout (5 s); a stalled store is noticed in 0.25 s
        assert slowest < 2.0
    finally:
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    handler.flush()
    assert 8_001 == repo.filter_by().count()
    assert 0 == handler.counts["dropped"]
