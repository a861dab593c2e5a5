"""JSON responses that are always valid JSON, and the error responses."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

__all__ = ["JSON", "dumps", "error"]

_SPECIAL = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else _SPECIAL[value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(document: Any) -> str:
    """*document* as JSON; NaN and infinities as the strings ``"NaN"``, ``"Infinity"``."""
    try:
        return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(
            _finite(document), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )


class JSON(Response):
    """A JSON response rendered with :func:`dumps`."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode *content*."""
        return dumps(content).encode("utf-8")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    """``{"error": message}`` with *status*."""
    return JSON({"error": message}, status_code=status, headers=headers)
