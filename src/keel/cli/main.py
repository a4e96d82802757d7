"""The ``keel`` command: ``keel <noun> <verb>``.

Commands parse, call the library and print; no logic lives only here.
Errors print one line on stderr and exit non-zero — never a traceback
(``KEEL_DEBUG=1`` shows it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from keel.cli import audit, experiments, governance, models, monitor, predict, runs, serving
from keel.cli import automation as automation_cli
from keel.cli import data as data_cli
from keel.cli import lineage as lineage_cli
from keel.cli import pipeline as pipeline_cli
from keel.cli.output import console, err, print_json

app = typer.Typer(
    name="keel",
    help="Keel: track, version, register, serve and monitor models — and close the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
app.add_typer(experiments.app, name="experiments")
app.add_typer(runs.app, name="runs")
app.add_typer(models.app, name="models")
app.add_typer(audit.app, name="audit")
app.add_typer(governance.policy_app, name="policy")
app.add_typer(governance.roles_app, name="roles")
app.add_typer(serving.deploy_app, name="deploy")
app.add_typer(serving.predictions_app, name="predictions")
app.command("serve")(serving.serve_command)
app.command("predict")(predict.predict_command)
app.add_typer(data_cli.app, name="data")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(lineage_cli.app, name="lineage")
app.command("drift")(monitor.drift_command)
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(automation_cli.automation_app, name="automation")
governance.policy_app.command("apply")(automation_cli.apply_command)
governance.policy_app.command("show")(automation_cli.show_command)
governance.policy_app.command("enable")(automation_cli.enable_command)
governance.policy_app.command("disable")(automation_cli.disable_command)


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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if home is not None:
        os.environ["KEEL_HOME"] = str(home)


@app.command("init")
def init_command(
    path: Annotated[
        Path, typer.Argument(help="Folder to create .keel in (default: the current folder).")
    ] = Path("."),
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


@app.command("demo")
def demo_command(
    home: Annotated[
        Path | None,
        typer.Option(help="Home for the demo (default: KEEL_HOME, else a new temporary folder)."),
    ] = None,
) -> None:
    """Run a small end-to-end example on a dataset scikit-learn ships, narrated step by step."""
    from keel.demo import run_demo

    run_demo(home)


def main() -> None:
    """Entry point of the ``keel`` console script."""
    from rich.markup import escape

    from keel.errors import KeelError

    try:
        app()
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


if __name__ == "__main__":  # pragma: no cover
    main()
