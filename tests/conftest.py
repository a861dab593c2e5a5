"""Shared fixtures: the same tests run over memory, CSV, SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import PostgresServer, session_postgres_server, session_postgres_url
from _redis import session_redis_url
from pydantic import BaseModel

from tasklog import MinimalRunRecord, Repository, open_repo

RepoFactory = Callable[..., Repository[Any]]


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL of a PostgreSQL database for this test session."""
    return session_postgres_url(request)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of a Redis server for this test session (tests use keys of their own)."""
    return session_redis_url(request)


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's own server, for fault injection (stop/start it mid-test)."""
    server = session_postgres_server(request)
    if server is None:
        pytest.skip("TASKLOG_TEST_PG_URL points at an external server; cannot stop it")
    return server


def _drop_table(repo: Any) -> None:
    """Drop a test's table (and its runs index) from the session's PostgreSQL database."""
    repo.drop()


def drop_redis_key(repo: Any) -> None:
    """Delete every Redis key of a RedisRepo's store."""
    keys = list(repo.client.scan_iter(match="{" + repo.key + "}:*", count=1000))
    for start in range(0, len(keys), 500):
        repo.client.delete(*keys[start : start + 500])


UrlMaker = Callable[[Path, pytest.FixtureRequest, str], str]

STORE_LIST: dict[str, tuple[UrlMaker, Callable[[Any], None] | None]] = {
    "memory": (lambda tmp, request, name: "memory://", None),
    "csv": (lambda tmp, request, name: f"csv://{tmp / (name + '.csv')}", None),
    "sqlite": (lambda tmp, request, name: f"sqlite:///{tmp / 'tasklog.db'}?table={name}", None),
    "postgresql": (
        lambda tmp, request, name: f"{request.getfixturevalue('postgres_url')}?table={name}",
        _drop_table,
    ),
    "redis": (
        lambda tmp, request, name: f"{request.getfixturevalue('redis_url')}?key={name}",
        drop_redis_key,
    ),
}
"""Every store the tests run on: a fresh store's URL (made from the test's
temporary directory, the request and a unique name) and what cleans it up
after the test. Adding a store to tasklog adds one entry here."""

STORES = tuple(STORE_LIST)


def store_url(store: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "") -> str:
    """A URL for a fresh repository of *store* (tables get unique names)."""
    if store not in STORE_LIST:
        msg = f"unknown store {store!r}"
        raise ValueError(msg)
    return STORE_LIST[store][0](tmp_path, request, name or f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(name="make_repo")
def _make_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepoFactory]:
    """A factory ``make_repo(store, model=..., **options)`` of fresh repositories,
    opened by URL through the backend registry (``open_repo``)."""
    made: list[tuple[Repository[Any], Callable[[Any], None] | None]] = []

    def make(
        store: str, model: type[BaseModel] = MinimalRunRecord, **options: Any
    ) -> Repository[Any]:
        repo = open_repo(store_url(store, tmp_path, request), model=model, **options)
        made.append((repo, STORE_LIST[store][1]))
        return repo

    yield make
    for repo, cleanup in made:
        if cleanup is not None:
            cleanup(repo)
        repo.close()


@pytest.fixture(name="store", params=STORES)
def _store(request: pytest.FixtureRequest) -> str:
    """Each store name in turn."""
    return str(request.param)


@pytest.fixture(name="repo")
def _repo(make_repo: RepoFactory, store: str) -> Repository[Any]:
    """A fresh, empty repository of each store, with the default model."""
    return make_repo(store)


@pytest.fixture(autouse=True)
def _restore_logging(make_repo: RepoFactory) -> Iterator[None]:
    """Put loggers back as they were: remove and close handlers a test added.

    It depends on ``make_repo`` so that it is torn down first: handlers flush
    and close before the repositories they write to are closed or dropped.
    """
    names = ["", "tasklog.task", *logging.root.manager.loggerDict]
    before = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
            logging.getLogger(n).propagate)
        for n in names
    }
    yield
    for name in ["", *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        if not isinstance(logger, logging.Logger):
            continue
        handlers, level, propagate = before.get(name, ([], logging.NOTSET, True))
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
        logger.propagate = propagate
