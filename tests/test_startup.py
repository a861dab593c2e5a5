"""Start-up: a store that is down does not stop the application; a URL that can never work
raises, naming the problem; a handler that could not be made leaves nothing behind (issue 11).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from _postgres import PostgresServer

import tasklog
from tasklog import ConfigError, RepoHandler
from tasklog.repos import open_existing


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.postgres
def test_database_down_at_start(
    postgres_server: PostgresServer, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``basic_config`` on a stopped server returns; records queue and are stored once it is up."""
    url = f"{postgres_url}?table=t_{uuid.uuid4().hex[:10]}"
    postgres_server.stop_only()
    try:
        handler = tasklog.basic_config(url)
        task = tasklog.get_task_logger("nightly")
        for i in range(50):
            task.info("item %d", i, extra={"action": "log"})
        deadline = time.monotonic() + 30
        while handler.counts["retries"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the writer has tried the stopped server
        assert handler.counts["retries"] > 0
    finally:
        postgres_server.start_again()
    handler.flush()
    assert 50 == handler.counts["stored"]
    assert 0 == handler.counts["dropped"]
    assert 50 == handler.repo.filter_by(task_name="nightly").count()
    err = capsys.readouterr().err
    assert 1 == err.count("the store is unreachable"), err


@pytest.mark.postgres
def test_reading_a_stopped_server_is_a_clear_error(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Reading (the CLI's way of opening) a stopped server says it cannot read it."""
    postgres_server.stop_only()
    try:
        with pytest.raises(ConfigError, match="Cannot read"):
            open_existing(postgres_url)
    finally:
        postgres_server.start_again()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("sqlite:///x.db?tabel=y", "tabel"),
        ("postgresql+psycopg://u@127.0.0.1:1/db?tabel=y", "tabel"),
        ("nope://host/db", "nope"),
    ],
)
def test_url_that_can_never_work_raises(url: str, named: str) -> None:
    """An unknown option or scheme raises at once, naming it (no SAWarning, no retries)."""
    with pytest.raises(ConfigError, match=named):
        tasklog.open_repo(url)


def test_known_url_options_pass() -> None:
    """Options the driver knows (``sslmode``, ``connect_timeout``) are accepted."""
    repo = tasklog.open_repo(
        "postgresql+psycopg://u@127.0.0.1:1/db?sslmode=disable&connect_timeout=1&table=t",
        model=tasklog.TaskRunRecord,
    )
    repo.close()


@pytest.mark.parametrize(
    "make",
    [
        'tasklog.RepoHandler("nope://x")',
        'tasklog.RepoHandler("sqlite:///x.db?tabel=y")',
        'tasklog.RepoHandler("/proc/no/such/dir/x.csv")',
        'tasklog.RepoHandler("memory://", errors="loud")',
        'tasklog.RepoHandler(tasklog.MemoryRepo(), batch_size=0)',
    ],
)
def test_failed_handler_leaves_nothing_behind(make: str) -> None:
    """A constructor that raises leaves no handler for ``logging.shutdown`` to trip on."""
    done = _run(f"""
        import logging, tasklog
        before = len(logging._handlerList)
        try:
            {make}
        except Exception as exc:
            print("raised", type(exc).__name__)
        print("left", len(logging._handlerList) - before)
    """)
    assert 0 == done.returncode
    assert "raised" in done.stdout
    assert "left 0" in done.stdout
    assert "" == done.stderr


def test_failed_handler_in_dictconfig_exits_cleanly(tmp_path: Path) -> None:
    """A bad URL in ``dictConfig`` is one error from dictConfig and a clean exit."""
    done = _run("""
        import logging.config
        try:
            logging.config.dictConfig({
                "version": 1,
                "handlers": {"db": {"()": "tasklog.RepoHandler", "repo": "sqlite:///x.db?tabel=y"}},
            })
        except ValueError as exc:
            print("refused:", "tabel" in str(exc.__cause__))
    """)
    assert "refused: True" in done.stdout
    assert "" == done.stderr


def test_handler_still_works_after_a_failed_one() -> None:
    """A failed constructor does not disturb a good handler made next."""
    with pytest.raises(ConfigError):
        RepoHandler("nope://x")
    handler = RepoHandler(tasklog.MemoryRepo(model=tasklog.TaskRunRecord))
    logger = logging.getLogger("tasklog.test.startup.good")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("ok", extra={"task_name": "t", "action": "log"})
    handler.flush()
    assert 1 == handler.counts["stored"]
