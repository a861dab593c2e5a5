"""Helpers for the web service's tests: a history written by the library, a live server."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from tasklog import RepoHandler, Repository, TaskInaction, get_task_logger

HOSTILE_TASK = "<script>alert(1)</script>"


def write_history(repo: Repository[Any]) -> dict[str, Any]:
    """Log runs through the library: successes, failures, an inaction, one still open.

    Returns what was written: run ids by task and outcome.
    """
    logger = logging.getLogger(f"tasklog.webtest.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = RepoHandler(repo)
    logger.addHandler(handler)
    written: dict[str, Any] = {"runs": []}
    try:
        report = get_task_logger("nightly-report", logger=logger)
        for pages in (12, 14, 16):
            with report.run() as run:
                run.info("rendering %d pages", pages)
                run.warning("page %d was slow", pages)
                written["runs"].append(("nightly-report", run.run_id, "success"))
        prices = get_task_logger("fetch-prices", logger=logger)
        with prices.run() as run:
            run.info("fetched 250 prices")
            written["runs"].append(("fetch-prices", run.run_id, "success"))
        for attempt in (1, 2):
            try:
                with prices.run() as run:
                    written["runs"].append(("fetch-prices", run.run_id, "fail"))
                    run.info("connecting, attempt %d", attempt)
                    raise ConnectionError("warehouse.example.com: connection refused")
            except ConnectionError:
                pass
        cleanup = get_task_logger("cleanup-tmp", logger=logger)
        with cleanup.run() as run:
            written["runs"].append(("cleanup-tmp", run.run_id, "inaction"))
            raise TaskInaction
        hostile = get_task_logger(HOSTILE_TASK, logger=logger)
        with hostile.run() as run:
            run.info("<img src=x onerror=alert(2)> & \"quotes\"")
            written["runs"].append((HOSTILE_TASK, run.run_id, "success"))
    finally:
        handler.flush()
        logger.removeHandler(handler)
        handler.close()
    run_id = uuid.uuid4().hex  # a run still open (its process: this one, alive)
    repo.add({
        "task_name": "nightly-report", "action": "run", "created": time.time(), "run_id": run_id,
        "start": datetime.now(timezone.utc), "host": socket.gethostname(), "process": os.getpid(),
        "message": "Run started",
    })
    written["runs"].append(("nightly-report", run_id, None))
    return written


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve *app* with uvicorn on loopback in a thread; yield its base URL."""
    import uvicorn

    port = free_port()
    # log_config=None: uvicorn's own logging setup (logging.config.dictConfig) would
    # close every handler of the process, the tests' RepoHandlers among them
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "uvicorn did not start"
            raise RuntimeError(msg)
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def write_backfill(repo: Repository[Any], task: str = "hourly-sync", hours: int = 48) -> int:
    """Add a run an hour for *hours* hours back (varied durations, a failure every 7th).

    Records are added through the repository API, with their times in the past,
    so a chart has something to spread out. Returns the number of runs.
    """
    now = time.time()
    rows: list[dict[str, Any]] = []
    for i in range(hours):
        created = now - (hours - i) * 3600
        seconds = 20 + (i * 37 % 23) * 3.5 + (90 if i % 11 == 5 else 0)
        start = datetime.fromtimestamp(created, timezone.utc)
        end = datetime.fromtimestamp(created + seconds, timezone.utc)
        run_id = f"sync-{i:03d}"
        outcome = "fail" if i % 7 == 3 else "success"
        base = {"task_name": task, "run_id": run_id, "host": "worker-1", "process": 4000 + i}
        rows.append({**base, "action": "run", "created": created, "start": start,
                     "message": "Run started"})
        rows.append({**base, "action": "log", "created": created + seconds / 2,
                     "message": f"synced {100 + i * 13 % 400} rows"})
        rows.append({
            **base, "action": outcome, "created": created + seconds, "start": start, "end": end,
            "runtime": end - start,
            "message": f"Run {'failed' if outcome == 'fail' else 'succeeded'} in {seconds:.1f}s",
            "exc_text": (
                "Traceback (most recent call last):\n  File \"sync.py\", line 12, in run\n"
                "TimeoutError: upstream API did not answer in 30s" if outcome == "fail" else None
            ),
        })
    repo.add_many(rows)
    return hours
