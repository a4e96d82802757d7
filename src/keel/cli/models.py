"""``keel models …``: the registry from the command line."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import (
    console,
    fmt_time,
    print_alias_history,
    print_alias_move,
    print_json,
    print_registered,
)

app = typer.Typer(
    help="Register models, move aliases, approve, check and document versions.",
    no_args_is_help=True,
)
alias_app = typer.Typer(
    help="Move, remove and trace aliases (champion, production, …).", no_args_is_help=True
)
app.add_typer(alias_app, name="alias")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[
    str, typer.Argument(help="Registered model name, or NAME@ALIAS for the version an alias holds.")
]
VersionArg = Annotated[
    str | None,
    typer.Argument(
        help="Version number or @alias (e.g. 3 or @champion); omit after NAME@ALIAS.",
        show_default=False,
    ),
]


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List registered models with their latest version and aliases."""
    from keel.client import Client

    print_registered(
        Client().list_registered_models(),
        as_json,
        "No registered models yet. Register one with keel.register_model(uri, name).",
    )


@app.command("register")
def register_command(
    uri: Annotated[str, typer.Argument(help="runs:/<run_id>/<path> of a logged model.")],
    name: Annotated[str, typer.Argument(help="Registered model name (created if new).")],
    description: Annotated[str | None, typer.Option(help="Intended use and limitations.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a logged model as a new, immutable version."""
    from keel.client import Client
    from keel.store.sql import now_ms

    started = now_ms()
    version = Client().create_model_version(name, uri, description=description)
    if as_json:
        print_json(version.to_dict())
    elif version.created_at < started:  # the registry returned the version holding these bytes
        console.print(
            f"{name} version {version.version} already holds {version.source}; nothing registered",
            soft_wrap=True,
        )
    else:
        console.print(f"Registered {name} version {version.version} from {version.source}")


@app.command("versions")
def versions_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: JsonOption = False,
) -> None:
    """List a model's versions."""
    from rich.table import Table

    from keel.client import Client

    versions = Client().list_model_versions(name)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table = Table("version", "aliases", "run", "registered by", "created")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            (v.run_id or "")[:12],
            v.created_by,
            fmt_time(v.created_at),
        )
    console.print(table)


@app.command("show")
def show_command(
    name: NameArg,
    version: Annotated[
        str | None,
        typer.Argument(help="Version number or @alias (default: the model).", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a registered model, or one of its versions with its approvals."""
    from keel.client import Client

    client = Client()
    if version is None and "@" not in name and "/" not in name:
        model = client.get_registered_model(name)
        if as_json:
            print_json(model.to_dict())
            return
        console.print(f"[bold]{model.name}[/bold]  latest version {model.latest_version}")
        for alias, v in model.aliases.items():
            console.print(f"  {alias} → {v}")
        return
    mv = client.find_model_version(name, version)
    approvals = client.list_approvals(mv.name, mv.version)
    compilations = client.registry.list_compilations(mv.name, mv.version)
    if as_json:
        print_json(
            {
                **mv.to_dict(),
                "approvals": [a.to_dict() for a in approvals],
                "compilations": [asdict(c) for c in compilations],
            }
        )
        return
    console.print(f"[bold]{mv.name} version {mv.version}[/bold]  {mv.uri}")
    console.print(f"  source   {mv.source}")
    console.print(f"  bytes    manifest {mv.manifest_digest}", soft_wrap=True)
    console.print(f"  by       {mv.created_by} at {fmt_time(mv.created_at)}")
    if mv.aliases:
        console.print(f"  aliases  {', '.join(mv.aliases)}")
    if mv.description:
        console.print(f"  about    {mv.description}")
    for a in approvals:
        console.print(f"  approved for {a.alias} by {a.approver}: {a.comment or ''}")
    for c in compilations:
        verdict = "passed parity" if c.passed else "FAILED"
        console.print(
            f"  compiled {c.target}: {verdict} by {c.created_by} at {fmt_time(c.created_at)}"
            f"  (report {c.report_digest[:12]})",
            soft_wrap=True,
        )


@alias_app.command("set")
def alias_set_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[
        str,
        typer.Argument(help="Version to point it at: a number, or @alias for the one it holds."),
    ],
    expected: Annotated[
        int | None,
        typer.Option(help="Only move it if it points at this version now (compare-and-set)."),
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
) -> None:
    """Point an alias at a version (protected aliases need approvals first)."""
    from keel.client import Client
    from keel.registry import UNSET

    client = Client()
    target = client.find_model_version(name, version)
    change = client.set_alias(
        name,
        alias,
        target.version,
        expected=UNSET if expected is None else expected,
        comment=comment,
    )
    print_alias_move(name, alias, change)


@alias_app.command("unset")
def alias_unset_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    comment: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
) -> None:
    """Remove an alias."""
    from keel.client import Client

    change = Client().delete_alias(name, alias, comment=comment)
    console.print(f"{name}@{alias}: version {change.from_version} → unset")


@alias_app.command("history")
def alias_history_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every move of a model's aliases, oldest first."""
    from keel.client import Client

    print_alias_history(Client().alias_history(name, alias), as_json)


@app.command("approve")
def approve_command(
    name: NameArg,
    alias: Annotated[str, typer.Option("--for", help="The protected alias it may move to.")],
    version: VersionArg = None,
    comment: Annotated[str | None, typer.Option(help="What was reviewed.")] = None,
) -> None:
    """Approve a version for a protected alias, as the current user (KEEL_USER)."""
    from keel.client import Client

    client = Client()
    mv = client.find_model_version(name, version)
    approval = client.approve(mv.name, mv.version, alias, comment)
    console.print(f"{approval.approver} approved {mv.name} version {mv.version} for {alias!r}")


@app.command("describe")
def describe_command(
    name: NameArg,
    description: Annotated[
        str,
        typer.Option(
            help="Text with optional '## Intended use' and '## Limitations' sections (shown on the card)."
        ),
    ],
    version: VersionArg = None,
) -> None:
    """Set a version's description (its summary, intended use and limitations)."""
    from keel.client import Client

    client = Client()
    mv = client.find_model_version(name, version)
    client.update_model_version(mv.name, mv.version, description=description)
    console.print(f"Described {mv.name} version {mv.version}")


@app.command("check")
def check_command(
    name: NameArg,
    data: Annotated[Path, typer.Option(help="Holdout data, .parquet or .csv.")],
    target: Annotated[str, typer.Option(help="Label column in the data.")],
    version: VersionArg = None,
    rules: Annotated[
        Path | None, typer.Option(help="Gates file (YAML/JSON): thresholds, against, slices, data.")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="Alias or version to compare with on the same rows, e.g. champion."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure a version on a holdout and apply gates; exit 1 when any gate fails.

    Measures accuracy, F1, ROC AUC and log loss for classification (the last two
    when the model gives probabilities), RMSE, MAE and R² for regression; the
    same on the compared version; per-slice metrics and the largest gap between
    slices; and validates the holdout against the model's signature.
    """
    from keel.checks import check_model_version
    from keel.client import Client

    mv = Client().find_model_version(name, version)
    report = check_model_version(mv.name, mv.version, data, target, rules, against=against)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    from rich.table import Table

    from keel.cli.output import fmt_value

    versus = (
        f" against {report.against['ref']} (v{report.against['version']})" if report.against else ""
    )
    console.print(
        f"[bold]{report.model} version {report.version}[/bold]: {report.task}, {report.n_rows} rows{versus}"
    )
    table = Table("metric", "candidate", *(["baseline"] if report.baseline_metrics else []))
    for key, value in report.metrics.items():
        row = [key, fmt_value(value)]
        if report.baseline_metrics:
            row.append(fmt_value(report.baseline_metrics.get(key)))
        table.add_row(*row)
    console.print(table)
    for column, per in report.slices.items():
        slice_table = Table(
            column, "rows", *(k for k in next(iter(per.values())) if k != "n"), title_justify="left"
        )
        for value, metrics in per.items():
            slice_table.add_row(
                value,
                str(int(metrics["n"])),
                *(fmt_value(v) for k, v in metrics.items() if k != "n"),
            )
        console.print(slice_table)
    if report.gates:
        gates = Table("gate", "verdict", "detail")
        for gate in report.gates:
            verdict = "[green]pass[/green]" if gate.passed else "[bold red]FAIL[/bold red]"
            gates.add_row(gate.name, verdict, gate.detail)
        console.print(gates)
    for problem in report.data_problems:
        console.print(f"[bold red]data:[/bold red] {problem}")
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]")
    console.print(
        "[bold green]PASSED[/bold green]" if report.passed else "[bold red]FAILED[/bold red]"
    )


@app.command("card")
def card_command(
    name: NameArg,
    version: VersionArg = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML card to this file.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a version's model card: lineage, checks, approvals, intended use and limitations."""
    from keel.client import Client
    from keel.registry.card import build_card, render_html, render_markdown

    client = Client()
    mv = client.find_model_version(name, version)
    card = build_card(client, mv.name, mv.version)
    if as_json:
        print_json(card)
    elif html_out is not None:
        html_out.write_text(render_html(card))
        console.print(f"Wrote {html_out}")
    else:
        from rich.markdown import Markdown

        console.print(Markdown(render_markdown(card)))


@app.command("compile")
def compile_command(
    name: NameArg,
    version: VersionArg = None,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="onnx (scikit-learn, XGBoost, LightGBM) or treelite (tree ensembles)."
        ),
    ] = "onnx",
    data: Annotated[
        str | None,
        typer.Option(
            help="Rows to check parity on besides the input example: .csv, .parquet or datasets:/… "
            "(default: the reference's dataset, else the run's training table)."
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option("--trust", help="A type or function the model needs, trusted for this load."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compile a version to ONNX or treelite, check parity, and record it with the version.

    The compiled form must give the same classes on 99.9% of the rows (the input
    example and the holdout or reference data) and probabilities within 1e-5;
    then `keel serve --runtime auto` serves it. A failed or refused compilation is
    recorded too, with its reason, and exits 1.
    """
    from keel.client import Client
    from keel.models.compile import compile_version

    client = Client()
    mv = client.find_model_version(name, version)
    done = compile_version(mv.name, mv.version, to=to, data=data, trust=trust, client=client)
    if as_json:
        print_json(done.to_dict())
        return
    _print_parity(done.report, done.package_digest)


def _print_parity(report: dict[str, Any], package_digest: str | None) -> None:
    from rich.table import Table

    from keel.cli.output import fmt_value

    def share(value: Any) -> str:
        return "—" if value is None else f"{value:.2%}"

    native, compiled = report.get("native_ms_per_row"), report.get("compiled_ms_per_row")
    speed = f"  ({native / compiled:.1f}x)" if native and compiled else ""
    console.print(
        f"[bold]{report['model']} version {report['version']}[/bold] → {report['target']}: "
        "[bold green]passed parity[/bold green]"
    )
    table = Table("measure", "value")
    table.add_row("rows", str(report["rows"]))
    table.add_row("class agreement", share(report.get("class_agreement")))
    delta = "max |Δp|" if report.get("class_agreement") is not None else "max |Δ|"
    table.add_row(delta, fmt_value(report.get("max_abs_diff")))
    table.add_row(f"within {report['tolerance']:g}", share(report.get("within_tolerance")))
    table.add_row("size", f"{report['size_bytes'] / 1024:.1f} KiB")
    table.add_row("ms/row native → compiled", f"{native:.3g} → {compiled:.3g}{speed}")
    console.print(table)
    console.print(f"Rows from {'; '.join(report.get('data') or [])}", soft_wrap=True)
    console.print(
        f"Stored as artifacts:/{package_digest}; keel serve --runtime auto serves it",
        soft_wrap=True,
    )


@app.command("convert")
def convert_command(
    name: NameArg,
    version: VersionArg = None,
    example: Annotated[
        Path | None,
        typer.Option(
            help="CSV of rows to check the predictions on (default: the stored input example).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option("--trust", help="A type or function the model needs, trusted for this load."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-save a version in MLflow's format as a Keel package (skops), registered as a new version.

    The original (a skops or pickle file under MLflow's MLmodel) is loaded once, by a
    loader that still builds only trusted types; the new package must predict exactly
    the same on the input example, or nothing is registered. The new version then
    loads and serves with no --allow-pickle.
    """
    from keel.client import Client
    from keel.registry.convert import convert_version

    client = Client()
    source = client.find_model_version(name, version)
    rows = None
    if example is not None:
        import pandas as pd

        rows = pd.read_csv(example)
    done = convert_version(source.name, source.version, example=rows, trust=trust, client=client)
    if as_json:
        print_json(done.to_dict())
        return
    console.print(
        f"Registered {done.version.uri}: {done.source.uri} in Keel's format, predicting the "
        f"same on {done.rows_checked} example rows (run {done.run_id})",
        soft_wrap=True,
    )


@app.command("export")
def export_command(
    name: NameArg,
    edge: Annotated[
        Path,
        typer.Option(
            "--edge",
            help="A new or empty folder for the model, predict.py and the browser bundle.",
        ),
    ],
    version: VersionArg = None,
    no_compile: Annotated[
        bool,
        typer.Option(
            "--no-compile", help="Refuse a version with no passed compilation instead of compiling."
        ),
    ] = False,
    no_web: Annotated[
        bool, typer.Option("--no-web", help="Leave out the browser bundle (web/).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Export a version's compiled ONNX form as a self-contained folder for devices and browsers.

    The folder holds model.onnx, signature.json, a predict.py that needs only
    onnxruntime and numpy, a manifest.json of SHA-256 digests that predict.py checks,
    and web/: a page running the model with onnxruntime-web from its own files.
    A version with no compilation that passed parity is compiled first.
    """
    from rich.table import Table

    from keel.client import Client
    from keel.models.edge import export_edge

    mv = Client().find_model_version(name, version)
    bundle = export_edge(
        f"models:/{mv.name}/{mv.version}",
        edge,
        compile_if_needed=not no_compile,
        web=not no_web,
    )
    if as_json:
        print_json(bundle.to_dict())
        return
    compiled = " (compiled to ONNX first)" if bundle.compiled else ""
    console.print(
        f"Exported {bundle.name} version {bundle.version}{compiled} to {bundle.path}",
        soft_wrap=True,
    )
    table = Table("part", "size", "one-row latency")
    latency = "—" if bundle.predict_ms_p50 is None else f"{bundle.predict_ms_p50:.3f} ms (p50)"
    table.add_row("model.onnx", _megabytes(bundle.model_bytes), "")
    table.add_row("predict.py (onnxruntime)", "", latency)
    if bundle.onnxruntime_web is not None:
        table.add_row(
            f"web/ runtime (onnxruntime-web {bundle.onnxruntime_web})",
            _megabytes(bundle.web_runtime_bytes),
            "",
        )
    table.add_row("total", _megabytes(bundle.total_bytes), "")
    console.print(table)
    console.print(f"  python {bundle.path / 'predict.py'} --example", soft_wrap=True)
    if bundle.onnxruntime_web is not None:
        console.print(f"  python -m http.server -d {bundle.path / 'web'}", soft_wrap=True)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
