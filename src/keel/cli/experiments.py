"""``keel experiments …``"""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.output import console, fmt_time, print_json

app = typer.Typer(help="List and create experiments.", no_args_is_help=True)


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List experiments with their run counts."""
    from rich.table import Table

    from keel.client import Client

    client = Client()
    experiments = client.list_experiments()
    counts = client.experiment_run_counts()
    if as_json:
        print_json([{**e.to_dict(), "runs": counts.get(e.id, 0)} for e in experiments])
        return
    if not experiments:
        console.print("No experiments yet. Start one with keel.set_experiment('name') in Python.")
        return
    table = Table("id", "name", "runs", "created")
    for e in experiments:
        table.add_row(str(e.id), e.name, str(counts.get(e.id, 0)), fmt_time(e.created_at))
    console.print(table)


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Name of the new experiment.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Create an experiment (fails if the name is taken)."""
    from keel.client import Client

    client = Client()
    experiment = client.get_experiment(client.create_experiment(name))
    if as_json:
        print_json(experiment)
    else:
        console.print(f"Created experiment {experiment.name!r} (id {experiment.id})")
