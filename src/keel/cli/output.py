"""Shared printing for commands: Rich for people, JSON for machines."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "console", "err", "fmt_time", "fmt_value", "print_alias_history", "print_alias_move",
    "print_json", "print_registered", "show_warning",
]  # fmt: skip


class _LazyConsole:
    """A Rich console made on first use.

    Every command module imports :data:`console`, but a command that prints JSON
    (or nothing) never draws with it, and importing Rich costs more than the
    command's own module. The console reads its settings (terminal, width,
    colours) when it is made, as Rich's does, and is the same console from then on.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        console = self._console
        if console is None:
            from rich.console import Console

            console = self._console = Console(**self._options)
        return getattr(console, name)


console = cast("Console", _LazyConsole(highlight=False, soft_wrap=False))
err = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True))


_warned: set[tuple[type[Warning], str]] = set()
_warned_lock = threading.Lock()


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Print a warning once per process, as one line without Keel's source path.

    Python's own display repeats a warning whenever the warnings filters change
    (model loading changes them) and points at a line inside Keel, which tells a
    user of the command nothing. ``KEEL_DEBUG=1`` keeps Python's display.
    """
    from rich.markup import escape

    from keel.models import KeelWarning

    text = " ".join(str(message).split())
    with _warned_lock:
        if (category, text) in _warned:
            return
        _warned.add((category, text))
    label = "warning" if issubclass(category, KeelWarning) else f"warning ({category.__name__})"
    err.print(f"[yellow]{label}:[/yellow] {escape(text)}", highlight=False)


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


# The registry's records print alike for models and prompts (keel models, keel prompts).


def print_registered(items: Sequence[Any], as_json: bool, empty: str) -> None:
    """Registered models or prompts: name, latest version, aliases, created (or ``empty``)."""
    from rich.table import Table

    if as_json:
        print_json([item.to_dict() for item in items])
        return
    if not items:
        console.print(empty)
        return
    table = Table("name", "latest", "aliases", "created")
    for item in items:
        aliases = ", ".join(f"{a}→{v}" for a, v in item.aliases.items())
        table.add_row(item.name, str(item.latest_version), aliases, fmt_time(item.created_at))
    console.print(table)


def print_alias_move(name: str, alias: str, change: Any) -> None:
    """One alias move: ``NAME@ALIAS: version 1 → version 2``."""
    before = "unset" if change.from_version is None else f"version {change.from_version}"
    console.print(f"{name}@{alias}: {before} → version {change.to_version}")


def print_alias_history(history: Sequence[Any], as_json: bool) -> None:
    """Every move of an alias: time, alias, from, to, who and why."""
    from rich.table import Table

    if as_json:
        print_json([h.to_dict() for h in history])
        return
    table = Table("time", "alias", "from", "to", "by", "comment")
    for h in history:
        table.add_row(
            fmt_time(h.at),
            h.alias,
            "—" if h.from_version is None else str(h.from_version),
            "—" if h.to_version is None else str(h.to_version),
            h.actor,
            h.comment or "",
        )
    console.print(table)
