"""``keel data status``, answered without Typer or Rich.

A no-change status of 20,000 files takes about a tenth of a second in the
library; building Typer's command tree and importing Rich would double that.
:func:`answer` runs the command when its arguments are exactly one of the forms
below, and declines anything else (``--help``, an unknown or repeated option, a
second path), which then goes to Typer for its usual help or error:

    keel [--home H] [--server S] data status [PATH] [--json]

The Typer command (:mod:`keel.cli.data`) prints through :func:`print_status`
too, so both ways print the same bytes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from keel.cli.tree import leading_options

# Not ``typing.TYPE_CHECKING``: this module is imported on the hot path, without typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import TextIO

    from keel.data.snapshot import StatusReport

__all__ = ["StatusCall", "answer", "parse_status", "print_status"]

#: ANSI codes for the styles status uses (what Rich prints for the same names).
_STYLES = {"green": "32", "yellow": "33", "dim": "2"}
#: Paths listed per kind of change before "… N more".
_LISTED = 50


@dataclass(frozen=True)
class StatusCall:
    """A ``keel data status`` run: the root options given, the path and the output form."""

    home: str | None = None
    server: str | None = None
    path: str | None = None
    as_json: bool = False


def parse_status(argv: Sequence[str]) -> StatusCall | None:
    """The call ``argv`` makes if it is exactly a ``data status`` run, else ``None``."""
    leading = leading_options(list(argv))
    if leading is None:
        return None
    options, rest = leading
    roots = {option: value for option, value in options if value is not None}
    if len(roots) < len(options):  # a flag (--help, --verbose) or a root option twice
        return None
    if rest[:2] != ["data", "status"]:
        return None
    path: str | None = None
    as_json = False
    for arg in rest[2:]:
        if arg == "--json" and not as_json:
            as_json = True
        elif arg.startswith("-") or path is not None:
            return None  # --help, an unknown option, ``--``, a second path: Typer says
        else:
            path = arg
    return StatusCall(roots.get("--home"), roots.get("--server"), path, as_json)


def answer(argv: Sequence[str]) -> bool:
    """Run ``argv`` here if :func:`parse_status` recognises it; whether it did."""
    call = parse_status(argv)
    if call is None:
        return False
    # as the root's callback does with these options (keel.cli.root), paths made
    # into Paths as Typer makes them
    from pathlib import Path

    if call.home is not None:
        os.environ["KEEL_HOME"] = str(Path(call.home))
    if call.server is not None:
        os.environ["KEEL_SERVER_URL"] = call.server
    from keel.data.snapshot import status

    reports = status(None if call.path is None else Path(call.path))
    print_status(reports, call.as_json)
    return True


def print_status(reports: Sequence[StatusReport], as_json: bool) -> None:
    """Print ``reports`` as JSON or as a line per path and per changed file (50 of each kind)."""
    if as_json:
        import json

        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    _write(_status_lines(reports), sys.stdout)


def _status_lines(reports: Sequence[StatusReport]) -> Iterator[tuple[str, str, str]]:
    """Each line as its plain start, then a part to print in a style, and the style."""
    for report in reports:
        label = f"{report.path}  ({report.dataset}@{report.version}): "
        if report.clean:
            yield label, "unchanged", "green"
            continue
        d = report.diff
        counts = f"{len(d.added)} added, {len(d.changed)} changed, {len(d.removed)} removed"
        yield label, counts, "yellow"
        for marker, paths in (("A", d.added), ("M", d.changed), ("D", d.removed)):
            for rel in paths[:_LISTED]:
                yield f"  {marker} {rel}", "", ""
            if len(paths) > _LISTED:
                yield "  ", f"… {len(paths) - _LISTED} more (--json lists all)", "dim"


def _write(lines: Iterator[tuple[str, str, str]], stream: TextIO) -> None:
    """Write ``lines`` unwrapped (paths stay copyable), styled only where colour is wanted."""
    color = _wants_color(stream)
    for plain, styled, style in lines:
        if color and styled:
            styled = f"\x1b[{_STYLES[style]}m{styled}\x1b[0m"
        stream.write(f"{plain}{styled}\n")


def _wants_color(stream: TextIO) -> bool:
    """Colour as Rich decides it: never with ``NO_COLOR``, always with ``FORCE_COLOR``,
    else on a terminal that is not ``dumb``."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") not in ("dumb", "unknown")
