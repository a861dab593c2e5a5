"""Record -> row: how a :class:`logging.LogRecord` becomes a stored row of a model.

Pure (no threads, no store writes), so it is tested on its own. A
:class:`RowMapper` is made for one model and one repository: ``prepare`` turns
a record into a row in one pass when every value has exactly its field's type
(see :func:`fast_plan`), else into :class:`Unchecked` values that ``rows``
validates with pydantic.
"""

from __future__ import annotations

import logging
import socket
import types
import typing
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from .repos import Repository
from .schema import normalize

__all__ = ["FastPlan", "RowMapper", "Unchecked", "fast_plan"]

_MISSING = object()
_HOST = socket.gethostname()


def _exc_text(handler: logging.Handler, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        formatter = handler.formatter or logging.Formatter()
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


_SPECIAL: dict[str, Callable[[logging.Handler, logging.LogRecord], Any]] = {
    "message": lambda h, r: r.getMessage(),
    "formatted_message": lambda h, r: h.format(r),
    "exc_text": _exc_text,
    "msg": lambda h, r: str(r.msg),
    "host": lambda h, r: r.__dict__.get("host") or _HOST,
}


_PLAIN_TYPES: dict[Any, type] = {
    str: str, int: int, float: float, bool: bool, datetime: datetime, timedelta: timedelta
}
_SAFE_CONFIG = frozenset({
    "title", "frozen", "extra", "from_attributes", "populate_by_name", "validate_by_name",
    "protected_namespaces", "use_enum_values", "arbitrary_types_allowed", "defer_build",
    "strict", "coerce_numbers_to_str", "validate_assignment", "revalidate_instances",
    "json_schema_extra", "json_encoders", "ser_json_timedelta", "ser_json_bytes",
    "ser_json_inf_nan", "hide_input_in_errors", "plugin_settings", "cache_strings",
    "use_attribute_docstrings", "model_title_generator", "field_title_generator",
    "json_schema_mode_override", "json_schema_serialization_defaults_required",
    "regex_engine", "experimental_fields_from_attributes", "serialize_by_alias",
    "validate_by_alias", "validation_error_cause", "val_json_bytes",
})
"""Model settings that cannot change what validating an exact-typed value returns."""

FastPlan = list[tuple[str, frozenset[type], Any]]


class Unchecked(dict[str, Any]):
    """A record's field values that only ``model_validate`` can turn into a row.

    Queued items are either stored rows (plain dicts, checked in ``emit``) or
    these, which the writer validates.
    """

    __slots__ = ()


def fast_plan(model: type[BaseModel]) -> FastPlan | None:
    """How to check a record's values without pydantic, or None when only pydantic can.

    The fast path applies to models made only of plain ``str``, ``int``,
    ``float``, ``bool``, ``datetime`` and ``timedelta`` fields (optionally
    ``| None``) with no validators, constraints, aliases or settings that
    change values. For such a model, validating a value whose type is *exactly*
    the field's type returns that value unchanged, so the check is only a type
    test; anything else (a subclass, an ``int`` for a ``float``, a string for a
    datetime) goes through ``model_validate`` as before.
    """
    decorators = model.__pydantic_decorators__
    if (
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
        or getattr(model, "__pydantic_post_init__", None)
        or any(v for k, v in model.model_config.items() if k not in _SAFE_CONFIG)
    ):
        return None
    plan: FastPlan = []
    for name, info in model.model_fields.items():
        if info.metadata or info.alias is not None or info.validation_alias is not None:
            return None
        annotation = info.annotation
        allowed: set[type] = set()
        origin = typing.get_origin(annotation)
        union = origin in (typing.Union, types.UnionType)
        args = typing.get_args(annotation) if union else (annotation,)
        for arg in args:
            if arg is type(None):
                allowed.add(type(None))
            elif arg in _PLAIN_TYPES:
                allowed.add(_PLAIN_TYPES[arg])
            else:
                return None
        if len(allowed - {type(None)}) != 1:
            return None
        if info.is_required():
            default: Any = _MISSING
        elif info.default_factory is None and (
            info.default is None or type(info.default) in (str, int, float, bool)
        ):
            default = info.default
        else:
            return None
        plan.append((name, frozenset(allowed), default))
    return plan


class RowMapper:
    """Rows of *model* for *repo*, from log records.

    With a model other than the repository's, an item is validated against
    *model* and then against the repository (``repo.validate``).
    """

    def __init__(self, model: type[BaseModel], repo: Repository[Any]) -> None:
        self.model = model
        self.repo = repo
        self.plan = [(name, _SPECIAL.get(name)) for name in model.model_fields]
        self.same_model = model is repo.model
        self._row_of = repo.schema.row
        fast = fast_plan(model) if self.same_model else None
        self.fused = (
            None
            if fast is None
            else [(name, _SPECIAL.get(name), allowed, default) for name, allowed, default in fast]
        )
        self.datetimes = [name for name, allowed, _ in fast or () if datetime in allowed]

    def to_data(self, handler: logging.Handler, record: logging.LogRecord) -> dict[str, Any]:
        """The model's fields taken from *record* (not yet validated)."""
        values = record.__dict__
        data: dict[str, Any] = {}
        for name, special in self.plan:
            if special is not None:
                data[name] = special(handler, record)
            else:
                value = values.get(name, _MISSING)
                if value is not _MISSING:
                    data[name] = value
        return data

    def prepare(self, handler: logging.Handler, record: logging.LogRecord) -> dict[str, Any]:
        """*record* as a stored row, or as :class:`Unchecked` values to validate.

        A row (a plain dict) is made in one pass when every value has exactly
        its field's type (see :func:`fast_plan`): missing optional fields get
        their default and datetimes become UTC, as validation would do.
        *handler* formats what needs formatting (``exc_text``, ``formatted_message``).
        """
        fused = self.fused
        if fused is not None:
            values = record.__dict__
            row: dict[str, Any] = {}
            for name, special, allowed, default in fused:
                value = values.get(name, _MISSING) if special is None else special(handler, record)
                if value is _MISSING:
                    if default is _MISSING:
                        break
                    value = default
                elif type(value) not in allowed:
                    break
                row[name] = value
            else:
                for name in self.datetimes:
                    if row[name] is not None:
                        row[name] = normalize(row[name])
                return row
        return Unchecked(self.to_data(handler, record))

    def check(self, data: dict[str, Any]) -> None:
        """Raise :class:`~pydantic.ValidationError` if *data* does not fit the model."""
        if type(data) is Unchecked:
            self.model.model_validate(data)

    def rows(
        self, items: list[dict[str, Any]], on_invalid: Callable[[ValidationError], object]
    ) -> list[dict[str, Any]]:
        """Validate the :class:`Unchecked` *items* into rows; *on_invalid* gets each failure."""
        rows = []
        row_of = self._row_of
        for data in items:
            if type(data) is not Unchecked:
                rows.append(data)
                continue
            try:
                item = self.model.model_validate(data)
                if not self.same_model:
                    item = self.repo.validate(item)
                rows.append(row_of(item))
            except ValidationError as exc:
                on_invalid(exc)
        return rows
