"""Where the repository is: ``basic_config`` for applications, ``resolve_repo`` for the shell.

``basic_config`` attaches a repo handler to the task logger in one call; with
no repository given it takes ``$TASKLOG_REPO``, else a bounded in-memory
store. The ``tasklog`` command looks further (``resolve_repo``): ``--repo``,
``$TASKLOG_REPO``, ``pyproject.toml``, ``tasklog.toml``, else
:data:`DEFAULT_REPO`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .exceptions import ConfigError
from .handler import RepoHandler
from .repos import Repository

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

__all__ = [
    "DEFAULT_MEMORY_SIZE",
    "DEFAULT_MEMORY_URL",
    "DEFAULT_REPO",
    "ENV_REPO",
    "SQLITE_SUFFIXES",
    "basic_config",
    "repo_url",
    "resolve_repo",
]

ENV_REPO = "TASKLOG_REPO"
DEFAULT_MEMORY_SIZE = 10_000
"""How many records the default in-memory store keeps (the oldest are evicted)."""
DEFAULT_MEMORY_URL = f"memory://?max_size={DEFAULT_MEMORY_SIZE}"
DEFAULT_REPO = "sqlite:///tasklog.db"
"""The ``tasklog`` command's repository when nothing names one (a file in the current directory)."""

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
"""A bare path with one of these endings names an SQLite file (in the ``tasklog`` command)."""

_INSTALLED = "_tasklog_basic_config"


def basic_config(
    repo: Repository[Any] | str | None = None,
    *,
    model: type[BaseModel] | str | None = None,
    logger: str | logging.Logger = "tasklog.task",
    level: int | str = logging.INFO,
    capture: bool = False,
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
        capture: also store what *any* logger emits while a run is active,
            with that run (see :func:`tasklog.capture`).
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
    if capture:
        from .capture import capture as start_capture

        start_capture()
    return handler


def repo_url(text: str) -> str:
    """*text* as a repository URL: a bare path ending in ``.db``, ``.sqlite`` or
    ``.sqlite3`` becomes ``sqlite:///path`` (as a path ending in ``.csv`` names
    a CSV file); anything else is returned as it is."""
    stripped = text.strip()
    if "://" not in stripped and stripped.lower().endswith(SQLITE_SUFFIXES):
        return f"sqlite:///{stripped}"
    return text


def resolve_repo(option: str | None = None, directory: Path | None = None) -> tuple[str, str]:
    """The repository URL the ``tasklog`` command uses, and where it came from.

    In order: *option* (``--repo``), ``$TASKLOG_REPO``, ``repo`` under
    ``[tool.tasklog]`` in ``pyproject.toml``, a top-level ``repo`` in
    ``tasklog.toml`` (both in *directory*, default the current one), else
    :data:`DEFAULT_REPO`.

    Raises:
        ConfigError: a config file cannot be read, or its ``repo`` is not text.
    """
    if option:
        return option, "--repo"
    env = os.environ.get(ENV_REPO)
    if env:
        return env, f"${ENV_REPO}"
    directory = directory or Path.cwd()
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        section = _read_toml(pyproject).get("tool", {}).get("tasklog", {})
        if isinstance(section, dict) and section.get("repo"):
            return _config_text(section["repo"], pyproject), f"{pyproject} [tool.tasklog]"
    own = directory / "tasklog.toml"
    if own.is_file():
        value = _read_toml(own).get("repo")
        if value:
            return _config_text(value, own), str(own)
    return DEFAULT_REPO, "default"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as err:
        msg = f"Cannot read {path}: {err}."
        raise ConfigError(msg) from None


def _config_text(value: Any, path: Path) -> str:
    if not isinstance(value, str):
        msg = f"'repo' in {path} must be a URL string, not {value!r}."
        raise ConfigError(msg)
    return value
