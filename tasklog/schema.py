"""What tasklog needs to know about a record model: its fields and their kinds.

Backends use this to pick column types, to turn stored values back into the
model's types, and to convert query literals the way the model would.
"""

from __future__ import annotations

import json
import threading
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal, Union

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import SchemaValidator

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
        """Build a model instance from stored values (see :meth:`build_many`)."""
        return self.build_many([row])[0]

    def build_many(self, rows: list[dict[str, Any]]) -> list[BaseModel]:
        """Build model instances from stored values.

        Values were converted by the model when they were written, so a row
        whose every value already has its field's exact type is not validated
        again: a ``before`` validator that turns a timestamp into a datetime
        is not handed the datetime it made (Red Bird and Rocketry models do
        this), and building is faster. Other rows (text from a CSV file, an
        ``int`` for a ``float`` field, enum, ``Literal`` and structured fields)
        are converted to the fields' types by the model's schema without its
        validator functions: the model's validators never run on a read.
        """
        plan = _read_plan(self.model)
        if plan is None:
            return _stored_list(self.model)([self._filled(r) for r in rows])
        model = self.model
        names, ok, get = plan
        new = object.__new__
        set_attr = object.__setattr__
        extra: dict[str, Any] | None = {} if model.model_config.get("extra") == "allow" else None
        built: list[BaseModel] = []
        append = built.append
        fields_set = set(names)  # shared: every field is set, so adding to it changes nothing
        for row in rows:
            signature = tuple(map(type, get(row)))
            if signature not in ok:
                if not _fits_model(model, signature) or row.keys() != names:
                    append(_stored_one(model)(self._filled(row)))
                    continue
                ok.add(signature)  # the cache of plan; a few signatures per model
            item = new(model)
            set_attr(item, "__dict__", row)
            set_attr(item, "__pydantic_fields_set__", fields_set)
            set_attr(item, "__pydantic_extra__", extra)
            set_attr(item, "__pydantic_private__", None)
            append(item)
        return built

    def _filled(self, row: dict[str, Any]) -> dict[str, Any]:
        """*row* with the default of each field that cannot be None where it holds
        None: a column added later holds nothing for older rows."""
        fills = _fills(self.model)
        if fills and any(row.get(n) is None for n in fills):
            return {**row, **{n: d for n, d in fills.items() if row.get(n) is None}}
        return row


_PLAIN: dict[Any, type] = {
    str: str, int: int, float: float, bool: bool, datetime: datetime, timedelta: timedelta
}


_VALIDATORS = ("function-before", "function-after", "function-wrap")


def _without_validators(schema: Any) -> Any:
    """A copy of a pydantic core schema whose validator functions are left out.

    ``before``/``after``/``wrap`` validators (of fields, of the model, or in
    ``Annotated``) give way to the schema they wrap; a ``plain`` validator,
    which wraps none, takes the value as it is. Type conversion stays.
    """
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _VALIDATORS and "schema" in schema:
            return _without_validators(schema["schema"])
        if kind == "function-plain":
            return {"type": "any"}
        return {key: _without_validators(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_without_validators(value) for value in schema]
    return schema


def _classes(schema: Any) -> Iterator[type]:
    """The model and dataclass classes a core schema builds."""
    if isinstance(schema, dict):
        if schema.get("type") in ("model", "dataclass") and isinstance(schema.get("cls"), type):
            yield schema["cls"]
        for value in schema.values():
            yield from _classes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _classes(value)


_build_lock = threading.Lock()


def _own_validator(schema: Any) -> SchemaValidator:
    """A validator built from *schema* itself.

    For a ``model`` schema naming a complete model class, pydantic-core would
    reuse the validator the class already has (validators included); the
    classes are flagged incomplete while this one is built, so it is built
    from the schema given.
    """
    with _build_lock:
        flagged = [
            cls for cls in dict.fromkeys(_classes(schema))
            if cls.__dict__.get("__pydantic_complete__") is True
        ]
        try:
            for cls in flagged:
                type.__setattr__(cls, "__pydantic_complete__", False)
            return SchemaValidator(schema)
        finally:
            for cls in flagged:
                type.__setattr__(cls, "__pydantic_complete__", True)


def _stored_validator(model: type[BaseModel], many: bool) -> Callable[[Any], Any]:
    """Validate stored rows as *model* with its types but without its validators.

    Falls back to the model's own validation should pydantic-core refuse the
    stripped schema (it has not been seen to).
    """
    try:
        core = _without_validators(model.__pydantic_core_schema__)
        if many:
            core = {"type": "list", "items_schema": core}
        return _own_validator(core).validate_python
    except Exception:  # pragma: no cover
        if many:
            return TypeAdapter(list[model]).validate_python  # type: ignore[valid-type]
        return model.model_validate


@lru_cache(maxsize=256)
def _stored_list(model: type[BaseModel]) -> Callable[[list[dict[str, Any]]], list[BaseModel]]:
    """Build a list of *model* from stored rows (their types converted, no validators)."""
    return _stored_validator(model, many=True)


@lru_cache(maxsize=256)
def _stored_one(model: type[BaseModel]) -> Callable[[dict[str, Any]], BaseModel]:
    """Build one *model* from a stored row (its types converted, no validators)."""
    return _stored_validator(model, many=False)


@lru_cache(maxsize=256)
def _fills(model: type[BaseModel]) -> dict[str, Any]:
    """The default of each field that cannot be None but has a plain default:
    what a row that holds nothing (NULL, an empty cell) for it reads as."""
    fills: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        _, nullable = _split_optional(info.annotation)
        if nullable or info.is_required() or info.default_factory is not None:
            continue
        if info.default is not None and type(info.default) in (str, int, float, bool):
            fills[name] = info.default
    return fills


ReadPlan = tuple[frozenset[str], set[tuple[type, ...]], Callable[[dict[str, Any]], Any]]


@lru_cache(maxsize=256)
def _read_plan(model: type[BaseModel]) -> ReadPlan | None:
    """How to build *model* from stored rows without validation, or None when
    only validation can (a structured or enum field, private attributes, a
    ``model_post_init``).

    The plan is the field names, the value-type signatures seen to fit (a
    cache, filled as rows arrive) and a getter of a row's values in field
    order.
    """
    if model.__private_attributes__ or getattr(model, "__pydantic_post_init__", None):
        return None
    names = tuple(model.model_fields)
    for info in model.model_fields.values():
        inner, _ = _split_optional(info.annotation)
        if inner not in _PLAIN:
            return None
    getter = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    return frozenset(names), set(), getter


@lru_cache(maxsize=4096)
def _fits_model(model: type[BaseModel], signature: tuple[type, ...]) -> bool:
    for info, kind in zip(model.model_fields.values(), signature, strict=True):
        inner, nullable = _split_optional(info.annotation)
        if kind is not _PLAIN[inner] and not (nullable and kind is type(None)):
            return False
    return True


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

