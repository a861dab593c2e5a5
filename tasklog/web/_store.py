"""The store the service reads: opened lazily, so a store that is down does not stop it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..repos import Repository, backend_for, open_existing

__all__ = ["Store", "StoreUnavailable", "describe_error", "is_unavailable"]

_RETRY_AFTER = 1.0
"""Seconds between attempts to open a store that could not be opened."""


class StoreUnavailable(Exception):  # noqa: N818  (a state, reported as 503)
    """The store cannot be read now (down, missing, not yet created): a 503."""


def describe_error(error: BaseException) -> str:
    """One line about *error*, without a traceback (and without SQL parameters)."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error) or type(error).__name__
    return " ".join(text.split())[:500]


def is_unavailable(error: BaseException) -> bool:
    """Whether *error* means the store cannot be reached (rather than a bad request)."""
    if isinstance(error, (StoreUnavailable, ConnectionError, TimeoutError)):
        return True
    import sqlalchemy.exc as sa_exc

    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa_exc.TimeoutError)


class Store:
    """Gives the repository, opening the URL on first use and after a failure.

    Args:
        repo: a repository, or a URL (an existing store of any model, read
            with the model its columns describe).
        table: the SQL table when *repo* is a URL.

    Raises:
        ConfigError: *repo* is a URL that can never work (unknown scheme).
    """

    def __init__(self, repo: Repository[Any] | str | Path, *, table: str | None = None) -> None:
        self._lock = threading.Lock()
        self._error: str | None = None
        self._tried = 0.0
        self.owned = not isinstance(repo, Repository)
        self._repo: Repository[Any] | None = None
        self.url: str | None = None
        self.table = table
        if isinstance(repo, Repository):
            self._repo = repo
        else:
            self.url = str(repo)
            backend_for(self.url)  # a URL that can never work raises now
            self._check_url()
            self._open()

    def _check_url(self) -> None:
        """Raise now for an SQL URL whose dialect does not exist (it would never work)."""
        assert self.url is not None
        if "://" in self.url and self.url.split("://", 1)[0].lower() not in (
            "memory", "csv", "redis", "rediss", "unix"
        ):
            from ..repos.sql import parse_sql_url

            parse_sql_url(self.url)

    def _open(self) -> Repository[Any] | None:
        assert self.url is not None
        self._tried = time.monotonic()
        try:
            self._repo = open_existing(self.url, table=self.table)
        except Exception as err:
            self._error = describe_error(err)
            return None
        self._error = None
        return self._repo

    def get(self) -> Repository[Any]:
        """The repository.

        Raises:
            StoreUnavailable: the store could not be opened (yet).
        """
        repo = self._repo
        if repo is not None:
            return repo
        with self._lock:
            if self._repo is None and time.monotonic() - self._tried >= _RETRY_AFTER:
                self._open()
            if self._repo is None:
                msg = f"The store cannot be read: {self._error}"
                raise StoreUnavailable(msg)
            return self._repo

    def check(self) -> None:
        """Read one record, to see the store answer.

        Raises:
            Exception: whatever the store raised (see :func:`is_unavailable`).
        """
        self.get().filter_by().first()

    def close(self) -> None:
        """Close the repository if this object opened it."""
        if self.owned and self._repo is not None:
            self._repo.close()
