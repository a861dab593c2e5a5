#!/usr/bin/env python3
"""RedisRepo: write ratios against FileHandler, query latency at 1,000,000 records, memory.

    python tests/benchmarks/redis_1m.py [--url redis://host:port/0] [--size 1000000]
                                        [--logged 100000] [--json OUT.json]
                                        [--only writes|reads|memory ...]

Starts a throwaway ``redis-server`` (persistence off) unless ``--url`` is given.

* **writes**: the logbench workload (20 tasks, a ``fail`` every 97th record,
  ``run``/``success`` alternating, a run id per pair) — ``--logged`` records
  through a stdlib ``FileHandler`` and then through a ``RepoHandler`` on a
  ``RedisRepo``, in the same process: *emit* = records/s of the logging loop,
  *e2e* = records/s until ``handler.flush()`` returns (records readable); the
  ratios are the median of five rounds' (each round times both, one after
  the other); once
  with ``MinimalRunRecord`` (logbench's model, the one the other stores'
  ratios are measured with) and once with ``TaskRunRecord`` (the default).
* **reads** at ``--size`` records (the workload as ``TaskRunRecord``s with a
  message, level, host and process, as logged; inserted in batches of 10,000):
  median of 15 timings of ``filter_by(task_name="task-3", action="fail").all()``,
  ``filter_by(task_name="task-7", action="run").last()``, ``count()`` of the
  fails and of everything.
* **memory**: ``used_memory`` from ``INFO memory`` before and after storing
  ``TaskRunRecord``s (message, level, host, process, run id; no traceback) and
  ``MinimalRunRecord``s, divided by the number of records.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasklog import MinimalRunRecord, RepoHandler, TaskRunRecord, between  # noqa: E402
from tasklog.repos.redis_store import RedisRepo  # noqa: E402

TASKS = 20
BATCH = 10_000


def extra(i: int) -> dict[str, Any]:
    """The i-th record's task fields (logbench's workload)."""
    return {
        "task_name": f"task-{i % TASKS}",
        "action": "fail" if i % 97 == 0 else ("run" if i % 2 == 0 else "success"),
        "run_id": f"run-{i // 2}",
    }


def stored_row(repo: RedisRepo[Any], i: int) -> dict[str, Any]:
    """The i-th record as the handler stores it: the task fields, ``created``,
    and for a ``TaskRunRecord`` a message, level, host and process."""
    row: dict[str, Any] = {**extra(i), "created": 1.7e9 + i * 0.001}
    if "message" in repo.schema.fields:
        row.update(message=f"processed item {i}", levelname="INFO", host=platform.node(),
                   process=os.getpid())
    return repo.schema.row(repo.validate(row))


def drop(repo: RedisRepo[Any]) -> None:
    """Delete every key of the store."""
    keys = list(repo.client.scan_iter(match="{" + repo.key + "}:*", count=5000))
    for start in range(0, len(keys), 1000):
        repo.client.delete(*keys[start : start + 1000])


def log_through(handler: logging.Handler, n: int) -> tuple[float, float]:
    """Log n records through *handler*: (emit records/s, end-to-end records/s)."""
    logger = logging.getLogger(f"bench.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    extras = [extra(i) for i in range(n)]
    gc.collect()
    t0 = time.perf_counter()
    for i in range(n):
        logger.info("processed item %d", i, extra=extras[i])
    emit = time.perf_counter() - t0
    handler.flush()
    total = time.perf_counter() - t0
    logger.removeHandler(handler)
    return n / emit, n / total


def writes(url: str, n: int, model: type[Any], rounds: int = 5) -> dict[str, float]:
    """FileHandler and RepoHandler(RedisRepo(model=model)) in turn, *rounds* times.

    The ratios are the median of each round's ratio (the two measured a moment
    apart, so that the machine's drifting speed cancels out); the records/s
    figures are the best of the rounds.
    """
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {"emit_ratio": [], "e2e_ratio": []}
    workdir = Path(tempfile.mkdtemp(prefix="tasklog-redis-bench-"))
    for _ in range(rounds):
        path = workdir / "file.log"
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(
            logging.Formatter("%(created)f %(task_name)s %(action)s %(run_id)s %(message)s")
        )
        file_emit, file_e2e = log_through(file_handler, n)
        file_handler.close()
        path.unlink()
        repo: RedisRepo[Any] = RedisRepo(url, key=f"w_{uuid.uuid4().hex[:8]}", model=model)
        handler = RepoHandler(repo, handle_sigterm=False)
        emit, e2e = log_through(handler, n)
        handler.close()
        assert len(repo) == n, len(repo)
        drop(repo)
        repo.close()
        for name, value in (("file_emit", file_emit), ("file_e2e", file_e2e), ("emit", emit),
                            ("e2e", e2e)):
            best[name] = max(best.get(name, 0.0), value)
        ratios["emit_ratio"].append(emit / file_emit)
        ratios["e2e_ratio"].append(e2e / file_e2e)
    workdir.rmdir()
    out: dict[str, Any] = {name: round(value) for name, value in best.items()}
    for name, values in ratios.items():
        out[name] = round(statistics.median(values), 3)
        out[name + "s"] = [round(v, 3) for v in values]
    return out


def median_ms(func: Callable[[], Any], rounds: int = 15) -> tuple[float, Any]:
    """Median wall time of *func* in ms, and its last result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def used_memory(repo: RedisRepo[Any]) -> int:
    """Redis's used_memory (bytes)."""
    return int(repo.client.info("memory")["used_memory"])


