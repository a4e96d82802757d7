"""``keel evals …``: evaluate a prompt version on an eval set and gate it, for people and CI.

``keel evals run`` exits 0 when every gate passed, 1 when a gate failed (each
failed gate is printed with its measured value and how far off it was), and 2
when the eval could not run as asked (a bad option, an unknown prompt,
dataset, scorer or metric). Calls that fail are not exit codes: they are
counted, listed, and scored 0, so a gate decides what they mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, err, fmt_value, print_json
from keel.cli.progress import progress_bar

if TYPE_CHECKING:
    from keel.llm.evals import EvalResult

evals_app = typer.Typer(
    help="Evaluate prompt versions on eval sets: scorers, comparisons, gates, reports.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
#: Exit status when the eval could not run as asked (as for a command-line usage error).
USAGE_ERROR = 2


def _usage_error(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(' '.join(str(exc).split()))}", highlight=False)
    return typer.Exit(USAGE_ERROR)


@evals_app.command("run")
def run_command(
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt", help="The candidate: prompts:/NAME/VERSION or prompts:/NAME@ALIAS."
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="The eval set: datasets:/NAME@VERSION (or NAME for the latest)."
        ),
    ],
    scorer: Annotated[
        list[str],
        typer.Option(
            "--scorer",
            "-s",
            help="A scorer, repeatable: exact, contains, regex[:pattern=RE], json_schema"
            "[:schema=FILE], numeric[:tolerance=X], similarity, judge[:prompt=URI], or "
            "module:function (your own). Options: name=, threshold=. See `keel evals scorers`.",
        ),
    ],
    against: Annotated[
        str | None,
        typer.Option(
            help="Also score this version or alias of the same prompt (e.g. production) on "
            "the same cases, and compare.",
            show_default=False,
        ),
    ] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate",
            "-g",
            help="A gate, repeatable: 'METRIC >= X' or 'METRIC <= X', e.g. 'similarity >= 0.8', "
            "'failures <= 0', 'diff.similarity >= -0.02'.",
            show_default=False,
        ),
    ] = None,
    judge: Annotated[
        str, typer.Option(help="The judge prompt of a judge scorer that names none.")
    ] = "prompts:/judge@production",
    gateway: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible base URL, e.g. http://127.0.0.1:4000/v1 "
            "(default: KEEL_GATEWAY_URL).",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Bearer token for the gateway (default: KEEL_GATEWAY_KEY).", show_default=False
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 60.0,
    experiment: Annotated[str, typer.Option(help="Experiment of the eval's run.")] = "evals",
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the HTML report here.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr (default: when stderr is a terminal).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score a prompt version on an eval set as a tracked run; exit 1 if a gate fails.

    Each case's variables render the prompt; the request goes to the gateway
    (header x-keel-prompt: NAME/VERSION). The run holds the metrics, the
    per-case results (eval/cases.parquet) and the HTML report (eval/report.html).
    """
    from rich.markup import escape

    from keel.errors import UserError
    from keel.llm.evals import run_eval

    try:
        with progress_bar(unit="calls", enabled=progress) as bar:
            result = run_eval(
                prompt,
                dataset,
                scorer,
                against=against,
                gates=gate or None,
                judge=judge,
                gateway=gateway,
                key=key,
                concurrency=concurrency,
                timeout_s=timeout,
                experiment=experiment,
                html=html,
                progress=bar.stage,
            )
    except UserError as exc:
        raise _usage_error(exc) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _print_result(result, html)
    for failed in result.failed_gates():
        err.print(
            f"[bold red]gate failed:[/bold red] {escape(failed.name)}: {escape(failed.detail)}",
            highlight=False,
        )
    raise typer.Exit(0 if result.passed else 1)


