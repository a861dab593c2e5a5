#!/usr/bin/env python3
"""tasklog's write and read costs per store, at several history sizes.

    python tests/benchmarks/run.py [--sizes 10000 100000 1000000] [--stores memory csv ...]
                                   [--pg-url URL] [--out docs] [--reps 5]

For each store and each size N:

* **writes**: the logbench workload (20 tasks, a ``fail`` every 97th record,
  ``run``/``success`` alternating, a run id per pair) logged through a
  ``RepoHandler`` — ``min(N, 100k)`` records, on top of a history of the rest
  inserted in bulk beforehand (so at N = 1M, 100k records are logged onto
  900k). The same number of records goes through a stdlib ``FileHandler``
  right before, in the same process; the ratios compare the two.
  *emit* = records/s of the logging loop alone (what the caller pays),
  *e2e* = records/s until ``handler.flush()`` returns (records readable).
* **reads** over the N records (median of ``--reps``): ``filter_by(task_name=
  "task-3", action="fail").all()`` (≈ N/1940 hits), ``filter_by(action="fail")
  .count()``, ``filter_by(task_name="task-7", action="run").last()``, and
  ``count()`` of everything.
* **memory**: bytes per record of a ``MemoryRepo`` of ``MinimalRunRecord``s
  (tracemalloc; every string freshly made, as records from a program are).
* **SIGKILL**: a child logs at full speed and is killed with SIGKILL; the
  records it had logged but that are not stored are the loss.

Writes ``OUT/benchmarks.md`` (tables) and ``OUT/benchmarks.png`` (plot) and
prints the tables. Not part of the test suite (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tasklog
from tasklog import CSVFileRepo, MemoryRepo, MinimalRunRecord, RepoHandler, SQLRepo

TASKS = 20
STORES = ("memory", "csv", "sqlite", "postgresql")
HERE = Path(__file__).resolve().parent


def record_extra(i: int) -> dict[str, Any]:
    """The i-th record's task fields (logbench.py's workload)."""
    return {
        "task_name": f"task-{i % TASKS}",
        "action": "fail" if i % 97 == 0 else ("run" if i % 2 == 0 else "success"),
        "run_id": f"run-{i // 2}",
    }


def make_repo(store: str, workdir: Path, pg_url: str | None) -> tasklog.Repository[Any]:
    """A fresh repository of *store*."""
    if store == "memory":
        return MemoryRepo(model=MinimalRunRecord)
    if store == "csv":
        return CSVFileRepo(workdir / f"{uuid.uuid4().hex}.csv", model=MinimalRunRecord)
    if store == "sqlite":
        return SQLRepo(url=f"sqlite:///{workdir / uuid.uuid4().hex}.db", table="bench")
    assert pg_url is not None
    return SQLRepo(url=pg_url, table=f"bench_{uuid.uuid4().hex[:10]}")


def drop(repo: tasklog.Repository[Any]) -> None:
    """Remove a PostgreSQL table; close the repository."""
    if isinstance(repo, SQLRepo) and repo.engine.dialect.name == "postgresql":
        repo.drop()
    repo.close()


def prefill(repo: tasklog.Repository[Any], n: int) -> None:
    """Insert the first *n* records of the workload in bulk (batches of 10k)."""
    t0 = 1.7e9
    for start in range(0, n, 10_000):
        rows = [
            {**record_extra(i), "created": t0 + i * 0.001}
            for i in range(start, min(n, start + 10_000))
        ]
        repo.insert_rows(rows)


def log_through(handler: logging.Handler, first: int, n: int) -> tuple[float, float]:
    """Log records first..first+n through *handler*; (emit records/s, e2e records/s)."""
    logger = logging.getLogger(f"bench.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    extra = [record_extra(i) for i in range(first, first + n)]
    gc.collect()
    t0 = time.perf_counter()
    for i in range(n):
        logger.info("processed item %d", first + i, extra=extra[i])
    emit = time.perf_counter() - t0
    handler.flush()
    total = time.perf_counter() - t0
    logger.removeHandler(handler)
    return n / emit, n / total


def filehandler_rate(workdir: Path, n: int) -> tuple[float, float]:
    """The stdlib FileHandler on the same workload (logbench.py's format)."""
    path = workdir / f"{uuid.uuid4().hex}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("%(created)f %(task_name)s %(action)s %(run_id)s %(message)s")
    )
    try:
        return log_through(handler, 0, n)
    finally:
        handler.close()
        path.unlink()


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median wall time of *fn* in ms."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(store: str, size: int, workdir: Path, pg_url: str | None, reps: int) -> dict[str, Any]:
    """Writes and reads of one store at one size."""
    logged = min(size, 100_000)
    repo = make_repo(store, workdir, pg_url)
    try:
        prefill(repo, size - logged)
        file_emit, file_e2e = filehandler_rate(workdir, logged)
        handler = RepoHandler(repo, handle_sigterm=False)
        emit, e2e = log_through(handler, size - logged, logged)
        handler.close()
        assert len(repo) == size, (store, size, len(repo))
        query_reps = reps if store != "csv" or size < 1_000_000 else max(1, reps // 2)
        hits = len(repo.filter_by(task_name="task-3", action="fail").all())
        out = {
            "store": store,
            "size": size,
            "logged": logged,
            "emit_per_s": emit,
            "e2e_per_s": e2e,
            "file_emit_per_s": file_emit,
            "file_e2e_per_s": file_e2e,
            "emit_ratio": emit / file_emit,
            "e2e_ratio": e2e / file_e2e,
            "fail_of_task_ms": median_ms(
                lambda: repo.filter_by(task_name="task-3", action="fail").all(), query_reps
            ),
            "fail_of_task_hits": hits,
            "count_fail_ms": median_ms(lambda: repo.filter_by(action="fail").count(), query_reps),
            "last_run_ms": median_ms(
                lambda: repo.filter_by(task_name="task-7", action="run").last(), query_reps
            ),
            "count_all_ms": median_ms(repo.filter_by().count, query_reps),
        }
    finally:
        drop(repo)
    return out


def memory_bytes_per_record(n: int) -> float:
    """tracemalloc's growth per record of a MemoryRepo holding n MinimalRunRecords."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    repo: MemoryRepo[MinimalRunRecord] = MemoryRepo(model=MinimalRunRecord)
    for start in range(0, n, 10_000):
        # fresh strings, as a program's records carry
        repo.add_many(
            {**record_extra(i), "created": 1.7e9 + i * 0.001}
            for i in range(start, min(n, start + 10_000))
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(repo) == n
    return (after - before) / n


def _kill_child(url: str, counter: Any, rate: float) -> None:
    logger = logging.getLogger("bench.kill")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = RepoHandler(SQLRepo(url=url, table="t"))
    logger.addHandler(handler)
    i = 0
    start = time.perf_counter()
    while True:
        logger.info("r", extra={"task_name": "job", "action": "log", "run_id": str(i)})
        i += 1
        counter.value = i
        if rate and i % 50 == 0:
            ahead = i / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)


def sigkill_loss(
    workdir: Path, runs: int = 5, after_s: float = 2.0, rate: float = 0.0
) -> list[dict[str, Any]]:
    """Kill a child logging to SQLite (*rate* records/s, 0: full speed); what is lost."""
    ctx = multiprocessing.get_context("spawn")
    results = []
    for _ in range(runs):
        url = f"sqlite:///{workdir / uuid.uuid4().hex}.db"
        SQLRepo(url=url, table="t").close()
        counter = ctx.Value("q", 0, lock=False)
        proc = ctx.Process(target=_kill_child, args=(url, counter, rate))
        proc.start()
        while counter.value == 0:
            time.sleep(0.01)
        time.sleep(after_s)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        logged = int(counter.value)
        repo: SQLRepo[Any] = SQLRepo(url=url, table="t")
        stored = len(repo)
        repo.close()
        results.append({"rate": rate or "full speed", "logged": logged, "stored": stored,
                        "lost": logged - stored})
    return results


def fmt_rate(x: float) -> str:
    """Records/s in thousands."""
    return f"{x / 1000:.1f}k"


def tables(results: list[dict[str, Any]], mem: dict[int, float], kills: list[dict[str, Any]],
           machine: str) -> str:
    """The markdown report."""
    lines = [
        "# tasklog benchmark results",
        "",
        f"Generated by `tests/benchmarks/run.py` on {machine}.",
        "",
        "## Writes (records logged through RepoHandler vs stdlib FileHandler, same run)",
        "",
        "| store | history N | logged | emit/s | FileHandler emit/s | emit ratio "
        "| e2e/s | FileHandler e2e/s | e2e ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['store']} | {r['size']:,} | {r['logged']:,} | {fmt_rate(r['emit_per_s'])} "
            f"| {fmt_rate(r['file_emit_per_s'])} | {r['emit_ratio']:.2f}x "
            f"| {fmt_rate(r['e2e_per_s'])} | {fmt_rate(r['file_e2e_per_s'])} "
            f"| {r['e2e_ratio']:.2f}x |"
        )
    lines += [
        "",
        "## Reads over N stored records (median wall time, ms)",
        "",
        "| store | N | fail of one task `.all()` (hits) | `count()` of fails "
        "| `.last()` run of a task | `count()` of all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['store']} | {r['size']:,} | {r['fail_of_task_ms']:.2f} "
            f"({r['fail_of_task_hits']}) | {r['count_fail_ms']:.2f} | {r['last_run_ms']:.2f} "
            f"| {r['count_all_ms']:.1f} |"
        )
    lines += ["", "## MemoryRepo size (tracemalloc, MinimalRunRecord)", "",
              "| records | bytes/record |", "|---:|---:|"]
    lines += [f"| {n:,} | {b:.0f} |" for n, b in sorted(mem.items())]
    if kills:
        lines += ["", "## SIGKILL 2 s into logging to SQLite (defaults: "
                  "batch_size=1000, flush_interval=0.2 s)", "",
                  "| records/s | logged | stored | lost |", "|---|---:|---:|---:|"]
        lines += [f"| {k['rate']} | {k['logged']:,} | {k['stored']:,} | {k['lost']:,} |"
                  for k in kills]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Throughput ratios and query latencies against history size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    stores = sorted({r["store"] for r in results}, key=STORES.index)
    for n, store in enumerate(stores):
        rs = [r for r in results if r["store"] == store]
        sizes = [r["size"] for r in rs]
        color = f"C{n}"
        axes[0].plot(sizes, [r["e2e_ratio"] for r in rs], marker="o", color=color, label=store)
        axes[1].plot(sizes, [r["emit_ratio"] for r in rs], marker="o", color=color, label=store)
        axes[2].plot(sizes, [r["fail_of_task_ms"] for r in rs], marker="o", color=color,
                     label=f"{store} fail of one task")
        axes[2].plot(sizes, [max(r["last_run_ms"], 1e-3) for r in rs], marker="x", color=color,
                     linestyle="--", label=f"{store} .last()")
    axes[0].set_title("end to end, ratio to FileHandler")
    axes[1].set_title("caller's emit, ratio to FileHandler")
    axes[2].set_title("query latency (ms)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("records in the store")
        ax.grid(True, alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].axhline(1.0, color="grey", linewidth=0.8)
    axes[1].axhline(1.0, color="grey", linewidth=0.8)
    axes[0].legend()
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    """Run the benchmarks and write the report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    ap.add_argument("--pg-url", default=os.environ.get("TASKLOG_BENCH_PG"))
    ap.add_argument("--out", default=str(HERE.parent.parent / "docs"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-kill", action="store_true", help="skip the SIGKILL measurements")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw OUT/benchmarks.png from OUT/benchmarks.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.replot:
        plot(json.loads((out / "benchmarks.json").read_text())["results"], out / "benchmarks.png")
        return 0

    server = None
    if "postgresql" in args.stores and not args.pg_url:
        sys.path.insert(0, str(HERE.parent))
        from _postgres import PostgresServer

        server = PostgresServer().start()
        args.pg_url = server.url
    workdir = Path(tempfile.mkdtemp(prefix="tasklog-bench-"))
    machine = (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    results = []
    try:
        for size in args.sizes:
            for store in args.stores:
                r = measure(store, size, workdir, args.pg_url, args.reps)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in r.items()}), flush=True)
                results.append(r)
        mem = {n: memory_bytes_per_record(n) for n in args.sizes if n <= 1_000_000}
        print(json.dumps({"memory_bytes_per_record": mem}), flush=True)
        kills = [] if args.no_kill else [
            *sigkill_loss(workdir, runs=5), *sigkill_loss(workdir, runs=3, rate=10_000),
            *sigkill_loss(workdir, runs=3, rate=1_000),
        ]
        print(json.dumps({"sigkill": kills}), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            server.stop()
    out.mkdir(exist_ok=True)
    report = tables(results, mem, kills, machine)
    (out / "benchmarks.json").write_text(json.dumps(
        {"machine": machine, "results": results, "memory_bytes_per_record": mem,
         "sigkill": kills}, indent=1))
    (out / "benchmarks.md").write_text(report)
    plot(results, out / "benchmarks.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
