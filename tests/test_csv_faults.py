"""The CSV store under what log files suffer: torn writes, full disks, huge fields, rotation.

Each test first reproduces a defect of issue 13 (a killed child process, an
injected or real ``ENOSPC``, a 200,000-character field, a moved file) and checks
*what* is stored afterwards: every record once, the file readable. Processes
are forked (tasklog is imported already), so a killed writer costs little.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import logging
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasklog import CSVFileRepo, RepoHandler, TaskRunRecord
from tasklog.repos import csv_file

pytestmark = pytest.mark.slow

_TRACE = "".join(
    f'Traceback line {i}: File "job.py", line {i}, in step_{i}\n    call(a, b="c, d")\n'
    for i in range(20)
)
"""About 1.6 KB of multi-line text with quotes and commas: always a quoted field."""


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"tasklog.csvfaults.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _records(numbers: range, task: str = "job", exc: str | None = _TRACE) -> list[dict[str, Any]]:
    return [
        {"task_name": task, "action": "fail", "created": float(i), "run_id": str(i),
         "exc_text": exc, "message": f"record {i}"}
        for i in numbers
    ]


def _ids(path: Path, task: str | None = None) -> list[int]:
    """Run ids read back through a fresh repository, warnings (a torn tail) ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        repo = CSVFileRepo(path, model=TaskRunRecord)
        rows = repo.filter_by(task_name=task) if task is not None else repo.filter_by()
        return [int(r.run_id) for r in rows]


