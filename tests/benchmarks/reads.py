"""Reading records back: how long building 100k models takes, per store.

    python tests/benchmarks/reads.py write DIR [-n 100000]   # once: DIR/reads.db, DIR/reads.csv
    python tests/benchmarks/reads.py read DIR STORE [--repeat 5] [--build-only]

``read`` times ``repo.filter_by().all()`` (every record, as ``TaskRunRecord``)
in the process, best and median of *repeat*, and prints records/s and the
process's peak memory. ``--build-only`` fetches the stored rows once and times
only building the models from them. Run it with
another checkout first on ``PYTHONPATH`` to compare builds on the same files.
The records are what a handler writes for a task run: text, levels, a
traceback on every tenth, ``start``/``end`` datetimes and a ``runtime``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tasklog import CSVFileRepo, MemoryRepo, Repository, SQLRepo, TaskRunRecord


def _records(n: int) -> list[dict[str, object]]:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out: list[dict[str, object]] = []
    for i in range(n):
        start = t0 + timedelta(seconds=i)
        out.append({
            "task_name": f"task-{i % 50}",
            "action": ("run", "success", "fail", "log")[i % 4],
            "created": start.timestamp(),
            "start": start,
            "end": start + timedelta(seconds=1.5) if i % 4 else None,
            "runtime": timedelta(seconds=1.5) if i % 4 else None,
            "message": f"step {i} of the nightly job",
            "exc_text": "Traceback (most recent call last):\n  ...\nValueError: x" if i % 10 == 0
            else None,
            "levelname": "INFO",
            "run_id": f"run-{i // 4}",
            "host": "worker-1",
            "process": 4242,
        })
    return out


def _open(store: str, folder: Path) -> Repository[TaskRunRecord]:
    if store == "sqlite":
        return SQLRepo(url=f"sqlite:///{folder / 'reads.db'}", model=TaskRunRecord)
    if store == "csv":
        return CSVFileRepo(folder / "reads.csv", model=TaskRunRecord)
    msg = f"unknown store {store!r} (sqlite, csv, memory)"
    raise SystemExit(msg)


def main() -> None:
    """Write the files, or time reading them back."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("write", "read"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("store", nargs="?", default="sqlite")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    if args.what == "write":
        args.folder.mkdir(parents=True, exist_ok=True)
        rows = _records(args.n)
        for store in ("sqlite", "csv"):
            repo = _open(store, args.folder)
            repo.add_many(rows)
            print(f"{store}: {len(repo)} records")
        return
    if args.store == "memory":
        repo: Repository[TaskRunRecord] = MemoryRepo(model=TaskRunRecord)
        repo.add_many(_records(args.n))
    else:
        repo = _open(args.store, args.folder)
    times = []
    result = repo.filter_by()
    stored = list(repo.select_rows(result.query)) if args.build_only else []
    for _ in range(args.repeat):
        rows = [dict(row) for row in stored]  # building may keep a row as the model's dict
        began = time.perf_counter()
        n = len(list(result._build(iter(rows)))) if args.build_only else len(result.all())
        times.append(time.perf_counter() - began)
    best, median = min(times), statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{args.store}: {n} records, best {best:.3f} s ({n / best:,.0f}/s), "
          f"median {median:.3f} s, peak {peak} MiB")


if __name__ == "__main__":
    main()
