"""The ``keel`` command: ``keel <noun> <verb>``.

Commands parse, call the library and print; no logic lives only here.
Errors print one line on stderr and exit non-zero — never a traceback
(``KEEL_DEBUG=1`` shows it).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import console, err, print_json

app = typer.Typer(
    name="keel",
    help="Keel: track, version, register, serve and monitor models — and close the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

#: Command groups by name: (module, Typer app). Building a Typer command costs time per
#: option, so a run registers only the group its arguments name; ``keel --help`` (or an
#: unknown name, to get Typer's error) registers them all.
_GROUPS = {
    "experiments": ("keel.cli.experiments", "app"),
    "runs": ("keel.cli.runs", "app"),
    "models": ("keel.cli.models", "app"),
    "prompts": ("keel.cli.prompts", "app"),
    "data": ("keel.cli.data", "app"),
    "pipeline": ("keel.cli.pipeline", "app"),
    "lineage": ("keel.cli.lineage", "app"),
    "deploy": ("keel.cli.serving", "deploy_app"),
    "predictions": ("keel.cli.serving", "predictions_app"),
    "monitor": ("keel.cli.monitor", "monitor_app"),
    "automation": ("keel.cli.automation", "automation_app"),
    "policy": ("keel.cli.automation", "policy_app"),  # protections and automation policies
    "roles": ("keel.cli.governance", "roles_app"),
    "audit": ("keel.cli.audit", "app"),
    "server": ("keel.cli.server", "server_app"),
    "users": ("keel.cli.server", "users_app"),
    "tokens": ("keel.cli.server", "tokens_app"),
    "import": ("keel.cli.interop", "import_app"),
    "gateway": ("keel.cli.gateway", "gateway_app"),
    "llm": ("keel.cli.llm", "llm_app"),
    "evals": ("keel.cli.evals", "evals_app"),
    "guardrails": ("keel.cli.guardrails", "guardrails_app"),
    "rag": ("keel.cli.rag", "rag_app"),
    "features": ("keel.cli.features", "features_app"),
    "jobs": ("keel.cli.jobs", "jobs_app"),
}
#: Single commands by name: (module, function).
_COMMANDS = {
    "serve": ("keel.cli.serving", "serve_command"),
    "predict": ("keel.cli.predict", "predict_command"),
    "drift": ("keel.cli.monitor", "drift_command"),
    "ui": ("keel.cli.ui", "ui_command"),
    "stream": ("keel.cli.stream", "stream_command"),
}
_ROOT_OPTIONS_WITH_VALUES = ("--home", "--server")
#: Commands that only read. Run where no home exists they fail, saying where they looked,
#: instead of creating an empty ``.keel`` and answering "No runs match" (a typo'd folder
#: must not look like an empty project). Every other command creates the home on first use.
_READ_ONLY = frozenset(
    {
        ("experiments", "list"),
        *(("runs", verb) for verb in ("list", "search", "show", "compare")),
        *(("models", verb) for verb in ("list", "show", "versions", "card")),
        ("models", "alias", "history"),
        *(("prompts", verb) for verb in ("list", "show", "versions", "render", "diff")),
        ("prompts", "alias", "history"),
        *(("data", verb) for verb in ("list", "show")),
        *(("pipeline", verb) for verb in ("list", "show")),
        ("lineage", "show"),
        *(("deploy", verb) for verb in ("list", "status", "history")),
        *(("monitor", verb) for verb in ("history", "alerts", "show")),
        ("monitor", "reference", "show"),
        *(("automation", verb) for verb in ("status", "history")),
        *(("policy", verb) for verb in ("list", "show")),
        ("roles", "list"),
        ("llm", "prices", "list"),
        ("llm", "budgets", "status"),
        *(("rag", verb) for verb in ("list", "versions", "show", "status", "query")),
        *(("rag", "alias", verb) for verb in ("get", "history")),
        *(("audit", verb) for verb in ("list", "verify")),
        *(("features", verb) for verb in ("list", "show", "history", "status", "get", "serve")),
        *(("jobs", verb) for verb in ("list", "show", "logs", "why", "report")),
        *(("jobs", noun, "list") for noun in ("queues", "prices")),
        ("jobs", "queues", "show"),
    }
)


def _named(argv: list[str]) -> str | None:
    """The command or group ``argv`` names (the first word that is not a root option)."""
    args = iter(argv)
    for arg in args:
        if arg in _ROOT_OPTIONS_WITH_VALUES:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _words(argv: list[str]) -> tuple[str, ...]:
    """The command's words (``runs``, ``search``, …): arguments up to the first option."""
    args = iter(argv)
    words: list[str] = []
    for arg in args:
        if arg in _ROOT_OPTIONS_WITH_VALUES and not words:
            next(args, None)
        elif arg.startswith("-"):
            if words:
                break
        else:
            words.append(arg)
    return tuple(words)


