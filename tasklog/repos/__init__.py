"""Repositories: where task records are stored, and ``open_repo`` to pick one by URL.

Which module opens which URL is declared once, in :mod:`tasklog.repos.registry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Repository, Result, WriteProfile
from .csv_file import CSVFileRepo
from .memory import MemoryRepo
from .registry import BACKENDS, Backend, backend_for, open_existing, open_repo, same_store

if TYPE_CHECKING:
    from .redis_store import RedisRepo
    from .sql import SQLRepo, parse_sql_url

__all__ = [
    "BACKENDS",
    "Backend",
    "CSVFileRepo",
    "MemoryRepo",
    "RedisRepo",
    "Repository",
    "Result",
    "SQLRepo",
    "WriteProfile",
    "backend_for",
    "open_existing",
    "open_repo",
    "parse_sql_url",
    "same_store",
]


def __getattr__(name: str) -> Any:
    """Import the SQL and Redis backends (SQLAlchemy, redis-py) only when they are used."""
    if name in ("SQLRepo", "parse_sql_url"):
        from . import sql

        return getattr(sql, name)
    if name == "RedisRepo":
        from .redis_store import RedisRepo

        return RedisRepo
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
