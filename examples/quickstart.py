"""Quickstart: log a few task runs into SQLite and ask what happened.

    python examples/quickstart.py [URL]

The URL defaults to ``sqlite:///tasklog.db`` (the embedded default); any other
store works the same: ``memory://``, ``csv:///tmp/tasks.csv``,
``postgresql+psycopg://user@host/db``.
"""

from __future__ import annotations

import sys

import tasklog


def main(url: str = "sqlite:///tasklog.db") -> None:
    """Log three runs of two tasks, then query them back."""
    handler = tasklog.basic_config(url, model=tasklog.TaskRunRecord)
    nightly = tasklog.get_task_logger("nightly-report")
    cleanup = tasklog.get_task_logger("cleanup")

    with nightly.run() as run:
        run.info("rendered %d pages", 12)

    try:
        with nightly.run() as run:
            run.info("fetching figures")
            raise ConnectionError("warehouse unreachable")
    except ConnectionError:
        pass  # the run logged "fail" with the traceback and re-raised

    with cleanup.run() as run:
        run.info("nothing old enough to delete")
        raise tasklog.TaskInaction

    repo = handler.repo
    last_fail = repo.filter_by(task_name="nightly-report", action="fail").last()
    print("stored records:", len(repo))
    print("last failure of nightly-report:")
    print(last_fail.exc_text if last_fail is not None else None)
    print("latest cleanup outcome:", cleanup.get_latest().action)
    for name, figures in tasklog.stats(repo).tasks.items():
        print(f"{name}: {figures.runs} runs, {figures.successes} ok, {figures.failures} failed")
    handler.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
