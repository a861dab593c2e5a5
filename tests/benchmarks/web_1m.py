#!/usr/bin/env python3
"""The web service over 1,000,000 records: each endpoint's server time, and a load test.

    python tests/benchmarks/web_1m.py [--stores sqlite postgresql] [--records 1000000]
                                      [--clients 200] [--seconds 60] [--dir DIR]

For each store: writes a history of ``--records`` records (250,000 runs of 50
tasks over 30 days, four records a run: ``run``, two lines, the closing
record; 8 % fail, 1 % crash, 2 % inaction, the newest run of each task still
open), then

* **endpoints**: the median of 7 calls of each API endpoint and page (2 when
  one takes over a second), in the server's process (Starlette's TestClient:
  no network, so this is server time), after one warm-up call; the three
  "after a new run" lines store one finished run of one task before each
  call, as a live history gets them: that task's figures and the total are
  then read again (not kept from the last call), and the run is folded in;
* **load** (SQLite by default): ``tasklog serve`` as its own process, and
  ``--clients`` concurrent clients (asyncio, one connection each) polling the
  dashboard's endpoints for ``--seconds`` seconds on loopback: each client
  asks for what the task and run pages read (a task's runs, its stats, a
  run), then waits 1 s, in a loop (``--with-overview`` adds the first page's
  ``/api/overview``). Errors (any status but 200, any exception) are counted; the p50,
  p95 and p99 latency and the request rate are printed.

PostgreSQL runs on a throwaway server started from the test helpers
(``tests/_postgres.py``), or ``--pg-url``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/ (for _postgres)

TASKS = 50
DAYS = 30
OVERVIEW = False


def LOAD_URLS(task: str, run_id: str) -> list[str]:
    """What one polling client asks for in one round."""
    urls = [f"/api/runs?task={task}&limit=50", f"/api/stats?task={task}", f"/api/runs/{run_id}"]
    return [*urls, "/api/overview"] if OVERVIEW else urls
BATCH = 20_000


def build(repo: Any, records: int) -> None:
    """Write the history: *records* // 4 runs, four records each."""
    runs = records // 4
    now = time.time()
    span = DAYS * 86400
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i in range(runs):
        task = f"task-{i % TASKS:02d}"
        created = now - span + span * i / runs
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        runtime = rng.lognormvariate(0, 1)
        start = datetime.fromtimestamp(created, timezone.utc)
        base = {"task_name": task, "run_id": run_id, "host": "bench", "process": 1000 + i % 7}
        rows.append({**base, "action": "run", "created": created, "start": start,
                     "message": "Run started"})
        rows.append({**base, "action": "log", "created": created + runtime / 3,
                     "message": f"processing batch {i}"})
        rows.append({**base, "action": "log", "created": created + runtime / 2,
                     "message": "wrote 250 rows"})
        if i >= runs - TASKS:
            rows.append({**base, "action": "log", "created": created + runtime,
                         "message": "still working"})
        else:
            roll = rng.random()
            outcome = ("fail" if roll < 0.08 else "crash" if roll < 0.09
                       else "inaction" if roll < 0.11 else "success")
            closing = {**base, "action": outcome, "created": created + runtime, "start": start,
                       "end": start + timedelta(seconds=runtime),
                       "runtime": timedelta(seconds=runtime),
                       "message": f"Run {outcome} after {runtime:.3f}s"}
            if outcome == "fail":
                closing["exc_text"] = ("Traceback (most recent call last):\n  File \"job.py\", "
                                       "line 3, in run\nConnectionError: warehouse refused")
            rows.append(closing)
        if len(rows) >= BATCH:
            repo.add_many(rows)
            rows.clear()
    if rows:
        repo.add_many(rows)
    print(f"  wrote {len(repo):,} records in {time.perf_counter() - started:.0f} s", flush=True)


def endpoints(repo: Any) -> list[tuple[str, str]]:
    """The URLs to time, with what each one is."""
    from starlette.testclient import TestClient

    from tasklog.web import create_app

    client = TestClient(create_app(repo))
    runs = client.get("/api/runs?limit=100").json()
    cursor = runs["next"]
    failed = client.get("/api/runs?status=fail&limit=1").json()["runs"][0]["run_id"]
    return [
        ("/", "dashboard page"),
        ("/static/app.js", "dashboard script"),
        ("/api/tasks", "tasks"),
        ("/api/overview", "overview (50 tasks, 20 runs each)"),
        ("/api/overview?since=1d", "overview, figures of the last day"),
        ("/api/runs", "runs, newest 100"),
        (f"/api/runs?before={cursor}", "runs, next page"),
        ("/api/runs?task=task-07&limit=50", "a task's runs"),
        ("/api/runs?status=fail", "failed runs"),
        ("/api/runs?task=task-07&status=crash", "a task's crashed runs"),
        ("/api/runs?status=running", "running runs"),
        ("/api/runs?since=2d&until=1d", "runs of a day"),
        (f"/api/runs/{failed}", "one run with its records"),
        (f"/api/runs/{failed}?format=text", "one run's log as text"),
        ("/api/stats", "stats"),
        ("/api/stats?since=1d", "stats of the last day"),
        ("/api/stats?task=task-07", "a task's stats"),
        ("/api/errors", "errors"),
        ("/api/errors?task=task-07&limit=100", "a task's errors"),
        ("/api/records?task_name=task-07&action=fail&limit=100", "records query"),
        ("/api/records?message__contains=batch%20999&limit=10", "records, substring"),
        ("/api/history", "history, last day by hour"),
        ("/api/history?task=task-07&since=7d&interval=6h", "a task's week by 6 h"),
        ("/api/executions", "ScheduleZero executions"),
        ("/api/executions?status=error", "ScheduleZero errors (filter)"),
        ("/api/executions/stats", "ScheduleZero stats"),
        ("/api/executions/errors", "ScheduleZero errors"),
        ("/metrics", "Prometheus metrics"),
        ("/healthz", "health"),
        # a run of one task stored before each call: the figures kept between
        # reads are read again for that task and in total, the run folded in
        (AFTER_A_RUN + "/api/overview", "overview after a new run"),
        (AFTER_A_RUN + "/api/stats", "stats after a new run"),
        (AFTER_A_RUN + "/metrics", "metrics after a new run"),
    ], client


