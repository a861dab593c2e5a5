"""The repository contract: one query API written once over a few primitives.

A backend subclasses :class:`Repository` and implements the primitives
(``insert_rows``, ``select_rows``, ``count_rows``, ``delete_rows``,
``update_rows``, ``prune_rows``). Rows are plain ``dict``s of stored values
(datetimes as aware UTC). Everything public — ``add``, ``filter_by``,
:class:`Result`, ``prune`` — is built on them here.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..query import Query
from ..records import TaskRunRecord
from ..schema import Schema, schema_of

__all__ = [
    "ModelT",
    "PartlyStored",
    "Repository",
    "Result",
    "Row",
    "WriteProfile",
    "cutoff_timestamp",
    "plan_prune",
]

_before_read: dict[Hashable, list[Callable[[], object]]] = {}
"""Before-read hooks (handlers' flushes) per store, see ``Repository.store_key``."""
_hooks_lock = threading.Lock()

ModelT = TypeVar("ModelT", bound=BaseModel)
Row = dict[str, Any]


class PartlyStored(Exception):  # noqa: N818  (not an error of its own: it carries one)
    """``insert_rows`` stored the first *stored* rows of a batch (as batches of
    their own) and then failed for a reason it raises from.

    A store that writes a big batch as several smaller ones raises it, so that a
    writer stores the rest again, not the whole batch.
    """

    def __init__(self, stored: int, total: int) -> None:
        super().__init__(f"{stored} of {total} rows were stored before the write failed")
        self.stored = stored


@dataclass(frozen=True)
class WriteProfile:
    """How a store likes to be written to; a handler picks its writer from it.

    Each store declares one as ``write_profile`` (a class attribute, or set in
    ``__init__`` when it depends on the connection, as SQL's batch size does).
    """

    batches: bool = False
    """Each write has a fixed cost (a file open, a transaction), so a handler
    should collect records and write them in batches (from a writer thread)."""

    in_caller: bool = False
    """A batch write is quick work done holding the GIL (formatting and one
    append), so the logging call that fills a batch should write it: handing it
    to a writer thread would cost more than the write. Stores whose writes run
    mostly outside the GIL (SQLite's engine, a database server) gain from the
    writer thread instead."""

    process_local: bool = False
    """Only this process can read the store (it lives in its memory), so a
    handler may hold records until this process reads them."""

    batch_size: int = 1000
    """How many records a handler writes at once by default."""


def cutoff_timestamp(older_than: timedelta | datetime | float | None) -> float | None:
    """Turn an age (``timedelta``) or a point in time into an epoch timestamp."""
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        return datetime.now(timezone.utc).timestamp() - older_than.total_seconds()
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=timezone.utc)
        return older_than.timestamp()
    if isinstance(older_than, (int, float)):
        return float(older_than)
    msg = f"older_than must be a timedelta, a datetime or an epoch timestamp, not {older_than!r}."
    raise TypeError(msg)


def plan_prune(
    rows: Iterable[tuple[Any, str | None, str | None, float | None]],
    keep_runs: int | None,
    cutoff: float | None,
) -> list[Any]:
    """Choose which rows a prune deletes, for stores that prune in Python.

    *rows* are ``(key, task_name, run_id, created)`` in insertion order. A run
    is the records sharing a ``run_id`` (a record without one is a run of its
    own); a run's age is that of its newest record. Returns the keys to delete.
    """
    doomed: list[Any] = []
    runs: dict[tuple[str | None, Any], list[Any]] = {}
    for key, task, run_id, created in rows:
        if cutoff is not None and created is not None and created < cutoff:
            doomed.append(key)
            continue
        if keep_runs is not None:
            run_key = (task, run_id if run_id is not None else ("\0solo", key))
            keys = runs.pop(run_key, None)
            if keys is None:
                keys = []
            keys.append(key)
            runs[run_key] = keys  # re-inserted: dict order = order of newest record
    if keep_runs is not None:
        kept: dict[str | None, int] = {}
        for (task, _), keys in reversed(list(runs.items())):
            n = kept.get(task, 0)
            if n >= keep_runs:
                doomed.extend(keys)
            else:
                kept[task] = n + 1
    return doomed


