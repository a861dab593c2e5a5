"""``tasklog runs`` across tasks with filters (issue 10 item 6), ``runs --status lost`` and
``tasklog mark-crashed`` (issue 11 item 1), with real child processes killed by SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli import (  # the fixtures are shared with test_cli.py
    _isolated,  # noqa: F401
    _make_url,  # noqa: F401
    _runner,  # noqa: F401
    _store,  # noqa: F401
    _url,  # noqa: F401
    assert_usage_error,
    run,
    run_json,
    write_history,
)
from typer.testing import CliRunner

CHILD = textwrap.dedent(
    """
    import sys, time
    import tasklog

    handler = tasklog.basic_config(sys.argv[1], model=tasklog.TaskRunRecord)
    with tasklog.get_task_logger(sys.argv[2]).run() as run:
        run.info("working")
        handler.flush()
        print(run.run_id, flush=True)
        time.sleep(600)
    """
)


def _ids(runs: list[dict[str, object]]) -> list[object]:
    return [r["run_id"] for r in runs]


# ---------------------------------------------------------- filters


class TestRunsAcrossTasks:
    def test_all_tasks_newest_first(self, runner: CliRunner, url: str) -> None:
        """Without TASK: the runs of every task, newest start first."""
        runs = run_json(runner, "--repo", url, "runs")
        assert ["r4-dddd", "r3-cccc", "r2-bbbb", "r1-aaaa"] == _ids(runs)
        assert ["gamma", "beta", "alpha", "alpha"] == [r["task_name"] for r in runs]
        assert [None, "inaction", "fail", "success"] == [r["outcome"] for r in runs]

    def test_table_has_a_task_column(self, runner: CliRunner, url: str) -> None:
        """The table of all tasks names each run's task."""
        result = run(runner, "--repo", url, "runs")
        assert 0 == result.exit_code, result.output
        rows = [line for line in result.stdout.splitlines() if "r" in line and "-" in line]
        assert any("gamma" in line and "r4-dddd" in line and "running" in line
                   for line in rows), result.stdout

    @pytest.mark.parametrize(("status", "expected"), [
        ("fail", ["r2-bbbb"]),
        ("success,inaction", ["r3-cccc", "r1-aaaa"]),
        ("running", ["r4-dddd"]),
        ("crash", []),
        ("lost", []),
        ("FAIL", ["r2-bbbb"]),
    ])
    def test_status(self, runner: CliRunner, url: str, status: str,
                    expected: list[str]) -> None:
        """``--status`` keeps runs with that outcome (or open ones), several with commas."""
        assert expected == _ids(run_json(runner, "--repo", url, "runs", "--status", status))

    def test_status_of_one_task(self, runner: CliRunner, url: str) -> None:
        """TASK and --status together."""
        assert ["r1-aaaa"] == _ids(run_json(runner, "--repo", url, "runs", "alpha",
                                            "--status", "success"))

    def test_since_and_until(self, runner: CliRunner, url: str) -> None:
        """``--since``/``--until`` bound the start: at or after, and before."""
        since = ["--since", "2024-03-04T12:01:00+00:00"]
        until = ["--until", "2024-03-04T12:03:00+00:00"]
        assert ["r4-dddd", "r3-cccc", "r2-bbbb"] == _ids(run_json(
            runner, "--repo", url, "runs", *since))
        assert ["r2-bbbb", "r1-aaaa"] == _ids(run_json(runner, "--repo", url, "runs", *until))
        assert ["r2-bbbb"] == _ids(run_json(runner, "--repo", url, "runs", *since, *until))
        assert [] == run_json(runner, "--repo", url, "runs", "--since", "1h")

    def test_limit(self, runner: CliRunner, url: str) -> None:
        """``--limit`` keeps the newest N."""
        assert ["r4-dddd", "r3-cccc"] == _ids(run_json(runner, "--repo", url, "runs", "-n", "2"))

    def test_bad_status(self, runner: CliRunner, url: str) -> None:
        """An unknown status: one line naming the valid ones, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "runs", "--status", "borked"),
                           "--status", "'borked'", "lost", "success")

    def test_bad_until(self, runner: CliRunner, url: str) -> None:
        """A bad --until: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "runs", "--until", "soon"), "--until")


# ------------------------------------------------- lost and crashed


