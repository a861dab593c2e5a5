"""Code run in child processes by the multi-process tests (importable under spawn)."""

from __future__ import annotations

import logging

from tasklog import RepoHandler


def log_records(worker: int, count: int, urls: list[str]) -> None:
    """Log *count* records of task ``p<worker>`` to a RepoHandler per URL, then close them."""
    logger = logging.getLogger(f"tasklog.mp.{worker}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handlers = [RepoHandler(url) for url in urls]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        for i in range(count):
            logger.info(
                "record %s", i,
                extra={"task_name": f"p{worker}", "action": "log", "run_id": f"{worker}-{i}"},
            )
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        failed = {repr(h.repo): dict(h.counts) for h in handlers if h.counts["stored"] != count}
        if failed:
            raise SystemExit(f"worker {worker} did not store everything: {failed}")
