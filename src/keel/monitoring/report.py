"""The drift report as one self-contained HTML file that opens offline.

The page carries plotly's JavaScript inline, read from the installed
``plotly`` package (plotly itself is never imported: the figures are plain
JSON handed to ``Plotly.newPlot``), so it needs no network and no server.
It shows the verdict (never green when a data-quality check failed), the
data-quality findings, a table of every column with what its statistic is
(a p-value, where drift is *below* the threshold, or a distance, where it is
*at or above*) and the threshold in force, and per column the two
distributions overlaid with the method, the statistic and the verdict.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import uuid
from datetime import UTC, datetime
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, StorageError
from keel.monitoring.drift import ColumnDrift, DriftReport

__all__ = ["plotly_js", "render_html", "write_html"]

_REFERENCE_COLOR = "#4c78a8"
_CURRENT_COLOR = "#f58518"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 10px} h3{font-size:15px;margin:0}
.verdict{font-size:17px;padding:12px 16px;border-radius:6px;margin:12px 0}
.drift{background:#ffebe9;border:1px solid #ff8182} .ok{background:#dafbe1;border:1px solid #4ac26b}
.meta{color:#57606a;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #d0d7de;padding:6px 8px;text-align:left} th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.b-drift{background:#cf222e;color:#fff} .b-ok{background:#1a7f37;color:#fff} .b-na{background:#8c959f;color:#fff}
.b-fail{background:#cf222e;color:#fff} .b-warn{background:#bf8700;color:#fff}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:12px 0}
.card p{margin:6px 0;font-size:13px;color:#57606a} .chart{height:300px}
"""


