"""``keel drift`` (standalone, two files) and ``keel monitor …`` (deployments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import console, fmt_time, fmt_value, print_json
from keel.cli.progress import progress_bar
from keel.monitoring.windows import WINDOW_FORMS

monitor_app = typer.Typer(
    help="Watch deployments: drift and quality over windows of predictions, alerts.",
    no_args_is_help=True,
)
reference_app = typer.Typer(
    help="The reference profile a model version's traffic is compared with.",
    no_args_is_help=True,
)
monitor_app.add_typer(reference_app, name="reference")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress bar on stderr (default: when stderr is a terminal).",
        show_default=False,
    ),
]


def _parse_overrides(values: list[str] | None) -> dict[str, dict[str, Any]]:
    from keel.errors import InvalidInput

    overrides: dict[str, dict[str, Any]] = {}
    for text in values or []:
        column, sep, spec = text.rpartition("=")
        if not sep or not column or not spec:
            raise InvalidInput(
                f"--override takes COLUMN=METHOD or COLUMN=METHOD:THRESHOLD, got {text!r}"
            )
        method, _, limit = spec.partition(":")
        entry: dict[str, Any] = {"method": method}
        if limit:
            try:
                entry["threshold"] = float(limit)
            except ValueError:
                raise InvalidInput(f"--override {text!r}: threshold {limit!r} is not a number")
        overrides[column] = entry
    return overrides


def print_report(report: Any) -> None:
    """A drift report as a verdict line, a column table and the data-quality findings."""
    from rich.table import Table

    features = report.features
    failed = len(report.failed_checks)
    if report.dataset_drift:
        verdict = "[bold red]DRIFT[/bold red]"
    elif failed:  # no drift measured is not a pass when the data itself is broken
        verdict = "[bold red]DATA QUALITY FAILED[/bold red], no drift"
    else:
        verdict = "[bold green]no drift[/bold green]"
    console.print(
        f"Dataset: {verdict} — {sum(c.drifted for c in features)} of {len(features)} feature "
        f"columns drifted ({report.share_drifted:.0%}; threshold {report.drift_share:.0%}); "
        f"reference {report.reference_rows:,} rows, current {report.current_rows:,}",
        soft_wrap=True,
    )
    if failed:
        console.print(f"Data quality: [bold red]{failed} check(s) failed[/bold red] (below)")
    if report.prediction_drift is not None:
        console.print(
            f"Prediction drift: {'[bold red]yes[/bold red]' if report.prediction_drift else 'no'}"
        )
    table = Table("column", "kind", "method", "statistic", "drifts when", "drift")
    for col in sorted(report.columns.values(), key=lambda c: (not c.drifted, c.role)):
        mark = "—" if not col.tested else "[red]yes[/red]" if col.drifted else "no"
        name = col.name if col.role == "feature" else f"{col.name} (prediction)"
        table.add_row(
            name,
            col.kind,
            col.method,
            f"{col.statistic_kind} {fmt_value(col.statistic)}",
            col.drift_rule,
            mark,
        )
    console.print(table)
    for issue in report.issues:
        color = "red" if issue.severity == "fail" else "yellow"
        console.print(f"[{color}]{issue.severity}[/{color}] {issue.message}", soft_wrap=True)


def drift_command(
    reference: Annotated[
        Path,
        typer.Argument(help="Reference data: .parquet, .csv, or a folder of .parquet files."),
    ],
    current: Annotated[Path, typer.Argument(help="Current data, in the same forms.")],
    columns: Annotated[
        list[str] | None,
        typer.Option("--columns", "-c", help="Compare only these columns. Repeatable."),
    ] = None,
    html_path: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a self-contained HTML report to this file."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="One method for every column it fits: ks, wasserstein, psi, jensenshannon, "
            "chisquare (default: chosen by column kind and sample size)."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Threshold for --method (a p-value for ks/chisquare).")
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override", help="Per column: COLUMN=METHOD or COLUMN=METHOD:THRESHOLD. Repeatable."
        ),
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option("--categorical", help="Treat this numeric column as categories. Repeatable."),
    ] = None,
    drift_share: Annotated[
        float, typer.Option(help="Share of drifted columns at which the dataset drifts.")
    ] = 0.5,
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift",
            help="Exit with status 1 when the dataset drifts or a data-quality check fails "
            "(an empty file or a missing column is no pass).",
        ),
    ] = False,
    fail_on_quality: Annotated[
        bool,
        typer.Option(
            "--fail-on-quality", help="Exit with status 1 when a data-quality check fails."
        ),
    ] = False,
    progress: ProgressOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare two tables column by column: data drift, prediction drift, data quality.

    Numeric columns are tested with Kolmogorov-Smirnov (p < 0.01) up to 10,000
    effective rows and with the normalized Wasserstein distance (>= 0.1) above;
    categorical columns with chi-square (p < 0.01), then Jensen-Shannon (>= 0.1). Columns named
    output.* count as predictions.
    """
    from keel.monitoring import compare

    with progress_bar(unit="rows", enabled=progress) as bar:
        report = compare(
            reference,
            current,
            columns=columns or None,
            overrides=_parse_overrides(override),
            method=method,
            threshold=threshold,
            drift_share=drift_share,
            categorical=categorical or None,
            progress=bar.stage,
        )
    if html_path is not None:
        report.to_html(html_path, title=f"Drift: {current.name} vs {reference.name}")
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
        if html_path is not None:
            console.print(f"Report: {html_path}", soft_wrap=True)
    if (fail_on_drift and report.dataset_drift) or (
        (fail_on_drift or fail_on_quality) and not report.quality_ok
    ):
        raise typer.Exit(1)


