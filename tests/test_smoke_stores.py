"""A first check that every store stores and reads back (the full suite is in tests/repos)."""

from __future__ import annotations

from typing import Any

from tasklog import Repository


def test_add_and_read_back(repo: Repository[Any]) -> None:
    """Records added to any store come back in insertion order."""
    repo.add_many(
        [{"task_name": "a", "action": "run", "created": 1.0, "run_id": "r1"},
         {"task_name": "a", "action": "success", "created": 2.0, "run_id": "r1"}]
    )
    assert ["run", "success"] == [r.action for r in repo.filter_by(task_name="a").all()]
