"""``keel import …``: bring another tool's history into Keel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.output import console, print_json
from keel.cli.progress import progress_bar

import_app = typer.Typer(help="Import another tool's history into Keel.", no_args_is_help=True)


@import_app.command("mlflow")
def mlflow_command(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The MLflow database URL (sqlite:///mlflow.db, postgresql://user@host/db).",
        ),
    ],
    artifacts: Annotated[
        Path,
        typer.Option(help="The MLflow artifact root (the folder holding <exp_id>/<run_id>/...)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import experiments, runs, metrics, artifacts and registered models from MLflow.

    Running it again imports only what is new; what has no place in Keel is listed.
    """
    from keel.interop import import_mlflow

    with progress_bar("runs", "objects") as bar:
        summary = import_mlflow(source, artifacts, progress=bar.stage)
    if as_json:
        print_json(summary.to_dict())
        return
    new = ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in summary.new.items() if n)
    console.print(f"Imported from {summary.source}: {new or 'nothing new'}", soft_wrap=True)
    if summary.updated_runs:
        console.print(f"Brought {summary.updated_runs:,} runs imported while running up to date")
    for item in summary.renumbered:
        console.print(
            f"[yellow]renumbered:[/yellow] {item['model']} version {item['mlflow_version']} "
            f"is Keel version {item['keel_version']} (Keel numbers versions without gaps)",
            soft_wrap=True,
        )
    if summary.runs_without_artifacts:
        console.print(
            f"{summary.runs_without_artifacts:,} runs had no artifact folder under {artifacts}",
            soft_wrap=True,
        )
    if summary.unmapped:
        console.print("[bold]Not imported:[/bold]")
        for reason, count in sorted(summary.unmapped.items()):
            console.print(f"  {count:,} {reason}", soft_wrap=True)
