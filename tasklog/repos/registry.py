"""The backend registry: which store module opens which URL.

Each store module declares, beside its repository class, two functions:

- ``open_url(url, model, options)`` opens (and creates when missing) the
  store *url* names. With ``model=None`` an existing store is read with a
  model matching its own columns (:func:`model_for_columns`), a new one gets
  :data:`DEFAULT_MODEL`.
- ``open_existing(url, options)`` opens a store that must already exist, with
  a model matching its columns; a missing one is a :class:`StoreNotFoundError`.

and one :class:`Backend` entry in :data:`BACKENDS` names its module and URL
schemes. :func:`open_repo`, the CLI and the web service all open stores
through :func:`backend_for`, so a new store is its module, one entry here,
one entry in the tests' store list, and an extra in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, create_model

from ..exceptions import ConfigError, StoreNotFoundError
from ..records import (
    LogRecord,
    MinimalRecord,
    MinimalRunRecord,
    RunRecord,
    TaskLogRecord,
    TaskRunRecord,
)

if TYPE_CHECKING:
    from .base import Repository

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "Backend",
    "StoreNotFoundError",
    "backend_for",
    "model_for_columns",
    "open_existing",
    "open_repo",
    "same_store",
]

DEFAULT_MODEL: type[BaseModel] = TaskRunRecord
"""The model of a new store opened by URL without ``model=``."""


@dataclass(frozen=True)
class Backend:
    """One kind of store, as the registry knows it.

    Attributes:
        name: a short name (``"sql"``), used in messages.
        module: the module defining ``open_url`` and ``open_existing``;
            imported on first use (a backend's driver loads only when needed).
        schemes: URL schemes it opens (``"redis"``, ``"rediss"``).
        suffixes: file name endings it opens when given a bare path (``".csv"``).
        any_other_scheme: it opens every URL no other backend claims
            (SQLAlchemy URLs: one backend for many databases).
        example: how its URLs look, for error messages.
    """

    name: str
    module: str
    schemes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    any_other_scheme: bool = False
    example: str = ""

    def load(self) -> ModuleType:
        """The backend's module."""
        return importlib.import_module(self.module)


BACKENDS: list[Backend] = [
    Backend("memory", "tasklog.repos.memory", schemes=("memory",),
            example="memory:// (?max_size=N)"),
    Backend("csv", "tasklog.repos.csv_file", schemes=("csv",), suffixes=(".csv",),
            example="csv:///path/file.csv or a path ending in .csv"),
    Backend("redis", "tasklog.repos.redis_store", schemes=("redis", "rediss"),
            example="redis://host:port/db (?key=NAME&max_size=N)"),
    Backend("sql", "tasklog.repos.sql", any_other_scheme=True,
            example="SQLAlchemy URLs such as sqlite:///app.db or "
                    "postgresql+psycopg://user@host/db (?table=NAME)"),
]
"""Every store tasklog can open by URL. Add one :class:`Backend` per store."""


def known_schemes() -> str:
    """The URL forms the registry knows, for error messages."""
    return "Known schemes: " + "; ".join(b.example or b.name for b in BACKENDS) + "."


def scheme_of(url: str) -> str:
    """The lower-cased scheme of *url* (``""`` for a bare path)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def backend_for(url: str | Path) -> Backend:
    """The backend that opens *url*.

    Raises:
        ConfigError: no backend opens it (the message names the known schemes).
    """
    text = str(url).strip()
    if not text:
        msg = f"Empty repository URL. {known_schemes()}"
        raise ConfigError(msg)
    scheme = scheme_of(text)
    if scheme:
        for backend in BACKENDS:
            if scheme in backend.schemes:
                return backend
        for backend in BACKENDS:
            if backend.any_other_scheme:
                return backend
    else:
        lowered = text.lower()
        for backend in BACKENDS:
            if any(lowered.endswith(suffix) for suffix in backend.suffixes):
                return backend
    msg = f"{text!r} is not a repository URL. {known_schemes()}"
    raise ConfigError(msg)


def open_repo(
    url: str | Path, *, model: type[BaseModel] | None = None, **options: Any
) -> Repository[Any]:
    """Open the repository a URL names (created when missing).

    ``memory://`` (``?max_size=1000``), ``csv:///path/file.csv`` or any path
    ending in ``.csv``, and every SQLAlchemy URL (``sqlite:///app.db``,
    ``postgresql+psycopg://user@host/db``) with ``?table=NAME`` — and any
    store added to :data:`BACKENDS`. Without *model*, an existing store is
    read with a model matching its columns, and a new one gets
    :data:`DEFAULT_MODEL`.

    Raises:
        ValueError: the URL's scheme is unknown or an option is invalid
            (:class:`~tasklog.exceptions.ConfigError`, a ValueError).
    """
    text = str(url).strip()
    opened: Repository[Any] = backend_for(text).load().open_url(text, model, dict(options))
    return opened


def open_existing(url: str | Path, *, table: str | None = None) -> Repository[Any]:
    """Open an existing store for reading, with a model fitting its columns.

    Args:
        url: a repository URL (see :func:`open_repo`).
        table: the SQL table (overrides ``?table=`` in *url*); a store
            without tables refuses it.

    ``memory://`` opens an empty store (memory does not outlive a process).

    Raises:
        StoreNotFoundError: the file, database or table does not exist.
        ConfigError: the URL is not usable, or the store is not a tasklog store.
    """
    text = str(url).strip()
    options: dict[str, Any] = {} if table is None else {"table": table}
    opened: Repository[Any] = backend_for(text).load().open_existing(text, options)
    return opened


def same_store(a: Repository[Any], b: Repository[Any]) -> bool:
    """Whether *a* and *b* read and write the same data (equal ``store_key``),
    however their URLs were spelled."""
    return bool(a.store_key == b.store_key)


def no_table(url: str, options: Mapping[str, Any]) -> None:
    """Refuse a ``table`` option for a store that has no tables.

    Raises:
        ConfigError: *options* has a table.
    """
    if options.get("table") is not None:
        msg = f"A table ({options['table']!r}) applies to SQL databases only, not to {url!r}."
        raise ConfigError(msg)


def not_a_directory(path: Path, what: str) -> None:
    """Refuse a directory where a file goes.

    Raises:
        ConfigError: *path* is a directory.
    """
    if path.is_dir():
        msg = f"{what} {str(path)!r} is a directory; name a file."
        raise ConfigError(msg)


# ------------------------------------------------------- models from columns

KNOWN_MODELS: tuple[type[BaseModel], ...] = (
    TaskRunRecord,
    RunRecord,
    TaskLogRecord,
    LogRecord,
    MinimalRunRecord,
    MinimalRecord,
)
"""tasklog's own models, richest first."""

_REQUIRED = ("task_name", "action", "created")
_ID_COLUMN = "_id"


def _known_annotations() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in reversed(KNOWN_MODELS):
        for name, info in model.model_fields.items():
            found[name] = info.annotation
    return found


_KNOWN_TYPES = _known_annotations()


def _usable_name(name: str) -> bool:
    return (
        name.isidentifier()
        and not name.startswith("_")
        and not name.startswith("model_")
        and not hasattr(BaseModel, name)
    )


def model_for_columns(
    columns: Sequence[str], types: Mapping[str, Any] | None = None, *, where: str = "the store"
) -> type[BaseModel]:
    """A record model for a store with these *columns*.

    When the columns are exactly the fields of one of tasklog's models, that
    model. Otherwise a model made for these columns: tasklog's field types for
    the names it knows, *types* (or ``str``) for the others, and every field
    but ``task_name``, ``action`` and ``created`` optional.

    Raises:
        ConfigError: a column tasklog needs (``task_name``, ``action``,
            ``created``) is missing.
    """
    present = [c for c in columns if c != _ID_COLUMN]
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        msg = (
            f"{where} is not a tasklog store: it lacks the column(s) {', '.join(missing)} "
            f"(its columns: {', '.join(present) or 'none'})."
        )
        raise ConfigError(msg)
    for known in KNOWN_MODELS:
        if set(present) == set(known.model_fields):
            return known
    fields: dict[str, Any] = {}
    for name in present:
        if not _usable_name(name) or name in fields:
            continue
        if name in _REQUIRED:
            fields[name] = (_KNOWN_TYPES[name], ...)
            continue
        annotation = _KNOWN_TYPES.get(name) or (types or {}).get(name, str)
        fields[name] = (Optional[annotation], None)  # noqa: UP045  (built at run time)
    model: type[BaseModel] = create_model("StoredRecord", **fields)
    return model