@pytest.fixture(name="children")
def _children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes to kill at the end."""
    made: list[subprocess.Popen[str]] = []
    yield made
    for child in made:
        if child.poll() is None:
            child.kill()
        child.communicate()


def _start_run(url: str, task: str, children: list[subprocess.Popen[str]]) -> tuple[str, int]:
    """A child process that opens a run of *task* at *url* and waits: its run id, its pid."""
    env = {k: v for k, v in os.environ.items() if k != "TASKLOG_REPO"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, task], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    children.append(child)
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    assert run_id, child.stderr.read() if child.stderr else ""
    return run_id, child.pid


def _kill(pid: int, children: list[subprocess.Popen[str]]) -> None:
    child = next(c for c in children if c.pid == pid)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert -signal.SIGKILL == child.returncode


def _count(runner: CliRunner, url: str) -> int:
    return len(run_json(runner, "--repo", url, "tail", "-n", "100000"))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
class TestLostRuns:
    @pytest.fixture(name="scene")
    def _scene(self, url: str, children: list[subprocess.Popen[str]]) -> tuple[str, str, str]:
        """*url* with HISTORY, a run whose process was SIGKILLed, a run whose process lives."""
        dead, pid = _start_run(url, "victim", children)
        alive, _ = _start_run(url, "survivor", children)
        _kill(pid, children)
        return url, dead, alive

    def test_status_lost(self, runner: CliRunner, scene: tuple[str, str, str]) -> None:
        """``--status lost`` shows the killed run only; ``running`` shows every open run;
        nothing is written."""
        url, dead, alive = scene
        before = _count(runner, url)
        lost = run_json(runner, "--repo", url, "runs", "--status", "lost")
        assert [dead] == _ids(lost)
        assert [None] == [r["outcome"] for r in lost]
        running = _ids(run_json(runner, "--repo", url, "runs", "--status", "running"))
        assert {dead, alive, "r4-dddd"} == set(running)
        assert before == _count(runner, url)

    def test_table_says_lost(self, runner: CliRunner, scene: tuple[str, str, str]) -> None:
        """The table shows ``lost`` for the dead run and ``running`` for the live one."""
        url, dead, alive = scene
        text = run(runner, "--repo", url, "runs").stdout
        assert any(dead in line and "lost" in line for line in text.splitlines()), text
        assert any(alive in line and "running" in line for line in text.splitlines()), text

    def test_mark_crashed(self, runner: CliRunner, scene: tuple[str, str, str]) -> None:
        """``--dry-run`` lists the dead run and writes nothing; then ``mark-crashed`` writes
        ``crash`` for it (not for the live run, not for a run of unknown process); a second
        call finds nothing."""
        url, dead, alive = scene
        before = _count(runner, url)
        result = run(runner, "--repo", url, "mark-crashed", "--dry-run")
        assert 0 == result.exit_code, result.output
        assert dead in result.stdout
        assert alive not in result.stdout
        assert "r4-dddd" not in result.stdout
        assert "dry run" in result.stdout
        assert before == _count(runner, url)

        result = run(runner, "--repo", url, "mark-crashed")
        assert 0 == result.exit_code, result.output
        assert dead in result.stdout
        assert before + 1 == _count(runner, url)
        crashed = run_json(runner, "--repo", url, "runs", "--status", "crash")
        assert [dead] == _ids(crashed)
        assert crashed[0]["end"] is not None
        assert [] == run_json(runner, "--repo", url, "runs", "--status", "lost")

        again = run(runner, "--repo", url, "mark-crashed")
        assert "nothing marked" in again.stdout
        assert before + 1 == _count(runner, url)

    def test_older_than_and_stale_after(self, runner: CliRunner,
                                        scene: tuple[str, str, str]) -> None:
        """``--older-than``/``--stale-after`` also mark open runs of unknown process; a run
        whose process is alive is never marked."""
        url, dead, alive = scene
        result = run(runner, "--repo", url, "mark-crashed", "--stale-after", "0s", "--dry-run")
        assert "r4-dddd" in result.stdout
        assert alive not in result.stdout
        result = run(runner, "--repo", url, "mark-crashed", "--older-than", "0s")
        assert 0 == result.exit_code, result.output
        crashed = set(_ids(run_json(runner, "--repo", url, "runs", "--status", "crash")))
        assert {dead, "r4-dddd"} == crashed
        assert [alive] == _ids(run_json(runner, "--repo", url, "runs", "--status", "running"))


class TestMarkCrashedErrors:
    def test_bad_ages(self, runner: CliRunner, url: str) -> None:
        """Bad ages: one line, exit 2."""
        for option in ("--older-than", "--stale-after"):
            assert_usage_error(run(runner, "--repo", url, "mark-crashed", option, "x"), option)

    def test_store_without_run_id(self, runner: CliRunner, tmp_path: Path,
                                  make_url: Callable[..., str]) -> None:
        """A store without run_id has no runs to mark: one line, exit 2."""
        from tasklog import MinimalRecord

        url = make_url("sqlite", "minimal")
        write_history(url, [{"task_name": "m", "action": "log", "created": 1.0}],
                      model=MinimalRecord)
        assert_usage_error(run(runner, "--repo", url, "mark-crashed"), "run_id")