def _print_result(result: EvalResult, html: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    m = result.metrics
    compared = result.against is not None
    title = f"Eval of [bold]{escape(result.prompt)}[/bold]"
    if compared:
        title += f" against [bold]{escape(str(result.against))}[/bold]"
    console.print(f"{title} on {escape(result.dataset)} ({fmt_value(int(m['cases']))} cases)")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("scorer", "mean", "pass rate", "undecided"):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    if compared:
        for column in ("against", "diff", "95% interval", "sign p"):
            table.add_column(column, justify="right")
    for scorer in result.scorers:
        name = scorer["name"]
        row = [
            escape(str(scorer["spec"])),
            fmt_value(m.get(name)),
            fmt_value(m.get(f"{name}.pass_rate")),
            fmt_value(int(m.get(f"{name}.failed", 0))),
        ]
        diff = result.diffs.get(name)
        if compared and diff is not None:
            row += [
                fmt_value(m.get(f"against.{name}")),
                f"{diff.mean:+.4g}",
                f"[{fmt_value(diff.ci_low)}, {fmt_value(diff.ci_high)}]",
                fmt_value(diff.p_value),
            ]
        table.add_row(*row)
    console.print(table)
    calls = (
        f"calls: {int(m['failures'])} of {int(m['cases'])} failed; "
        f"latency p50 {fmt_value(m.get('latency_p50_ms'))} ms, "
        f"p95 {fmt_value(m.get('latency_p95_ms'))} ms"
    )
    if "tokens" in m:
        calls += f"; {int(m['tokens']):,} tokens"
    if "cost_usd" in m:
        calls += f"; ${m['cost_usd']:.6g}"
    console.print(calls)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    for gate in result.gates:
        mark = "[green]pass[/green]" if gate.passed else "[bold red]FAIL[/bold red]"
        console.print(f"  {mark}  {escape(gate.name)}  ({escape(gate.detail)})")
    if result.run_id:
        console.print(
            f"run {result.run_id}: metrics, eval/cases.parquet and eval/report.html"
            + (f"; report also at {html}" if html else "")
        )
    colour = "green" if result.passed else "bold red"
    console.print(f"[{colour}]{escape(result.summary())}[/{colour}]")


@evals_app.command("judge-prompt")
def judge_prompt_command(
    model: Annotated[str, typer.Option(help="The model the judge runs on (a gateway model name).")],
    name: Annotated[str, typer.Option(help="The judge prompt's name.")] = "judge",
    alias: Annotated[str, typer.Option(help="The alias to point at it.")] = "production",
    as_json: JsonOption = False,
) -> None:
    """Register Keel's built-in judge template (reasoning, then SCORE: 1-5) as a prompt.

    The judge is then prompts:/NAME@ALIAS, the default of `--scorer judge`.
    Registering it again changes nothing; edit it like any prompt with
    `keel prompts register` to make a new version.
    """
    from keel.llm.evals import register_judge_prompt

    version = register_judge_prompt(model, name=name, alias=alias)
    if as_json:
        print_json(version.to_dict())
        return
    console.print(
        f"Judge prompt {version.uri} ({version.model}) is prompts:/{name}@{alias}; "
        f"use it with --scorer judge"
        + ("" if (name, alias) == ("judge", "production") else f" --judge prompts:/{name}@{alias}")
    )


@evals_app.command("scorers")
def scorers_command(as_json: JsonOption = False) -> None:
    """List the built-in scorers, their options and when a case passes each."""
    from rich.table import Table

    from keel.llm.evals.factory import scorer_catalog

    catalog = scorer_catalog()
    if as_json:
        print_json(catalog)
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("scorer", "options", "passes at", "what it scores"):
        table.add_column(column)
    for entry in catalog:
        options: Any = ", ".join(entry["options"]) or "—"
        table.add_row(entry["kind"], options, fmt_value(entry["threshold"]), entry["summary"])
    console.print(table)
    console.print(
        "Every scorer also takes name= and threshold=. Custom: --scorer module:function, a "
        "function (output, case) -> number from your own code."
    )
