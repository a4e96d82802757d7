"""Rows in force from a start time, never rewritten: the shape of every price table.

A dated row says what holds for one key (an upstream model, a resource) from
``starts_at`` on, until the key's next row starts. Rows are only ever added, so
what was charged before a change stays what it was. :class:`DatedRows` is an
immutable snapshot that answers, by bisection, which row was in force at a
moment, and cuts an interval at every start inside it; :func:`check_start` and
:func:`check_rate` check the two values every such row is added with.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from keel.errors import InvalidInput

__all__ = ["DatedRows", "check_rate", "check_start"]

R = TypeVar("R")


def check_start(value: Any) -> int | None:
    """``starts_at`` as epoch ms: ``None`` (now), epoch ms, a datetime or ISO-8601 text.

    Raises:
        InvalidInput: not a time, or before 1970.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        start = value
    else:
        from keel.predictions import to_ms

        converted = to_ms(value, "starts_at")
        assert converted is not None  # not None in, not None out
        start = converted
    if start < 0:
        raise InvalidInput(f"starts_at must be at or after 1970-01-01, got {value!r}")
    return start


def check_rate(value: object, what: str, per: str) -> float:
    """``value`` as a price of 0 or more USD ``per`` a unit (``million tokens``, ``GPU-hour``).

    Raises:
        InvalidInput: not a finite number, or negative; the message names ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number of USD per {per}, got {value!r}")
    if value < 0:
        raise InvalidInput(f"{what} must be 0 or more USD per {per}, got {value!r}")
    return float(value)


class DatedRows(Generic[R]):
    """An immutable snapshot of dated rows: which row of a key was in force when.

    Args:
        rows: the rows (any order); two rows of one key must not share a start.
        key: a row's key (``lambda p: p.model``).
        start: a row's start, epoch ms (``lambda p: p.starts_at``).
    """

    __slots__ = ("_rows", "_starts")

    def __init__(
        self, rows: Iterable[R], key: Callable[[R], str], start: Callable[[R], int]
    ) -> None:
        by_key: dict[str, list[R]] = {}
        for row in rows:
            by_key.setdefault(key(row), []).append(row)
        self._rows: dict[str, tuple[R, ...]] = {}
        self._starts: dict[str, tuple[int, ...]] = {}
        for name, found in by_key.items():
            found.sort(key=start)
            self._rows[name] = tuple(found)
            self._starts[name] = tuple(start(r) for r in found)

    def at(self, key: str, at_ms: int) -> R | None:
        """The row in force for ``key`` at ``at_ms``; None when none had started yet."""
        starts = self._starts.get(key)
        if starts is None:
            return None
        index = bisect.bisect_right(starts, at_ms) - 1
        return self._rows[key][index] if index >= 0 else None

    def segments(self, key: str, start_ms: int, end_ms: int) -> list[tuple[int, int, R | None]]:
        """``[start_ms, end_ms)`` cut at every start time of ``key`` inside it.

        Each piece comes with the row in force over all of it (None where no row had
        started yet), so a change in the middle of an interval charges each side at
        its own rate. An empty interval gives no pieces.
        """
        if end_ms <= start_ms:
            return []
        starts = self._starts.get(key, ())
        first = bisect.bisect_right(starts, start_ms)
        last = bisect.bisect_left(starts, end_ms)
        cuts = [start_ms, *starts[first:last], end_ms]
        return [(begin, stop, self.at(key, begin)) for begin, stop in itertools.pairwise(cuts)]

    @property
    def keys(self) -> list[str]:
        """The keys with at least one row, sorted."""
        return sorted(self._rows)

    @property
    def rows(self) -> list[R]:
        """Every row, by key and start."""
        return [r for key in self.keys for r in self._rows[key]]

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())