def _fork(child: Callable[[], None]) -> int:
    """Run *child* in a forked process that never returns into the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover  (child)
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _kill_mid_write(path: Path, rows: list[dict[str, Any]], keep: float) -> None:
    """In a child: append *rows* as one batch, and die by SIGKILL after writing
    the share *keep* of its bytes (a writer killed in the middle of a row)."""

    def torn_write(fd: int, data: bytes) -> None:
        os.write(fd, data[: int(len(data) * keep)])
        os.kill(os.getpid(), signal.SIGKILL)

    def child() -> None:
        csv_file._write_all = torn_write  # type: ignore[assignment]  # the child's own copy
        CSVFileRepo(path, model=TaskRunRecord).add_many(rows)

    assert -signal.SIGKILL == _wait(_fork(child))


# ------------------------------------------------------------------ torn rows
def test_torn_quoted_field_does_not_hide_later_records(tmp_path: Path) -> None:
    """A writer killed inside a multi-line quoted field: readers skip the torn
    row with one warning, and the next writer fences it off before appending, so
    the 1,000 records logged afterwards all read back (before: 0 could be read)."""
    path = tmp_path / "torn.csv"
    CSVFileRepo(path, model=TaskRunRecord).add_many(_records(range(10)))
    _kill_mid_write(path, _records(range(10, 20)), keep=0.55)
    data = path.read_bytes()
    assert (1, False) == (data.count(b'"') % 2, data.endswith(b"\n"))  # inside an open quote

    reader = CSVFileRepo(path, model=TaskRunRecord)

    def read_twice() -> tuple[list[int], int]:
        return [int(r.run_id) for r in reader], len(reader.filter_by().all())

    with pytest.warns(RuntimeWarning, match="torn row") as caught:
        first, again = read_twice()
    handler = RepoHandler(CSVFileRepo(path, model=TaskRunRecord), errors="raise")
    logger = _logger(handler)

    def log_more() -> None:
        for i in range(1000, 2000):
            logger.error("boom", extra={"task_name": "job", "action": "fail", "run_id": str(i)},
                         exc_info=(ValueError, ValueError("x\ny"), None))
        handler.flush()

    with pytest.warns(RuntimeWarning, match="cut off"):
        log_more()
    counts = dict(handler.counts)
    handler.close()
    expected = [*range(15), *range(1000, 2000)]  # 5 whole rows of the killed batch survive
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fenced off: no more warnings
        after = [int(r.run_id) for r in CSVFileRepo(path, model=TaskRunRecord)]
        count = len(CSVFileRepo(path, model=TaskRunRecord))
    torn = (tmp_path / "torn.csv.torn").read_bytes()
    assert (list(range(15)), 15, 1, 1000, expected, len(expected), True) == (
        first, again, len(caught), counts["stored"], after, count, torn.startswith(b"job,fail,")
    )


def test_torn_row_outside_quotes_is_fenced_off(tmp_path: Path) -> None:
    """A row torn between cells (fewer cells, no line end) is skipped by readers
    and cut off by the next writer; it never merges with the next record."""
    path = tmp_path / "short.csv"
    repo = CSVFileRepo(path, model=TaskRunRecord)
    repo.add_many(_records(range(3), exc=None))
    _kill_mid_write(path, _records(range(3, 4), exc=None), keep=0.3)
    with pytest.warns(RuntimeWarning, match="torn row"):
        before = [int(r.run_id) for r in CSVFileRepo(path, model=TaskRunRecord)]
    with pytest.warns(RuntimeWarning, match="cut off"):
        repo.add_many(_records(range(4, 6), exc=None))
    assert ([0, 1, 2], [0, 1, 2, 4, 5]) == (before, _ids(path))


def test_torn_tail_is_cut_off_before_a_rewrite(tmp_path: Path) -> None:
    """delete/update/prune fence a torn tail off first instead of keeping it as a row."""
    path = tmp_path / "rewrite.csv"
    repo = CSVFileRepo(path, model=TaskRunRecord)
    repo.add_many(_records(range(4)))
    _kill_mid_write(path, _records(range(4, 8)), keep=0.8)
    with pytest.warns(RuntimeWarning, match="cut off"):
        deleted = repo.filter_by(run_id="0").delete()
    assert (1, [1, 2, 3, 4, 5, 6]) == (deleted, _ids(path))


def test_sigkilled_writers_beside_a_healthy_one(tmp_path: Path) -> None:
    """20 writers SIGKILLed at random points beside one healthy writer: every
    record of the healthy one and every complete record of the others (each
    reported by the writer once its write returned) reads back, in order,
    nothing duplicated."""
    path = tmp_path / "loop.csv"
    CSVFileRepo(path, model=TaskRunRecord)
    rnd = random.Random(13)

    def victim(name: str, report: int) -> Callable[[], None]:
        def run() -> None:
            repo = CSVFileRepo(path, model=TaskRunRecord)
            n = 0
            while True:
                size = rnd.randrange(1, 200)
                repo.add_many(_records(range(n, n + size), task=name))
                n += size
                os.write(report, f"{n}\n".encode())  # these n records are complete

        return run

    def healthy() -> None:
        handler = RepoHandler(CSVFileRepo(path, model=TaskRunRecord), batch_size=50)
        logger = _logger(handler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # torn rows being fenced off
            for i in range(3000):
                logger.info("ok", extra={"task_name": "healthy", "action": "log",
                                         "run_id": str(i)})
            handler.close()
        if handler.counts["stored"] != 3000:
            raise SystemExit(2)

    keeper = _fork(healthy)
    reported: dict[str, int] = {}
    for round_ in range(5):
        alive = []
        for k in range(4):
            name = f"victim{round_}{k}"
            read_end, write_end = os.pipe()
            rnd.random()  # each child starts from another random state
            alive.append((name, _fork(victim(name, write_end)), read_end))
            os.close(write_end)
        time.sleep(rnd.uniform(0.05, 0.4))
        for name, pid, read_end in alive:
            time.sleep(rnd.uniform(0.0, 0.05))
            os.kill(pid, signal.SIGKILL)
            assert -signal.SIGKILL == _wait(pid)
            with os.fdopen(read_end, "rb") as f:
                lines = f.read().split()
            reported[name] = int(lines[-1]) if lines else 0
    assert 0 == _wait(keeper)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = [(r.task_name, int(r.run_id)) for r in CSVFileRepo(path, model=TaskRunRecord)]
    by_task: dict[str, list[int]] = {}
    for task, i in rows:
        by_task.setdefault(task, []).append(i)
    healthy_ids = by_task.pop("healthy", [])
    problems = {
        name: (reported[name], ids[:3], len(ids))
        for name, ids in by_task.items()
        if ids != list(range(len(ids))) or len(ids) < reported[name]
    }
    missing = {name for name, n in reported.items() if n and name not in by_task}
    assert (list(range(3000)), {}, set(), len(rows)) == (
        healthy_ids, problems, missing, len(set(rows))
    )


# ------------------------------------------------------------------ full disk
def _enospc_after(share: float, failures: list[int]) -> Callable[[int, bytes], None]:
    """A write that writes part of the data, then fails as a full disk does, while
    *failures* holds a count above zero."""
    real = csv_file._write_all

    def write(fd: int, data: bytes) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            os.write(fd, data[: int(len(data) * share)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    return write


def test_failed_append_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (ENOSPC) leaves the file as it was; the retry
    stores the batch once."""
    path = tmp_path / "full.csv"
    repo = CSVFileRepo(path, model=TaskRunRecord)
    repo.add_many(_records(range(5)))
    before = path.read_bytes()
    monkeypatch.setattr(csv_file, "_write_all", _enospc_after(0.5, [1]))
    with pytest.raises(OSError, match="space"):
        repo.add_many(_records(range(5, 10)))
    unchanged = path.read_bytes() == before
    repo.add_many(_records(range(5, 10)))
    assert (True, list(range(10))) == (unchanged, _ids(path))


