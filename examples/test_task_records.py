"""Testing jobs with the ``task_records`` fixture (the plugin comes with tasklog).

    pytest examples/test_task_records.py
    pytest examples/test_task_records.py --tasklog-repo sqlite:///runs.db   # a real store

The jobs below stand for your application's; the tests need no tasklog set-up.
"""

from __future__ import annotations

import logging

import pytest

import tasklog
from tasklog.testing import TaskRecords, assert_no_failures, assert_ran

task_logger = tasklog.get_task_logger("nightly_average", ignore_warnings=True)


@task_logger.task
def nightly_average(rows: list[float]) -> float:
    """The job under test: logs through its run and a library logger."""
    run = tasklog.current_run()
    assert run is not None
    run.info("averaging %d rows", len(rows))
    logging.getLogger("example.db").warning("slow query")
    return sum(rows) / len(rows)


def test_success(task_records: TaskRecords) -> None:
    """One good run: its records, its output, the library's line in it."""
    assert nightly_average([1.0, 2.0, 3.0]) == 2.0
    assert_ran("nightly_average", times=1)
    assert_no_failures()
    run = task_records.last_run("nightly_average")
    assert [r.action for r in run.records()] == ["run", "log", "log", "success"]
    assert "slow query" in run.output()


def test_failure_is_recorded(task_records: TaskRecords) -> None:
    """A failing run is stored with its traceback."""
    with pytest.raises(ZeroDivisionError):
        nightly_average([])
    assert_ran("nightly_average", "fail", times=1)
    fail = task_records.filter_by(action="fail").first()
    assert "ZeroDivisionError" in fail.exc_text
