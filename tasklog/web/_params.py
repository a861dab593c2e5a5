"""Query-string parameters: parsed strictly, every problem a :class:`BadRequest`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.datastructures import QueryParams

from ..durations import parse_duration as _parse_duration
from ..query import (
    between,
    contains,
    greater_equal,
    greater_than,
    in_,
    less_equal,
    less_than,
    not_equal,
    not_in,
)

__all__ = [
    "MAX_LIMIT",
    "OPERATORS",
    "BadRequest",
    "NotFound",
    "Params",
    "parse_duration",
]

MAX_LIMIT = 1000
_MAX_AGE = timedelta(days=100 * 366)


class BadRequest(ValueError):  # noqa: N818  (named after the HTTP status)
    """A parameter the client must fix: a 400 with ``{"error": message}``."""


class NotFound(LookupError):  # noqa: N818  (named after the HTTP status)
    """What the client asked for does not exist: a 404 with ``{"error": message}``."""


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or a sum such as ``1h30m``
    (:func:`tasklog.durations.parse_duration`), at most a century.

    Raises:
        ValueError: *text* is not a duration (or an absurd one).
    """
    try:
        value = _parse_duration(text)
    except OverflowError:
        value = None
    if value is None or value > _MAX_AGE:
        msg = f"{text!r} is too long a duration; give at most {_MAX_AGE.days} days."
        raise ValueError(msg)
    return value


def _operator(op: str, text: str) -> Any:
    if op in ("in", "not_in"):
        values = text.split(",")
        return in_(values) if op == "in" else not_in(values)
    if op == "between":
        low, sep, high = text.partition(",")
        if not sep or not low or not high:
            msg = f"between needs two values 'a,b', not {text!r}"
            raise ValueError(msg)
        return between(low, high)
    factory = {
        "gt": greater_than,
        "ge": greater_equal,
        "lt": less_than,
        "le": less_equal,
        "ne": not_equal,
        "contains": contains,
    }[op]
    return factory(text)


OPERATORS: tuple[str, ...] = ("gt", "ge", "lt", "le", "ne", "in", "not_in", "contains", "between")


class Params:
    """The query parameters of one request, read with the names the endpoint knows.

    Unknown names are a 400 (a typo is not silently ignored); names starting
    with ``_`` (cache busters) are ignored.
    """

    def __init__(self, query: QueryParams, known: Iterable[str], *, strict: bool = True) -> None:
        self.query = query
        self.known = tuple(known)
        unknown = sorted({k for k in query if k not in self.known and not k.startswith("_")})
        if not strict:
            unknown = []
        if unknown:
            valid = ", ".join(self.known) or "none"
            msg = f"Unknown parameter(s) {', '.join(map(repr, unknown))}; valid: {valid}."
            raise BadRequest(msg)

    def text(self, name: str) -> str | None:
        """The last value of *name*, or None when absent or empty."""
        values = self.query.getlist(name)
        value = values[-1] if values else None
        return value if value else None

    def texts(self, name: str) -> list[str] | None:
        """Every non-empty value of *name* (repeated, or comma-separated)."""
        found = [v for raw in self.query.getlist(name) for v in raw.split(",") if v]
        return found or None

    def names(self, name: str) -> list[str] | None:
        """Every non-empty value of *name*, repeated (names may hold commas)."""
        found = [v for v in self.query.getlist(name) if v]
        return found or None

    def integer(self, name: str, default: int, *, low: int = 1, high: int = MAX_LIMIT) -> int:
        """An integer from *low* to *high*."""
        text = self.text(name)
        if text is None:
            return default
        if not re.fullmatch(r"[+-]?\d{1,30}", text.strip()):
            msg = f"Invalid {name} {text!r}: give a whole number from {low} to {high}."
            raise BadRequest(msg)
        value = int(text)
        if not low <= value <= high:
            msg = f"Invalid {name} {text!r}: give a whole number from {low} to {high}."
            raise BadRequest(msg)
        return value

    def duration(self, name: str, default: timedelta | None = None) -> timedelta | None:
        """A duration such as ``15m`` or ``1d``."""
        text = self.text(name)
        if text is None:
            return default
        try:
            value = parse_duration(text)
        except ValueError as err:
            msg = f"Invalid {name}: {err}"
            raise BadRequest(msg) from None
        if value <= timedelta(0):
            msg = f"Invalid {name} {text!r}: give a duration above zero."
            raise BadRequest(msg)
        return value

    def moment(self, name: str) -> timedelta | datetime | None:
        """An age (``1d``: that long ago) or an ISO 8601 date/time (UTC unless zoned)."""
        text = self.text(name)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            msg = (
                f"Invalid {name} {text!r}: use a duration such as 90s, 15m, 12h, 1d, 2w, "
                "or an ISO date such as 2024-03-01 or 2024-03-01T12:00:00+00:00."
            )
            raise BadRequest(msg) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when

    def conditions(self, fields: Mapping[str, Any], reserved: Iterable[str]) -> dict[str, Any]:
        """``FIELD=VALUE`` and ``FIELD__OP=VALUE`` parameters as ``filter_by`` conditions."""
        skip = set(reserved)
        found: dict[str, Any] = {}
        for key in self.query:
            if key in skip or key.startswith("_"):
                continue
            name, sep, op = key.partition("__")
            if name not in fields:
                msg = (
                    f"Unknown field {name!r} in parameter {key!r}; valid fields: "
                    f"{', '.join(fields)}."
                )
                raise BadRequest(msg)
            if sep and op not in OPERATORS:
                msg = f"Unknown operator {op!r} in {key!r}; valid: {', '.join(OPERATORS)}."
                raise BadRequest(msg)
            if name in found:
                msg = f"Field {name!r} is given twice; give one condition per field."
                raise BadRequest(msg)
            values = self.query.getlist(key)
            if len(values) > 1:
                msg = f"Parameter {key!r} is given {len(values)} times; give it once."
                raise BadRequest(msg)
            try:
                found[name] = _operator(op, values[0]) if sep else values[0]
            except ValueError as err:
                msg = f"Invalid value for {key!r}: {err}."
                raise BadRequest(msg) from None
        return found
