"""Durability under faults: a database restart, SIGTERM, SIGKILL, refused records, fork, overflow.

Each test checks *what* is stored (every record exactly once, or a measured
bound), never how fast. They start processes or stop the test PostgreSQL
server, hence ``slow``; they still run by default and in CI.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import PostgresServer

from tasklog import MemoryRepo, RepoHandler, SQLRepo
from tasklog.repos import WriteProfile

pytestmark = pytest.mark.slow


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"tasklog.faults.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _log(logger: logging.Logger, numbers: range, task: str = "job") -> None:
    for i in numbers:
        logger.info("record", extra={"task_name": task, "action": "log", "run_id": str(i)})


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll *condition* (a state, not a speed: the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _stored_ids(url: str, table: str) -> list[int]:
    """The run ids in the table, read through a fresh repository (its own connections)."""
    repo: SQLRepo[Any] = SQLRepo(url=url, table=table)
    try:
        return [int(r.run_id) for r in repo.filter_by().all()]
    finally:
        repo.close()


@pytest.fixture(name="pg_table")
def _pg_table(postgres_url: str) -> Iterator[str]:
    """A fresh table name on the test server, dropped afterwards."""
    name = f"f_{uuid.uuid4().hex[:12]}"
    yield name
    repo: SQLRepo[Any] = SQLRepo(url=postgres_url, table=name)
    repo.drop()
    repo.close()


@pytest.mark.postgres
def test_postgres_restart_loses_nothing(
    postgres_server: PostgresServer, postgres_url: str, pg_table: str
) -> None:
    """Records logged before, during and after a server stop are all stored, once each."""
    repo: SQLRepo[Any] = SQLRepo(url=postgres_url, table=pg_table)
    handler = RepoHandler(repo, flush_interval=0.05, retry_max_delay=0.2)
    logger = _logger(handler)
    _log(logger, range(300))
    handler.flush()
    postgres_server.stop_only()
    try:
        _log(logger, range(300, 600))
        retried = _wait_until(lambda: handler.counts["retries"] > 0)
    finally:
        postgres_server.start_again()
    _log(logger, range(600, 900))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    repo.close()
    assert (True, 900, 0, list(range(900))) == (
        retried, counts["stored"], counts["dropped"], _stored_ids(postgres_url, pg_table)
    )


@pytest.mark.postgres
def test_refused_record_costs_only_itself(postgres_url: str, pg_table: str) -> None:
    """In one batch, a record the model rejects and one PostgreSQL refuses (a NUL byte
    in a text field) are counted as invalid; all the others are stored, in order."""
    repo: SQLRepo[Any] = SQLRepo(url=postgres_url, table=pg_table)
    handler = RepoHandler(repo, errors="ignore", batch_size=1000, flush_interval=60)
    logger = _logger(handler)
    _log(logger, range(100))
    logger.info("no task fields")  # fails validation
    _log(logger, range(100, 150))
    _log(logger, range(150, 151), task="bad\x00name")  # refused by the database
    _log(logger, range(151, 200))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    repo.close()
    expected = [i for i in range(200) if i != 150]
    assert (199, 2, 0, expected) == (
        counts["stored"], counts["invalid"], counts["dropped"], _stored_ids(postgres_url, pg_table)
    )


def test_invalid_record_in_batch_sqlite(tmp_path: Path) -> None:
    """A batch with one record that does not fit the model stores all the others."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    repo: SQLRepo[Any] = SQLRepo(url=url, table="t")
    handler = RepoHandler(repo, errors="ignore", flush_interval=60)
    logger = _logger(handler)
    _log(logger, range(10))
    logger.info("bad", extra={"task_name": "job"})  # no action
    _log(logger, range(10, 20))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    repo.close()
    assert (20, 1, list(range(20))) == (counts["stored"], counts["invalid"], _stored_ids(url, "t"))


_CHILD = """
import logging, sys, time
from tasklog import RepoHandler, SQLRepo
url, n = sys.argv[1], int(sys.argv[2])
flush_interval, batch_size = float(sys.argv[3]), int(sys.argv[4])
handler = RepoHandler(SQLRepo(url=url, table="t"), batch_size=batch_size,
                      flush_interval=flush_interval, max_queue=10**6)
logger = logging.getLogger("child")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(handler)
for i in range(n):
    logger.info("r", extra={"task_name": "job", "action": "log", "run_id": str(i)})
print(json.dumps({"logged": n, "pending": handler.counts["pending"]}), flush=True)
time.sleep(120)
"""


