"""The options the commands share, declared once, and the parsing of their values.

A bad value is one line on stderr and exit status 2 (see :mod:`.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, NoReturn

import typer

from ..durations import parse_duration
from .app import CLIError

__all__ = [
    "MAX_COUNT",
    "JsonOption",
    "TaskArgument",
    "TaskOption",
    "age",
    "age_option",
    "count_option",
    "parse_duration",
]

MAX_COUNT = 1_000_000_000
"""The largest count an option takes (``--limit``, ``-n``, ``--keep-runs``)."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
"""``--json``: print one JSON document (every reading command)."""

TaskOption = Annotated[str | None, typer.Option("--task", metavar="TASK", help="Only this task.")]
"""``--task T``: only this task."""

TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="The task.")]
"""A task name, as the command's first argument."""


def count_option(help_text: str, *names: str, zero: bool = False) -> Any:
    """A count option, ``--limit N`` / ``-n N`` unless *names* are given.

    Its value is a whole number from 1 (0 with *zero*) to :data:`MAX_COUNT`;
    anything else is one line and exit status 2.
    """
    names = names or ("--limit", "-n")
    return typer.Option(
        *names, metavar="N", help=help_text, parser=_count_parser(max(names, key=len), zero=zero)
    )


def _count_parser(option: str, *, zero: bool) -> Callable[[Any], int]:
    least = 0 if zero else 1

    def parse(value: Any) -> int:
        text = str(value).strip()
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or not least <= number <= MAX_COUNT:
            msg = (
                f"Invalid value {text!r} for {option}: give a whole number from {least} "
                f"to {MAX_COUNT}."
            )
            raise CLIError(msg)
        return number

    return parse


def age_option(name: str, help_text: str) -> Any:
    """An option taking an age: a duration such as ``30d`` or an ISO date."""
    return typer.Option(name, metavar="AGE", help=help_text)


# ------------------------------------------------------------- durations

_EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
"""The earliest instant an age may name (a day after ``datetime.min``, whatever the zone)."""


def age(text: str, option: str) -> datetime:
    """The instant a ``--since``/``--older-than`` value names, as an aware datetime.

    *text* is a duration back from now (``30d``, ``12h``) or an ISO date/time
    (local time when it has no zone).

    Raises:
        CLIError: *text* is neither, or names an instant before the year 1.
    """
    try:
        back = parse_duration(text)
    except ValueError:
        back = None
    except OverflowError:
        _too_far(text, option)
    if back is not None:
        try:
            when = datetime.now(timezone.utc) - back
        except OverflowError:
            _too_far(text, option)
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            msg = (
                f"Invalid value {text!r} for {option}: use a duration such as 90s, 15m, 12h, "
                "1d, 2w, or an ISO date such as 2024-03-01."
            )
            raise CLIError(msg) from None
        try:
            when = when if when.tzinfo is not None else when.astimezone()
        except (OverflowError, ValueError):
            _too_far(text, option)
    if when < _EARLIEST:
        _too_far(text, option)
    return when


def _too_far(text: str, option: str) -> NoReturn:
    msg = (
        f"Invalid value {text!r} for {option}: it reaches back too far (the earliest is "
        "0001-01-02); give a shorter duration or a later date."
    )
    raise CLIError(msg) from None
