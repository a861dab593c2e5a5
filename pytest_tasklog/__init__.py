"""The pytest plugin: the ``task_records`` fixture and the ``--tasklog-repo`` option.

Registered through the ``pytest11`` entry point when tasklog is installed. It
lives outside the ``tasklog`` package so that loading it imports nothing but
pytest: tasklog (pydantic, its stores) is imported when a test first asks for
``task_records``. See :mod:`tasklog.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tasklog.testing import TaskRecords


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--tasklog-repo URL``."""
    group = parser.getgroup("tasklog")
    group.addoption(
        "--tasklog-repo",
        dest="tasklog_repo",
        default=None,
        metavar="URL",
        help=(
            "run the task_records fixture against this store (a fresh table, file or key "
            "of it per test, removed afterwards) instead of memory."
        ),
    )


@pytest.fixture
def task_records(request: pytest.FixtureRequest) -> Iterator[TaskRecords]:
    """The task logger writes to a fresh store for this test; read it back here.

    ``.records``, ``.filter_by(**conditions)``, ``.runs(task=None)``,
    ``.last_run(task)`` (with ``.records()`` and ``.output()``), ``.clear()``.
    """
    from tasklog.testing import recording

    yield from recording(request.config.getoption("tasklog_repo"))