def plotly_js() -> str:
    """plotly.js from the installed ``plotly`` package, without importing it.

    Raises:
        InvalidInput: plotly is not installed.
    """
    spec = importlib_util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / "package_data" / "plotly.min.js"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise InvalidInput(
        "the HTML report embeds plotly.js from the plotly package: pip install 'keel[reports]'"
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value != value:  # NaN
        return "—"
    if value in (float("inf"), float("-inf")):
        return "∞" if value > 0 else "-∞"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _verdict(col: ColumnDrift) -> str:
    if not col.tested:
        return '<span class="badge b-na">not tested</span>'
    if col.drifted:
        return '<span class="badge b-drift">drift</span>'
    return '<span class="badge b-ok">no drift</span>'


def _rule(col: ColumnDrift) -> str:
    if col.statistic_kind == "p-value":
        return f"p-value {_fmt(col.statistic)} {'&lt;' if col.drifted else '≥'} {col.threshold:g}"
    return f"distance {_fmt(col.statistic)} {'≥' if col.drifted else '&lt;'} {col.threshold:g}"


def _figure(col: ColumnDrift) -> dict[str, Any] | None:
    plot = col.plot
    if not plot:
        return None
    layout: dict[str, Any] = {
        "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
        "legend": {"orientation": "h", "y": 1.12},
        "bargap": 0.05,
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
    }
    if plot["kind"] == "numeric":
        edges = plot["edges"]
        centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        widths = [b - a for a, b in itertools.pairwise(edges)]
        data = [
            {
                "type": "bar",
                "name": name,
                "x": centers,
                "y": plot[key],
                "width": widths,
                "marker": {"color": color},
                "opacity": 0.55,
            }
            for name, key, color in (
                ("reference", "reference", _REFERENCE_COLOR),
                ("current", "current", _CURRENT_COLOR),
            )
        ]
        # Plotly reads labels as a little HTML: names and values from data are escaped.
        layout.update(
            barmode="overlay",
            xaxis={"title": {"text": html.escape(col.name)}},
            yaxis={"title": {"text": "density"}},
        )
    else:
        data = [
            {
                "type": "bar",
                "name": name,
                "x": [html.escape(str(c)) for c in plot["categories"]],
                "y": plot[key],
                "marker": {"color": color},
            }
            for name, key, color in (
                ("reference", "reference", _REFERENCE_COLOR),
                ("current", "current", _CURRENT_COLOR),
            )
        ]
        layout.update(
            barmode="group",
            xaxis={"type": "category"},
            yaxis={"title": {"text": "share"}, "tickformat": ".0%"},
        )
    return {"data": data, "layout": layout}


def render_html(report: DriftReport, title: str | None = None) -> str:
    """The report's page as a string (plotly.js included)."""
    title = title or "Data drift report"
    features = report.features
    n_drifted = sum(c.drifted for c in features)
    failed = len(report.failed_checks)
    # A banner is green only when nothing failed: broken data is not a pass.
    verdict_class = "drift" if report.dataset_drift or failed else "ok"
    verdict = (
        f"Dataset drift {'detected' if report.dataset_drift else 'not detected'}: "
        f"{n_drifted} of {len(features)} feature columns drifted ({report.share_drifted:.0%}); "
        f"the threshold is {report.drift_share:.0%}."
    )
    if report.prediction_drift is not None:
        verdict += f" Prediction drift: {'yes' if report.prediction_drift else 'no'}."
    if failed:
        verdict += f" Data quality failed: {failed} check(s) (below)."
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{plotly_js()}</script></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<div class='verdict {verdict_class}' id='verdict'>{html.escape(verdict)}</div>",
        f"<p class='meta'>Reference: {report.reference_rows:,} rows · Current: "
        f"{report.current_rows:,} rows · Generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]
    if report.issues:
        parts.append(
            "<h2>Data quality</h2><table id='issues'><tr><th>severity</th><th>check</th>"
            "<th>column</th><th>finding</th></tr>"
        )
        for issue in report.issues:
            parts.append(
                f"<tr><td><span class='badge b-{issue.severity}'>{issue.severity}</span></td>"
                f"<td>{html.escape(issue.check)}</td><td>{html.escape(issue.column or '')}</td>"
                f"<td>{html.escape(issue.message)}</td></tr>"
            )
        parts.append("</table>")
    ordered = sorted(report.columns.values(), key=lambda c: (not c.drifted, c.role != "feature"))
    parts.append(
        "<h2>Columns</h2><table id='summary'><tr><th>column</th><th>kind</th><th>role</th>"
        "<th>method</th><th>statistic</th><th>value</th><th>drifts when</th><th>verdict</th></tr>"
    )
    for col in ordered:
        parts.append(
            f"<tr><td>{html.escape(col.name)}</td><td>{col.kind}</td><td>{col.role}</td>"
            f"<td>{html.escape(col.method)}</td><td>{col.statistic_kind}</td>"
            f"<td class='num'>{_fmt(col.statistic)}</td>"
            f"<td>{html.escape(col.drift_rule)}</td><td>{_verdict(col)}</td></tr>"
        )
    parts.append("</table>")
    if report.skipped:
        skipped = "; ".join(f"{k}: {v}" for k, v in report.skipped.items())
        parts.append(f"<p class='meta'>Not tested: {html.escape(skipped)}</p>")
    figures: list[dict[str, Any]] = []
    parts.append("<h2>Distributions</h2>")
    for col in ordered:
        figure = _figure(col)
        chart = ""
        if figure is not None:
            chart = f"<div class='chart' id='chart-{len(figures)}'></div>"
            figures.append(figure)
        reason = col.details.get("reason")
        line = html.escape(reason) if reason else f"{html.escape(col.method)}: {_rule(col)}"
        parts.append(
            f"<div class='card'><h3>{html.escape(col.name)} {_verdict(col)}</h3>"
            f"<p>{col.kind} {col.role} · {line} · reference {col.reference_count:,} values, "
            f"current {col.current_count:,}</p>{chart}</div>"
        )
    # JSON inside <script>: "</" would end the element early, so escape it.
    payload = json.dumps(figures, allow_nan=False, default=float).replace("</", "<\\/")
    parts.append(
        "<script>const FIGURES = " + payload + ";\n"
        "FIGURES.forEach(function (f, i) {\n"
        "  Plotly.newPlot('chart-' + i, f.data, f.layout, {displayModeBar: false, responsive: true});\n"
        "});</script></main></body></html>"
    )
    return "".join(parts)


def write_html(
    report: DriftReport, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write the report to ``path`` (atomically: a temporary file renamed into place).

    Raises:
        StorageError: the file cannot be written.
        InvalidInput: plotly is not installed.
    """
    target = Path(path)
    text = render_html(report, title)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write the report to {target}: {exc}") from exc
    return target