# -- keel monitor ---------------------------------------------------------------------------


def _set_reference(label: str) -> str:
    """The command that gives the version ``label`` (``model/3``) a reference profile."""
    from keel.errors import InvalidInput
    from keel.uris import parse_model_ref

    try:
        ref = parse_model_ref(label)
    except InvalidInput:  # a name stored before the naming rule: show the command's shape
        return "keel monitor reference set MODEL VERSION DATA"
    return f"keel monitor reference set {ref.name} {ref.version} DATA"


def _print_result(result: Any) -> None:
    share = "—" if result.share_drifted is None else f"{result.share_drifted:.0%}"
    # a prompt deployment is measured on its gateway traces: no rows to drift
    counted = (
        f"{result.rows:,} traced requests"
        if result.llm
        else (f"{result.rows:,} rows, share drifted {share}")
    )
    console.print(
        f"[bold]{result.deployment}[/bold]  {fmt_time(result.window_start)} → "
        f"{fmt_time(result.window_end)}  {counted}",
        soft_wrap=True,
    )
    for label, info in result.versions.items():
        note = "" if info["reference"] else f"  (no reference profile: {_set_reference(label)})"
        version_share = "—" if info["share_drifted"] is None else f"{info['share_drifted']:.0%}"
        console.print(
            f"  {label}: {info['rows']:,} rows, drifted {version_share}{note}", soft_wrap=True
        )
    if result.drifted_columns:
        console.print(f"  drifted: {', '.join(result.drifted_columns)}", soft_wrap=True)
    if result.quality:
        quality = result.quality
        metrics = ", ".join(f"{k} {fmt_value(v)}" for k, v in quality["metrics"].items())
        task = quality["task"] or "task not recorded"
        console.print(
            f"  quality ({task}, {quality['rows']:,} of {result.labelled_rows:,} labelled rows "
            f"scored): {metrics or '—'}",
            soft_wrap=True,
        )
        for why, rows in (quality.get("excluded") or {}).items():
            console.print(f"  [yellow]not scored[/yellow] {rows:,} rows: {why}", soft_wrap=True)
    if result.concept_drift:
        console.print("  [red]concept drift: the error rate rose[/red]")
    if result.llm and result.llm.get("overall"):
        for label, s in {"all": result.llm["overall"], **result.llm["versions"]}.items():
            console.print(
                f"  {label}: {s['requests']:,} requests, error rate {fmt_value(s['error_rate'])}, "
                f"p99 {fmt_value(s['p99_ms'])} ms, {fmt_value(s['cost_per_request'])} USD/request, "
                f"{fmt_value(s['tokens_per_request'])} tokens/request",
                soft_wrap=True,
            )
    _print_skew(result.skew)
    for alert in result.alerts:
        color = "red" if alert.state == "firing" else "green"
        console.print(f"  [{color}]{alert.state}[/{color}] {alert.message}", soft_wrap=True)


def _print_skew(skew: dict[str, Any] | None) -> None:
    """Served feature values against the offline store's (a deployment with features)."""
    if not skew:
        return
    if skew.get("error"):
        console.print(f"  [yellow]skew not checked[/yellow]: {skew['error']}", soft_wrap=True)
        return
    excluded = f", {skew['excluded']:,} rows without join keys left out" if skew["excluded"] else ""
    console.print(
        f"  feature skew ({skew['sampled']:,} of {skew['rows']:,} requests compared{excluded}):",
        soft_wrap=True,
    )
    for ref, stats in skew["features"].items():
        color = "red" if stats["skewed"] else "green"
        console.print(
            f"    {ref}: [{color}]{stats['rate']:.1%}[/{color}] ({stats['skewed']:,} rows)",
            soft_wrap=True,
        )


