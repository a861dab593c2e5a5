"""The memory store's runs index (``tasklog/repos/memory_runs.py``).

Folded at read time from the records appended since the last read, and
folded anew after any other change: every read about runs must answer as the
generic path over the same records does (:class:`RecordsOnly`), whatever the
order of writes, reads, deletes, updates, prunes and evictions.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_runs_index import NOW, RecordsOnly, answers, random_history

import tasklog
from tasklog import TaskRunRecord, history
from tasklog.repos import memory_runs
from tasklog.repos.memory import MemoryRepo


def pair(max_size: int | None = None) -> tuple[MemoryRepo[Any], MemoryRepo[Any]]:
    indexed = MemoryRepo(TaskRunRecord, max_size=max_size)
    return indexed, RecordsOnly(TaskRunRecord, max_size=max_size)


def latest(repo: tasklog.Repository[Any]) -> list[tuple[Any, ...]]:
    return [(r.task_name, r.action, r.created) for r in history.latest_per_task(repo)]


@pytest.mark.parametrize("rebuild_after", [0, 10_000], ids=["sorted-anew", "one-by-one"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reads_between_writes_answer_as_the_records(
    monkeypatch: pytest.MonkeyPatch, seed: int, rebuild_after: int
) -> None:
    """Batches in any order (run records after their closings, duplicates), a
    read after each: the index folds the new records in (each run moved in the
    sorted views, or the views made again) and answers as the records do."""
    monkeypatch.setattr(memory_runs, "_REBUILD_AFTER", rebuild_after)
    indexed, generic = pair()
    for n, batch in enumerate(random_history(seed)):
        for repo in (indexed, generic):
            repo.add_many([dict(row) for row in batch])
        if n % 3 == 0:
            assert answers(indexed) == answers(generic)
    assert answers(indexed) == answers(generic)
    assert latest(indexed) == latest(generic)
    assert indexed._fold is not None, "the index answered"


def test_changes_fold_the_records_anew() -> None:
    """A delete, an update or a prune between reads: the next read answers
    from the records as they are now."""
    indexed, generic = pair()
    for batch in random_history(4):
        for repo in (indexed, generic):
            repo.add_many([dict(row) for row in batch])
    changes = [
        lambda r: r.filter_by(run_id="r003", action="run").delete(),
        lambda r: r.filter_by(run_id="r005").delete(),
        lambda r: r.filter_by(run_id="r009", action="success").update(action="fail"),
        lambda r: r.filter_by(run_id="r010").update(run_id="moved"),
        lambda r: r.filter_by(run_id="r011").update(task_name="task-9"),
        lambda r: r.filter_by(action="terminate").delete(),
        lambda r: r.prune(keep_runs=9),
        lambda r: r.prune(older_than=NOW - 2500),
        lambda r: r.add({"task_name": "task-0", "run_id": "late", "action": "run",
                         "created": NOW}),
    ]
    assert answers(indexed) == answers(generic)
    for change in changes:
        assert change(indexed) == change(generic)
        assert answers(indexed) == answers(generic)
        assert latest(indexed) == latest(generic)


def test_a_ring_buffer_forgets_evicted_runs() -> None:
    """With ``max_size``, the oldest records go as new ones come: the runs the
    index lists are those the remaining records tell."""
    indexed, generic = pair(max_size=90)
    for n, batch in enumerate(random_history(5)):
        for repo in (indexed, generic):
            repo.add_many([dict(row) for row in batch])
        if n % 4 == 0:
            assert answers(indexed) == answers(generic)
            assert latest(indexed) == latest(generic)
    assert answers(indexed) == answers(generic)


def test_a_task_or_run_id_that_is_not_a_string_takes_the_generic_path() -> None:
    """Records whose run id is not a string (a model that allows it): the index
    steps aside and the records answer."""
    from pydantic import BaseModel

    class Loose(BaseModel):
        task_name: str
        action: str
        created: float
        run_id: int | None = None

    indexed: MemoryRepo[Any] = MemoryRepo(Loose)
    indexed.add_many([
        {"task_name": "t", "action": "run", "created": 1.0, "run_id": 7},
        {"task_name": "t", "action": "success", "created": 2.0, "run_id": 7},
    ])
    assert indexed.run_rows(task_names=None, outcomes=None, running=False, low=None,
                            high=None, bound=None, limit=None) is None
    assert [("t", "7", "success")] == [
        (r.task_name, r.run_id, r.outcome) for r in history.list_runs(indexed)
    ]