@pytest.mark.parametrize("share", [0.0, 0.37, 0.99])
def test_handler_retry_after_full_disk_never_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share: float
) -> None:
    """The handler retries a batch whose write failed part-way; each record is stored once."""
    path = tmp_path / "retry.csv"
    monkeypatch.setattr(csv_file, "_write_all", _enospc_after(share, [3]))
    handler = RepoHandler(CSVFileRepo(path, model=TaskRunRecord), retry_max_delay=0.01,
                          batch_size=100, errors="ignore")
    logger = _logger(handler)
    for i in range(1000):
        logger.error("boom", extra={"task_name": "job", "action": "fail", "run_id": str(i)},
                     exc_info=(ValueError, ValueError("multi\nline"), None))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    assert (1000, 0, True, list(range(1000))) == (
        counts["stored"], counts["dropped"], counts["retries"] > 0, _ids(path)
    )


@contextlib.contextmanager
def _small_disk(where: Path) -> Iterator[bool]:
    """A 2 MB tmpfs at *where* (True), or a plain directory when mounting is not
    allowed (False: the caller injects ENOSPC instead)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True, check=False,
    ).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_full_disk_then_space_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up while multi-line records are logged: the handler
    retries, no row is torn or stored twice, and once there is space again every
    record is stored exactly once (on a real 2 MB tmpfs where mounting is allowed)."""
    disk = tmp_path / "disk"
    with _small_disk(disk) as real:
        path = disk / "log.csv"
        filler = disk / "filler"
        failures = [0]
        if real:
            filler.write_bytes(b"\0" * (1600 * 1024))  # leaves about 400 KB
        else:
            failures[0] = 10**9
            monkeypatch.setattr(csv_file, "_write_all", _enospc_after(0.5, failures))
        repo = CSVFileRepo(path, model=TaskRunRecord)
        handler = RepoHandler(repo, retry_max_delay=0.05, batch_size=200, errors="ignore")
        logger = _logger(handler)
        text = "line one\nline two, \"quoted\"\n" * 6
        for i in range(4000):
            logger.info(text, extra={"task_name": "job", "action": "log", "run_id": str(i)})
        assert _wait_until(lambda: handler.counts["retries"] > 0)
        stuck = handler.counts["stored"]
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        failures[0] = 0
        handler.flush()
        counts = dict(handler.counts)
        handler.close()
        ids = _ids(path)
    assert (True, 4000, 0, list(range(4000))) == (
        stuck < 4000, counts["stored"], counts["dropped"], ids
    )


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll *condition* (a state, not a speed: the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ----------------------------------------------------------------- huge fields
@pytest.fixture(name="default_field_limit")
def _default_field_limit() -> Iterator[None]:
    """The csv module's default field size limit, as a fresh process has it."""
    old = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(old)


@pytest.mark.usefixtures("default_field_limit")
def test_field_over_the_csv_limit_reads_back(tmp_path: Path) -> None:
    """A 200,000-character traceback, logged through the handler, reads back and
    leaves the other records readable (before: every read of the file failed)."""
    path = tmp_path / "big.csv"
    handler = RepoHandler(CSVFileRepo(path, model=TaskRunRecord))
    logger = _logger(handler)
    big = "x" * 199_990 + "\nend, \"q\""
    logger.info("before", extra={"task_name": "job", "action": "log", "run_id": "0"})
    logger.info(big, extra={"task_name": "job", "action": "log", "run_id": "1"})
    logger.info("after", extra={"task_name": "job", "action": "log", "run_id": "2"})
    handler.close()
    csv.field_size_limit(131_072)  # as a new process (the CLI) starts
    repo = CSVFileRepo(path, model=TaskRunRecord)
    assert (["before", big, "after"], 3, 1) == (
        [r.message for r in repo], len(repo), repo.filter_by(message=big).count()
    )


@pytest.mark.usefixtures("default_field_limit")
def test_ten_megabyte_message_round_trips(tmp_path: Path) -> None:
    """A 10 MB multi-line message with quotes comes back exactly."""
    path = tmp_path / "huge.csv"
    text = ('line "%d", with, commas\n' * 400_000)[: 10 * 1024 * 1024]
    CSVFileRepo(path, model=TaskRunRecord).add_many(
        [{"task_name": "job", "action": "log", "created": 1.0, "message": text},
         {"task_name": "job", "action": "log", "created": 2.0, "message": "next"}]
    )
    csv.field_size_limit(131_072)
    got = [r.message for r in CSVFileRepo(path, model=TaskRunRecord)]
    assert (2, True, "next") == (len(got), got[0] == text, got[1])


# -------------------------------------------------------------------- rotation
@pytest.mark.parametrize("how", ["move", "delete", "copytruncate"])
def test_rotated_file_is_recreated_with_its_header(tmp_path: Path, how: str) -> None:
    """A file moved, deleted or truncated under a running handler (logrotate):
    the next write notices the new (or empty) file and writes the header first;
    every record is in the old or the new file, once (before: the new file had no
    header and failed to open, "lacks columns")."""
    path = tmp_path / "app.csv"
    handler = RepoHandler(CSVFileRepo(path, model=TaskRunRecord))
    logger = _logger(handler)

    def log(numbers: range) -> None:
        for i in numbers:
            logger.info("r", extra={"task_name": "job", "action": "log", "run_id": str(i)})

    log(range(500))
    handler.flush()
    rotated = tmp_path / "app.csv.1"
    if how == "move":
        path.rename(rotated)
    elif how == "delete":
        path.unlink()
    else:
        rotated.write_bytes(path.read_bytes())
        os.truncate(path, 0)
    log(range(500, 2000))
    handler.flush()
    counts = dict(handler.counts)
    handler.close()
    header = path.read_text(encoding="utf-8").splitlines()[0]
    old = _ids(rotated) if how != "delete" else list(range(500))
    assert (2000, ",".join(TaskRunRecord.model_fields), list(range(2000))) == (
        counts["stored"], header, old + _ids(path)
    )


# ----------------------------------------------------------------------- prune
def test_stale_prune_temporary_is_removed(tmp_path: Path) -> None:
    """SIGKILL during prune leaves a temporary file; the next prune removes it
    (and leaves other files alone)."""
    path = tmp_path / "prune.csv"
    repo = CSVFileRepo(path, model=TaskRunRecord)
    repo.add_many(_records(range(6)))
    other = tmp_path / ".other.csv.abc.tmp"
    other.touch()

    def child() -> None:
        real = tempfile.mkstemp

        def mkstemp_then_die(*args: Any, **kwargs: Any) -> tuple[int, str]:
            made = real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return made

        tempfile.mkstemp = mkstemp_then_die  # type: ignore[assignment]  # the child's own copy
        repo.prune(keep_runs=1)

    code = _wait(_fork(child))
    pattern = str(tmp_path / ".prune.csv.*.tmp")
    stale = glob.glob(pattern)
    deleted = repo.prune(keep_runs=2)
    assert (-signal.SIGKILL, 1, 4, [], True, [4, 5]) == (
        code, len(stale), deleted, glob.glob(pattern), other.exists(), _ids(path)
    )


def test_full_disk_while_writing_a_new_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file rotated away on a full disk: the header write that fails half-way
    is undone too, and the next write gives the new file a whole header."""
    path = tmp_path / "rot.csv"
    repo = CSVFileRepo(path, model=TaskRunRecord)
    repo.add_many(_records(range(2)))
    path.rename(tmp_path / "rot.csv.1")
    monkeypatch.setattr(csv_file, "_write_all", _enospc_after(0.5, [1]))
    with pytest.raises(OSError, match="space"):
        repo.add_many(_records(range(2, 4)))
    empty = path.read_bytes()
    repo.add_many(_records(range(2, 4)))
    assert (b"", [2, 3]) == (empty, _ids(path))