def _start_child(
    url: str, n: int, flush_interval: float, batch_size: int
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    script = "import json\n" + textwrap.dedent(_CHILD)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, url, str(n), str(flush_interval), str(batch_size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"child failed: {err}")
    return proc, json.loads(line)


def test_sigterm_loses_nothing(tmp_path: Path) -> None:
    """A process ended by SIGTERM first stores every queued record, then dies of SIGTERM.

    The writer would hold the records for a minute (flush_interval=60, a batch
    bigger than the log), so without the SIGTERM handling all would be lost.
    """
    url = f"sqlite:///{tmp_path / 'term.db'}"
    proc, report = _start_child(url, 5000, 60.0, 10_000)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert (-signal.SIGTERM, 5000, list(range(5000))) == (
        proc.returncode, report["pending"], _stored_ids(url, "t")
    )


def test_sigkill_loses_at_most_the_pending_records(tmp_path: Path) -> None:
    """SIGKILL loses at most the records not yet written when it arrives.

    The child reports how many records were accepted but not yet stored
    (queued, plus a batch being written) right before it is killed; every
    record stored before that survives, and what survives is a prefix of the
    log, each record once (a batch is one transaction: all or nothing).
    """
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    proc, report = _start_child(url, 20000, 0.2, 1000)
    proc.kill()
    proc.communicate(timeout=30)
    ids = _stored_ids(url, "t")
    lost = report["logged"] - len(ids)
    assert (-signal.SIGKILL, True, list(range(len(ids)))) == (
        proc.returncode, 0 <= lost <= report["pending"], ids
    )


def test_fork_child_has_its_own_writer(tmp_path: Path) -> None:
    """After os.fork() the child writes only its own records, never the parent's queued ones."""
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    repo: SQLRepo[Any] = SQLRepo(url=url, table="t")
    handler = RepoHandler(repo, flush_interval=60)
    logger = _logger(handler)
    _log(logger, range(100))  # queued in the parent, not yet written
    assert handler.counts["queued"] == 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover  (child)
        code = 1
        try:
            _log(logger, range(1000, 1010))
            handler.flush()
            code = 0 if handler.counts["stored"] == 10 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    _log(logger, range(100, 110))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    repo.close()
    expected = sorted([*range(110), *range(1000, 1010)])
    assert (0, 110, expected) == (
        os.waitstatus_to_exitcode(status), counts["stored"], sorted(_stored_ids(url, "t"))
    )


class _GatedRepo(MemoryRepo[Any]):
    """A memory store whose writes wait until the gate opens (a store that does not keep up)."""

    write_profile = WriteProfile(batches=True)

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Wait for the gate, then store."""
        self.gate.wait()
        super().insert_rows(rows)


def test_overflow_drop_is_counted() -> None:
    """overflow="drop": past max_queue records are dropped at once, each one counted."""
    repo = _GatedRepo()
    handler = RepoHandler(repo, max_queue=10, batch_size=5, overflow="drop", errors="ignore")
    logger = _logger(handler)
    _log(logger, range(50))
    repo.gate.set()
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    stored = len(repo)
    assert (50, True, stored) == (
        counts["stored"] + counts["dropped"], 10 <= stored <= 15, counts["stored"]
    )


def test_overflow_block_waits_for_room() -> None:
    """overflow="block": the caller waits while the queue is full and nothing is dropped."""
    repo = _GatedRepo()
    handler = RepoHandler(repo, max_queue=10, batch_size=5, overflow="block", block_timeout=60)
    logger = _logger(handler)
    opener = threading.Timer(0.3, repo.gate.set)
    opener.start()
    _log(logger, range(50))
    handler.flush()
    opener.join()
    counts = dict(handler.counts)
    handler.close()
    assert (50, 0, 50) == (counts["stored"], counts["dropped"], len(repo))


def test_overflow_block_then_drop_is_counted() -> None:
    """overflow="block" drops, and counts, once block_timeout passes without room."""
    repo = _GatedRepo()
    handler = RepoHandler(
        repo, max_queue=5, batch_size=5, overflow="block", block_timeout=0.05, errors="ignore"
    )
    logger = _logger(handler)
    _log(logger, range(20))
    repo.gate.set()
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    assert (20, True) == (counts["stored"] + counts["dropped"], counts["dropped"] >= 5)


def test_sigterm_handler_respects_a_custom_one(tmp_path: Path) -> None:
    """A SIGTERM handler the program installed itself is left in place."""
    script = textwrap.dedent(
        """
        import signal, sys
        from tasklog import RepoHandler, SQLRepo
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        handler = RepoHandler(SQLRepo(url=sys.argv[1], table="t"))
        print(signal.getsignal(signal.SIGTERM) is mine)
        handler.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'c.db'}"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert "True" == out.stdout.strip()


