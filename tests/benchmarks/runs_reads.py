"""Reads about runs as history grows (SPEC §4 targets; issue 10 item 4).

    python tests/benchmarks/runs_reads.py [N ...] [--stores memory,sqlite,postgresql,redis]
        [--pg URL] [--plot FILE.png]

For each history size N (default 10,000 and 100,000 records) and store, writes
N TaskRunRecords — 4 per run (``run``, two ``log``, a closing action; 50 tasks,
one run in 10 failing, one in 50 left open, runs a minute apart ending now) —
then prints the time of the first read (a runs index folds in the whole
history then) and the median of 5 timings (ms) of each read: ``stats()``,
``stats(since=1 day)``, ``list_runs()`` (one page), ``list_runs`` filtered by
task, by outcome ``fail`` and by ``running``, ``get_run``, the CLI's ``tasks``
(``latest_per_task``) and ``crash_candidates`` (what ``mark_crashed`` reads;
nothing is marked: open runs are on another host), and of a read right after
1,000 more records were written (what a polling reader pays to fold new
records into a runs index). Runs from a clone alone:
``postgresql`` without ``--pg`` starts a throwaway server (tests/_postgres.py),
``redis`` a throwaway ``redis-server`` (tests/_redis.py; Redis has no runs
index: its reads take the generic path over its sorted-set indexes).
``--plot`` draws each read's time against the history size (needs the
``bench`` extra, matplotlib).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import tasklog
from tasklog import history

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASKS = 50
BATCH = 10_000


def median_ms(func: Callable[[], Any], rounds: int = 5) -> float:
    """Median wall time of *func* in milliseconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fill(repo: tasklog.Repository[Any], n: int) -> str:
    """Write *n* records (n/4 runs); return the id of a run in the middle."""
    runs = n // 4
    now = time.time()
    rows: list[dict[str, Any]] = []
    middle = ""
    for i in range(runs):
        task = f"task-{i % TASKS:02d}"
        run_id = f"r{i:08d}"
        start = now - (runs - i) * 60.0
        if i == runs // 2:
            middle = run_id
        base = {"task_name": task, "run_id": run_id, "host": "bench-host", "process": 1}
        rows.append({**base, "action": "run", "created": start})
        rows.append({**base, "action": "log", "created": start + 1, "message": "working"})
        rows.append({**base, "action": "log", "created": start + 2, "message": "still"})
        if i % 50 != 7:
            outcome = "fail" if i % 10 == 3 else "success"
            rows.append({**base, "action": outcome, "created": start + 3,
                         "runtime": timedelta(seconds=3)})
        else:
            rows.append({**base, "action": "log", "created": start + 3, "message": "..."})
        if len(rows) >= BATCH:
            repo.add_many(rows)
            rows = []
    if rows:
        repo.add_many(rows)
    return middle


def catch_up_ms(repo: tasklog.Repository[Any], rounds: int = 5) -> float:
    """Median time of a read right after 1,000 more records (250 runs) were
    written: what a polling reader pays to fold new records into a runs index."""
    times = []
    for r in range(rounds):
        now = time.time()
        rows = []
        for i in range(250):
            base = {"task_name": f"task-{i % TASKS:02d}", "run_id": f"new-{r}-{i}"}
            rows.append({**base, "action": "run", "created": now})
            rows.append({**base, "action": "log", "created": now, "message": "working"})
            rows.append({**base, "action": "log", "created": now, "message": "still"})
            rows.append({**base, "action": "success", "created": now + 1})
        repo.add_many(rows)
        start = time.perf_counter()
        tasklog.list_runs(repo, limit=1)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(repo: tasklog.Repository[Any], middle: str) -> dict[str, float]:
    """The read timings."""
    start = time.perf_counter()
    tasklog.get_run(repo, middle)  # the first read: a runs index folds the whole history
    first = (time.perf_counter() - start) * 1000
    return {
        "first read": first,
        "stats()": median_ms(lambda: tasklog.stats(repo)),
        "stats(since=1d)": median_ms(lambda: tasklog.stats(repo, since=timedelta(days=1))),
        "list_runs()": median_ms(lambda: tasklog.list_runs(repo)),
        "list_runs(task)": median_ms(lambda: tasklog.list_runs(repo, task_name="task-07")),
        "list_runs(fail)": median_ms(lambda: tasklog.list_runs(repo, outcome="fail")),
        "list_runs(running)": median_ms(lambda: tasklog.list_runs(repo, outcome="running")),
        "get_run": median_ms(lambda: tasklog.get_run(repo, middle)),
        "tasks": median_ms(lambda: history.latest_per_task(repo)),
        "crash_candidates": median_ms(lambda: history.crash_candidates(repo)),
        "read after 1,000 new": catch_up_ms(repo),
    }


