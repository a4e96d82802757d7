"""Shared printing for commands: Rich for people, JSON for machines."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

__all__ = ["console", "err", "fmt_time", "fmt_value", "print_json"]

console = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def _clean(obj: Any) -> Any:
    """Spell NaN and infinities as strings: JSON has no literal for them."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    return obj


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (plain print: no Rich wrapping)."""
    print(json.dumps(_clean(obj), indent=2, default=_default, allow_nan=False))


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)
