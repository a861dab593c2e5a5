"""``RedisRepo``: records in Redis, indexed so that queries do not read every record.

Every key lives under one hash tag, ``{key}:...``, so the whole store sits in
one slot of a Redis Cluster and every operation is one Lua script call: atomic
and one round trip (see :mod:`tasklog.repos.redis_lua` for the keys, and
:mod:`tasklog.repos.redis_codec` for how a row is stored in one value).

- Up to 1,000 rows are one script call that takes ids from a counter, stores
  the rows in a hash and adds them to the indexes: a sorted set of every id,
  one per value of ``task_name``, ``action`` and ``run_id`` (scored by id, so
  ordered by insertion), one of ``created`` (scored by ``created``), and per
  task the newest record of each run (for ``prune(keep_runs=...)``). A bigger
  batch is several calls on one connection, each packed and sent while Redis
  runs the one before, and stored only if that one was. A token per call
  makes a batch retried after a lost reply count once.
- A query walks the smallest candidate set (an equality or ``in_`` on an
  indexed field, a ``created`` range, or all ids) in insertion order, checks
  the other indexed conditions inside Redis, and tests every condition on the
  fetched rows in Python with the shared predicates. Counts of indexed
  conditions never fetch rows.
- ``delete``, ``update``, ``prune`` and ``max_size`` (a ring: the oldest
  records go) update every index in the same script call.
- A capped stream (one entry per batch) wakes up :meth:`RedisRepo.records_after`
  callers: ``tail -f`` and event feeds without polling the store.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConfigError
from ..query import (
    Between,
    Equal,
    GreaterEqual,
    GreaterThan,
    In,
    LessEqual,
    LessThan,
    NotIn,
    Operator,
    Query,
    sort_rows,
)
from ..schema import Schema
from .base import ModelT, PartlyStored, Repository, Row, WriteProfile, plan_prune
from .redis_codec import INDEXABLE, SLOTS, Layout, decode_many, pack, plain
from .redis_lua import SCRIPT

if TYPE_CHECKING:
    import redis

__all__ = ["RedisRepo", "parse_redis_url"]

_PAGE = 500
_BUDGET = 2000
_CHUNK = 1000
_ADD = 1000
"""Rows per script call of a write (a batch of more is sent in parts of this size)."""
_DEFAULT_URL = "redis://localhost:6379/0"


def parse_redis_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``redis://host:port/db?key=NAME&max_size=N`` into the server URL and options.

    Raises:
        ConfigError: an option is invalid.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {}
    rest = []
    for name, value in query:
        if name == "key":
            options["key"] = value
        elif name == "max_size":
            try:
                options["max_size"] = int(value)
            except ValueError:
                msg = f"URL option max_size={value!r} must be an integer."
                raise ConfigError(msg) from None
        else:
            rest.append((name, value))
    server = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return server, options


class RedisRepo(Repository[ModelT]):
    """A store in Redis, under keys ``{key}:...``.

    Args:
        url: the server, ``redis://[[user]:password@]host:port/db`` (``rediss://``
            for TLS); options redis-py knows may follow as a query string.
        key: the name of this store in the database (several stores may share
            a database; several processes and hosts may write one store).
        model: the record model (default :class:`~tasklog.TaskRunRecord`).
        max_size: keep at most this many records, evicting the oldest (a ring).
            The cap is kept in Redis, so every writer of the key honours it;
            None leaves the key's current cap (if any) as it is.
        id_field: see :class:`~tasklog.repos.base.Repository`.
        client: a ready ``redis.Redis`` (or ``RedisCluster``) to use instead of *url*;
            it is not closed by :meth:`close`.

    Raises:
        ConfigError: the URL or the key is not usable.
    """

    write_profile = WriteProfile(batches=True, batch_size=5000)

    def __init__(
        self,
        url: str = _DEFAULT_URL,
        *,
        key: str = "tasklog",
        model: type[ModelT] | None = None,
        max_size: int | None = None,
        id_field: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(model, id_field=id_field)
        if not isinstance(key, str) or not key or "{" in key or "}" in key:
            msg = f"key must be a non-empty string without braces, not {key!r}."
            raise ConfigError(msg)
        if max_size is not None and (
            not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1
        ):
            msg = f"max_size must be a positive integer or None, not {max_size!r}."
            raise ValueError(msg)
        try:
            import redis
        except ImportError:
            msg = "RedisRepo needs redis-py: pip install 'tasklog[redis]'."
            raise ConfigError(msg) from None
        self._redis = redis
        self.key = key
        self.url = url
        self._owns_client = client is None
        if client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=60,
                    socket_connect_timeout=10,
                    health_check_interval=30,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as err:
                msg = f"Cannot use Redis URL {_hide_password(url)!r}: {err}"
                raise ConfigError(msg) from None
        self.client: redis.Redis = client
        self._prefix = "{" + key + "}:"
        self._seq_key = self._prefix + "seq"
        self._script = client.register_script(SCRIPT)
        self._lock = threading.Lock()
        self._layouts: dict[int, Layout] = {}
        self._by_spec: dict[str, Layout] = {}
        self._current: tuple[Any, Layout] | None = None
        self._pending: tuple[list[Row], str] | None = None
        if max_size is not None:
            self._call("cap", str(max_size))
        self.max_size: int | None = max_size

    # ------------------------------------------------------------ plumbing
    def _call(self, op: str, *args: Any) -> Any:
        return self._script(keys=[self._seq_key], args=[op, self._prefix, *args])

    @property
    def store_key(self) -> Hashable:
        """The server, database and key."""
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or (kwargs.get("host"), kwargs.get("port"))
        return ("redis", where, kwargs.get("db", 0), self.key)

    def is_transient(self, error: BaseException) -> bool:
        """Whether *error* means Redis is unreachable, busy, loading, full or failing over."""
        r = self._redis
        transient = (
            r.ConnectionError, r.TimeoutError, r.BusyLoadingError,
            r.exceptions.TryAgainError, r.exceptions.ClusterDownError,
            r.exceptions.MasterDownError, r.exceptions.ReadOnlyError,
            r.exceptions.OutOfMemoryError, OSError,
        )
        if isinstance(error, transient):
            return True
        return isinstance(error, r.ResponseError) and str(error).startswith(
            ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY")
        )

    def close(self) -> None:
        """Close the connections if this repository made the client."""
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        """Server, key and model."""
        return (
            f"RedisRepo(url={_hide_password(self.url)!r}, key={self.key!r}, "
            f"model={self.model.__name__})"
        )

    def create(self) -> None:
        """Register the model's fields under the key (nothing else needs making):
        :meth:`stored_fields` and :func:`~tasklog.repos.open_existing` see them
        before the first record is written."""
        self._layout()

    def _adopt_model(self, previous: Schema) -> None:
        """Check that the stored rows can be read as the new model.

        Rows keep the layout they were written with, so a model may drop or
        add optional fields freely.

        Raises:
            ValueError: a field the new model requires is missing from rows
                stored under the key.
        """
        self._load_layouts()
        required = [name for name, info in self.schema.fields.items() if info.required]
        lacking = sorted({
            name
            for layout in self._layouts.values()
            for name in required
            if name not in layout.kinds
        })
        if lacking and self.count_rows(Query()):
            msg = (
                f"Records under Redis key {self.key!r} may have no {', '.join(lacking)}, "
                f"which {self.model.__name__} requires."
            )
            raise ValueError(msg)

    # -------------------------------------------------------------- layouts
    def _layout(self) -> Layout:
        """The layout rows of the current model are written with."""
        current = self._current
        if current is not None and current[0] is self.schema:
            return current[1]
        kinds: dict[str, str] = {name: info.kind for name, info in self.schema.fields.items()}
        layout = self._register(kinds)
        self._current = (self.schema, layout)
        return layout

    def _register(self, kinds: dict[str, str]) -> Layout:
        spec = Layout.spec(kinds)
        found = self._by_spec.get(spec)
        if found is not None:
            return found
        layout_id = int(self._call("layout", spec))
        layout = Layout.build(layout_id, kinds)
        with self._lock:
            self._layouts[layout_id] = layout
            self._by_spec[spec] = layout
        return layout

    def _load_layouts(self) -> None:
        stored: dict[bytes, bytes] = self.client.hgetall(  # type: ignore[assignment]
            self._prefix + "layouts"
        )
        with self._lock:
            for raw_id, raw_spec in stored.items():
                layout_id = int(raw_id)
                if layout_id in self._layouts:
                    continue
                spec = raw_spec.decode("utf-8")
                kinds = dict(json.loads(spec)["f"])
                layout = Layout.build(layout_id, kinds)
                self._layouts[layout_id] = layout
                self._by_spec.setdefault(spec, layout)

    def _layout_of(self, layout_id: int) -> Layout:
        layout = self._layouts.get(layout_id)
        if layout is None:
            self._load_layouts()
            layout = self._layouts.get(layout_id)
            if layout is None:
                msg = f"Redis key {self.key!r} holds a row of unknown layout {layout_id}."
                raise ValueError(msg)
        return layout

    def stored_fields(self) -> dict[str, str]:
        """Every field the stored rows have, with its kind (the newest layout's kind wins).

        Empty when nothing was ever written under the key.
        """
        self._load_layouts()
        fields: dict[str, str] = {}
        for layout_id in sorted(self._layouts):
            fields.update(self._layouts[layout_id].kinds)
        return fields

    # ------------------------------------------------------------- encoding
    def _pack(self, rows: list[Row], layout: Layout) -> list[bytes]:
        """The stored values of *rows* (see :mod:`tasklog.repos.redis_codec`)."""
        return pack(rows, layout, self.schema.fields)

    def _decode(self, value: bytes) -> tuple[Layout, Row]:
        """The layout of a stored value and every field it holds."""
        layouts, rows = decode_many([value], self._layout_of)
        return layouts[0], rows[0]

    def _view(self, value: bytes) -> Row:
        """A stored value as a row of the current model (absent fields get defaults)."""
        return self._views([value])[0]

    def _views(self, values: list[bytes]) -> list[Row]:
        """:meth:`_view` of several values."""
        layouts, rows = decode_many(values, self._layout_of)
        if rows and layouts.count(layouts[0]) == len(layouts) and not self._view_of(
            layouts[0]
        )[0]:
            return rows  # one layout, the current model's: the rows as they are
        out: list[Row] = []
        for layout, row in zip(layouts, rows, strict=True):
            adapt, kept, defaults = self._view_of(layout)
            out.append({**{name: row[name] for name in kept}, **defaults} if adapt else row)
        return out

    def _view_of(self, layout: Layout) -> tuple[bool, tuple[str, ...], dict[str, Any]]:
        """How rows of *layout* become rows of the current model: whether they
        need adapting, the model's fields they hold, the defaults of the rest
        (kept with the layout, per model)."""
        view = layout.views.get(id(self.schema))
        if view is None:
            view = layout.views[id(self.schema)] = self._new_view(layout)
        return view

    def _new_view(self, layout: Layout) -> tuple[bool, tuple[str, ...], dict[str, Any]]:
        names = self.schema.names
        same = tuple(layout.kinds) == names
        defaults: dict[str, Any] = {}
        for name in names:
            if name not in layout.kinds:
                info = self.model.model_fields[name]
                if not info.is_required():
                    defaults[name] = info.get_default(call_default_factory=True)
        return not same, tuple(n for n in names if n in layout.kinds), defaults

    # ---------------------------------------------------------------- writes
    def insert_rows(self, rows: list[Row]) -> None:
        """Store *rows*: up to 1,000 as one script call, atomic; more as one call
        per 1,000, each packed and sent while Redis stores the one before.

        Each call is stored only if the call before was, so a batch leaves its
        first parts. A batch that failed for a passing reason (a lost
        connection, Redis out of memory or loading) and that the handler
        retries carries the same tokens, so each part is stored once.

        Raises:
            PartlyStored: the first parts were stored, a later one failed for
                another reason.
        """
        if not rows:
            return
        layout = self._layout()
        pending = self._pending
        token = pending[1] if pending is not None and pending[0] is rows else uuid.uuid4().hex
        try:
            if len(rows) > _ADD and self._overlaps():
                try:
                    self._add_overlapped(rows, layout, token)
                except self._redis.exceptions.NoScriptError:  # the server lost its scripts
                    self._add_in_turn(rows, layout, token)  # (a call loads it again)
            else:
                self._add_in_turn(rows, layout, token)
        except Exception as err:
            if self.is_transient(err):  # the handler retries this very list
                self._pending = (rows, token)
            raise
        self._pending = None

    def _overlaps(self) -> bool:
        """Whether parts can be sent on one connection of the client's pool (not
        on a Cluster client: there each part is sent in turn)."""
        return isinstance(self.client, self._redis.Redis)

    def _part_args(self, token: str, start: int, values: list[bytes]) -> list[Any]:
        """The add script's arguments for the part of a batch from *start*."""
        after = f"{token}:{start - _ADD}" if start else ""
        return ["add", self._prefix, f"{token}:{start}", after, len(values), *values]

    def _part_stored(self, reply: list[Any], start: int, total: int) -> None:
        """Raise PartlyStored if the part from *start* was not stored because the
        part before was not (its token gone: not seen in practice)."""
        if int(reply[0]) == -2:
            raise PartlyStored(start, total)

    def _part_failed(self, err: Exception, start: int, total: int) -> NoReturn:
        """Raise for the part from *start* that failed with *err*: PartlyStored
        when parts before it were stored and a retry of the whole batch would
        not help; else *err* itself (a retry with the same tokens is safe)."""
        if start and not self.is_transient(err):
            raise PartlyStored(start, total) from err
        raise err

    def _add_in_turn(self, rows: list[Row], layout: Layout, token: str) -> None:
        """Store *rows* in parts of ``_ADD``, one script call after the other."""
        for start in range(0, len(rows), _ADD):
            try:
                values = self._pack(rows[start : start + _ADD], layout)
                reply = self._script(
                    keys=[self._seq_key], args=self._part_args(token, start, values)
                )
            except Exception as err:
                self._part_failed(err, start, len(rows))
            self._part_stored(reply, start, len(rows))

    def _add_overlapped(self, rows: list[Row], layout: Layout, token: str) -> None:
        """Store *rows* in parts of ``_ADD`` on one connection: each part is packed
        and sent while Redis stores the one before, so Redis always has the
        next part waiting (two in flight at most)."""
        pool = self.client.connection_pool
        conn: Any
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            conn = pool.get_connection("EVALSHA")
        sent: deque[int] = deque()
        """Where the parts whose replies are unread start."""

        def send(start: int, values: list[bytes]) -> None:
            args = self._part_args(token, start, values)
            conn.send_command("EVALSHA", self._script.sha, 1, self._seq_key, *args)
            sent.append(start)

        def settle() -> None:
            """Read the reply of the oldest part in flight."""
            start = sent.popleft()
            try:
                reply = conn.read_response()
            except self._redis.exceptions.NoScriptError:
                raise
            except self._redis.ResponseError as err:
                self._part_failed(err, start, len(rows))
            self._part_stored(reply, start, len(rows))

        try:
            send(0, self._pack(rows[:_ADD], layout))
            for start in range(_ADD, len(rows), _ADD):
                try:
                    values = self._pack(rows[start : start + _ADD], layout)
                except Exception as err:
                    while sent:
                        settle()
                    raise PartlyStored(start, len(rows)) from err
                send(start, values)
                settle()  # the part before
            while sent:
                settle()
        finally:
            if sent:  # replies left unread: the connection cannot be reused (a part
                conn.disconnect()  # still in flight is not stored: its part before failed)
            pool.release(conn)

    # ----------------------------------------------------------------- plans
    def _ikey(self, name: str, value: Any) -> str:
        if value is None:
            return f"{self._prefix}z:{name}"
        if isinstance(value, Enum):
            value = value.value
        text = value if isinstance(value, str) else str(int(value))
        return f"{self._prefix}x:{name}:{text}"

    def _plan(self, query: Query) -> _Plan:
        plan = _Plan()
        created = self.schema.fields.get("created")
        scored = created is not None and created.kind in ("float", "int")
        lo, hi = float("-inf"), float("inf")
        ranged = False
        pairs: list[list[Any] | None] = [None, None]
        for position, (name, op) in enumerate(query.conditions):
            info = self.schema.fields[name]
            if name in SLOTS and info.kind in INDEXABLE:
                values: list[Any] | None = None
                if type(op) is Equal:
                    values = [op.value]
                elif isinstance(op, In) and not isinstance(op, NotIn):
                    values = list(op.values)
                if values is not None:
                    keys = list(dict.fromkeys(self._ikey(name, v) for v in values))
                    if not keys:
                        plan.empty = True
                    plan.groups.append(keys)
                    if info.kind != "str" or not all(type(v) is str for v in values):
                        plan.tested.append(position)
                    if name != "run_id" and info.kind == "str":
                        slot = 0 if name == "task_name" else 1
                        if pairs[slot] is None:
                            pairs[slot] = values
                    continue
            if name == "created" and scored:
                bounds = _bounds(op)
                if bounds is not None:
                    low, high, exact = bounds
                    if low != low or high != high:  # NaN matches nothing
                        plan.empty = True
                    lo, hi = max(lo, low), min(hi, high)
                    ranged = True
                    if not exact or info.kind != "float":
                        plan.residual = True
                        plan.tested.append(position)
                    continue
            plan.residual = True
            plan.tested.append(position)
        if ranged:
            if lo > hi:
                plan.empty = True
            plan.range = (_score(lo), _score(hi))
        if pairs[0] is not None and pairs[1] is not None:
            self._pair_group(plan, pairs[0], pairs[1])
        return plan

    def _pair_group(self, plan: _Plan, tasks: list[Any], actions: list[Any]) -> None:
        """Answer task_name and action conditions with the pair index (one set per pair)."""
        if None in tasks or None in actions or len(tasks) * len(actions) > 64:
            return
        keys = [
            f"{self._prefix}p:{len(t.encode('utf-8'))}:{t}:{a}"
            for t in dict.fromkeys(str(plain(t)) for t in tasks)
            for a in dict.fromkeys(str(plain(a)) for a in actions)
        ]
        task_keys = [self._ikey("task_name", t) for t in tasks]
        action_keys = [self._ikey("action", a) for a in actions]
        plan.groups = [
            g for g in plan.groups
            if sorted(g) != sorted(dict.fromkeys(task_keys))
            and sorted(g) != sorted(dict.fromkeys(action_keys))
        ]
        plan.groups.append(keys)

    def _walk(
        self, plan: _Plan, *, reverse: bool = False, limit: int | None = None,
        rows: bool = True, ids: bool = True,
    ) -> Iterator[tuple[int, list[bytes], list[bytes]]]:
        """The candidates the indexes give, a page at a time, in (reversed)
        insertion order: ``(count, ids, stored values)``.

        Without *ids* the page holds no ids; with ``rows=False`` only its count
        (a count of indexed conditions, no rows fetched).
        """
        if plan.empty or limit == 0:
            return
        groups = plan.groups
        filters: list[dict[str, Any]] = []
        driver: list[str] | None
        if not groups and plan.range is None:
            driver = [self._prefix + "ids"]
        elif len(groups) == 1 and plan.range is None:
            driver = groups[0]
        else:
            spec: dict[str, Any] = {"g": groups}
            if plan.range is not None:
                spec["lo"], spec["hi"] = plan.range
            sizes = [int(n) for n in self._call("sizes", _dumps(spec))]
            total, counts = sizes[0], sizes[1:]
            if min(counts) == 0:
                return
            smallest = min(counts)

            def cost(size: int) -> float:
                if limit is None:
                    return size
                return min(size, limit * size / max(1, smallest))

            options = [(cost(n), i) for i, n in enumerate(counts)]
            if plan.range is not None:
                options[-1] = (counts[-1], len(counts) - 1)  # a range is read whole
                options.append((cost(total), -1))
            _, best = min(options)
            if best == -1:
                driver = [self._prefix + "ids"]
                filters = [{"k": g} for g in groups]
            elif best < len(groups):
                driver = groups[best]
                filters = [{"k": g} for i, g in enumerate(groups) if i != best]
            else:
                driver = None
                filters = [{"k": g} for g in groups]
            if plan.range is not None and best != len(groups):
                filters.append({"lo": plan.range[0], "hi": plan.range[1]})
        # when every candidate matches, fetch what is asked for, in big pages
        big = _PAGE * 4 if limit is None else min(limit, _PAGE * 4)
        want = _PAGE if plan.residual else big
        if not rows:
            want = _BUDGET * 5
        if driver is None:
            assert plan.range is not None
            found = sorted(int(i) for i in self._call("range", *plan.range))
            if reverse:
                found.reverse()
            for start in range(0, len(found), _CHUNK):
                chunk = found[start : start + _CHUNK]
                page = {"ids": chunk, "f": filters, "n": len(chunk), "rows": rows}
                yield self._parse(self._call("page", _dumps(page)), rows, ids=True)
            return
        cursor: int | None = None
        while True:
            page = {"k": driver, "c": cursor, "r": reverse, "n": want,
                    "b": max(want, _BUDGET), "f": filters, "rows": rows, "o": not ids}
            if cursor is None:
                del page["c"]
            out = self._call("page", _dumps(page))
            yield self._parse(out, rows, ids)
            if not out[0]:
                return
            cursor = int(out[0])

    @staticmethod
    def _parse(
        out: list[Any], rows: bool, ids: bool
    ) -> tuple[int, list[bytes], list[bytes]]:
        """A page script's reply as ``(count, ids, values)``."""
        n = int(out[1])
        if not rows:
            return n, [], []
        if not ids:
            return n, [], out[2 : 2 + n]
        return n, out[2 : 2 + n], out[2 + n : 2 + 2 * n]

    def _tests(self, query: Query, plan: _Plan) -> list[tuple[str, Any]]:
        """``(field, test)`` of the conditions a fetched row is tested against."""
        conditions = query.conditions
        return [(conditions[k][0], conditions[k][1].test) for k in plan.tested]

    def _matching(
        self, query: Query, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[int, bytes, Row]]:
        """``(id, value, row)`` of every match, in (reversed) insertion order."""
        plan = self._plan(query)
        tests = self._tests(query, plan)
        found = 0
        for _, ids, values in self._walk(plan, reverse=reverse, limit=limit):
            pairs = [(int(i), v) for i, v in zip(ids, values, strict=True) if v is not None]
            for (row_id, value), row in zip(pairs, self._views([v for _, v in pairs]),
                                            strict=True):
                if not tests or all(test(row.get(name)) for name, test in tests):
                    yield row_id, value, row
                    found += 1
                    if limit is not None and found >= limit:
                        return

    def _rows(
        self, query: Query, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[Row]:
        """The rows of every match (no ids, no stored values), a page decoded at once."""
        plan = self._plan(query)
        tests = self._tests(query, plan)
        found = 0
        for _, _, values in self._walk(plan, reverse=reverse, limit=limit, ids=False):
            rows = self._views([v for v in values if v is not None])
            if tests:
                rows = [row for row in rows if all(test(row.get(n)) for n, test in tests)]
            if limit is not None:
                rows = rows[: limit - found]
                found += len(rows)
            yield from rows
            if limit is not None and found >= limit:
                return

    # ------------------------------------------------------------------ reads
    def select_rows(
        self, query: Query, *, limit: int | None = None, reverse: bool = False
    ) -> Iterator[Row]:
        """Stream matching rows (an unsorted, limited read stops early)."""
        if query.order:
            rows = list(self._rows(query))
            sort_rows(rows, query.order, lambda r, n: r.get(n))
            if reverse:
                rows.reverse()
            yield from rows[:limit] if limit is not None else rows
            return
        yield from self._rows(query, reverse=reverse, limit=limit)

    def count_rows(self, query: Query) -> int:
        """Count matches: from the indexes alone when they answer every condition."""
        plan = self._plan(query)
        if plan.empty:
            return 0
        if plan.residual:
            return sum(1 for _ in self._rows(query))
        groups = plan.groups
        if plan.range is None and len(groups) <= 1:
            spec = {"g": groups}
            sizes = self._call("sizes", _dumps(spec))
            return int(sizes[-1])
        if plan.range is not None and not groups:
            spec2: dict[str, Any] = {"g": [], "lo": plan.range[0], "hi": plan.range[1]}
            return int(self._call("sizes", _dumps(spec2))[-1])
        if plan.range is None and all(len(g) == 1 for g in groups):
            return int(self._call("intercard", *(g[0] for g in groups)))
        return sum(n for n, _, _ in self._walk(plan, rows=False))

    # ------------------------------------------------------ deletes, updates
    def _retry_conflicts(
        self, op: str, query: Query, items: dict[int, Any], values: Row | None = None
    ) -> int:
        """Apply *op* ("del" or "update") to matched rows, re-reading rows changed meanwhile."""
        done = 0
        tests = [(name, o.test) for name, o in query.conditions]
        for _ in range(20):
            if not items:
                break
            conflicts: list[int] = []
            pairs = list(items.items())
            step = _CHUNK
            for start in range(0, len(pairs), step):
                args: list[Any] = []
                for row_id, entry in pairs[start : start + step]:
                    args.extend((row_id, *entry))
                n, clashed = self._call(op, *args)
                done += int(n)
                conflicts.extend(int(c) for c in clashed)
            if not conflicts:
                break
            fresh = self._call("get", *conflicts)
            items = {}
            for row_id, value in zip(conflicts, fresh, strict=True):
                if value is None:
                    continue
                row = self._view(value)
                if all(test(row.get(name)) for name, test in tests):
                    items[row_id] = self._entry(value, values)
        return done

    def _entry(self, value: bytes, values: Row | None = None) -> tuple[Any, ...]:
        """What the delete (``values`` None) or update script needs for one row read as *value*."""
        sha = hashlib.sha1(value).hexdigest()  # a change check, not security
        if values is None:
            return (sha,)
        layout, stored = self._decode(value)
        stored.update(values)
        kinds = dict(layout.kinds)
        for name in values:
            if name not in kinds:
                kinds[name] = self.schema.fields[name].kind
        target = layout if kinds == layout.kinds else self._register(kinds)
        return (sha, self._pack([stored], target)[0])

    def delete_rows(self, query: Query) -> int:
        """Delete matches (each row only if unchanged since it was read; else re-checked)."""
        items = {row_id: self._entry(value) for row_id, value, _ in self._matching(query)}
        return self._retry_conflicts("del", query, items)

    def update_rows(self, query: Query, values: Row) -> int:
        """Set fields of matches, moving them between indexes as needed."""
        items = {
            row_id: self._entry(value, values) for row_id, value, _ in self._matching(query)
        }
        return self._retry_conflicts("update", query, items, values)

    def prune_rows(
        self,
        keep_runs: int | None,
        cutoff: float | None,
        task_name: str | None,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete old records and runs with the ``created`` and per-task run indexes
        (with *dry_run*, count them in one scan)."""
        if dry_run:
            return len(self._prune_plan(keep_runs, cutoff, task_name)[1])
        fields = self.schema.fields
        indexed = all(
            fields[name].kind in INDEXABLE for name in SLOTS if name in fields
        ) and (cutoff is None or ("created" in fields and fields["created"].kind == "float"))
        if not indexed:
            return self._prune_scan(keep_runs, cutoff, task_name)
        guard = self._ikey("task_name", task_name) if task_name is not None else ""
        deleted = 0
        if cutoff is not None:
            doomed = self._call("range", "-inf", f"({_score(cutoff)}")
            for start in range(0, len(doomed), 5 * _CHUNK):
                part = doomed[start : start + 5 * _CHUNK]
                deleted += int(self._call("del_guarded", guard, *part))
        if keep_runs is not None:
            if task_name is not None:
                tasks: list[str | None] = [task_name]
            else:
                names: set[bytes] = self.client.smembers(  # type: ignore[assignment]
                    self._prefix + "v:task_name"
                )
                tasks = [name.decode("utf-8") for name in names]
                tasks.append(None)
            for task in tasks:
                which = "0" if task is None else "1" + str(task)
                deleted += int(self._call("keep", str(keep_runs), which))
        return deleted

    def _prune_plan(
        self, keep_runs: int | None, cutoff: float | None, task_name: str | None
    ) -> tuple[list[Any], set[Any]]:
        """The matching entries, and the ids of those a prune deletes."""
        conditions = () if task_name is None else (("task_name", Equal(task_name)),)
        found = list(self._matching(Query(conditions)))
        plan = plan_prune(
            ((row_id, row.get("task_name"), row.get("run_id"), row.get("created"))
             for row_id, _, row in found),
            keep_runs,
            cutoff,
        )
        return found, set(plan)

    def _prune_scan(
        self, keep_runs: int | None, cutoff: float | None, task_name: str | None
    ) -> int:
        found, doomed = self._prune_plan(keep_runs, cutoff, task_name)
        items = {row_id: self._entry(value) for row_id, value, _ in found if row_id in doomed}
        return self._retry_conflicts("del", Query(), items)

    # ------------------------------------- runs (tasklog.history.RunQueries)
    def latest_per_task_rows(self) -> list[Row] | None:
        """The newest row of each task: the top of each task's index, one call."""
        info = self.schema.fields.get("task_name")
        if info is None or info.kind not in INDEXABLE:
            return None
        return [self._view(value) for value in self._call("latest") if value is not None]

    def aggregate_runs(
        self, *, task_name: str | None = None, since: float | None = None, by_task: bool = True
    ) -> list[Row] | None:
        """None: the generic path (the run and closing records, read through the
        ``action`` indexes) answers."""
        return None

    def open_run_rows(self, task_names: list[str] | None) -> list[Row] | None:
        """None: the generic path answers."""
        return None

    # ------------------------------------------------------------ change feed
    def position(self) -> int:
        """The id of the newest record written so far (0 for an empty key).

        Pass it to :meth:`records_after` to get only what is written from now on.
        """
        value = self.client.get(self._seq_key)
        return int(value) if value is not None else 0

    def records_after(
        self, position: int, *, limit: int = 1000, wait: float = 0.0
    ) -> tuple[list[ModelT], int]:
        """Records stored after *position* (an id from :meth:`position` or a previous call).

        Returns ``(records, new position)``, at most *limit* records in
        insertion order. With *wait* (seconds) and nothing new, blocks on the
        change feed (a stream, ``XREAD BLOCK``) until a batch arrives or the
        time is up: followers (``tail -f``, event streams) are told of new
        records without polling. Deleted records are skipped.
        """
        self.sync()
        out = self._call("after", str(int(position)), str(limit))
        if len(out) == 1 and wait > 0:
            self.client.xread({self._prefix + "feed": out[0]}, count=1, block=int(wait * 1000))
            out = self._call("after", str(int(position)), str(limit))
        n = (len(out) - 1) // 2
        ids, values = out[1 : 1 + n], out[1 + n :]
        rows = [self._view(v) for v in values if v is not None]
        build = self.model.model_validate
        built = [build(row) for row in rows]
        return built, int(ids[-1]) if ids else int(position)


@dataclass
class _Plan:
    """What the indexes can answer of a query."""

    groups: list[list[str]] = field(default_factory=list)
    """Each an equality (one key) or an ``in_`` (a union of keys) on an indexed field."""
    range: tuple[str, str] | None = None
    """Inclusive bounds of ``created`` as score text."""
    residual: bool = False
    """Whether some condition is left for Python to test (else the indexes answer it all)."""
    tested: list[int] = field(default_factory=list)
    """The positions of the conditions a fetched row is tested against: all but
    equalities and ``in_`` of text on text fields and exact ``created``
    ranges, which the indexes answer exactly."""
    empty: bool = False


def _bounds(op: Operator) -> tuple[float, float, bool] | None:
    """``(low, high, exact)`` of a ``created`` condition an index range answers, or None."""
    inf = float("inf")
    if type(op) is Equal:
        if op.value is None:
            return None
        return float(op.value), float(op.value), True
    if type(op) is GreaterEqual:
        return float(op.value), inf, True
    if type(op) is GreaterThan:
        return float(op.value), inf, False
    if type(op) is LessEqual:
        return -inf, float(op.value), True
    if type(op) is LessThan:
        return -inf, float(op.value), False
    if type(op) is Between:
        return float(op.low), float(op.high), True
    return None


def _score(value: float) -> str:
    if value == float("inf"):
        return "+inf"
    if value == float("-inf"):
        return "-inf"
    return repr(float(value))


def _dumps(spec: dict[str, Any]) -> str:
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))




