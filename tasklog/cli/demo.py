"""The ``demo`` command: example runs into the repository, then what they look like."""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from typing import Any

import typer

from ..history import list_runs
from ..repos import Repository, backend_for
from ..stats import stats as compute_stats
from . import render
from ._runs import find_runs
from .app import CLIError, state

__all__ = ["demo"]


def _demo_runs(repo: Repository[Any]) -> None:
    """Run a few example tasks into *repo*: successes, a failure, an inaction."""
    from ..adapter import get_task_logger
    from ..exceptions import TaskInaction
    from ..handler import RepoHandler

    logger = logging.getLogger("tasklog.demo")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = RepoHandler(repo)
    logger.addHandler(handler)
    try:
        report = get_task_logger("nightly-report", logger=logger)
        for pages in (12, 14):
            with report.run() as run:
                run.info("rendering %d pages", pages)
                time.sleep(0.02)
                run.info("sent the report to 3 readers")

        prices = get_task_logger("fetch-prices", logger=logger)
        with prices.run() as run:
            run.info("fetched 250 prices from the warehouse")
            time.sleep(0.01)
        with contextlib.suppress(ConnectionError), prices.run() as run:
            run.info("connecting to the warehouse")
            time.sleep(0.01)
            _connect("warehouse.example.com")

        cleanup = get_task_logger("cleanup-tmp", logger=logger)
        with cleanup.run() as run:
            run.info("no files older than 7 days in /tmp/reports")
            raise TaskInaction
    finally:
        logger.removeHandler(handler)
        handler.close()


def _connect(host: str) -> None:
    msg = f"{host}: connection refused"
    raise ConnectionError(msg)


def demo(ctx: typer.Context) -> None:
    """Run example tasks into the repository, show them.

    Some runs succeed, one fails with a traceback, one has nothing to do;
    then the runs and the statistics are printed.
    """
    current = state(ctx)
    repo = current.open_for_writing()
    if "run_id" not in repo.model.model_fields:
        msg = (
            f"The store's records ({repo.model.__name__}) have no run_id, so the demo's runs "
            "could not be read back; use another store or table."
        )
        raise CLIError(msg)
    typer.echo(f"Running example tasks into {current.url} ...")
    _demo_runs(repo)
    out = render.console()
    for task in ("nightly-report", "fetch-prices", "cleanup-tmp"):
        out.print(render.runs_table(task, find_runs(repo, task_name=task, limit=5)))
    out.print(render.stats_table(compute_stats(repo)))
    failed = list_runs(repo, task_name="fetch-prices", outcome="fail", limit=1)
    if failed:
        out.print("Why did fetch-prices fail? Its last failed run:", style="bold")
        typer.echo(failed[0].output())
    if backend_for(current.url).name != "memory":
        options = ""
        if current.repo_option is not None:
            options += f" --repo {shlex.quote(current.repo_option)}"
        if current.table is not None:
            options += f" --table {shlex.quote(current.table)}"
        typer.echo(
            f"Next: tasklog{options} logs fetch-prices   (the failed run, with its traceback)\n"
            f"      tasklog{options} errors\n"
            f"      tasklog{options} tasks --json"
        )
