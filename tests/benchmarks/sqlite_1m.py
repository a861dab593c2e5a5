"""Query latency over 1,000,000 records in SQLite (the issue 4 read targets).

    python tests/benchmarks/sqlite_1m.py [PATH]

Inserts the logbench workload (20 tasks, a ``fail`` every 97th record) in
batches, then prints the median of 15 timings of each query, and how much of
the first one is the SQL alone (the rest is building the models).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import tasklog

N = 1_000_000
BATCH = 10_000


def median_ms(func: Callable[[], Any], rounds: int = 15) -> tuple[float, Any]:
    """Median wall time of *func* in milliseconds, and its last result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main(path: str | None = None) -> None:
    """Build the store and print the query timings."""
    db = Path(path or tempfile.mkdtemp(prefix="tasklog-1m-")) / "bench.db"
    repo = tasklog.SQLRepo(url=f"sqlite:///{db}", table="bench")
    start = time.perf_counter()
    for first in range(0, N, BATCH):
        repo.insert_rows([
            {"task_name": f"task-{i % 20}",
             "action": "fail" if i % 97 == 0 else ("run" if i % 2 == 0 else "success"),
             "created": 1.7e9 + i, "run_id": f"run-{i // 2}"}
            for i in range(first, first + BATCH)
        ])
    print(f"inserted {N:,} records in {time.perf_counter() - start:.1f} s")
    ms, hits = median_ms(lambda: repo.filter_by(task_name="task-3", action="fail").all())
    print(f"fail of one task .all(): {ms:.2f} ms ({len(hits)} hits)")
    ms, _ = median_ms(lambda: repo.filter_by(task_name="task-7", action="run").last())
    print(f".last() run of a task:   {ms:.2f} ms")
    ms, count = median_ms(lambda: repo.filter_by(action="fail").count())
    print(f"count of fails:          {ms:.2f} ms ({count})")
    t = repo.table
    stmt = sa.select(t).where(t.c.task_name == "task-3", t.c.action == "fail").order_by(t.c._id)

    def sql_only() -> list[Any]:
        with repo.engine.connect() as conn:
            return list(conn.execute(stmt).fetchall())

    ms, _ = median_ms(sql_only)
    print(f"  the first query's SQL alone: {ms:.2f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:2])