def reads_only(argv: list[str]) -> bool:
    """Whether ``argv`` runs a command that only reads (and is not asking for ``--help``)."""
    if "--help" in argv:
        return False
    words = _words(argv)
    return any(words[: len(command)] == command for command in _READ_ONLY)


def register(argv: list[str]) -> None:
    """Add the command groups ``argv`` needs to :data:`app` (all of them when unsure)."""
    import importlib

    name = _named(argv)
    known = name in _GROUPS or name in _COMMANDS
    for group, (module, attr) in _GROUPS.items():
        if not known or group == name:
            app.add_typer(getattr(importlib.import_module(module), attr), name=group)
    for command, (module, attr) in _COMMANDS.items():
        if not known or command == name:
            app.command(command)(getattr(importlib.import_module(module), attr))


def _version(value: bool) -> None:
    if value:
        from keel import __version__

        console.print(f"keel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Keel home folder (default: KEEL_HOME, else the nearest .keel folder upwards).",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="A keel server to work through (default: KEEL_SERVER_URL); KEEL_TOKEN "
            "authenticates.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if home is not None:
        os.environ["KEEL_HOME"] = str(home)
    if server is not None:
        os.environ["KEEL_SERVER_URL"] = server
    # through a server there is no local home to read: the server holds the state
    if reads_only(sys.argv[1:]) and not os.environ.get("KEEL_SERVER_URL"):
        from keel.home import require_home

        require_home()


@app.command("init")
def init_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Folder to create .keel in (default: the home KEEL_HOME or --home names, "
            "else the current folder).",
            show_default=False,
        ),
    ] = None,
    store_url: Annotated[
        str | None, typer.Option(help="Metadata store URL to save in config.toml.")
    ] = None,
    artifacts_url: Annotated[
        str | None, typer.Option(help="Artifact store URL (folder or s3://bucket/prefix) to save.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Create a Keel home (.keel/) with its database, artifact folder and config.toml."""
    from keel.home import init_home

    result = init_home(path, store_url=store_url, artifacts_url=artifacts_url)
    if as_json:
        print_json(result)
        return
    verb = "Created" if result["created"] else "Found"
    console.print(f"{verb} Keel home [bold]{result['home']}[/bold]")
    console.print(f"  metadata   {result['store_url']}")
    console.print(f"  artifacts  {result['artifacts_url']}")


class DemoScenario(StrEnum):
    """What ``keel demo`` shows."""

    loop = "loop"
    llm = "llm"


@app.command("demo")
def demo_command(
    scenario: Annotated[
        DemoScenario,
        typer.Argument(
            help="loop: a model's whole loop, on a dataset scikit-learn ships; llm: a "
            "prompt's loop on the LLM gateway, with a stand-in upstream (not a language model)."
        ),
    ] = DemoScenario.loop,
    home: Annotated[
        Path | None,
        typer.Option(help="Home for the demo (default: KEEL_HOME, else a new temporary folder)."),
    ] = None,
) -> None:
    """Run a small end-to-end example, narrated step by step (`keel demo llm`: the LLM loop)."""
    if scenario is DemoScenario.llm:
        from keel.demo.llm import run_llm_demo

        run_llm_demo(home)
        return
    from keel.demo import run_demo

    run_demo(home)


def main() -> None:
    """Entry point of the ``keel`` console script."""
    from rich.markup import escape

    from keel.errors import KeelError

    argv = sys.argv[1:]
    try:
        register(argv)
        command = typer.main.get_command(app)
        _hide_flag_types(command)
        if not os.environ.get("KEEL_DEBUG"):
            warnings.showwarning = _show_warning
        command(args=argv, prog_name="keel")
    except KeelError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(_one_line(str(exc)))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/bold red]")
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line; KEEL_DEBUG=1 for details
        if os.environ.get("KEEL_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/bold red] internal error ({type(exc).__name__}: "
            f"{escape(_one_line(str(exc)))}); rerun with KEEL_DEBUG=1 for the traceback",
            highlight=False,
        )
        sys.exit(1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hide_flag_types(command: Any) -> None:
    """Show no value type after a flag (Typer 0.29 prints ``--help <bool>``, ``--json <bool>``).

    A flag takes no value, so its help row must not suggest one; an empty metavar
    leaves the type column blank and changes nothing else.
    """
    params = [*command.params, command.get_help_option(command.context_class(command))]
    for param in params:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


_warned: set[tuple[type[Warning], str]] = set()
_warned_lock = threading.Lock()


def _show_warning(
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

    text = _one_line(str(message))
    with _warned_lock:
        if (category, text) in _warned:
            return
        _warned.add((category, text))
    label = "warning" if issubclass(category, KeelWarning) else f"warning ({category.__name__})"
    err.print(f"[yellow]{label}:[/yellow] {escape(text)}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