def reads(url: str, size: int) -> dict[str, Any]:
    """Fill a key with *size* records and time the queries."""
    repo: RedisRepo[Any] = RedisRepo(url, key=f"r_{uuid.uuid4().hex[:8]}")
    try:
        start = time.perf_counter()
        for first in range(0, size, BATCH):
            repo.insert_rows([stored_row(repo, i) for i in range(first, min(size, first + BATCH))])
        inserted = time.perf_counter() - start
        out: dict[str, Any] = {"size": size, "insert_s": inserted}
        middle = 1.7e9 + size // 2 * 0.001
        ms, hits = median_ms(lambda: repo.filter_by(task_name="task-3", action="fail").all())
        out["fail_of_task_ms"], out["fail_of_task_hits"] = ms, len(hits)
        ms, _ = median_ms(lambda: repo.filter_by(task_name="task-7", action="run").last())
        out["last_run_ms"] = ms
        ms, _ = median_ms(lambda: repo.filter_by(run_id="run-4242").all())
        out["one_run_ms"] = ms
        ms, count = median_ms(lambda: repo.filter_by(action="fail").count())
        out["count_fail_ms"], out["count_fail"] = ms, count
        ms, count = median_ms(lambda: len(repo))
        out["count_all_ms"], out["count_all"] = ms, count
        ms, got = median_ms(
            lambda: repo.filter_by(created=between(middle, middle + 0.099)).all()
        )
        out["created_range_ms"], out["created_range_hits"] = ms, len(got)
        return out
    finally:
        drop(repo)
        repo.close()


def memory(url: str, n: int) -> dict[str, float]:
    """Bytes of Redis memory per stored record, for two models."""
    out: dict[str, float] = {}
    for model in (TaskRunRecord, MinimalRunRecord):
        repo: RedisRepo[Any] = RedisRepo(url, key=f"m_{uuid.uuid4().hex[:8]}", model=model)
        try:
            before = used_memory(repo)
            for first in range(0, n, BATCH):
                repo.insert_rows([stored_row(repo, i) for i in range(first, min(n, first + BATCH))])
            out[model.__name__] = (used_memory(repo) - before) / n
        finally:
            drop(repo)
            repo.close()
    return out


def main() -> int:
    """Run and print the figures (JSON lines)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--logged", type=int, default=100_000)
    ap.add_argument("--memory-records", type=int, default=200_000)
    ap.add_argument("--json")
    ap.add_argument("--only", choices=["writes", "reads", "memory"], action="append",
                    help="run only these parts (repeatable; default: all)")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        from _redis import RedisServer

        server = RedisServer().start()
        url = server.url
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any] = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {when}",
    }
    try:
        parts = args.only or ["writes", "reads", "memory"]
        if "writes" in parts:
            for model in (MinimalRunRecord, TaskRunRecord):
                name = f"writes_{model.__name__}"
                results[name] = writes(url, args.logged, model)
                print(json.dumps({name: results[name]}), flush=True)
        if "reads" in parts:
            results["reads"] = reads(url, args.size)
            print(json.dumps({"reads": results["reads"]}), flush=True)
        if "memory" in parts:
            results["memory_bytes_per_record"] = memory(url, args.memory_records)
            print(json.dumps({"memory_bytes_per_record": results["memory_bytes_per_record"]}),
                  flush=True)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
