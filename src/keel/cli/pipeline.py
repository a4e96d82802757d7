"""``keel pipeline …``: run, validate, list and inspect pipelines."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from keel.cli.output import console, print_json
from keel.cli.progress import progress_bar

app = typer.Typer(help="Run, validate, list and inspect pipelines.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TargetArgument = Annotated[
    str,
    typer.Argument(metavar="TARGET", help="package.module:pipeline or path/to/file.py:pipeline."),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="A parameter as key=value (repeatable); the value is read as JSON when it "
        "parses (8, 0.5, true, [1,2]) and as a string otherwise.",
    ),
]
_SYMBOLS = {
    "cached": "[cyan]↺ cached[/cyan]",
    "running": "[dim]… running[/dim]",
    "retrying": "[yellow]↻ retry[/yellow]",
    "finished": "[green]✓ ran[/green]",
    "failed": "[red]✗ failed[/red]",
}


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["depth=8", "name=rf"]`` → ``{"depth": 8, "name": "rf"}``."""
    from keel.errors import InvalidInput

    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"expected --param key=value, got {item!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


@app.command("run")
def run_command(
    target: TargetArgument,
    param: ParamOption = None,
    executor: Annotated[
        str, typer.Option(help="local (default) or ray (cluster from the ray_address setting).")
    ] = "local",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step even when its outputs are cached.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Seed random, NumPy and PyTorch before every step.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Experiment of the pipeline run.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline: validate its graph, then run (or reuse from the cache) every step.

    Every step is a tracked run nested under the pipeline's run; a step whose
    code, parameters, inputs and external files are unchanged is served from
    the cache and says so. Exits 1 when a step fails for good.
    """
    from keel.pipelines.runner import StepEvent, run_pipeline

    params = parse_params(param)
    with progress_bar("pipeline", "steps") as bar:
        finished = [0]

        def on_event(event: StepEvent) -> None:
            if event.status in ("cached", "finished", "failed"):
                finished[0] += 1
                bar(finished[0], None)
            if not as_json and event.status != "running":
                detail = f"  [dim]{event.detail}[/dim]" if event.detail else ""
                bar.console.print(
                    f"{_SYMBOLS.get(event.status, event.status)}  {event.node}  "
                    f"[dim]{event.run_id[:12]}[/dim]{detail}",
                    highlight=False,
                )

        run = run_pipeline(
            target,
            params=params,
            executor=executor,
            cache=not no_cache,
            seed=seed,
            experiment=experiment,
            on_event=on_event,
        )
    if as_json:
        print_json(run.to_dict())
        return
    cached = sum(1 for s in run.steps if s.cached)
    console.print(
        f"[bold]{run.pipeline}[/bold] {run.status}  run {run.run_id}  "
        f"({len(run.steps)} steps, {cached} cached)"
    )
    outputs = run.to_dict()["outputs"]
    if outputs is not None:
        console.print(f"  returned {json.dumps(outputs, default=str)[:500]}")


@app.command("validate")
def validate_command(
    target: TargetArgument, param: ParamOption = None, as_json: JsonOption = False
) -> None:
    """Build and check a pipeline's graph without running any step.

    Problems (a wrong argument, a step output used as a value) are reported
    with the file and line where they happen.
    """
    from keel.pipelines.definition import load_target

    pipe = load_target(target)
    graph = pipe.build(parse_params(param))
    steps = graph.describe()
    if as_json:
        print_json({"pipeline": graph.pipeline, "params": graph.params, "steps": steps})
        return
    console.print(f"[bold]{graph.pipeline}[/bold]: {len(steps)} steps, valid")
    for item in steps:
        after = f"  after {', '.join(item['upstream'])}" if item["upstream"] else ""
        console.print(f"  {item['node']}  [dim]{item['called_at']}[/dim]{after}")


@app.command("list")
def list_command(
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List pipeline runs, newest first."""
    from keel.pipelines import list_pipeline_runs

    runs = list_pipeline_runs(pipeline, limit)
    if as_json:
        print_json(runs)
        return
    if not runs:
        console.print("No pipeline runs yet. Start one with `keel pipeline run module:pipeline`.")
        return
    from rich.table import Table

    table = Table("run id", "pipeline", "status", "executor", "started", "reproduces")
    for r in runs:
        table.add_row(
            r["run_id"][:12],
            r["pipeline"],
            r["status"],
            r["executor"],
            r["created_at"][:16].replace("T", " "),
            (r["reproduces"] or "")[:12],
        )
    console.print(table)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="Pipeline run id (or a unique prefix).")],
    as_json: JsonOption = False,
) -> None:
    """Show a pipeline run: parameters, code digest and every step with its outputs."""
    from keel.pipelines import get_pipeline_run

    run = get_pipeline_run(run_id)
    if as_json:
        print_json(run.to_dict())
        return
    console.print(f"[bold]{run.pipeline}[/bold] {run.status}  run {run.run_id}")
    console.print(f"  target   {run.target}")
    console.print(f"  code     {run.code_digest}")
    console.print(f"  params   {json.dumps(run.params, sort_keys=True)}")
    if run.seed is not None:
        console.print(f"  seed     {run.seed}")
    if run.reproduces:
        console.print(f"  reproduces {run.reproduces}")
    from rich.table import Table

    table = Table("step", "status", "run", "attempts", "seconds", "outputs")
    for step in run.steps:
        status = "cached" if step.cached else step.status
        outputs = ", ".join(f"{k} {v[:10]}" for k, v in step.outputs.items())
        seconds = "" if step.seconds is None else f"{step.seconds:.2f}"
        table.add_row(step.node, status, step.run_id[:12], str(step.attempts), seconds, outputs)
    console.print(table)
    for step in run.steps:
        if step.error:
            console.print(f"[red]{step.node} failed:[/red] {step.error.splitlines()[0]}")