# ------------------------------------------------------------------ registry


def open_url(url: str, model: type[Any] | None, options: dict[str, Any]) -> RedisRepo[Any]:
    """``redis://host:port/db?key=NAME&max_size=N`` (``rediss://`` for TLS); see
    :mod:`.registry`. Without *model*, an existing key is read with its own fields."""
    from ..exceptions import StoreNotFoundError
    from .registry import DEFAULT_MODEL

    if model is None:
        try:
            return open_existing(url, dict(options))
        except StoreNotFoundError:
            model = DEFAULT_MODEL
    server, found = parse_redis_url(url)
    for name, value in found.items():
        options.setdefault(name, value)
    return RedisRepo(server, model=model, **options)


_KIND_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "datetime": datetime,
    "timedelta": timedelta, "json": Any,
}


def open_existing(url: str, options: dict[str, Any]) -> RedisRepo[Any]:
    """An existing key's records, with a model matching the fields stored with them.

    Raises:
        StoreNotFoundError: the key holds no tasklog records.
        ConfigError: the server cannot be read.
    """
    from ..exceptions import StoreNotFoundError
    from .registry import model_for_columns, no_table

    no_table(url, options)
    server, found = parse_redis_url(url)
    key = found.get("key", "tasklog")
    probe: RedisRepo[Any] = RedisRepo(server, key=key)
    try:
        fields = probe.stored_fields()
    except Exception as err:
        msg = f"Cannot read Redis key {key!r} at {_hide_password(probe.url)}: {err}."
        raise ConfigError(msg) from None
    finally:
        probe.close()
    if not fields:
        msg = f"Redis key {key!r} holds no tasklog records ({_hide_password(url)})."
        raise StoreNotFoundError(msg)
    types = {name: _KIND_TYPES.get(kind, str) for name, kind in fields.items()}
    model = model_for_columns(list(fields), types, where=f"Redis key {key!r}")
    extra = {k: v for k, v in found.items() if k != "key"}
    return RedisRepo(server, key=key, model=model, **{**extra, **options})
