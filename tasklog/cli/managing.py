"""The managing commands: prune, export, copy."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from ..config import repo_url
from ..exceptions import StoreNotFoundError
from ..repos import Repository, open_existing, open_repo, same_store
from . import render
from ._runs import crash_candidates
from ._runs import mark_crashed as write_crashes
from .app import CLIError, state
from .options import TaskOption, age, age_option, count_option
from .reading import require_runs, require_task

__all__ = ["copy", "export", "mark_crashed", "prune"]

_BATCH = 1000


def prune(
    ctx: typer.Context,
    keep_runs: Annotated[
        int | None, count_option("Keep the newest N runs of each task.", "--keep-runs", zero=True)
    ] = None,
    older_than: Annotated[
        str | None,
        age_option("--older-than", "Delete records older than this: 30d, 12h, 2w or an ISO date."),
    ] = None,
    task: TaskOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
) -> None:
    """Delete old records (retention). Asks no questions; try --dry-run first."""
    if keep_runs is None and older_than is None:
        msg = "Nothing to prune: give --keep-runs N and/or --older-than AGE."
        raise CLIError(msg)
    cutoff = None if older_than is None else age(older_than, "--older-than")
    repo = state(ctx).open_for_reading()
    if task is not None:
        require_task(repo, task)
    if dry_run:
        n = repo.prune(keep_runs=keep_runs, older_than=cutoff, task_name=task, dry_run=True)
        typer.echo(f"Would delete {n} record(s); nothing deleted (dry run).")
        return
    n = repo.prune(keep_runs=keep_runs, older_than=cutoff, task_name=task)
    typer.echo(f"Deleted {n} record(s).")


def mark_crashed(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        age_option("--older-than", "Also mark open runs that started before this: 12h, 1d, 2w."),
    ] = None,
    stale_after: Annotated[
        str | None,
        age_option(
            "--stale-after", "Also mark open runs that logged nothing for this long: 30m, 2h."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show the runs it would mark.")
    ] = False,
) -> None:
    """Write 'crash' for runs that died without a closing record.

    An open run is marked when its process is gone on this host, or it
    started before --older-than, or its newest record is older than
    --stale-after. A run whose process is alive on this host never is.
    """
    old = None if older_than is None else age(older_than, "--older-than")
    stale = None if stale_after is None else age(stale_after, "--stale-after")
    repo = state(ctx).open_for_reading()
    require_runs(repo, "'tail' or 'errors'")
    candidates = crash_candidates(repo, older_than=old, stale_after=stale)
    if not candidates:
        typer.echo("No dead runs found; nothing marked.")
        return
    if dry_run:
        title = f"Would mark {len(candidates)} run(s) crashed (dry run, nothing written)"
        render.console().print(render.crash_table(candidates, title))
        return
    marked = write_crashes(repo, candidates)
    render.console().print(render.crash_table(candidates, f"Marked {len(marked)} run(s) crashed"))


# ------------------------------------------------------- export and copy


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=render.console(stderr=True),
        transient=True,
    )


def _stream(repo: Repository[Any], description: str) -> Iterator[Any]:
    """Iterate over *repo*, with a progress bar when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield from repo
        return
    total = len(repo)
    with _progress() as progress:
        bar = progress.add_task(description, total=total)
        for n, record in enumerate(repo, 1):
            yield record
            if n % _BATCH == 0:
                progress.update(bar, completed=n)
        progress.update(bar, completed=total)


def export(
    ctx: typer.Context,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="csv|jsonl",
            help="Output format (default: from the --output suffix, else jsonl).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE (default: stdout)."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="CSV: write every cell exactly (no ' before =, +, -, @, tab, CR)."
        ),
    ] = False,
) -> None:
    """Write every record as CSV or JSON Lines.

    Streams the store. In CSV, a text cell that a spreadsheet would run as a
    formula (it begins with =, +, -, @, a tab or a carriage return) gets a
    leading ' unless --raw is given; with --raw the CSV is an exact store
    tasklog reads back. With --output, a progress bar shows on a terminal.
    """
    if fmt is None:
        fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"
    fmt = fmt.lower()
    if fmt not in ("csv", "jsonl"):
        msg = f"Invalid value {fmt!r} for --format: use csv or jsonl."
        raise CLIError(msg)
    repo = state(ctx).open_for_reading()
    stream: IO[str]
    with contextlib.ExitStack() as stack:
        if output is None:
            stream = sys.stdout
        else:
            try:
                stream = stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
            except OSError as err:
                msg = f"Cannot write {str(output)!r}: {err.strerror or err}."
                raise CLIError(msg) from None
        records = _stream(repo, "Exporting") if output is not None else iter(repo)
        if fmt == "csv":
            n = _write_csv(repo, records, stream, defuse_cells=not raw)
        else:
            n = _write_jsonl(records, stream)
    if output is not None:
        typer.echo(f"Exported {n} record(s) to {output}.")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def defuse(cell: str) -> str:
    """*cell* made safe to open in a spreadsheet (OWASP's advice on CSV injection).

    Text that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading ``'``, so a spreadsheet shows it instead of running
    it as a formula; numbers (``-1.5``) stay as they are.
    """
    if cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _write_csv(
    repo: Repository[Any], records: Iterable[Any], stream: IO[str], *, defuse_cells: bool
) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
    fields = list(repo.schema.fields.values())
    writer.writerow([defuse(f.name) if defuse_cells else f.name for f in fields])
    n = 0
    for n, record in enumerate(records, 1):  # noqa: B007  (n is the count afterwards)
        row = repo.schema.row(record)
        cells = [f.encode_text(row[f.name]) for f in fields]
        if defuse_cells:
            cells = [defuse(c) for c in cells]
        # csv quotes a cell only for "\n"; a carriage return needs every cell quoted
        (quoted if any("\r" in c for c in cells) else writer).writerow(cells)
    return n


def _write_jsonl(records: Iterable[Any], stream: IO[str]) -> int:
    n = 0
    for n, record in enumerate(records, 1):  # noqa: B007  (n is the count afterwards)
        stream.write(json.dumps(render.record_json(record), ensure_ascii=False))
        stream.write("\n")
    return n


def copy(
    ctx: typer.Context,
    src_url: Annotated[str, typer.Argument(metavar="SRC_URL", help="Repository to read.")],
    dst_url: Annotated[
        str, typer.Argument(metavar="DST_URL", help="Repository to append to (created if missing).")
    ],
) -> None:
    """Append every record of one store to another.

    Streams SRC_URL into DST_URL in batches; DST_URL is created (with the
    source's columns) when missing. A progress bar shows on a terminal.
    """
    current = state(ctx)
    src = current.opened(open_existing(repo_url(src_url)))
    try:
        dst = current.opened(open_existing(repo_url(dst_url)))
    except StoreNotFoundError:
        dst = current.opened(open_repo(repo_url(dst_url), model=src.model))
    if same_store(src, dst):
        msg = (
            f"{src_url} and {dst_url} are the same store; copying it into itself would "
            "double every record. Nothing copied."
        )
        raise CLIError(msg)
    n = 0
    records = _stream(src, "Copying")
    while batch := list(itertools.islice(records, _BATCH)):
        n += dst.add_many(batch)
    current.close()
    typer.echo(f"Copied {n} record(s) from {src_url} to {dst_url}.")
