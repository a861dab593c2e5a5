"""Durations as people type them (``90s``, ``15m``, ``12h``, ``1d``, ``2w``, ``1h30m``).

One parser for the command line and the web service.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or a sum such as ``1h30m``.

    Raises:
        ValueError: *text* is not a duration.
        OverflowError: it is one, too long for a :class:`~datetime.timedelta`.
    """
    compact = text.strip().replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in _DURATION.findall(compact))
        return timedelta(seconds=seconds)
    msg = f"{text!r} is not a duration; use a number and a unit: 90s, 15m, 12h, 1d, 2w."
    raise ValueError(msg)
