"""``keel runs …``: list, show, search and compare runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, fmt_time, fmt_value, print_json

if TYPE_CHECKING:
    from keel.client import Client

app = typer.Typer(help="List, inspect, search and compare runs.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ExperimentOption = Annotated[
    list[str] | None,
    typer.Option("--experiment", "-e", help="Only runs of this experiment (repeatable)."),
]


def _experiment_ids(client: Client, names: list[str] | None) -> list[int] | None:
    return [client.tracking.resolve_experiment(name).id for name in names] if names else None


def _print_runs(runs: list[Any], metric_columns: int = 4) -> None:
    from rich.table import Table

    if not runs:
        console.print("No runs match.")
        return
    metric_keys: list[str] = []
    for run in runs:
        for key in run.metrics:
            if key not in metric_keys:
                metric_keys.append(key)
    shown = metric_keys[:metric_columns]
    table = Table("run id", "name", "status", "started", *shown)
    for run in runs:
        table.add_row(
            run.id[:12],
            run.info.name,
            run.info.status,
            fmt_time(run.info.start_time),
            *(fmt_value(run.metrics.get(k)) for k in shown),
        )
    console.print(table)
    if len(metric_keys) > len(shown):
        console.print(
            f"[dim]{len(metric_keys) - len(shown)} more metrics; use --json or keel runs show[/dim]"
        )


def _search(
    filter_string: str | None,
    experiments: list[str] | None,
    order_by: list[str] | None,
    max_results: int,
    page_token: str | None,
    as_json: bool,
) -> None:
    from keel.client import Client

    client = Client()
    page = client.search_runs(
        _experiment_ids(client, experiments), filter_string, order_by, max_results, page_token
    )
    if as_json:
        print_json({"runs": page.runs, "next_page_token": page.next_page_token})
        return
    _print_runs(page.runs)
    if page.next_page_token:
        console.print(f"[dim]more: --page-token {page.next_page_token}[/dim]")


@app.command("list")
def list_command(
    experiment: ExperimentOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many.")] = 20,
    page_token: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    _search(None, experiment, None, limit, page_token, as_json)


@app.command("search")
def search_command(
    filter_string: Annotated[
        str,
        typer.Argument(
            metavar="FILTER",
            help="e.g. \"metrics.acc > 0.9 AND (params.model = 'rf' OR tags.team = 'x')\". "
            "Fields: metrics.*, params.*, tags.*, attributes.(status|name|start_time|end_time|…); "
            "operators: = != < <= > >= LIKE ILIKE IN, NOT, IS NULL, AND, OR, parentheses.",
        ),
    ],
    experiment: ExperimentOption = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", "-o", help="e.g. 'metrics.acc DESC' (repeatable)."),
    ] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n", help="Page size.")] = 50,
    page_token: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Search runs with a filter expression."""
    _search(filter_string, experiment, order_by, max_results, page_token, as_json)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix of 6+ characters).")],
    as_json: JsonOption = False,
) -> None:
    """Show a run: status, params, latest metrics, tags, environment and artifacts."""
    from rich.table import Table

    from keel.client import Client

    client = Client()
    run = client.get_run(client.resolve_run_id(run_id))
    environment = client.get_environment(run.id)
    artifacts = client.list_artifacts(run.id)
    if as_json:
        print_json(
            {
                **run.to_dict(),
                "environment": environment,
                "artifacts": [vars(a) for a in artifacts],
            }
        )
        return
    info = run.info
    console.print(f"[bold]{info.name}[/bold]  {info.id}")
    console.print(
        f"  status {info.status}   started {fmt_time(info.start_time)}   "
        f"ended {fmt_time(info.end_time)}   user {info.user}"
    )
    if info.parent_id:
        console.print(f"  parent {info.parent_id}")
    for title, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        if values:
            table = Table(title, "value", title_justify="left")
            for key, value in values.items():
                table.add_row(key, fmt_value(value))
            console.print(table)
    git = environment["git_commit"]
    console.print(
        f"  python {environment['python_version'] or '—'} on {environment['platform'] or '—'}, "
        f"{len(environment['distributions'])} packages"
    )
    if git:
        dirty = (
            f" + uncommitted changes {environment['git_diff_digest'][:12]}"
            if environment["git_dirty"]
            else ""
        )
        console.print(f"  code   {git[:12]}{dirty}")
    if environment["command"]:
        console.print(f"  cmd    {environment['command']}")
    if environment["seeds"]:
        console.print(f"  seeds  {environment['seeds']}")
    if artifacts:
        table = Table("artifact", "size", "digest", title_justify="left")
        for a in artifacts:
            table.add_row(a.path, f"{a.size:,}", a.digest[:16])
        console.print(table)


@app.command("compare")
def compare_command(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    only_diff: Annotated[
        bool, typer.Option("--diff", help="Show only the params and metrics that differ.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare runs side by side: params and latest metrics, differences highlighted."""
    from rich.table import Table

    from keel.client import Client
    from keel.tracking import compare_runs

    result = compare_runs(Client().tracking, run_ids, only_diff=only_diff)
    if as_json:
        print_json(result)
        return
    table = Table("", "key", *(f"{run['name']}\n{run['run_id'][:12]}" for run in result["runs"]))
    for row in result["rows"]:
        style = "bold yellow" if row["differs"] else None
        table.add_row(
            row["kind"][:-1], row["key"], *(fmt_value(v) for v in row["values"]), style=style
        )
    console.print(table)
    console.print("[dim]rows in yellow differ[/dim]")


@app.command("reproduce")
def reproduce_command(
    run_id: Annotated[str, typer.Argument(help="A pipeline run id (or a unique prefix).")],
    executor: Annotated[
        str | None, typer.Option(help="Run it on this executor (default: the one it used).")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="Load the pipeline from here instead of the recorded module:attr."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-execute a pipeline run and compare its output digests and metrics; exit 1 on any difference.

    The run is repeated with its recorded parameters, pinned dataset versions and
    seed, never from the cache; a change in the code digest is reported with the
    functions that changed.
    """
    from keel.pipelines import reproduce

    report = reproduce(run_id, executor=executor, target=target)
    if as_json:
        print_json(report.to_dict())
    else:
        verdict = (
            "[green]reproduced exactly[/green]"
            if report.identical
            else f"[red]{len(report.differences)} difference(s)[/red]"
        )
        console.print(
            f"run {report.original} → {report.run_id}: {verdict} "
            f"({report.compared} digests and metrics compared)",
            soft_wrap=True,
        )
        for line in report.differences:
            console.print(f"  [red]≠[/red] {line}", soft_wrap=True)
        for line in report.notes:
            console.print(f"  [dim]note: {line}[/dim]", soft_wrap=True)
    if not report.identical:
        raise typer.Exit(1)
