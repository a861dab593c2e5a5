"""A small job runner: runs, failures, retries and statistics with tasklog.

    python examples/job_runner.py [URL]

The URL defaults to ``sqlite:///job_runner.db``; ``memory://``,
``csv:///tmp/jobs.csv`` or ``postgresql+psycopg://user@host/db`` work the
same. Read it top to bottom: each job shows one part of a run's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys

import tasklog
from tasklog import CancelRun, TaskInaction, TaskRunRecord


class JobRecord(TaskRunRecord):
    """The stored record: tasklog's run record plus the fields our jobs fill."""

    attempt: int | None = None  # from task_logger.run(attempt=...)
    user: int | None = None  # from run.bind(user=...)
    processed: int | None = None  # from run.statistics({"processed": ...})


# 1. Each job is a task; its logger stamps the task name on every record.
#    (The task loggers are made after basic_config(), in main().)


# 2. A run that succeeds: progress, context per user, statistics.
def run_backup(backup: tasklog.TaskAdapter) -> tasklog.Run:
    """Back up three users' files; the run logs run ... success."""
    with backup.run() as run:
        users = [101, 102, 103]
        for done, user in enumerate(users, start=1):
            run.bind(user=user).info("copying files")
            run.progress(done, len(users))
        run.statistics({"processed": len(users), "skipped": 0})
    return run


# 3. A run that fails: the traceback is stored and the exception re-raised.
def run_import(importer: tasklog.TaskAdapter) -> None:
    """Import a file that is broken; the run logs fail with the traceback."""
    with importer.run() as run:
        run.info("reading orders.csv")
        int("12x")  # ValueError: the run's closing record is "fail"


# 4. Nothing to do: TaskInaction closes the run as "inaction", quietly.
def run_report(report: tasklog.TaskAdapter) -> None:
    """Skip the report when there is no new data."""
    with report.run():
        raise TaskInaction("no new data since the last report")


# 5. A boring run: CancelRun deletes every record of it.
def run_healthcheck(healthcheck: tasklog.TaskAdapter) -> None:
    """A health check that found nothing worth keeping."""
    with healthcheck.run() as run:
        run.info("all green")
        raise CancelRun


# 6. Retries: each attempt is its own run, with its attempt number stored.
def run_fetch(fetch: tasklog.TaskAdapter, attempts: int = 3) -> None:
    """Fetch with retries; the first two attempts fail."""
    for attempt in range(1, attempts + 1):
        try:
            with fetch.run(attempt=attempt) as run:
                run.info("fetching prices")
                if attempt < 3:
                    raise ConnectionError(f"timeout after {random.randint(5, 9)}s")
            return
        except ConnectionError:
            continue


def main(url: str = "sqlite:///job_runner.db") -> None:
    """Run every job, then read the history back."""
    # Configure once: records of the "tasklog.task" logger go to the store.
    handler = tasklog.basic_config(url, model=JobRecord)
    backup = tasklog.get_task_logger("backup")
    importer = tasklog.get_task_logger("import")
    fetch = tasklog.get_task_logger("fetch")
    notify = tasklog.get_task_logger("notify")

    run = run_backup(backup)
    with contextlib.suppress(ValueError):  # a scheduler logs and carries on
        run_import(importer)
    run_report(tasklog.get_task_logger("report"))
    run_healthcheck(tasklog.get_task_logger("healthcheck"))
    run_fetch(fetch)

    # 7. An async job: each call of a decorated coroutine is one run.
    @notify.task
    async def send_notification() -> str:
        await asyncio.sleep(0.01)
        return "sent"

    asyncio.run(send_notification())

    print("== output of the backup run ==")
    print(run.output())

    print("\n== the last import failure ==")
    failure = importer.get_latest("fail")
    print(failure.exc_text if failure else "(none)")

    print("\n== fetch attempts ==")
    for record in fetch.get_records(action=tasklog.in_(["success", "fail"])):
        print(f"attempt {record.attempt}: {record.action:7} {record.message}")

    print("\n== statistics ==")
    figures = tasklog.stats(handler.repo)
    for name, task in figures.tasks.items():
        rate = "-" if task.success_rate is None else f"{task.success_rate:.0%}"
        p95 = "-" if task.p95_runtime is None else f"{task.p95_runtime:.3f}s"
        print(f"{name:8} runs={task.runs} ok={task.successes} failed={task.failures} "
              f"other={task.other} success={rate} p95={p95}")
    print(f"{'(total)':8} runs={figures.total.runs}")

    print("\n== crashed runs ==")
    print(tasklog.mark_crashed(handler.repo) or "none: every run finished")
    handler.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
