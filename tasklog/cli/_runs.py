"""Runs as the command shows them: listed across tasks, open ones that are lost, crash
candidates — a thin view over :mod:`tasklog.history` (which knows what a run is).

It adds only what the command shows beyond :class:`tasklog.RunInfo`: the
``lost`` status (open, and its process is gone on this host, computed when
shown) and the shape of the crash table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..history import (
    CLOSING_ACTIONS,
    RUNNING,
    CrashCandidate,
    RunInfo,
    list_runs,
    process_gone,
    write_crashes,
)
from ..history import crash_candidates as history_candidates
from ..repos import Repository

__all__ = ["RUNNING", "RunView", "crash_candidates", "find_runs", "mark_crashed", "statuses"]

LOST = "lost"


def statuses() -> tuple[str, ...]:
    """The values ``runs --status`` takes: the closing actions, ``running`` and ``lost``."""
    return (*CLOSING_ACTIONS, RUNNING, LOST)


@dataclass(frozen=True)
class RunView:
    """One run as the command shows it: the :class:`~tasklog.RunInfo` and whether it is lost."""

    info: RunInfo
    lost: bool
    """Open, and its process is gone on this host (computed now; nothing is written)."""

    def __getattr__(self, name: str) -> Any:
        """The run's fields (``run_id``, ``start``, ``outcome``, ...)."""
        return getattr(self.info, name)

    @property
    def status(self) -> str:
        """The outcome, else ``lost`` or ``running``."""
        return self.info.outcome or (LOST if self.lost else RUNNING)

    def as_json(self) -> dict[str, Any]:
        """The run as a JSON object (SPEC §6; ``outcome`` is null while the run is open)."""
        return self.info.as_json()


def _view(run: RunInfo) -> RunView:
    return RunView(run, run.outcome is None and process_gone(run.host, run.process) is True)


def find_runs(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    status: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[RunView]:
    """Runs newest start first, of one task or all, filtered by status and start time.

    *status* holds closing actions, ``running`` (open) and/or ``lost`` (open,
    its process gone on this host). *since*/*until* bound the start.
    """
    wanted = set(status or ())
    outcomes = None
    if wanted:
        lost = {RUNNING} if LOST in wanted else set()
        outcomes = sorted({s for s in wanted if s != LOST} | lost)
    only_lost = LOST in wanted and RUNNING not in wanted
    views = [
        _view(run)
        for run in list_runs(
            repo,
            task_name=task_name,
            outcome=outcomes,
            since=since,
            until=until,
            limit=None if only_lost else limit,
        )
    ]
    if only_lost:
        views = [v for v in views if v.info.outcome is not None or v.lost]
    return views[:limit] if limit is not None else views


def crash_candidates(
    repo: Repository[Any],
    *,
    older_than: datetime | None = None,
    stale_after: datetime | None = None,
) -> list[tuple[RunView, float, str]]:
    """Open runs :func:`tasklog.mark_crashed` would mark: ``(run, last seen, why)``,
    oldest first."""
    return [
        (_view(c.run), c.last_seen.timestamp(), c.reason)
        for c in history_candidates(repo, older_than=older_than, stale_after=stale_after)
    ]


def mark_crashed(repo: Repository[Any], candidates: list[tuple[RunView, float, str]]) -> list[str]:
    """Log ``crash`` for each candidate run; its run ids."""
    return write_crashes(
        repo,
        [
            CrashCandidate(view.info, why, datetime.fromtimestamp(seen, view.info.start.tzinfo))
            for view, seen, why in candidates
        ],
    )
