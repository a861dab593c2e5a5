"""Repositories: where task records are stored, and ``open_repo`` to pick one by URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel

from ..exceptions import ConfigError
from ..records import MinimalRunRecord
from .base import Repository, Result
from .csv_file import CSVFileRepo
from .memory import MemoryRepo

if TYPE_CHECKING:
    from sqlalchemy import URL

    from .redis_store import RedisRepo
    from .sql import SQLRepo

__all__ = [
    "CSVFileRepo",
    "MemoryRepo",
    "RedisRepo",
    "Repository",
    "Result",
    "SQLRepo",
    "open_repo",
    "parse_sql_url",
]


def __getattr__(name: str) -> Any:
    """Import the SQL and Redis backends (SQLAlchemy, redis-py) only when they are used."""
    if name == "SQLRepo":
        from .sql import SQLRepo

        return SQLRepo
    if name == "RedisRepo":
        from .redis_store import RedisRepo

        return RedisRepo
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _int_option(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"URL option {name}={text!r} must be an integer."
        raise ConfigError(msg) from None


def _open_memory(url: str, model: type[BaseModel], options: dict[str, Any]) -> Repository[Any]:
    query = dict(parse_qsl(urlsplit(url).query))
    if "max_size" in query:
        options.setdefault("max_size", _int_option("max_size", query.pop("max_size")))
    if query:
        msg = f"Unknown option(s) in {url!r}: {', '.join(query)}; memory:// knows max_size."
        raise ConfigError(msg)
    return MemoryRepo(model=model, **options)


def _open_csv(url: str, model: type[BaseModel], options: dict[str, Any]) -> Repository[Any]:
    if url.startswith("csv://"):
        parts = urlsplit(url)
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
    else:
        path = url
    if not path:
        msg = f"{url!r} names no file; write csv:///path/to/file.csv."
        raise ConfigError(msg)
    return CSVFileRepo(filename=path, model=model, **options)


def _open_redis(url: str, model: type[BaseModel], options: dict[str, Any]) -> Repository[Any]:
    from .redis_store import RedisRepo, parse_redis_url

    server, found = parse_redis_url(url)
    for name, value in found.items():
        options.setdefault(name, value)
    return RedisRepo(server, model=model, **options)


def parse_sql_url(url: str) -> tuple[URL, str | None]:
    """Split an SQLAlchemy URL into the database URL and its ``?table=`` option.

    Raises:
        ValueError: the URL cannot be parsed or names no known database
            (:class:`~tasklog.exceptions.ConfigError`).
    """
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        msg = f"Cannot parse repository URL {url!r}. {_KNOWN}"
        raise ConfigError(msg) from None
    value = parsed.query.get("table")
    table = value if isinstance(value, str) or value is None else value[-1]
    parsed = parsed.difference_update_query(["table"])
    try:
        parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        msg = f"Unknown repository URL scheme {parsed.drivername!r} in {url!r}. {_KNOWN}"
        raise ConfigError(msg) from None
    return parsed, table


def _open_sql(url: str, model: type[BaseModel], options: dict[str, Any]) -> Repository[Any]:
    from .sql import SQLRepo

    parsed, table = parse_sql_url(url)
    if table is not None:
        options.setdefault("table", table)
    return SQLRepo(url=parsed, model=model, **options)


_KNOWN = (
    "Known schemes: memory:// (?max_size=N), csv:///path/file.csv or a path ending in .csv, "
    "redis://host:port/db (?key=NAME&max_size=N), "
    "and SQLAlchemy URLs such as sqlite:///app.db or postgresql+psycopg://user@host/db "
    "(?table=NAME)."
)

_SCHEMES: dict[str, Callable[[str, type[BaseModel], dict[str, Any]], Repository[Any]]] = {
    "memory": _open_memory,
    "csv": _open_csv,
    "redis": _open_redis,
    "rediss": _open_redis,
}


def open_repo(
    url: str | Path, *, model: type[BaseModel] = MinimalRunRecord, **options: Any
) -> Repository[Any]:
    """Open the repository a URL names.

    ``memory://`` (``?max_size=1000``), ``csv:///path/file.csv`` or any path
    ending in ``.csv``, ``redis://host:port/db`` (``?key=NAME&max_size=N``;
    ``rediss://`` for TLS), and every SQLAlchemy URL (``sqlite:///app.db``,
    ``postgresql+psycopg://user@host/db``) with ``?table=NAME``.

    Raises:
        ValueError: the URL's scheme is unknown or an option is invalid
            (:class:`~tasklog.exceptions.ConfigError`, a ValueError).
    """
    text = str(url).strip()
    if not text:
        msg = f"Empty repository URL. {_KNOWN}"
        raise ConfigError(msg)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _SCHEMES:
        return _SCHEMES[scheme](text, model, options)
    if not scheme:
        if text.lower().endswith(".csv"):
            return _open_csv(text, model, options)
        msg = f"{text!r} is not a repository URL. {_KNOWN}"
        raise ConfigError(msg)
    return _open_sql(text, model, options)
