"""Job functions for the APScheduler tests, importable by a process pool's workers."""

from __future__ import annotations

import logging
import os

import tasklog


class Record(tasklog.TaskRunRecord):
    """TaskRunRecord with the level, to tell the traceback's record."""

    levelname: str | None = None


_configured = False


def _configure() -> None:
    """In a worker process: send the task logger to the test's store (once)."""
    global _configured
    if not _configured and os.environ.get("TASKLOG_APS_URL"):
        tasklog.basic_config(
            os.environ["TASKLOG_APS_URL"], model=Record, mode="sync", capture=True,
            logger=os.environ.get("TASKLOG_APS_LOGGER", "tasklog.task"),
        )
        logging.getLogger("apslib").setLevel(logging.INFO)
        _configured = True


def report() -> str:
    """Log a line into the current run, through the run and a library logger."""
    _configure()
    run = tasklog.current_run()
    assert run is not None
    run.info("report in pid %d", os.getpid())
    logging.getLogger("apslib.db").info("query done")
    return "ok"


def broken() -> None:
    """Fail the way a job does."""
    _configure()
    raise RuntimeError("disk full")
