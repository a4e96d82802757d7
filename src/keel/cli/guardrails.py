"""``keel guardrails …``: scan a text, score scanners on a labelled set, retrain the classifier.

``keel guardrails scan TEXT`` (``-`` reads stdin) prints each scanner's
verdict; ``keel guardrails eval DATASET`` scores scanners on a labelled JSONL
file or dataset version (precision, recall, false-positive rate, F1, latency
p50/p99, and with ``--report`` the HTML page with the threshold trade-off);
``keel guardrails train`` re-derives the injection classifier's weights from
the labelled set that ships with Keel. A scanner is a name (``injection``,
``pii``, …) or a name with options, ``injection:encoder=contextual`` or
``pii:kinds=["email"]`` (a value is read as JSON when it parses, else as text).

Errors (an unknown scanner, a missing file, a malformed example) print one
line and exit 2; the commands themselves exit 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, err, fmt_value, print_json
from keel.cli.progress import progress_bar

if TYPE_CHECKING:
    from keel.llm.guardrails.evaluate import GuardrailEval

guardrails_app = typer.Typer(
    help="Guardrails: scan texts, score scanners on labelled sets, retrain the injection "
    "classifier.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ScannerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--scanner",
        "-s",
        help="A scanner, repeatable: a name (injection, injection_heuristics, "
        "injection_classifier, pii, token_limit, banned_terms, regex, …) or "
        "NAME:key=value,key=value (e.g. injection:encoder=contextual).",
        show_default=False,
    ),
]
#: Exit status when a command could not run as asked (as for a command-line usage error).
USAGE_ERROR = 2


def _usage_error(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(' '.join(str(exc).split()))}", highlight=False)
    return typer.Exit(USAGE_ERROR)


def _spec(text: str) -> str | dict[str, Any]:
    """``NAME`` or ``NAME:key=value,…`` as a scanner spec (values parsed as JSON when they can)."""
    from keel.errors import InvalidInput

    name, _, rest = text.partition(":")
    if not rest:
        return name.strip()
    spec: dict[str, Any] = {"scanner": name.strip()}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(
                f"scanner option {item!r} of {text!r} is not key=value "
                "(e.g. injection:encoder=contextual,threshold=0.7)"
            )
        try:
            spec[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            spec[key.strip()] = value
    return spec


@guardrails_app.command("scan")
def scan_command(
    text: Annotated[str, typer.Argument(help="The text to scan, or - to read it from stdin.")],
    scanner: ScannerOption = None,
    stage: Annotated[
        str, typer.Option(help="The stage to scan at: input (a prompt) or output (an answer).")
    ] = "input",
    as_json: JsonOption = False,
) -> None:
    """Scan one text and print every scanner's verdict (default scanners: injection, pii)."""
    from rich.markup import escape

    from keel.errors import KeelError
    from keel.llm.guardrails.api import scan

    if text == "-":
        text = sys.stdin.read()
    try:
        verdicts = scan(text, [_spec(s) for s in scanner] if scanner else None, stage=stage)
    except KeelError as exc:
        raise _usage_error(exc) from None
    if as_json:
        print_json([verdict.to_dict() for verdict in verdicts])
        return
    for verdict in verdicts:
        mark = "[bold red]tripped[/bold red]" if verdict.tripped else "[green]pass[/green]"
        console.print(
            f"[bold]{escape(verdict.scanner)}[/bold]: {mark} ({verdict.action}), score "
            f"{verdict.score:.3f}, {verdict.latency_ms:.2f} ms: {escape(verdict.reason)}"
        )


@guardrails_app.command("eval")
def eval_command(
    dataset: Annotated[
        str,
        typer.Argument(
            help='A labelled JSONL file ({"text": ..., "label": 1 or 0} a line) or a '
            "datasets:/NAME@VERSION URI."
        ),
    ],
    scanner: ScannerOption = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Count a text as flagged when its score is at or over this (default: each "
            "scanner's own threshold).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="Only the examples whose 'split' is this (e.g. test).", show_default=False
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write the HTML report (threshold trade-off) here.",
            show_default=False,
        ),
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
    """Score scanners on a labelled set: precision, recall, FPR, F1, latency p50/p99.

    The label 1 means the scanner should trip. Default scanner: injection.
    """
    from keel.errors import KeelError
    from keel.llm.guardrails.evaluate import evaluate

    try:
        specs = [_spec(s) for s in scanner] if scanner else ["injection"]
        with progress_bar("scanning", "texts", enabled=progress) as bar:
            result = evaluate(dataset, specs, threshold=threshold, split=split, progress=bar)
        if report is not None:
            from keel.llm.guardrails.report import write_report

            write_report(result, report)
    except KeelError as exc:
        raise _usage_error(exc) from None
    if as_json:
        print_json(result.to_dict())
        return
    _print_eval(result, report)


def _print_eval(result: GuardrailEval, report: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    split = f" (split {escape(result.split)})" if result.split else ""
    thresholds = ", ".join(
        f"{escape(score.scanner)} at {fmt_value(score.threshold)}" for score in result.scanners
    )
    console.print(
        f"{escape(result.dataset)}{split}: {result.examples:,} examples, "
        f"{result.positives:,} positive (label 1), {result.negatives:,} negative; "
        f"thresholds: {thresholds}"
    )
    # F1 and the sweep are in --json and the report; this table fits 80 columns
    table = Table(box=None, pad_edge=False)
    table.add_column("scanner", no_wrap=True)
    for column in ("precision", "recall", "FPR", "TP/FP/TN/FN", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right", no_wrap=True)
    for score in result.scanners:
        table.add_row(
            escape(score.scanner),
            *(
                "—" if value is None else f"{value:.3f}"
                for value in (score.precision, score.recall, score.fpr)
            ),
            f"{score.tp}/{score.fp}/{score.tn}/{score.fn}",
            f"{score.latency_p50_ms:.2f}",
            f"{score.latency_p99_ms:.2f}",
        )
    console.print(table)
    if report is not None:
        console.print(f"report: {report}")


@guardrails_app.command("train")
def train_command(
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            "--encoder",
            "-e",
            help="Fit this encoder, repeatable: static, contextual (default: both).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="The labelled set (default: the one Keel ships).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the weights (default: the packaged file, replaced).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-derive the injection classifier's weights from the labelled set (deterministic).

    Fits logistic regression on all-MiniLM-L6-v2 embeddings of the training
    split, and the small stacked model that combines it with the rules; the
    contextual encoder runs the transformer over every example (a minute or so
    on a CPU). Writes JSON numbers only.
    """
    from rich.markup import escape

    from keel.errors import KeelError
    from keel.llm.guardrails.injection_model import ENCODERS, WEIGHTS_PATH, train, write_weights

    try:
        document = train(
            data,
            encoders=tuple(encoder) if encoder else ENCODERS,
            progress=lambda line: err.print(escape(line), highlight=False),
        )
        written = write_weights(document, output or WEIGHTS_PATH)
    except KeelError as exc:
        raise _usage_error(exc) from None
    summary = {
        "weights": str(written),
        "encoders": sorted(document["encoders"]),
        "train_examples": document["data"]["train_examples"],
        "data_sha256": document["data"]["sha256"],
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"Wrote {escape(str(written))}: encoders {', '.join(summary['encoders'])}, "
        f"{summary['train_examples']} training examples"
    )
