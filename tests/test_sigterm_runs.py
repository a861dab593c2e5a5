"""SIGTERM ends open runs honestly: a ``terminate`` record, everything queued stored (issue 11)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import store_url

import tasklog

_JOB = """
import logging, sys, time, tasklog
tasklog.basic_config({url!r}, model="tasklog.TaskRunRecord")
task = tasklog.get_task_logger("job")
with task.run(run_id="r1") as run:
    run.info("working")
    {body}
"""


def _start(url: str, body: str) -> subprocess.Popen[str]:
    script = _JOB.format(url=url, body=textwrap.indent(body, "    ").strip())
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _exit_status(child: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """The child's exit status, polled (``Popen.wait`` asserted once under heavy load)."""
    deadline = time.monotonic() + timeout
    while (code := child.poll()) is None:
        if time.monotonic() > deadline:
            child.kill()
            msg = f"the child did not end within {timeout} s of SIGTERM"
            raise AssertionError(msg)
        time.sleep(0.02)
    return code


def _terminate(child: subprocess.Popen[str]) -> tuple[int, str]:
    assert child.stdout is not None
    assert child.stderr is not None
    assert "ready" == child.stdout.readline().strip(), child.stderr.read()
    child.send_signal(signal.SIGTERM)
    try:
        code = _exit_status(child)
    finally:
        err = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    return code, err


@pytest.fixture(name="url", params=["csv", "sqlite", "postgresql"])
def _url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), tmp_path, request)


def _records(url: str) -> list[Any]:
    repo = tasklog.open_repo(url)
    try:
        return repo.filter_by(run_id="r1").all()
    finally:
        repo.close()


@pytest.mark.slow
def test_sigterm_logs_terminate_for_the_open_run(url: str) -> None:
    """A job stopped by SIGTERM (cron, systemd, Docker) stores its lines and a ``terminate``."""
    child = _start(url, 'print("ready", flush=True)\ntime.sleep(60)')
    code, err = _terminate(child)
    assert -signal.SIGTERM == code, err
    records = _records(url)
    assert ["run", "log", "terminate"] == [r.action for r in records]
    assert "SIGTERM" in records[-1].message
    assert records[-1].runtime is not None


@pytest.mark.slow
def test_sigterm_while_the_main_thread_logs_flat_out(url: str) -> None:
    """SIGTERM arriving inside a logging call neither deadlocks nor loses queued records."""
    body = """
print("ready", flush=True)
n = 0
while True:
    n += 1
    run.info("line %d", n)
"""
    child = _start(url, body)
    code, err = _terminate(child)
    assert -signal.SIGTERM == code, err
    records = _records(url)
    actions = [r.action for r in records]
    # the main thread may log a few more lines while the terminate record is written
    assert 1 == actions.count("terminate")
    lines = [
        int(r.message.split()[1]) for r in records if r.action == "log" and r.message != "working"
    ]
    assert lines == list(range(1, len(lines) + 1))  # in order, none missing before the end


def test_terminate_open_runs_in_process() -> None:
    """``terminate_open_runs()`` (for applications with their own SIGTERM handler)."""
    repo = tasklog.MemoryRepo(model=tasklog.TaskRunRecord)
    handler = tasklog.basic_config(repo)
    task = tasklog.get_task_logger("job")
    with task.run(run_id="a") as run:
        assert ["a"] == tasklog.terminate_open_runs("shutting down")
        run.info("after")
    handler.flush()
    actions = [r.action for r in repo.filter_by(run_id="a")]
    assert ["run", "terminate", "log"] == actions  # the block's exit logs no second ending
    assert [] == tasklog.terminate_open_runs()
