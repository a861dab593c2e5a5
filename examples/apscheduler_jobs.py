"""APScheduler jobs with a history, without touching the jobs.

    pip install 'tasklog[apscheduler]'
    python examples/apscheduler_jobs.py [URL]

Three interval jobs run for about three seconds under a BackgroundScheduler:
one succeeds (and logs through a library logger), one fails, one overruns
its interval (``max_instances=1``, so the executions due meanwhile are
skipped). Then the history is printed. The URL defaults to
``sqlite:///apscheduler_jobs.db``.
"""

from __future__ import annotations

import logging
import sys
import time

from apscheduler.schedulers.background import BackgroundScheduler

import tasklog
from tasklog.contrib.apscheduler import install

http = logging.getLogger("example.http")


def fetch_prices() -> None:
    """A job that knows nothing about tasklog."""
    http.info("GET https://example.com/prices -> 200")


def send_report() -> None:
    """A job that fails."""
    msg = "SMTP server refused the connection"
    raise ConnectionError(msg)


def rebuild_index() -> None:
    """A job slower than its interval; its own line goes into its run."""
    run = tasklog.current_run()
    if run is not None:
        run.info("rebuilding")
    time.sleep(1.2)


def main() -> None:
    """Schedule, run for three seconds, print the runs."""
    url = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///apscheduler_jobs.db"
    # capture=True: what the jobs' libraries log goes into their runs too
    tasklog.basic_config(url, model=tasklog.TaskRunRecord, capture=True)
    logging.getLogger("example").setLevel(logging.INFO)

    scheduler = BackgroundScheduler(timezone="UTC")
    install(scheduler)  # every execution becomes a run on the "tasklog.task" logger
    scheduler.add_job(fetch_prices, "interval", seconds=1, id="fetch_prices")
    scheduler.add_job(send_report, "interval", seconds=1, id="send_report")
    scheduler.add_job(rebuild_index, "interval", seconds=0.5, id="rebuild_index",
                      max_instances=1)
    scheduler.start()
    time.sleep(3.2)
    scheduler.shutdown(wait=True)

    for task in ("fetch_prices", "send_report", "rebuild_index"):
        records = tasklog.get_task_logger(task).get_records()
        outcomes = [r.action for r in records if r.action not in ("run", "log")]
        print(f"--- {task}: {len(outcomes)} runs, outcomes {sorted(set(outcomes))}")
        run_id = records[-1].run_id
        print(tasklog.runs.format_records(r for r in records if r.run_id == run_id))


if __name__ == "__main__":
    main()
