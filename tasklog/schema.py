"""What tasklog needs to know about a record model: its fields and their kinds.

Backends use this to pick column types, to turn stored values back into the
model's types, and to convert query literals the way the model would.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from typing import Any, Literal, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = ["FieldInfo", "Kind", "Schema", "normalize", "schema_of"]

Kind = Literal["str", "int", "float", "bool", "datetime", "timedelta", "json"]

_NONE_TYPES = (type(None),)


def normalize(value: Any) -> Any:
    """Return *value* as stored: datetimes become aware UTC (a naive one is taken as UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    return value


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        rest = [a for a in args if a not in _NONE_TYPES]
        nullable = len(rest) != len(args)
        if len(rest) == 1:
            return rest[0], nullable
        return Union[tuple(rest)], nullable  # noqa: UP007  (built at run time)
    return annotation, annotation in _NONE_TYPES or annotation is Any


def _kind_of(annotation: Any) -> Kind:
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return "str"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "int"
        return "json"
    if not isinstance(annotation, type):
        return "json"
    if issubclass(annotation, Enum):
        if issubclass(annotation, str):
            return "str"
        if issubclass(annotation, int):
            return "int"
        return "json"
    for base, kind in (
        (bool, "bool"),
        (str, "str"),
        (int, "int"),
        (float, "float"),
        (datetime, "datetime"),
        (timedelta, "timedelta"),
    ):
        if issubclass(annotation, base):
            return kind  # type: ignore[return-value]
    return "json"


@dataclass(frozen=True)
class FieldInfo:
    """One field of a record model, as tasklog stores it."""

    name: str
    kind: Kind
    nullable: bool
    required: bool
    adapter: TypeAdapter[Any]

    def convert(self, value: Any) -> Any:
        """Convert a query literal to this field's type, as the model would.

        Raises:
            ValueError: the value cannot be converted; the message names the field.
        """
        if value is None:
            return None
        if isinstance(value, Enum) and self.kind == "str":
            value = value.value
        try:
            converted = self.adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            msg = f"Value {value!r} does not fit field {self.name!r} ({self.kind}): {reason}."
            raise ValueError(msg) from None
        if isinstance(converted, Enum):
            converted = converted.value
        return normalize(converted)

    def decode_text(self, text: str) -> Any:
        """Turn a value stored as text (a CSV cell) back into a Python value."""
        if text == "":
            if self.kind == "str" and not self.nullable:
                return ""
            return None
        if self.kind == "str":
            return text
        if self.kind == "float":
            return float(text)
        if self.kind == "int":
            return int(text)
        if self.kind == "json":
            try:
                return json.loads(text)
            except ValueError:
                return text
        if self.kind == "timedelta":
            try:
                return timedelta(seconds=float(text))  # as encode_text writes it
            except ValueError:
                pass  # a hand-written ISO 8601 duration
        return self.convert(text)

    def encode_text(self, value: Any) -> str:
        """Turn a stored value into text (a CSV cell); None becomes an empty cell."""
        if value is None:
            return ""
        kind = self.kind
        if kind == "str" or kind == "float" or kind == "int":
            return str(value.value if isinstance(value, Enum) else value)
        if kind == "bool":
            return "true" if value else "false"
        if kind == "datetime":
            return str(value.isoformat())
        if kind == "timedelta":
            return repr(value.total_seconds())
        return json.dumps(self.adapter.dump_python(value, mode="json"))


@dataclass(frozen=True)
class Schema:
    """The storable fields of a model, in declaration order."""

    model: type[BaseModel]
    fields: dict[str, FieldInfo]

    @property
    def names(self) -> tuple[str, ...]:
        """Field names, in declaration order."""
        return tuple(self.fields)

    def field(self, name: str) -> FieldInfo:
        """Return the field called *name*.

        Raises:
            ValueError: the model has no such field; the message lists the valid ones.
        """
        try:
            return self.fields[name]
        except KeyError:
            valid = ", ".join(self.fields)
            msg = f"Unknown field {name!r} for {self.model.__name__}; valid fields: {valid}."
            raise ValueError(msg) from None

    def row(self, item: BaseModel) -> dict[str, Any]:
        """The stored values of a validated model instance."""
        values = item.__dict__
        return {name: normalize(values.get(name)) for name in self.fields}

    def build(self, row: dict[str, Any]) -> BaseModel:
        """Build a model instance from stored values."""
        return self.model.model_validate(row)


@lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel]) -> Schema:
    fields: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        inner, nullable = _split_optional(info.annotation)
        fields[name] = FieldInfo(
            name=name,
            kind=_kind_of(inner),
            nullable=nullable,
            required=info.is_required(),
            adapter=TypeAdapter(inner),
        )
    return Schema(model=model, fields=fields)


def schema_of(model: type[BaseModel]) -> Schema:
    """Return the (cached) :class:`Schema` of *model*.

    Raises:
        TypeError: *model* is not a pydantic model class.
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        msg = f"A record model must be a pydantic BaseModel subclass, not {model!r}."
        raise TypeError(msg)
    return _schema_of(model)

