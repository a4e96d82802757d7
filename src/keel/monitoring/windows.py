"""Window lengths: one parser and one sentence saying what it accepts.

Light on purpose (no store, no Arrow): command-line help texts quote
:data:`WINDOW_FORMS`, so the help and the parser cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from keel.errors import InvalidInput

__all__ = ["WINDOW_FORMS", "parse_window", "spell_window"]

#: The accepted spellings, for help texts and messages (one sentence, so they cannot disagree).
WINDOW_FORMS = "like '1h', '30m', '1h30m' or '2d' (units s, m, h, d, w), or seconds ('600')"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WINDOW_RE = re.compile(r"^(?:(\d+)([smhdw]))+$")
_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$")


def parse_window(window: Any) -> int:
    """A window length in milliseconds: ``"1h"``, ``"90m"``, ``"1h30m"``, seconds (a number,
    or text of one: ``"600"``, as a command line passes it) or a timedelta.

    Raises:
        InvalidInput: anything else, or a window that is not positive.
    """
    text = window.strip().lower() if isinstance(window, str) else None
    if isinstance(window, dt.timedelta):
        ms = int(window.total_seconds() * 1000)
    elif isinstance(window, int | float) and not isinstance(window, bool):
        ms = int(window * 1000)
    elif text is not None and _SECONDS_RE.match(text):
        ms = int(float(text) * 1000)
    elif text is not None and _WINDOW_RE.match(text):
        ms = 1000 * sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text))
    else:
        raise InvalidInput(f"window must be {WINDOW_FORMS}; got {window!r}")
    if ms <= 0:
        raise InvalidInput(f"window must be longer than zero, got {window!r}")
    return ms


def spell_window(window: Any) -> Any:
    """A window of whole seconds given as a number (``600``, ``"600"``) stored as ``"600s"``,
    so the stored settings read unambiguously; anything else as given."""
    is_number = isinstance(window, int | float) and not isinstance(window, bool)
    if is_number or (isinstance(window, str) and _SECONDS_RE.match(window.strip())):
        ms = parse_window(window)
        if ms % 1000 == 0:
            return f"{ms // 1000}s"
    return window