class _SlowRepo(MemoryRepo[Any]):
    """A memory store that takes a while per write (a store slower than the program)."""

    write_profile = WriteProfile(batches=True)

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Store, slowly."""
        time.sleep(0.005)
        super().insert_rows(rows)


class _DownRepo(MemoryRepo[Any]):
    """A store that is unreachable (a transient error) until it is brought up."""

    write_profile = WriteProfile(batches=True)

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Fail as a network would, until up."""
        if not self.up:
            msg = "connection refused"
            raise ConnectionRefusedError(msg)
        super().insert_rows(rows)


def test_backlog_paces_a_program_faster_than_its_store() -> None:
    """While the store works, the queue (what a SIGKILL would lose) stays within backlog."""
    repo = _SlowRepo()
    handler = RepoHandler(repo, batch_size=5, backlog=20, block_timeout=60)
    logger = _logger(handler)
    most = 0
    for i in range(300):
        _log(logger, range(i, i + 1))
        most = max(most, handler.counts["queued"])
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    assert (True, 300, 0) == (most <= 20, counts["stored"], counts["dropped"])


def test_backlog_does_not_pace_an_unreachable_store() -> None:
    """An unreachable store's records fill the queue beyond backlog, the caller unblocked."""
    repo = _DownRepo()
    handler = RepoHandler(
        repo, batch_size=5, backlog=20, block_timeout=60, retry_max_delay=0.05, errors="ignore"
    )
    logger = _logger(handler)
    _log(logger, range(200))
    queued = handler.counts["queued"]
    repo.up = True
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    assert (True, 200, 0) == (queued > 20, counts["stored"], counts["dropped"])


_CSV_CHILD = """
import logging, os, signal, sys
from tasklog import CSVFileRepo, RepoHandler

path, mode = sys.argv[1], sys.argv[2]

class SignalledCSV(CSVFileRepo):
    '''Sends itself SIGTERM in the middle of its third batch write.'''
    writes = 0

    def insert_rows(self, rows):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        super().insert_rows(rows)

repo = SignalledCSV(path) if mode == "signal" else CSVFileRepo(path)
handler = RepoHandler(repo, batch_size=1000, flush_interval=60)
logger = logging.getLogger("child")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(handler)
i = 0
while True:
    logger.info("r", extra={"task_name": "job", "action": "log", "run_id": str(i)})
    i += 1
    if i == 3000 and mode == "loop":
        print("ready", flush=True)
"""


def _csv_ids(path: Path) -> list[int]:
    from tasklog import CSVFileRepo

    return [int(r.run_id or -1) for r in CSVFileRepo(path)]


def test_sigterm_during_a_batch_written_by_the_logging_call(tmp_path: Path) -> None:
    """SIGTERM arriving while a logging call writes a CSV batch waits for that
    write, then stores the queue and dies of SIGTERM: nothing is lost.

    The signal handler cannot wait for the writer thread there (the logging
    call holds the batch), so it is deferred to the end of the write.
    """
    path = tmp_path / "sig.csv"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CSV_CHILD), str(path), "signal"],
        capture_output=True, text=True, timeout=60,
    )
    assert (-signal.SIGTERM, list(range(3000))) == (proc.returncode, _csv_ids(path))


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.31])
def test_sigterm_while_logging_flat_out_to_csv(tmp_path: Path, delay: float) -> None:
    """A program logging to CSV as fast as it can, ended by SIGTERM at any moment,
    leaves an unbroken prefix of its log, each record once."""
    path = tmp_path / "flat.csv"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CSV_CHILD), str(path), "loop"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    ids = _csv_ids(path)
    assert (-signal.SIGTERM, True, list(range(len(ids)))) == (
        proc.returncode, len(ids) >= 3000, ids
    )
