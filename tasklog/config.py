"""``basic_config``: attach a repo handler to the task logger in one call."""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel

from .handler import RepoHandler
from .repos import Repository

__all__ = ["DEFAULT_MEMORY_SIZE", "DEFAULT_MEMORY_URL", "ENV_REPO", "basic_config"]

ENV_REPO = "TASKLOG_REPO"
DEFAULT_MEMORY_SIZE = 10_000
"""How many records the default in-memory store keeps (the oldest are evicted)."""
DEFAULT_MEMORY_URL = f"memory://?max_size={DEFAULT_MEMORY_SIZE}"

_INSTALLED = "_tasklog_basic_config"


def basic_config(
    repo: Repository[Any] | str | None = None,
    *,
    model: type[BaseModel] | str | None = None,
    logger: str | logging.Logger = "tasklog.task",
    level: int | str = logging.INFO,
    **options: Any,
) -> RepoHandler:
    """Attach a :class:`RepoHandler` to the task logger, like :func:`logging.basicConfig`.

    Args:
        repo: a repository or URL; None takes ``$TASKLOG_REPO``, else a bounded
            in-memory store (:data:`DEFAULT_MEMORY_URL`, the newest
            :data:`DEFAULT_MEMORY_SIZE` records).
        model: the record model (class or dotted path) for a URL.
        logger: the logger (or its name) to attach to.
        level: the logger's level.
        **options: passed to :class:`RepoHandler` (and, for a URL, to ``open_repo``).

    Calling it again replaces the handler it installed before (which is closed).
    Returns the new handler.
    """
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    if repo is None:
        repo = os.environ.get(ENV_REPO) or DEFAULT_MEMORY_URL
    handler = RepoHandler(repo, model=model, **options)
    setattr(handler, _INSTALLED, True)
    for old in list(logger.handlers):
        if getattr(old, _INSTALLED, False):
            logger.removeHandler(old)
            old.close()
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