AFTER_A_RUN = "after-a-run:"


def new_run(repo: Any, n: int) -> None:
    """Store one finished run of one of the tasks (as a live history gets them)."""
    now = time.time()
    base = {"task_name": f"task-{n % TASKS:02d}", "run_id": uuid.uuid4().hex, "host": "bench"}
    repo.add_many([
        {**base, "action": "run", "created": now, "message": "Run started"},
        {**base, "action": "success", "created": now + 0.5,
         "runtime": timedelta(seconds=0.5), "message": "Run success after 0.500s"},
    ])


def time_endpoints(repo: Any, store: str, skip: list[str]) -> list[tuple[str, str, float]]:
    urls, client = endpoints(repo)
    results = []
    written = 0
    for shown, what in urls:
        if any(text in shown for text in skip):
            print(f"  {store:10} {'skipped':>11}  {what:38} {shown[:60]}", flush=True)
            continue
        fresh = shown.startswith(AFTER_A_RUN)
        url = shown.removeprefix(AFTER_A_RUN)
        response = client.get(url)
        if response.status_code != 200:
            msg = f"{url}: {response.status_code} {response.text[:200]}"
            raise SystemExit(msg)
        times: list[float] = []
        for _ in range(7):
            if fresh:
                written += 1
                new_run(repo, written)
            start = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - start) * 1000)
            if times[0] >= 1000 and len(times) == 2:  # slow ones: fewer rounds
                break
        ms = statistics.median(times)
        limit = 200 if url == "/metrics" else 100
        flag = "" if ms <= limit else f"  OVER {limit} ms"
        print(f"  {store:10} {ms:8.1f} ms  {what:38} {url[:60]}{flag}", flush=True)
        results.append((shown, what, ms))
    return results


async def _load(base: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx2 as httpx

    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        runs = (await http.get("/api/runs?limit=200")).json()["runs"]
        deadline = time.monotonic() + seconds

        async def client(n: int) -> None:
            rng = random.Random(n)
            await asyncio.sleep(rng.random())
            while time.monotonic() < deadline:
                task = f"task-{rng.randrange(TASKS):02d}"
                for url in LOAD_URLS(task, rng.choice(runs)["run_id"]):
                    start = time.perf_counter()
                    try:
                        response = await http.get(url)
                        if response.status_code != 200:
                            errors.append(f"{url}: {response.status_code}")
                    except Exception as err:
                        errors.append(f"{url}: {type(err).__name__}: {err}")
                    latencies.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(1.0)

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"requests": len(latencies), "errors": errors, "rate": len(latencies) / elapsed,
            "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": latencies[-1]}


def load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """Serve *url* with ``tasklog serve`` and poll it with *clients* clients."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tasklog", "--repo", url, "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=5).close()
                break
            except OSError:
                time.sleep(0.1)
        result = asyncio.run(_load(base, clients, seconds))
    finally:
        server.terminate()
        server.wait(30)
    print(f"  load: {clients} clients for {seconds:.0f} s: {result['requests']:,} requests "
          f"({result['rate']:.0f}/s), {len(result['errors'])} errors; latency p50 "
          f"{result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, p99 {result['p99']:.0f} ms, "
          f"max {result['max']:.0f} ms", flush=True)
    for line in result["errors"][:10]:
        print(f"    {line}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--load-stores", nargs="*", default=["sqlite"])
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--with-overview", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="Skip the endpoints whose URL contains one of these texts.")
    parser.add_argument("--no-endpoints", action="store_true", help="Only the load test.")
    args = parser.parse_args()
    global OVERVIEW
    OVERVIEW = args.with_overview

    from tasklog import TaskRunRecord, open_repo

    directory = Path(args.dir or tempfile.mkdtemp(prefix="tasklog-web-"))
    print(f"{args.records:,} records, {TASKS} tasks; {os.cpu_count()} CPUs; python "
          f"{sys.version.split()[0]}", flush=True)
    server = None
    for store in args.stores:
        if store == "sqlite":
            url = f"sqlite:///{directory / 'web.db'}"
        elif store == "postgresql":
            if args.pg_url:
                url = args.pg_url
            else:
                from _postgres import PostgresServer

                server = PostgresServer().start()
                url = server.url
            url += ("&" if "?" in url else "?") + f"table=web_{uuid.uuid4().hex[:6]}"
        else:
            raise SystemExit(f"unknown store {store!r}")
        print(f"{store}:", flush=True)
        repo = open_repo(url, model=TaskRunRecord)
        if len(repo) < args.records:
            build(repo, args.records)
            if store == "postgresql":  # the statistics autovacuum gathers within a minute or so
                with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                    c.exec_driver_sql(f"ANALYZE {repo.table_name}")
        if not args.no_endpoints:
            time_endpoints(repo, store, args.skip)
        if store in args.load_stores:
            load(url, args.clients, args.seconds)
        repo.close()
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