@monitor_app.command("run")
def run_command(
    deployment: Annotated[str, typer.Argument(help="Deployment whose prediction logs to read.")],
    window: Annotated[
        str | None,
        typer.Option(help=f"Window length, {WINDOW_FORMS} (default: the deployment's setting)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Window end, ISO-8601 (default: now).", show_default=False)
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Write the drift report of the window here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare a window of predictions with the reference, store the result, raise alerts."""
    from keel.monitoring import run_monitor

    result = run_monitor(deployment, window=window, end=end)
    if html_path is not None:
        report = result.report()
        if report is not None:
            report.to_html(html_path, title=f"Drift: {deployment}")
    if as_json:
        print_json(result.to_dict())
        return
    _print_result(result)
    if html_path is not None:
        console.print(f"Report: {html_path}", soft_wrap=True)


@monitor_app.command("history")
def history_command(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest runs to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Past monitor runs, newest window first: the time series."""
    from rich.table import Table

    from keel.monitoring import monitor_history

    history = monitor_history(deployment, limit)
    if as_json:
        print_json([r.to_dict() for r in history])
        return
    if not history:
        console.print(f"No monitor runs for {deployment} yet: keel monitor run {deployment}")
        return
    table = Table("run", "window end", "rows", "drifted", "quality", "checks failed", "concept")
    for r in history:
        quality = ""
        if r.quality:
            quality = ", ".join(f"{k} {fmt_value(v)}" for k, v in r.quality["metrics"].items())
        table.add_row(
            str(r.id),
            fmt_time(r.window_end),
            f"{r.rows:,}",
            "—" if r.share_drifted is None else f"{r.share_drifted:.0%}",
            quality,
            str(r.failed_checks),
            "—" if r.concept_drift is None else "yes" if r.concept_drift else "no",
        )
    console.print(table)


@monitor_app.command("alerts")
def alerts_command(
    deployment: Annotated[str | None, typer.Argument(help="Deployment (default: all).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest alerts to show.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Alert events (fired and resolved), newest first, with how each sink took them."""
    from rich.table import Table

    from keel.monitoring import list_alerts

    alerts = list_alerts(deployment, limit=limit)
    if as_json:
        print_json([a.to_dict() for a in alerts])
        return
    if not alerts:
        console.print("No alerts.")
        return
    table = Table("id", "time", "deployment", "rule", "state", "message", "sinks")
    for a in alerts:
        sinks = ", ".join(
            f"{name} {'ok' if outcome.get('ok') else 'failed'}"
            for name, outcome in a.deliveries.items()
        )
        table.add_row(str(a.id), fmt_time(a.at), a.deployment, a.rule, a.state, a.message, sinks)
    console.print(table)


def _print_settings(deployment: str, settings: Any) -> None:
    origin = "defaults" if settings.revision == 0 else f"revision {settings.revision}"
    console.print(f"[bold]{deployment}[/bold] monitor settings ({origin})")
    for key, value in settings.to_dict().items():
        if key != "revision":
            console.print(f"  {key:<19} {fmt_value(value) if value not in ({}, None) else '—'}")


@monitor_app.command("show")
def show_command(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")], as_json: JsonOption = False
) -> None:
    """The deployment's monitor settings (the defaults until something is set)."""
    from keel.client import Client
    from keel.monitoring import get_monitor_settings
    from keel.monitoring.names import require_deployment

    client = Client()
    require_deployment(deployment, client)
    settings = get_monitor_settings(deployment, client=client)
    print_json(settings.to_dict()) if as_json else _print_settings(deployment, settings)


def _pairs(values: list[str] | None, what: str) -> dict[str, float]:
    from keel.errors import InvalidInput

    out: dict[str, float] = {}
    for text in values or []:
        key, sep, number = text.partition("=")
        try:
            out[key] = float(number)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise InvalidInput(f"{what} takes NAME=NUMBER, e.g. accuracy=0.9; got {text!r}")
    return out


@monitor_app.command("set")
def set_command(
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    window: Annotated[str | None, typer.Option(help=f"Window length, {WINDOW_FORMS}.")] = None,
    drift_share: Annotated[
        float | None, typer.Option(help="Share of drifted columns that fires the drift alert.")
    ] = None,
    clear_share: Annotated[
        float | None,
        typer.Option(help="Share below which it resolves (default 0.6 x drift share)."),
    ] = None,
    column: Annotated[
        list[str] | None, typer.Option("--column", help="Test only these features. Repeatable.")
    ] = None,
    all_columns: Annotated[
        bool, typer.Option("--all-columns", help="Test every feature again.")
    ] = False,
    override: Annotated[
        list[str] | None,
        typer.Option("--override", help="COLUMN=METHOD[:THRESHOLD]. Repeatable."),
    ] = None,
    quality: Annotated[
        list[str] | None,
        typer.Option(
            "--quality", help="Alert threshold for a metric, e.g. accuracy=0.9. Repeatable."
        ),
    ] = None,
    slo: Annotated[
        list[str] | None,
        typer.Option(
            "--slo",
            help="A prompt deployment's SLO from the gateway's traces, e.g. error_rate=0.02, "
            "latency_p99_ms=2000, cost_per_request=0.01, tokens_per_request=800. Repeatable.",
        ),
    ] = None,
    skew_rate: Annotated[
        float | None,
        typer.Option(
            help="Share of sampled requests served a feature value other than the offline "
            "store's above which that feature's skew alert fires (default 0.05)."
        ),
    ] = None,
    skew_sample: Annotated[
        int | None,
        typer.Option(help="Most served requests a run compares with the offline store."),
    ] = None,
    fire_after: Annotated[int | None, typer.Option(help="Breaching runs before firing.")] = None,
    resolve_after: Annotated[int | None, typer.Option(help="Clear runs before resolving.")] = None,
    webhook: Annotated[str | None, typer.Option(help="POST alerts to this URL.")] = None,
    webhook_secret_env: Annotated[
        str | None, typer.Option(help="NAME of the variable holding the HMAC secret.")
    ] = None,
    no_webhook: Annotated[bool, typer.Option("--no-webhook", help="Stop posting alerts.")] = False,
    command: Annotated[
        str | None, typer.Option(help="Shell command run with each alert's JSON on stdin.")
    ] = None,
    no_command: Annotated[bool, typer.Option("--no-command", help="Stop running it.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Start from the defaults.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Change how a deployment is monitored (only what is given); audited."""
    from keel.monitoring import configure_monitor

    changes: dict[str, Any] = {}
    for key, value in (
        ("window", window),
        ("drift_share", drift_share),
        ("clear_share", clear_share),
        ("skew_rate", skew_rate),
        ("skew_sample", skew_sample),
        ("fire_after", fire_after),
        ("resolve_after", resolve_after),
        ("webhook_url", webhook),
        ("webhook_secret_env", webhook_secret_env),
        ("command", command),
    ):
        if value is not None:
            changes[key] = value
    if column:
        changes["columns"] = column
    if all_columns:
        changes["columns"] = None
    if override:
        changes["overrides"] = _parse_overrides(override)
    if quality:
        changes["quality"] = _pairs(quality, "--quality")
    if slo:
        changes["slo"] = _pairs(slo, "--slo")
    if no_webhook:
        changes.update(webhook_url=None, webhook_secret_env=None)
    if no_command:
        changes["command"] = None
    settings = configure_monitor(deployment, reset=reset, **changes)
    print_json(settings.to_dict()) if as_json else _print_settings(deployment, settings)


@reference_app.command("set")
def reference_set_command(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    data: Annotated[Path, typer.Argument(help="Reference features: .parquet, .csv or a folder.")],
    predict: Annotated[
        bool,
        typer.Option("--predict/--no-predict", help="Also profile the model's predictions on it."),
    ] = True,
    categorical: Annotated[
        list[str] | None,
        typer.Option("--categorical", help="Treat this numeric column as categories. Repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Profile DATA as the reference of MODEL VERSION (replaces the one logged with it)."""
    from keel.monitoring import set_reference

    result = set_reference(model, version, data, predict=predict, categorical=categorical or None)
    if as_json:
        print_json(result.summary())
        return
    console.print(
        f"Reference of {model}/{version}: {result.rows:,} rows, columns {', '.join(result.names)}",
        soft_wrap=True,
    )


@reference_app.command("show")
def reference_show_command(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    as_json: JsonOption = False,
) -> None:
    """The reference profile a version's traffic is compared with."""
    from rich.table import Table

    from keel.monitoring import get_reference, reference_info

    info = reference_info(model, version)
    reference = get_reference(model, version) if info else None
    if as_json:
        print_json(None if reference is None else {**info, **reference.summary()})  # type: ignore[dict-item]
        return
    if reference is None or info is None:
        console.print(
            f"{model}/{version} has no reference profile; set one with "
            f"keel monitor reference set {model} {version} DATA"
        )
        return
    origin = info["source"] + (f" {info['dataset']}" if info.get("dataset") else "")
    console.print(f"[bold]{model}/{version}[/bold] reference ({origin}): {reference.rows:,} rows")
    table = Table("column", "kind", "missing", "summary")
    for name, summary in reference.summary()["columns"].items():
        if summary["kind"] == "numeric":
            text = (
                f"mean {fmt_value(summary['mean'])}, sd {fmt_value(summary['std'])}, "
                f"range [{fmt_value(summary['min'])}, {fmt_value(summary['max'])}]"
            )
        else:
            top = ", ".join(f"{t['value']} {t['count']:,}" for t in summary["top"][:4])
            text = f"{summary['distinct']} values: {top}"
        table.add_row(name, summary["kind"], f"{summary['missing']:,}", text)
    console.print(table)


__all__ = ["drift_command", "monitor_app", "print_report"]
