"""How :class:`~tasklog.repos.redis_store.RedisRepo` stores a row in one Redis value.

A stored value is ``<layout>|<header length>|<header><body>``:

- the *layout* is the id of the set of fields (and their kinds) the row was
  written with, registered under the key (``{key}:layouts``), so rows of an
  older model stay readable;
- the *header* holds what the Lua script indexes a row by, ``task_name``,
  ``action``, ``run_id`` and ``created`` (as its score's text), each a flag
  byte (0 a value, 1 null or absent, 2 not indexed), its length as 4 bytes
  big-endian, and its bytes: the script reads all four with one
  ``struct.unpack``;
- the *body* is a JSON array of every field, for Python; datetimes and
  timedeltas as integer microseconds.

Rows are packed and decoded a batch or a page at a time, a field at a time
(``map`` and ``zip`` loop in C), not row by row.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from operator import itemgetter
from typing import Any

from ..schema import FieldInfo
from .base import Row

__all__ = ["INDEXABLE", "SLOTS", "Layout", "decode_many", "pack", "plain"]

SLOTS = ("task_name", "action", "run_id")
"""The fields the script indexes by value, in header order (``created`` follows)."""
INDEXABLE = ("str", "int")
"""Kinds of those fields that are indexed (others are stored as ``?``)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
_PIECES = 4096
"""Header texts of indexed values kept per layout and slot."""
_loads = json.JSONDecoder().decode
"""JSON text to values (without ``json.loads``' set-up per call)."""


def plain(value: Any) -> Any:
    """An enum's value; any other value as it is."""
    return value.value if isinstance(value, Enum) else value


_NULL = b"\x01\x00\x00\x00\x00"
"""The header token of a null (or absent) value."""
_UNINDEXED = b"\x02\x00\x00\x00\x00"
"""The header token of a value of a kind that is not indexed."""


def _token(text: bytes) -> bytes:
    """The header token of a value: flag 0, its length, its bytes."""
    return b"\x00%b%b" % (len(text).to_bytes(4, "big"), text)


class _Pieces(dict[Any, bytes]):
    """Header tokens of indexed values, made on first use (at most ``_PIECES``
    kept: task names and actions repeat from record to record, run ids do not)."""

    def __missing__(self, value: Any) -> bytes:
        if value is None:
            return _NULL
        text = plain(value)
        if not isinstance(text, str):
            text = str(int(text))
        piece = _token(text.encode("utf-8"))
        if len(self) < _PIECES:
            self[value] = piece
        return piece


@dataclass(eq=False)
class Layout:
    """How the rows of one set of fields are stored (registered in ``{key}:layouts``)."""

    id: int
    kinds: dict[str, str]
    head: tuple[str | None, str | None, str | None]
    """Per header slot (task_name, action, run_id): the kind stored there, or None."""
    scored: bool
    """Whether ``created`` is a number (it gets a score in the ``created`` index)."""
    body: tuple[str, ...]
    """Every field, in the order of the body's JSON array."""
    times: tuple[tuple[str, str], ...]
    """Body fields stored as integer microseconds: (name, "datetime" | "timedelta")."""
    times_at: tuple[tuple[int, bool], ...] = ()
    """Positions in the body of the time fields (True for a datetime)."""
    jsons_at: tuple[tuple[int, str], ...] = ()
    """Positions in the body of JSON fields, and their names."""
    views: dict[int, tuple[bool, tuple[str, ...], dict[str, Any]]] = field(default_factory=dict)
    """Per schema id: (rows need adapting, model fields kept, defaults of missing fields)."""
    pieces: tuple[_Pieces, ...] = field(default_factory=lambda: (_Pieces(), _Pieces(), _Pieces()))
    """Per header slot: the header text of values written lately (they repeat)."""

    @staticmethod
    def spec(kinds: dict[str, str]) -> str:
        """The layout's registered text."""
        return json.dumps({"f": [[n, k] for n, k in kinds.items()]}, separators=(",", ":"))

    @classmethod
    def build(cls, layout_id: int, kinds: dict[str, str]) -> Layout:
        """A layout of fields with these kinds."""
        head = tuple(kinds[name] if kinds.get(name) in INDEXABLE else None for name in SLOTS)
        body = tuple(kinds)
        times = tuple(
            (name, kinds[name]) for name in body if kinds[name] in ("datetime", "timedelta")
        )
        return cls(
            id=layout_id,
            kinds=dict(kinds),
            head=head,  # type: ignore[arg-type]
            scored=kinds.get("created") in ("float", "int"),
            body=body,
            times=times,
            times_at=tuple((body.index(name), kind == "datetime") for name, kind in times),
            jsons_at=tuple((i, name) for i, name in enumerate(body) if kinds[name] == "json"),
        )


