"""The guardrail evaluation as one self-contained HTML page that opens offline.

The page shows the labelled set, the accuracy table (per scanner: the
threshold, precision, recall, false-positive rate, F1, the confusion counts
and latency p50/p99 per message), the threshold trade-off of each scanner
(recall, false-positive rate and precision against the threshold, the
threshold in force marked) and, when the set names families, the share of
each family each scanner flagged. Like the drift report it carries plotly's
JavaScript inline from the installed ``plotly`` package
(:func:`keel.monitoring.report.plotly_js`), so it needs no network. Every
value from the set is HTML-escaped; no example text is shown.
"""

from __future__ import annotations

import html
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.errors import StorageError
from keel.llm.guardrails.evaluate import GuardrailEval, ScannerScore

__all__ = ["render_report", "write_report"]

_RECALL_COLOR = "#1a7f37"
_FPR_COLOR = "#cf222e"
_PRECISION_COLOR = "#4c78a8"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 10px} h3{font-size:15px;margin:0}
.meta{color:#57606a;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #d0d7de;padding:6px 8px;text-align:left} th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:12px 0}
.card p{margin:6px 0;font-size:13px;color:#57606a} .chart{height:340px}
"""


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _accuracy(result: GuardrailEval) -> str:
    head = (
        "<tr><th>scanner</th><th>threshold</th><th>precision</th><th>recall</th><th>FPR</th>"
        "<th>F1</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th><th>p50 ms</th>"
        "<th>p99 ms</th></tr>"
    )
    rows = "".join(
        f"<tr><td><code>{html.escape(s.scanner)}</code></td>"
        f"<td class='num'>{_num(s.threshold, 2)}</td><td class='num'>{_num(s.precision)}</td>"
        f"<td class='num'>{_num(s.recall)}</td><td class='num'>{_num(s.fpr)}</td>"
        f"<td class='num'>{_num(s.f1)}</td><td class='num'>{s.tp}</td>"
        f"<td class='num'>{s.fp}</td><td class='num'>{s.tn}</td><td class='num'>{s.fn}</td>"
        f"<td class='num'>{_num(s.latency_p50_ms)}</td><td class='num'>{_num(s.latency_p99_ms)}</td>"
        "</tr>"
        for s in result.scanners
    )
    return f"<table id='accuracy'>{head}{rows}</table>"


def _figure(score: ScannerScore) -> dict[str, Any]:
    """Recall, FPR and precision against the threshold, with the threshold in force marked."""
    x = [point["threshold"] for point in score.curve]

    def line(key: str, name: str, color: str, dash: str = "solid") -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": x,
            "y": [point[key] for point in score.curve],
            "line": {"color": color, "width": 2, "dash": dash},
            "hovertemplate": f"threshold %{{x:.2f}}<br>{name} %{{y:.3f}}<extra></extra>",
        }

    layout: dict[str, Any] = {
        "margin": {"l": 50, "r": 20, "t": 10, "b": 45},
        "xaxis": {"title": {"text": "threshold"}, "range": [0, 1]},
        "yaxis": {"title": {"text": "rate"}, "range": [0, 1.02]},
        "legend": {"orientation": "h", "y": -0.2},
        "plot_bgcolor": "#fff",
    }
    if score.threshold is not None:
        layout["shapes"] = [
            {
                "type": "line",
                "x0": score.threshold,
                "x1": score.threshold,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#57606a", "dash": "dot", "width": 1},
            }
        ]
    return {
        "data": [
            line("recall", "recall", _RECALL_COLOR),
            line("fpr", "false-positive rate", _FPR_COLOR),
            line("precision", "precision", _PRECISION_COLOR, "dash"),
        ],
        "layout": layout,
    }


def _families(result: GuardrailEval) -> str:
    names = sorted({family for s in result.scanners for family in s.families})
    if not names:
        return ""
    first = result.scanners[0].families
    head = "<tr><th>family</th><th>label</th><th>examples</th>" + "".join(
        f"<th>{html.escape(s.scanner)} flagged</th>" for s in result.scanners
    )
    rows = []
    for family in names:
        info = first.get(family, {})
        label = info.get("label")
        cells = "".join(
            f"<td class='num'>{_num(s.families.get(family, {}).get('flagged'))}</td>"
            for s in result.scanners
        )
        rows.append(
            f"<tr><td>{html.escape(family)}</td><td>{'—' if label is None else label}</td>"
            f"<td class='num'>{info.get('examples', 0)}</td>{cells}</tr>"
        )
    return (
        "<h2>By family</h2><p class='meta'>The share of each family flagged: for label 1 "
        "that is the family's recall, for label 0 its false-positive rate.</p>"
        f"<table id='families'>{head}</tr>{''.join(rows)}</table>"
    )


def render_report(result: GuardrailEval, title: str | None = None) -> str:
    """The page as a string (plotly.js included).

    Raises:
        InvalidInput: plotly is not installed.
    """
    from keel.monitoring.report import plotly_js

    title = title or "Guardrail evaluation"
    split = f" (split {html.escape(result.split)})" if result.split else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{plotly_js()}</script></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{html.escape(result.dataset)}{split}: {result.examples:,} examples, "
        f"{result.positives:,} that should trip (label 1) and {result.negatives:,} that should "
        f"pass (label 0) · generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Accuracy</h2>",
        _accuracy(result),
        "<p class='meta'>Label 1 is positive. Precision TP/(TP+FP), recall TP/(TP+FN), "
        "FPR FP/(FP+TN); — where a denominator is 0. Latency per message, one at a time, "
        "after a warm-up scan.</p>",
        "<h2>Threshold trade-off</h2>",
    ]
    figures = []
    for index, score in enumerate(result.scanners):
        figures.append(_figure(score))
        at = (
            ""
            if score.threshold is None
            else f" · the dotted line is the threshold {score.threshold:.2f}"
        )
        parts.append(
            f"<div class='card'><h3>{html.escape(score.scanner)}</h3><p>recall, false-positive "
            f"rate and precision as the threshold moves{at}</p>"
            f"<div class='chart' id='chart-{index}'></div></div>"
        )
    parts.append(_families(result))
    # JSON inside <script>: "</" would end the element early, so escape it.
    payload = json.dumps(figures, allow_nan=False).replace("</", "<\\/")
    parts.append(
        "<script>const FIGURES = " + payload + ";\n"
        "FIGURES.forEach(function (f, i) {\n"
        "  Plotly.newPlot('chart-' + i, f.data, f.layout, {displayModeBar: false, responsive: true});\n"
        "});</script></main></body></html>"
    )
    return "".join(parts)


def write_report(
    result: GuardrailEval, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write the page to ``path`` (atomically: a temporary file renamed into place).

    Raises:
        StorageError: the file cannot be written.
        InvalidInput: plotly is not installed.
    """
    target = Path(path)
    text = render_report(result, title)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write the report to {target}: {exc}") from exc
    return target