_BUILD_CHUNK = 256


def _target(hook: Callable[[], object]) -> Callable[[], object] | None:
    """The callable a registered hook stands for (None once its object is gone)."""
    weak = getattr(hook, "__weak__", None)
    return hook if weak is None else weak()


class Repository(ABC, Generic[ModelT]):
    """A store of task records with the tasklog query API.

    Args:
        model: the record model; every read returns instances of it.
        id_field: the field ``repo[value]`` looks up (Red Bird's argument).
            It is never a uniqueness constraint: log records are append-only.
    """

    write_profile: WriteProfile = WriteProfile()
    """How the store likes to be written to (see :class:`WriteProfile`)."""

    def __init__(self, model: type[ModelT] | None = None, *, id_field: str | None = None) -> None:
        self._model: type[ModelT] = model or TaskRunRecord  # type: ignore[assignment]
        self.schema: Schema = schema_of(self._model)
        if id_field is not None:
            self.schema.field(id_field)
        self.id_field = id_field

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> type[ModelT]:
        """The record model: every read returns instances of it."""
        return self._model

    @model.setter
    def model(self, model: type[ModelT]) -> None:
        """Switch the model (Red Bird's ``repo.model = RunRecord``).

        Records accepted so far are written first; later writes and reads use
        *model*. The store is checked (and its columns added) as on opening.

        Raises:
            TypeError: *model* is not a pydantic model class.
            ValueError: the store cannot hold *model*'s records; the
                repository keeps its previous model.
        """
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            msg = f"A repository's model must be a pydantic model class, not {model!r}."
            raise TypeError(msg)
        if model is self._model:
            return
        schema = schema_of(model)
        if self.id_field is not None:
            schema.field(self.id_field)
        self.sync()  # what handlers hold was made for the previous model
        previous = (self._model, self.schema)
        self._model, self.schema = model, schema
        try:
            self._adopt_model(previous[1])
        except BaseException:
            self._model, self.schema = previous
            raise

    def _adopt_model(self, previous: Schema) -> None:
        """Re-derive what the store keeps about the model after it changed.

        *previous* is the schema of the model before. The default does
        nothing: a store that caches the model's layout overrides it.
        """

    def create(self) -> None:
        """Create the store (the CSV file with its header, the SQL table) when it
        is missing; do nothing otherwise (Red Bird's ``repo.create()``)."""

    # ----------------------------------------------------------------- writes
    def validate(self, item: BaseModel | Mapping[str, Any]) -> ModelT:
        """Return *item* as an instance of :attr:`model`.

        Raises:
            pydantic.ValidationError: the item does not fit the model.
        """
        if type(item) is self.model:
            return item
        if isinstance(item, BaseModel):
            item = item.model_dump()
        return self.model.model_validate(item)

    def add(self, item: ModelT | Mapping[str, Any]) -> None:
        """Append one record (a model instance or a dict)."""
        self.add_many([item])

    def add_many(self, items: Iterable[ModelT | Mapping[str, Any]]) -> int:
        """Append records as one batch and return how many were stored.

        Items that do not fit the model are not stored; the valid ones beside
        them are, and then a :class:`ValueError` names the invalid ones.
        """
        rows: list[Row] = []
        errors: list[str] = []
        for n, item in enumerate(items):
            try:
                rows.append(self.schema.row(self.validate(item)))
            except ValidationError as exc:
                errors.append(f"item {n}: {_describe(exc)}")
        if rows:
            self.insert_rows(rows)
        if errors:
            shown = "; ".join(errors[:3]) + ("; ..." if len(errors) > 3 else "")
            msg = (
                f"{len(errors)} item(s) do not fit {self.model.__name__} and were not stored "
                f"({len(rows)} stored): {shown}"
            )
            raise ValueError(msg)
        return len(rows)

    # ------------------------------------------------------------------ reads
    def filter_by(self, **conditions: Any) -> Result[ModelT]:
        """Records matching *conditions* (literals or operators), as a lazy :class:`Result`.

        Raises:
            ValueError: a condition names an unknown field or a value the field
                cannot hold.
        """
        return Result(self, Query.build(self.schema, conditions))

    def __len__(self) -> int:
        """Number of stored records."""
        return self.filter_by().count()

    def __iter__(self) -> Iterator[ModelT]:
        """Iterate over every record in insertion order (streaming)."""
        return iter(self.filter_by())

    def __getitem__(self, value: Any) -> ModelT:
        """The first record whose ``id_field`` equals *value*.

        Raises:
            TypeError: the repository has no ``id_field``.
            KeyError: no record has that value.
        """
        if self.id_field is None:
            msg = f"{type(self).__name__} has no id_field; pass id_field=... to look records up."
            raise TypeError(msg)
        found = self.filter_by(**{self.id_field: value}).first()
        if found is None:
            raise KeyError(value)
        return found

    def prune(
        self,
        keep_runs: int | None = None,
        older_than: timedelta | datetime | float | None = None,
        task_name: str | None = None,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete old records and return how many were deleted.

        Args:
            keep_runs: keep the newest *keep_runs* runs of each task (a run is
                the records sharing a ``run_id``; a record without one is a run
                of its own); older runs are deleted.
            older_than: delete records created before this point in time (an
                age as ``timedelta``, a ``datetime`` or an epoch timestamp).
            task_name: only prune this task's records.
            dry_run: delete nothing; return how many records would be deleted.

        Both rules may be given; a record is deleted when either selects it.
        """
        if keep_runs is not None and (not isinstance(keep_runs, int) or keep_runs < 0):
            msg = f"keep_runs must be a non-negative integer, not {keep_runs!r}."
            raise ValueError(msg)
        cutoff = cutoff_timestamp(older_than)
        if keep_runs is None and cutoff is None:
            return 0
        self.sync()
        return self.prune_rows(keep_runs, cutoff, task_name, dry_run=dry_run)

    # ---------------------------------------------------- reads see writes
    @property
    @abstractmethod
    def store_key(self) -> Hashable:
        """What identifies the underlying store: repositories with equal keys share data.

        Two objects on the same file, table or key compare equal however it
        was spelled (resolved paths, the database's identity); ``copy`` refuses
        a destination equal to its source (:func:`tasklog.repos.same_store`).
        Before-read hooks are kept per store, so a query through any repository
        object sees what was written through any other one in this process.
        """

    def add_before_read(self, hook: Callable[[], object]) -> None:
        """Register a callable run before every read of this store (a handler's flush).

        Bound methods are held weakly, so a forgotten handler is not kept alive.
        """
        ref: Callable[[], object]
        if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
            weak = weakref.WeakMethod(hook)

            def ref() -> object:
                method = weak()
                return method() if method is not None else None

            ref.__weak__ = weak  # type: ignore[attr-defined]
        else:
            ref = hook
        with _hooks_lock:
            key = self.store_key
            live = [h for h in _before_read.get(key, []) if _target(h) is not None]
            _before_read[key] = [*live, ref]

    def remove_before_read(self, hook: Callable[[], object]) -> None:
        """Unregister a hook added with :meth:`add_before_read`."""
        with _hooks_lock:
            key = self.store_key
            left = [h for h in _before_read.get(key, []) if _target(h) not in (None, hook)]
            if left:
                _before_read[key] = left
            else:
                _before_read.pop(key, None)

    def sync(self) -> None:
        """Run the before-read hooks, so that reads see every accepted record."""
        hooks = _before_read.get(self.store_key)
        if hooks:
            for hook in list(hooks):
                hook()

    def close(self) -> None:
        """Release the store's resources (connections, files). Idempotent."""

    @abstractmethod
    def is_transient(self, error: BaseException) -> bool:
        """Whether a write that raised *error* may succeed when retried.

        A writer retries transient errors (a store briefly unreachable) and
        gives up on the others (a record the store refuses).
        """

    # ------------------------------------------------------------- primitives
    @abstractmethod
    def insert_rows(self, rows: list[Row]) -> None:
        """Append *rows* (validated, in order) as one batch.

        Raises:
            PartlyStored: the first rows were stored, the rest were not.
        """

    @abstractmethod
    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Yield matching rows in *query*'s order (insertion order breaks ties).

        *reverse* reverses the whole order, ties included.
        """

    @abstractmethod
    def count_rows(self, query: Query) -> int:
        """Count matching rows."""

    @abstractmethod
    def delete_rows(self, query: Query) -> int:
        """Delete matching rows; return how many."""

    @abstractmethod
    def update_rows(self, query: Query, values: Row) -> int:
        """Set *values* on matching rows; return how many."""

    @abstractmethod
    def prune_rows(
        self,
        keep_runs: int | None,
        cutoff: float | None,
        task_name: str | None,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete what :meth:`prune` selects (see :func:`plan_prune`); return how many.

        With *dry_run*, delete nothing and return how many would be deleted."""

    def __repr__(self) -> str:
        """Class and model name."""
        return f"{type(self).__name__}(model={self.model.__name__})"


class Result(Generic[ModelT]):
    """The lazy result of ``filter_by``: nothing runs until a terminal method."""

    def __init__(self, repo: Repository[ModelT], query: Query) -> None:
        self.repo = repo
        self.query = query

    def _build(self, rows: Iterable[Row]) -> Iterator[ModelT]:
        """Models of *rows*, built a chunk at a time (see :meth:`Schema.build_many`),
        still streaming."""
        build = self.repo.schema.build_many
        rows = iter(rows)
        while chunk := list(islice(rows, _BUILD_CHUNK)):
            yield from build(chunk)  # type: ignore[misc]

    def __iter__(self) -> Iterator[ModelT]:
        """Stream the matching records."""
        self.repo.sync()
        return self._build(self.repo.select_rows(self.query))

    def all(self) -> list[ModelT]:
        """Every matching record, in order."""
        return list(self)

    def limit(self, n: int) -> list[ModelT]:
        """At most *n* matching records, in order."""
        if n < 0:
            msg = f"limit must be non-negative, not {n!r}."
            raise ValueError(msg)
        self.repo.sync()
        return list(self._build(self.repo.select_rows(self.query, limit=n)))

    def first(self) -> ModelT | None:
        """The first match, or None."""
        found = self.limit(1)
        return found[0] if found else None

    def last(self) -> ModelT | None:
        """The last match, or None."""
        self.repo.sync()
        found = list(self._build(self.repo.select_rows(self.query, limit=1, reverse=True)))
        return found[0] if found else None

    def order_by(self, *fields: str) -> Result[ModelT]:
        """A new result sorted by *fields* (``"-created"`` for descending)."""
        return Result(self.repo, self.query.ordered(self.repo.schema, fields))

    def count(self) -> int:
        """Number of matches."""
        self.repo.sync()
        return self.repo.count_rows(self.query)

    def delete(self) -> int:
        """Delete the matches; return how many."""
        self.repo.sync()
        return self.repo.delete_rows(self.query)

    def update(self, **values: Any) -> int:
        """Set fields of the matches; return how many were updated.

        Raises:
            ValueError: an unknown field, or a value the field cannot hold.
        """
        converted: Row = {}
        for name, value in values.items():
            info = self.repo.schema.field(name)
            if value is None and not info.nullable:
                msg = f"Field {name!r} of {self.repo.model.__name__} cannot be None."
                raise ValueError(msg)
            converted[name] = info.convert(value)
        if not converted:
            return 0
        self.repo.sync()
        return self.repo.update_rows(self.query, converted)

    def __repr__(self) -> str:
        """The repository and the query."""
        return f"Result({self.repo!r}, {self.query!r})"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "record"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return ", ".join(parts)