def main(argv: list[str]) -> None:
    """Build each store at each size and print a table."""
    sizes = [int(a) for a in argv if a.isdigit()] or [10_000, 100_000]
    stores = ["memory", "sqlite"]
    pg = None
    for i, arg in enumerate(argv):
        if arg == "--stores":
            stores = argv[i + 1].split(",")
        if arg == "--pg":
            pg = argv[i + 1]
            if "postgresql" not in stores:
                stores.append("postgresql")
    plot_to = argv[argv.index("--plot") + 1] if "--plot" in argv else None
    server = None
    if "postgresql" in stores and pg is None:
        from _postgres import PostgresServer

        server = PostgresServer()
        server.start()
        pg = server.url
    redis_server = None
    if "redis" in stores:
        from _redis import RedisServer

        redis_server = RedisServer().start()
    try:
        results = run(sizes, stores, pg, redis_server.url if redis_server else None)
    finally:
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
    print_table(results)
    if plot_to:
        draw(results, plot_to)


Results = dict[tuple[str, int], dict[str, float]]


def run(sizes: list[int], stores: list[str], pg: str | None, redis: str | None = None) -> Results:
    """Write and measure each store at each size."""
    tmp = Path(tempfile.mkdtemp(prefix="tasklog-runs-"))
    results: dict[tuple[str, int], dict[str, float]] = {}
    for n in sizes:
        for store in stores:
            if store == "memory":
                url = "memory://"
            elif store == "sqlite":
                url = f"sqlite:///{tmp / f'runs_{n}.db'}"
            elif store == "postgresql" and pg:
                url = f"{pg}?table=runs_{n}_{int(time.time())}"
            elif store == "redis" and redis:
                url = f"{redis}?key=runs_{n}_{int(time.time())}"
            else:
                continue
            repo = tasklog.open_repo(url, model=tasklog.TaskRunRecord)
            started = time.perf_counter()
            middle = fill(repo, n)
            print(f"{store} {n:,}: written in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
            results[(store, n)] = measure(repo, middle)
            print(f"{store} {n:,}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in results[(store, n)].items()), file=sys.stderr)
            repo.close()
    return results


def print_table(results: dict[tuple[str, int], dict[str, float]]) -> None:
    """A markdown table: a row per read, a column per store and size."""
    names = list(next(iter(results.values())))
    header = "| read | " + " | ".join(f"{s} {n:,}" for s, n in results) + " |"
    print(header)
    print("|---" * (len(results) + 1) + "|")
    for name in names:
        cells = " | ".join(f"{results[key][name]:.1f}" for key in results)
        print(f"| {name} | {cells} |")



def draw(results: dict[tuple[str, int], dict[str, float]], path: str) -> None:
    """Each read's median time against the history size, one panel per store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = sorted({store for store, _ in results})
    fig, axes = plt.subplots(1, len(stores), figsize=(5 * len(stores), 4), squeeze=False)
    for ax, store in zip(axes[0], stores, strict=True):
        sizes = sorted(n for s, n in results if s == store)
        for name in results[(store, sizes[0])]:
            ax.plot(sizes, [results[(store, n)][name] for n in sizes], marker="o", label=name)
        ax.axhline(100, color="grey", linestyle="--", linewidth=1)
        ax.set(xscale="log", yscale="log", title=store, xlabel="records", ylabel="ms (median of 5)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1:])
