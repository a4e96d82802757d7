"""The ``keel`` command: ``keel <noun> <verb>``.

Commands parse, call the library and print; no logic lives only here.
Errors print one line on stderr and exit non-zero — never a traceback
(``KEEL_DEBUG=1`` shows it).

This module is the entry point and stays light: ``keel --version`` is answered
here without Typer or Rich, and ``keel data status`` in :mod:`keel.cli.quick`; every
other run builds the command tree in :mod:`keel.cli.root`, from only the group it names
(see :func:`keel.cli.tree.register`).
"""

from __future__ import annotations

import os
import sys

from keel.cli.tree import leading_options


def _asks_version(argv: list[str]) -> bool:
    """Whether ``argv`` is ``keel [--home H] [--server S] --version …``, which Typer answers
    with the version alone: the same root options, in any order, before the first word.

    Anything else before that word (``--help``, an unknown option, ``--home`` with no
    value) leaves the answer to Typer, which may print help or an error instead.
    """
    leading = leading_options(argv)
    if leading is None:
        return False
    flags = [option for option, value in leading[0] if value is None]
    return bool(flags) and all(flag == "--version" for flag in flags)


def main() -> None:
    """Entry point of the ``keel`` console script."""
    argv = sys.argv[1:]
    if _asks_version(argv):
        # The hottest answer needs neither Typer nor Rich: print it and leave.
        from keel import __version__

        print(f"keel {__version__}")
        return
    from keel.errors import KeelError

    try:
        import warnings

        from keel.cli.output import show_warning

        if not os.environ.get("KEEL_DEBUG"):
            warnings.showwarning = show_warning
        from keel.cli.quick import answer

        if answer(argv):  # ``data status``, without building the command tree
            return
        from keel.cli.root import build

        build(argv)(args=argv, prog_name="keel")
    except KeelError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        from keel.cli.output import err

        err.print("[bold red]interrupted[/bold red]")
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line; KEEL_DEBUG=1 for details
        if os.environ.get("KEEL_DEBUG"):
            raise
        _fail(
            f"internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
            "rerun with KEEL_DEBUG=1 for the traceback"
        )


def _fail(message: str) -> None:
    """Print ``error: message`` on one line of stderr and exit 1."""
    from rich.markup import escape

    from keel.cli.output import err

    err.print(f"[bold red]error:[/bold red] {escape(_one_line(message))}", highlight=False)
    sys.exit(1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    main()
