"""The query syntax: operators as keyword values of ``filter_by``.

A query is a plain mapping of field names to either a literal (equality) or an
operator made by one of the factories below (names as in ``redbird.oper``).
This module knows no backend: it validates conditions against a model,
converts literals to the field's type, and evaluates conditions in Python for
the stores that have no query engine of their own.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .schema import FieldInfo, Schema

__all__ = [
    "Operator",
    "Query",
    "between",
    "contains",
    "greater_equal",
    "greater_than",
    "in_",
    "less_equal",
    "less_than",
    "not_equal",
    "not_in",
    "skip",
]


@dataclass(frozen=True)
class Operator:
    """A condition on one field. Subclasses hold their operand(s)."""

    symbol: ClassVar[str] = "?"

    def convert(self, info: FieldInfo) -> Operator:
        """Return a copy whose operands have *info*'s type."""
        raise NotImplementedError

    def test(self, value: Any) -> bool:
        """Whether a stored *value* satisfies the condition (Python semantics of §2)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Equal(Operator):
    """``field == value``; ``None`` matches null."""

    value: Any
    symbol: ClassVar[str] = "=="

    def convert(self, info: FieldInfo) -> Equal:
        """Convert the operand."""
        _check_scalar(info)
        return Equal(info.convert(self.value))

    def test(self, value: Any) -> bool:
        """Equality, with None equal to None."""
        return bool(value == self.value) if value is not None else self.value is None


@dataclass(frozen=True)
class NotEqual(Operator):
    """``field != value``; a null field is not equal to any non-null value."""

    value: Any
    symbol: ClassVar[str] = "!="

    def convert(self, info: FieldInfo) -> NotEqual:
        """Convert the operand."""
        _check_scalar(info)
        return NotEqual(info.convert(self.value))

    def test(self, value: Any) -> bool:
        """Inequality, with None a value like any other."""
        if value is None:
            return self.value is not None
        return self.value is None or bool(value != self.value)


@dataclass(frozen=True)
class _Ordering(Operator):
    value: Any
    func: ClassVar[Callable[[Any, Any], Any]]

    def __post_init__(self) -> None:
        if self.value is None:
            msg = f"{type(self).__name__} needs a value to compare with, not None."
            raise ValueError(msg)

    def convert(self, info: FieldInfo) -> _Ordering:
        """Convert the operand."""
        _check_scalar(info)
        return type(self)(info.convert(self.value))

    def test(self, value: Any) -> bool:
        """Ordering comparison; a null field never matches."""
        return value is not None and bool(type(self).func(value, self.value))


@dataclass(frozen=True)
class GreaterThan(_Ordering):
    """``field > value``."""

    symbol: ClassVar[str] = ">"
    func = operator.gt


@dataclass(frozen=True)
class GreaterEqual(_Ordering):
    """``field >= value``."""

    symbol: ClassVar[str] = ">="
    func = operator.ge


@dataclass(frozen=True)
class LessThan(_Ordering):
    """``field < value``."""

    symbol: ClassVar[str] = "<"
    func = operator.lt


@dataclass(frozen=True)
class LessEqual(_Ordering):
    """``field <= value``."""

    symbol: ClassVar[str] = "<="
    func = operator.le


@dataclass(frozen=True)
class Between(Operator):
    """``low <= field <= high`` (inclusive); a null field never matches."""

    low: Any
    high: Any
    symbol: ClassVar[str] = "between"

    def __post_init__(self) -> None:
        if self.low is None or self.high is None:
            msg = (
                "between() needs two bounds, not None; pass none_as_open=True "
                "to leave a bound open."
            )
            raise ValueError(msg)

    def convert(self, info: FieldInfo) -> Between:
        """Convert both bounds."""
        _check_scalar(info)
        return Between(info.convert(self.low), info.convert(self.high))

    def test(self, value: Any) -> bool:
        """Inclusive range test."""
        return value is not None and bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class In(Operator):
    """``field in values``; ``None`` among the values matches null."""

    values: tuple[Any, ...]
    symbol: ClassVar[str] = "in"

    def convert(self, info: FieldInfo) -> In:
        """Convert every value."""
        _check_scalar(info)
        return type(self)(tuple(info.convert(v) for v in self.values))

    @property
    def has_none(self) -> bool:
        """Whether None is one of the values."""
        return any(v is None for v in self.values)

    @property
    def non_null(self) -> tuple[Any, ...]:
        """The values other than None."""
        return tuple(v for v in self.values if v is not None)

    @property
    def lookup(self) -> frozenset[Any] | tuple[Any, ...]:
        """The values other than None, as a set when they are hashable (built once)."""
        found = self.__dict__.get("_lookup")
        if found is None:
            try:
                found = frozenset(self.non_null)
            except TypeError:  # unhashable values (JSON): compare one by one
                found = self.non_null
            object.__setattr__(self, "_lookup", found)
        return found

    def test(self, value: Any) -> bool:
        """Membership, with None a value like any other."""
        if value is None:
            return self.has_none
        try:
            return value in self.lookup
        except TypeError:  # an unhashable value against a set
            return value in self.non_null


@dataclass(frozen=True)
class NotIn(In):
    """``field not in values``; a null field matches unless None is among the values."""

    symbol: ClassVar[str] = "not in"

    def test(self, value: Any) -> bool:
        """Non-membership, with None a value like any other."""
        return not super().test(value)


@dataclass(frozen=True)
class Contains(Operator):
    """Case-sensitive literal substring test (``%``, ``_`` and ``\\`` match themselves)."""

    substring: str
    symbol: ClassVar[str] = "contains"

    def __post_init__(self) -> None:
        if not isinstance(self.substring, str):
            msg = f"contains() needs a string, not {self.substring!r}."
            raise ValueError(msg)

    def convert(self, info: FieldInfo) -> Contains:
        """Check that the field holds text."""
        if info.kind != "str":
            msg = f"contains() needs a text field; {info.name!r} holds {info.kind}."
            raise ValueError(msg)
        return self

    def test(self, value: Any) -> bool:
        """Substring test; a null field never matches."""
        return isinstance(value, str) and self.substring in value


@dataclass(frozen=True)
class Skip(Operator):
    """Matches everything: Red Bird's way to leave a filter out of a query.

    :meth:`Query.build` drops it after checking the field name, so stores
    never see it.
    """

    symbol: ClassVar[str] = "skip"

    def convert(self, info: FieldInfo) -> Skip:
        """Nothing to convert."""
        return self

    def test(self, value: Any) -> bool:
        """Every value matches, None included."""
        return True


def _check_scalar(info: FieldInfo) -> None:
    if info.kind == "json":
        msg = f"Field {info.name!r} holds structured data (JSON) and cannot be queried."
        raise ValueError(msg)


def greater_than(value: Any) -> Operator:
    """Match values greater than *value*."""
    return GreaterThan(value)


def greater_equal(value: Any) -> Operator:
    """Match values greater than or equal to *value*."""
    return GreaterEqual(value)


def less_than(value: Any) -> Operator:
    """Match values less than *value*."""
    return LessThan(value)


def less_equal(value: Any) -> Operator:
    """Match values less than or equal to *value*."""
    return LessEqual(value)


def not_equal(value: Any) -> Operator:
    """Match values other than *value* (null included when *value* is not None)."""
    return NotEqual(value)


def between(low: Any, high: Any, none_as_open: bool = False) -> Operator:
    """Match values from *low* to *high*, both included.

    With *none_as_open*, a None bound is open (Red Bird's argument):
    ``between(t, None, none_as_open=True)`` means "from t on", and with both
    bounds None the condition matches everything, like :func:`skip`.
    """
    if none_as_open:
        if low is None and high is None:
            return Skip()
        if high is None:
            return GreaterEqual(low)
        if low is None:
            return LessEqual(high)
    return Between(low, high)


def skip() -> Operator:
    """Match everything (Red Bird's ``skip``): the condition is left out."""
    return Skip()


def in_(values: Iterable[Any]) -> Operator:
    """Match any of *values* (``None`` among them matches null)."""
    return In(tuple(values))


def not_in(values: Iterable[Any]) -> Operator:
    """Match none of *values* (null matches unless ``None`` is among them)."""
    return NotIn(tuple(values))


def contains(substring: str) -> Operator:
    """Match text containing *substring* (case-sensitive, taken literally)."""
    return Contains(substring)


@dataclass(frozen=True)
class Query:
    """A validated query: converted conditions and an ordering."""

    conditions: tuple[tuple[str, Operator], ...] = ()
    order: tuple[tuple[str, bool], ...] = field(default=())
    """``(field, descending)`` pairs; ties keep insertion order."""

    @classmethod
    def build(cls, schema: Schema, conditions: Mapping[str, Any]) -> Query:
        """Validate *conditions* against *schema* and convert their literals.

        Raises:
            ValueError: an unknown field, or a literal the field cannot hold.
        """
        converted = []
        for name, value in conditions.items():
            info = schema.field(name)
            op = value if isinstance(value, Operator) else Equal(value)
            if isinstance(op, Skip):
                continue  # the field name is checked; the condition matches everything
            converted.append((name, op.convert(info)))
        return cls(tuple(converted))

    def ordered(self, schema: Schema, fields: Sequence[str]) -> Query:
        """Return a copy ordered by *fields* (``"-created"`` sorts descending)."""
        order = []
        for spec in fields:
            desc = spec.startswith("-")
            name = spec[1:] if desc else spec
            if schema.field(name).kind == "json":  # PostgreSQL's json has no ordering
                msg = f"Field {name!r} holds structured data (JSON) and cannot be ordered by."
                raise ValueError(msg)
            order.append((name, desc))
        return Query(self.conditions, tuple(order))

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields the conditions test."""
        return tuple(name for name, _ in self.conditions)


def predicate(
    conditions: Sequence[tuple[str, Operator]], index_of: Mapping[str, int]
) -> Callable[[Sequence[Any]], bool]:
    """Compile *conditions* to a test over a row sequence (``row[index_of[name]]``)."""
    tests = [(index_of[name], op.test) for name, op in conditions]
    if not tests:
        return lambda row: True
    if len(tests) == 1:
        (i, t), = tests
        return lambda row: t(row[i])
    return lambda row: all(t(row[i]) for i, t in tests)


def sort_rows(
    rows: list[Any],
    order: Sequence[tuple[str, bool]],
    key_of: Callable[[Any, str], Any],
) -> list[Any]:
    """Stable-sort *rows* by *order*; None sorts before every value (after, descending)."""
    for name, desc in reversed(order):
        rows.sort(key=lambda r, n=name: _null_first(key_of(r, n)), reverse=desc)  # type: ignore[misc]
    return rows


def _null_first(value: Any) -> tuple[bool, Any]:
    return (False, 0) if value is None else (True, value)
