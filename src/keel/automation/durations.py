"""Durations as policies write them (``90s``, ``30m``, ``1h``, ``1d``) and as they are shown."""

from __future__ import annotations

import re
from typing import Any

from keel.errors import InvalidInput

__all__ = ["human_duration", "parse_duration"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"1h"``, ``"1d"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: expected a duration like 30m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise InvalidInput(
                f"{where}: expected a duration like 90s, 30m, 1h or 1d, got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"{where}: a duration must be positive, got {value!r}")
    return seconds


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
