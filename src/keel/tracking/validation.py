"""Checks on what users log; one place, messages that say what to do."""

from __future__ import annotations

import math
import re
from typing import Any

from keel.errors import InvalidInput

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PARAM_LENGTH",
    "MAX_TAG_LENGTH",
    "check_key",
    "check_metric_value",
    "check_param_value",
    "check_step",
    "check_tag_value",
    "numeric_or_none",
]

MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-./ :]+$")


def check_key(key: Any, what: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"{what} must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"{what} {key[:40]!r}… is {len(key)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    if not _KEY_RE.match(key) or ".." in key.split("/") or key.startswith("/"):
        raise InvalidInput(
            f"{what} {key!r} may only contain letters, digits, '_', '-', '.', '/', ':' and "
            "spaces, and must not start with '/'"
        )
    return key


def check_metric_value(key: str, value: Any) -> float:
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise InvalidInput(
            f"metric {key!r} must be a number (int or float, NaN and ±inf allowed), "
            f"got {type(value).__name__} {value!r:.60}"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"metric {key!r} must be a number (int or float, NaN and ±inf allowed), "
            f"got {type(value).__name__}"
        ) from None


def check_step(step: Any) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise InvalidInput(f"step must be an integer, got {step!r}")
    return int(step)


def _check_text(kind: str, key: str, value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise InvalidInput(
            f"{kind} {key!r} has a value of {len(text)} characters; the limit is {limit}. "
            "Log long values as an artifact (keel.log_dict / keel.log_artifact)"
        )
    return text


def check_param_value(key: str, value: Any) -> str:
    return _check_text("param", key, value, MAX_PARAM_LENGTH)


def check_tag_value(key: str, value: Any) -> str:
    return _check_text("tag", key, value, MAX_TAG_LENGTH)


def numeric_or_none(text: str) -> float | None:
    """The number a param or tag spells, for numeric search; ``None`` if it is not one."""
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number
