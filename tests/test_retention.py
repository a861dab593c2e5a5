"""Retention: ``prune`` on every store, and the bounded in-memory store."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tasklog import MemoryRepo, RepoHandler, Repository, TaskAdapter, basic_config
from tasklog.config import DEFAULT_MEMORY_SIZE, ENV_REPO


def fill(repo: Repository[Any]) -> None:
    """Three runs of ``a`` and two of ``b`` (two records each) and two records without a run.

    ``created`` is the record's position: 1.0 to 12.0.
    """
    rows: list[tuple[str, str | None]] = [
        ("a", "a1"), ("a", "a1"), ("b", "b1"), ("b", "b1"), ("a", None), ("a", "a2"),
        ("a", "a2"), ("b", "b2"), ("b", "b2"), ("a", "a3"), ("a", "a3"), ("b", None),
    ]
    repo.add_many(
        {"task_name": task, "action": "log", "created": float(n), "run_id": run_id}
        for n, (task, run_id) in enumerate(rows, start=1)
    )


def remaining(repo: Repository[Any]) -> list[float]:
    """The ``created`` values left, in insertion order."""
    return [r.created for r in repo]


class TestPrune:
    """``repo.prune(keep_runs=, older_than=, task_name=)`` deletes old records."""

    def test_keep_runs(self, repo: Repository[Any]) -> None:
        """keep_runs=1 keeps each task's newest run; a record without run id is a run."""
        fill(repo)
        assert 9 == repo.prune(keep_runs=1)
        assert [10.0, 11.0, 12.0] == remaining(repo)

    def test_keep_two_runs(self, repo: Repository[Any]) -> None:
        """keep_runs=2 keeps the two newest runs of each task."""
        fill(repo)
        assert 5 == repo.prune(keep_runs=2)
        assert [6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0] == remaining(repo)

    def test_keep_zero_runs(self, repo: Repository[Any]) -> None:
        """keep_runs=0 deletes every run."""
        fill(repo)
        assert 12 == repo.prune(keep_runs=0)
        assert 0 == len(repo)

    def test_older_than_timestamp(self, repo: Repository[Any]) -> None:
        """older_than as an epoch timestamp deletes records created before it."""
        fill(repo)
        assert 4 == repo.prune(older_than=5.0)
        assert [float(n) for n in range(5, 13)] == remaining(repo)

    def test_older_than_timedelta_and_datetime(self, repo: Repository[Any]) -> None:
        """older_than as an age (timedelta) or a datetime counts back from now."""
        now = time.time()
        repo.add_many(
            {"task_name": "a", "action": "log", "created": now - age}
            for age in (7200.0, 1800.0, 10.0)
        )
        assert 1 == repo.prune(older_than=timedelta(hours=1))
        assert 1 == repo.prune(older_than=datetime.fromtimestamp(now - 60, timezone.utc))
        assert [now - 10.0] == remaining(repo)

    def test_task_name(self, repo: Repository[Any]) -> None:
        """task_name limits both rules to one task."""
        fill(repo)
        assert 4 == repo.prune(keep_runs=1, task_name="b")
        assert 2 == repo.prune(older_than=3.0, task_name="a")
        assert [5.0, 6.0, 7.0, 10.0, 11.0, 12.0] == remaining(repo)

    def test_both_rules(self, repo: Repository[Any]) -> None:
        """With both rules a record goes when either selects it."""
        fill(repo)
        assert 10 == repo.prune(keep_runs=2, older_than=11.0)
        assert [11.0, 12.0] == remaining(repo)

    def test_nothing_to_do(self, repo: Repository[Any]) -> None:
        """Without a rule nothing is deleted."""
        fill(repo)
        assert (0, 12) == (repo.prune(), len(repo))

    @pytest.mark.parametrize("bad", [-1, 1.5, "3"])
    def test_bad_keep_runs(self, repo: Repository[Any], bad: Any) -> None:
        """keep_runs must be a non-negative integer."""
        with pytest.raises(ValueError, match="keep_runs"):
            repo.prune(keep_runs=bad)

    def test_bad_older_than(self, repo: Repository[Any]) -> None:
        """older_than must be a timedelta, a datetime or a timestamp."""
        with pytest.raises(TypeError, match="older_than"):
            repo.prune(older_than="30d")  # type: ignore[arg-type]

    def test_prune_sees_queued_records(self, repo: Repository[Any]) -> None:
        """Records still queued in a background handler are pruned as well."""
        logger = logging.getLogger(f"tests.retention.{uuid.uuid4().hex[:8]}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = RepoHandler(repo, mode="background", flush_interval=3600)
        logger.addHandler(handler)
        adapter = TaskAdapter(logger, "job")
        for _ in range(3):
            with adapter.run() as run:
                run.info("x")
        assert 6 == repo.prune(keep_runs=1)
        assert ["run", "log", "success"] == [r.action for r in repo]
        handler.close()


class TestMemoryBound:
    """``MemoryRepo(max_size=...)`` is a ring buffer with a utilization figure."""

    def test_unbounded(self) -> None:
        """Without max_size utilization is None and nothing is evicted."""
        repo: MemoryRepo[Any] = MemoryRepo()
        repo.add_many({"task_name": "a", "action": "log", "created": float(n)} for n in range(50))
        assert (None, 50) == (repo.utilization, len(repo))

    def test_utilization(self) -> None:
        """utilization is the share of max_size in use, 0 to 1."""
        repo: MemoryRepo[Any] = MemoryRepo(max_size=10)
        assert 0.0 == repo.utilization
        repo.add_many({"task_name": "a", "action": "log", "created": float(n)} for n in range(5))
        assert 0.5 == repo.utilization

    def test_full_ring_evicts_oldest(self) -> None:
        """Past max_size the oldest records go; utilization stays 1.0."""
        repo: MemoryRepo[Any] = MemoryRepo(max_size=10)
        for n in range(25):
            repo.add({"task_name": "a", "action": "log", "created": float(n)})
        assert (1.0, [float(n) for n in range(15, 25)]) == (repo.utilization, remaining(repo))

    def test_delete_and_prune_free_room(self) -> None:
        """Deleting and pruning lower utilization."""
        repo: MemoryRepo[Any] = MemoryRepo(max_size=20)
        fill(repo)
        assert 0.6 == repo.utilization
        repo.prune(keep_runs=1)
        assert 0.15 == repo.utilization
        repo.filter_by(task_name="b").delete()
        assert 0.1 == repo.utilization

    @pytest.mark.parametrize("bad", [0, -5, 2.5])
    def test_bad_max_size(self, bad: Any) -> None:
        """max_size must be a positive integer."""
        with pytest.raises(ValueError, match="max_size"):
            MemoryRepo(max_size=bad)

    def test_default_store_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """basic_config() without a repo uses a memory store bounded to DEFAULT_MEMORY_SIZE."""
        monkeypatch.delenv(ENV_REPO, raising=False)
        handler = basic_config(logger=f"tests.retention.{uuid.uuid4().hex[:8]}")
        assert isinstance(handler.repo, MemoryRepo)
        assert (10_000, 10_000) == (DEFAULT_MEMORY_SIZE, handler.repo.max_size)

    def test_default_bound_is_overridable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A memory URL with max_size (argument or TASKLOG_REPO) overrides the bound."""
        monkeypatch.setenv(ENV_REPO, "memory://?max_size=50")
        handler = basic_config(logger=f"tests.retention.{uuid.uuid4().hex[:8]}")
        assert isinstance(handler.repo, MemoryRepo)
        assert 50 == handler.repo.max_size