# ------------------------------------------------------------------- packing
def pack(rows: list[Row], layout: Layout, fields: Mapping[str, FieldInfo]) -> list[bytes]:
    """The stored values of *rows* written with *layout* (*fields*: the model's,
    for JSON fields)."""
    kinds = layout.kinds
    columns: list[list[bytes]] = []
    for name, kind, cache in zip(SLOTS, layout.head, layout.pieces, strict=True):
        if kind is None:  # the layout lacks the field (null), or its kind is not indexed
            columns.append([_UNINDEXED if name in kinds else _NULL] * len(rows))
        else:
            columns.append(list(map(cache.__getitem__, [row.get(name) for row in rows])))
    columns.append(_created_pieces(rows, kinds.get("created"), layout.scored))
    headers = map(b"".join, zip(*columns, strict=True))
    bodies = [list(map(row.get, layout.body)) for row in rows]
    if layout.times_at or layout.jsons_at:
        _plain_bodies(bodies, layout, fields)
    texts = map(str.encode, map("".join, map(_encode_body, bodies, itertools.repeat(0))))
    lead = layout.id
    return [
        b"%d|%d|%b%b" % (lead, len(header), header, text)
        for header, text in zip(headers, texts, strict=True)
    ]


def _created_pieces(rows: list[Row], kind: str | None, scored: bool) -> list[bytes]:
    """The header's last token per row: ``created`` as a score's text (null when
    None or NaN), not indexed when it is not a number, null when the layout
    lacks it."""
    if not scored:
        return [_NULL if kind is None else _UNINDEXED] * len(rows)
    values = [row.get("created") for row in rows]
    if kind == "float" and all(type(v) is float and v == v for v in values):
        return list(map(_token, map(str.encode, map(repr, values))))
    pieces = []
    for value in values:
        if value is None or value != value:  # None or NaN: no score
            pieces.append(_NULL)
        else:
            text = repr(float(value)) if kind == "float" else str(value)
            pieces.append(_token(text.encode()))
    return pieces


def _plain_bodies(
    bodies: list[list[Any]], layout: Layout, fields: Mapping[str, FieldInfo]
) -> None:
    """Turn times into integer microseconds and JSON fields into JSON values, in place."""
    for body in bodies:
        for i, is_datetime in layout.times_at:
            value = body[i]
            if value is not None:
                body[i] = (value - _EPOCH) // _MICRO if is_datetime else value // _MICRO
        for i, name in layout.jsons_at:
            info = fields.get(name)
            if body[i] is not None and info is not None:
                body[i] = info.adapter.dump_python(body[i], mode="json")


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    msg = f"Cannot store {type(value).__name__} value {value!r}."
    raise TypeError(msg)


def _body_encoder() -> Any:
    """``encode(body, 0)``: a row's body as compact JSON, in pieces to join. The C
    encoder is called directly (without ``json.dumps``' set-up on every row);
    the Python one where there is none."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:
        encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, default=_json_default
        )
        return lambda body, _: [encoder.encode(body)]
    return make(
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False,
        True,
    )


_encode_body = _body_encoder()


# ------------------------------------------------------------------ decoding
def decode_many(
    values: list[bytes], layout_of: Callable[[int], Layout]
) -> tuple[list[Layout], list[Row]]:
    """The layout of each stored value and every field it holds, the bodies read
    as one JSON array (and converted a field at a time when they share a layout)."""
    heads = [value.split(b"|", 2) for value in values]
    items_list: list[list[Any]] = _loads(
        (b"[%b]" % b",".join([rest[int(size) :] for _, size, rest in heads])).decode()
    )
    ids = {lid for lid, _, _ in heads}
    if len(ids) == 1:  # the usual case: one layout, its times converted column by column
        layout = layout_of(int(ids.pop()))
        for i, is_datetime in layout.times_at:
            if list(map(itemgetter(i), items_list)).count(None) == len(items_list):
                continue  # the field is null in every row (as start and end mostly are)
            for items in items_list:
                if items[i] is not None:
                    items[i] = _time(items[i], is_datetime)
        rows: list[Row] = list(map(dict, map(zip, itertools.repeat(layout.body), items_list)))
        return [layout] * len(rows), rows
    layouts: list[Layout] = []
    rows = []
    for (lid, _, _), items in zip(heads, items_list, strict=True):
        layout = layout_of(int(lid))
        for i, is_datetime in layout.times_at:
            if items[i] is not None:
                items[i] = _time(items[i], is_datetime)
        layouts.append(layout)
        rows.append(dict(zip(layout.body, items, strict=True)))
    return layouts, rows


def _time(micros: int, is_datetime: bool) -> datetime | timedelta:
    delta = timedelta(microseconds=micros)
    return _EPOCH + delta if is_datetime else delta
