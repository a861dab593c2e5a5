"""The options the commands share, declared once, and the parsing of their values.

A bad value is one line on stderr and exit status 2 (see :mod:`.app`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from .app import CLIError

__all__ = [
    "JsonOption",
    "TaskArgument",
    "TaskOption",
    "age",
    "limit_option",
    "parse_duration",
    "positive",
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
"""``--json``: print one JSON document (every reading command)."""

TaskOption = Annotated[str | None, typer.Option("--task", metavar="TASK", help="Only this task.")]
"""``--task T``: only this task."""

TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="The task.")]
"""A task name, as the command's first argument."""


def limit_option(help_text: str, *names: str) -> Any:
    """A ``--limit N`` / ``-n N`` option (or *names*) with *help_text*."""
    return typer.Option(*(names or ("--limit", "-n")), metavar="N", help=help_text)


def age_option(name: str, help_text: str) -> Any:
    """An option taking an age: a duration such as ``30d`` or an ISO date."""
    return typer.Option(name, metavar="AGE", help=help_text)


# ------------------------------------------------------------- durations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or a sum such as ``1h30m``.

    Raises:
        ValueError: *text* is not a duration.
    """
    compact = text.strip().replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in _DURATION.findall(compact))
        return timedelta(seconds=seconds)
    msg = f"{text!r} is not a duration; use a number and a unit: 90s, 15m, 12h, 1d, 2w."
    raise ValueError(msg)


def age(text: str, option: str) -> timedelta | datetime:
    """A duration (an age) or an ISO date/time, for ``--since``/``--older-than``.

    Raises:
        CLIError: *text* is neither.
    """
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = (
            f"Invalid value {text!r} for {option}: use a duration such as 90s, 15m, 12h, 1d, "
            "2w, or an ISO date such as 2024-03-01."
        )
        raise CLIError(msg) from None
    return when if when.tzinfo is not None else when.astimezone()


def positive(value: int, option: str, *, zero: bool = False) -> int:
    """*value*, when it is 1 or more (0 or more with *zero*).

    Raises:
        CLIError: it is not.
    """
    if value < 0 or (value == 0 and not zero):
        least = "0 or more" if zero else "1 or more"
        msg = f"Invalid value {value} for {option}: give {least}."
        raise CLIError(msg)
    return value
