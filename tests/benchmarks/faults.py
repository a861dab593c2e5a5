"""What the file stores keep under SIGKILL, a full disk and rotation (the figures
docs/stores.md quotes). Not a speed benchmark: it counts records.

    sudo python tests/benchmarks/faults.py [KILLS]

* **SIGKILL**: KILLS writers (default 100), one after another, each appending
  batches of 1-200 records with a 1.6 KB multi-line traceback to one store and
  reporting each batch once its write returned, SIGKILLed after 10-200 ms.
  Counts torn rows (CSV), records reported but missing, duplicates, and records
  that cannot be read.
* **full disk**: 4,000 records logged through a ``RepoHandler`` into a 2 MB
  tmpfs that holds about 400 KB more (needs root to mount; skipped otherwise),
  one-line and multi-line messages, once with the space freed after the first
  retry and once left full (``close_timeout=1``).
* **rotation**: the store file moved, deleted or truncated to zero under a
  running handler, 500 records before and 1,500 after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasklog import CSVFileRepo, RepoHandler, Repository, SQLRepo, TaskRunRecord

TRACE = "".join(
    f'Traceback line {i}: File "job.py", line {i}, in step_{i}\n    call(a, b="c, d")\n'
    for i in range(20)
)


def open_store(kind: str, where: Path) -> Repository[Any]:
    if kind == "csv":
        return CSVFileRepo(where / "log.csv", model=TaskRunRecord)
    return SQLRepo(url=f"sqlite:///{where / 'log.db'}", table="t", model=TaskRunRecord)


def rows(repo: Repository[Any]) -> tuple[list[tuple[str, int]], int]:
    """(task, run id) of every record, and how many torn-row warnings reading gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [(r.task_name, int(r.run_id)) for r in repo.filter_by()]
    return got, sum("torn row" in str(w.message) for w in caught)


def sigkill(kind: str, kills: int) -> dict[str, int]:
    where = Path(tempfile.mkdtemp())
    open_store(kind, where)
    rnd = random.Random(1)
    reported: dict[str, int] = {}
    torn = 0
    for k in range(kills):
        name = f"w{k}"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                repo = open_store(kind, where)
                n = 0
                while True:
                    size = rnd.randrange(1, 200)
                    repo.add_many(
                        [{"task_name": name, "action": "fail", "created": float(i),
                          "run_id": str(i), "exc_text": TRACE} for i in range(n, n + size)]
                    )
                    n += size
                    os.write(write_end, f"{n}\n".encode())
            finally:
                os._exit(1)
        os.close(write_end)
        rnd.random()
        time.sleep(rnd.uniform(0.01, 0.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as f:
            lines = f.read().split()
        reported[name] = int(lines[-1]) if lines else 0
        if kind == "csv":
            torn += rows(open_store(kind, where))[1]  # the tail as this writer left it
    got, _ = rows(open_store(kind, where))
    per: dict[str, list[int]] = {}
    for task, i in got:
        per.setdefault(task, []).append(i)
    shutil.rmtree(where)
    return {
        "kills": kills,
        "torn rows": torn,
        "reported records": sum(reported.values()),
        "read back": len(got),
        "reported but missing": sum(max(n - len(per.get(t, [])), 0) for t, n in reported.items()),
        "duplicated": len(got) - len(set(got)),
        "not a prefix": sum(ids != list(range(len(ids))) for ids in per.values()),
    }


@contextlib.contextmanager
def small_disk() -> Iterator[Path | None]:
    where = Path(tempfile.mkdtemp())
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                        capture_output=True, check=False).returncode == 0
    try:
        yield where if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        shutil.rmtree(where, ignore_errors=True)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"faults.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def full_disk(kind: str, multiline: bool, free: bool) -> dict[str, Any] | None:
    with small_disk() as where:
        if where is None:
            return None
        filler = where / "filler"
        filler.write_bytes(b"\0" * (1600 * 1024))
        repo = open_store(kind, where)
        handler = RepoHandler(repo, retry_max_delay=0.05, close_timeout=1, errors="ignore")
        logger = _logger(handler)
        text = "line one\nline two, \"quoted\"\n" * 6 if multiline else "x" * 150
        for i in range(4000):
            logger.info(text, extra={"task_name": "job", "action": "log", "run_id": str(i)})
        deadline = time.monotonic() + 30
        while handler.counts["retries"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if free:
            filler.unlink()
        handler.close()
        counts = dict(handler.counts)
        try:
            got, _ = rows(open_store(kind, where))
            readable = "yes"
        except Exception as err:
            got, readable = [], f"no: {err!r}"[:60]
        ids = [i for _, i in got]
        return {"stored": counts["stored"], "dropped": counts["dropped"], "read back": len(got),
                "duplicated": len(ids) - len(set(ids)),
                "prefix": ids == list(range(len(ids))), "readable": readable}


def rotation(kind: str, how: str) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp())
    repo = open_store(kind, where)
    path = where / ("log.csv" if kind == "csv" else "log.db")
    handler = RepoHandler(repo, close_timeout=2, errors="ignore")
    logger = _logger(handler)

    def log(numbers: range) -> None:
        for i in numbers:
            logger.info("r", extra={"task_name": "job", "action": "log", "run_id": str(i)})

    log(range(500))
    handler.flush()
    rotated = where / (path.name + ".1")
    if how == "move":
        path.rename(rotated)
    elif how == "delete":
        path.unlink()
    else:
        shutil.copyfile(path, rotated)
        os.truncate(path, 0)
    log(range(500, 2000))
    handler.close()
    counts = dict(handler.counts)
    found: dict[str, Any] = {"stored": counts["stored"], "dropped": counts["dropped"]}
    for name, file in (("path", path), ("rotated", rotated)):
        if not file.exists():
            found[name] = "absent"
            continue
        try:
            shown = open_store(kind, where) if file == path else (
                CSVFileRepo(file, model=TaskRunRecord) if kind == "csv"
                else SQLRepo(url=f"sqlite:///{file}", table="t", model=TaskRunRecord)
            )
            found[name] = len(rows(shown)[0])
        except Exception as err:
            found[name] = f"unreadable: {err!r}"[:60]
    shutil.rmtree(where)
    return found


def main() -> None:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for kind in ("csv", "sqlite"):
        print(f"SIGKILL {kind}: {sigkill(kind, kills)}", flush=True)
    for kind in ("csv", "sqlite"):
        for multiline in (False, True):
            for free in (True, False):
                lines = "multi-line" if multiline else "one-line"
                label = f"{lines}, space {'freed' if free else 'never freed'}"
                print(f"full disk {kind} {label}: {full_disk(kind, multiline, free)}", flush=True)
    for kind in ("csv", "sqlite"):
        for how in ("move", "delete", "copytruncate"):
            print(f"rotation {kind} {how}: {rotation(kind, how)}", flush=True)


if __name__ == "__main__":
    main()
