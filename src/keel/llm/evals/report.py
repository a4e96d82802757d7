"""The eval report: one self-contained HTML page (no script, no network) of an evaluation.

It shows the verdict and each gate, each scorer's mean and pass rate for the
candidate and the compared version with the paired difference, its interval
and sign-test p-value, the calls' failures, latency, tokens and cost, and
every case: its variables, what was expected, each version's answer and
scores, and any error. Every value from a case or an answer is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.llm.evals.result import EvalResult

__all__ = ["render_report"]

#: Cases shown in the page; the run's ``eval/cases.parquet`` holds them all.
MAX_CASES = 2000
_LONG = 400

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d2939;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #eaecf0}
table{border-collapse:collapse;width:100%;font-size:.85rem}
td,th{border-bottom:1px solid #eaecf0;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#1a7f37;font-weight:600}.fail{color:#b42318;font-weight:600}.muted{color:#667085}
.verdict{font-size:1.2rem;padding:.5rem .8rem;border-radius:6px;display:inline-block}
.ok{background:#ecfdf3}.bad{background:#fef3f2}
code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}
pre{white-space:pre-wrap;margin:0;font-family:ui-monospace,monospace;font-size:.8rem}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="muted">—</span>'
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _esc(value)


def _text(value: Any) -> str:
    """A cell of free text: escaped, long ones folded under their start."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="muted">—</span>'
    text = str(value)
    if len(text) <= _LONG:
        return f"<pre>{_esc(text)}</pre>"
    return f"<details><summary><pre>{_esc(text[:_LONG])}…</pre></summary><pre>{_esc(text)}</pre></details>"


def _gates(result: EvalResult) -> str:
    if not result.gates:
        return '<p class="muted">No gates were set: this eval measures only.</p>'
    rows = "".join(
        f'<tr><td class="{"pass" if g.passed else "fail"}">{"pass" if g.passed else "FAIL"}</td>'
        f"<td><code>{_esc(g.name)}</code></td><td>{_esc(g.detail)}</td></tr>"
        for g in result.gates
    )
    return f"<table><tr><th></th><th>gate</th><th>measured</th></tr>{rows}</table>"


def _scorers(result: EvalResult) -> str:
    m = result.metrics
    compared = result.against is not None
    head = "<tr><th>scorer</th><th>threshold</th><th>mean</th><th>pass rate</th><th>undecided</th>"
    if compared:
        head += (
            "<th>against: mean</th><th>against: pass rate</th><th>difference</th>"
            "<th>95% interval</th><th>sign test p</th><th>wins / losses / ties</th>"
        )
    rows = []
    for scorer in result.scorers:
        name = scorer["name"]
        row = (
            f"<tr><td><code>{_esc(scorer['spec'])}</code></td>"
            f'<td class="num">{_num(scorer["threshold"])}</td>'
            f'<td class="num">{_num(m.get(name))}</td>'
            f'<td class="num">{_num(m.get(f"{name}.pass_rate"))}</td>'
            f'<td class="num">{_num(m.get(f"{name}.failed"))}</td>'
        )
        diff = result.diffs.get(name)
        if compared and diff is not None:
            row += (
                f'<td class="num">{_num(m.get(f"against.{name}"))}</td>'
                f'<td class="num">{_num(m.get(f"against.{name}.pass_rate"))}</td>'
                f'<td class="num">{"" if math.isnan(diff.mean) else f"{diff.mean:+.4g}"}</td>'
                f'<td class="num">[{_num(diff.ci_low)}, {_num(diff.ci_high)}]</td>'
                f'<td class="num">{_num(diff.p_value, 3)}</td>'
                f'<td class="num">{diff.wins} / {diff.losses} / {diff.ties}</td>'
            )
        rows.append(row + "</tr>")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _calls(result: EvalResult) -> str:
    m = result.metrics
    keys = [
        ("cases", "cases"),
        ("failures", "failed calls"),
        ("pass_rate", "pass rate (every scorer)"),
        ("latency_p50_ms", "latency p50 (ms)"),
        ("latency_p95_ms", "latency p95 (ms)"),
        ("tokens", "tokens"),
        ("cost_usd", "cost (USD)"),
    ]
    compared = result.against is not None
    head = "<tr><th></th><th>candidate</th>" + ("<th>against</th>" if compared else "") + "</tr>"
    rows = "".join(
        f'<tr><td>{label}</td><td class="num">{_num(m.get(key), 6)}</td>'
        + (f'<td class="num">{_num(m.get(f"against.{key}"), 6)}</td>' if compared else "")
        + "</tr>"
        for key, label in keys
    )
    return f"<table>{head}{rows}</table>"


def _cases(result: EvalResult) -> str:
    frame = result.cases
    names = [s["name"] for s in result.scorers]
    compared = result.against is not None
    head = "<tr><th>#</th><th>vars</th><th>expected / reference</th><th>answer</th>"
    head += "".join(f"<th>{_esc(n)}</th>" for n in names)
    if compared:
        head += "<th>against: answer</th>" + "".join(f"<th>against: {_esc(n)}</th>" for n in names)
    head += "</tr>"
    rows = []
    for row in frame.head(MAX_CASES).to_dict(orient="records"):
        expected = row.get("reference") or row.get("expected")

        def answer(prefix: str, row: dict[str, Any] = row) -> str:
            error = row.get(f"{prefix}error")
            if isinstance(error, str):
                return f'<td class="fail">{_text(error)}</td>'
            return f"<td>{_text(row.get(f'{prefix}output'))}</td>"

        def scores(prefix: str, row: dict[str, Any] = row) -> str:
            cells = []
            for scorer in result.scorers:
                value = row.get(f"{prefix}{scorer['name']}")
                problem = row.get(f"{prefix}{scorer['name']}.error")
                if isinstance(problem, str):
                    cells.append(f'<td class="fail" title="{_esc(problem)}">failed</td>')
                    continue
                good = value is not None and not math.isnan(value) and value >= scorer["threshold"]
                cells.append(f'<td class="num {"pass" if good else "fail"}">{_num(value, 3)}</td>')
            return "".join(cells)

        cells = (
            f'<tr><td class="num">{row["case"]}</td><td>{_text(row["vars"])}</td>'
            f"<td>{_text(expected)}</td>{answer('')}{scores('')}"
        )
        if compared:
            cells += answer("against.") + scores("against.")
        rows.append(cells + "</tr>")
    more = ""
    if len(frame) > MAX_CASES:
        more = (
            f'<p class="muted">The first {MAX_CASES:,} of {len(frame):,} cases; the run\'s '
            "eval/cases.parquet holds them all.</p>"
        )
    return f"<table>{head}{''.join(rows)}</table>{more}"


def render_report(result: EvalResult) -> str:
    """The HTML page of ``result``."""
    verdict = (
        '<span class="verdict ok pass">passed</span>'
        if result.passed
        else '<span class="verdict bad fail">failed</span>'
    )
    against = f" against <code>{_esc(result.against)}</code>" if result.against is not None else ""
    run = f"<p>Tracked as run <code>{_esc(result.run_id)}</code>.</p>" if result.run_id else ""
    notes = "".join(f"<li>{_esc(n)}</li>" for n in result.notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Eval of {_esc(result.prompt)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Eval of <code>{_esc(result.prompt)}</code>{against}</h1>"
        f"<p>On <code>{_esc(result.dataset)}</code>, {len(result.cases):,} cases. {verdict}</p>"
        f"{run}{f'<ul>{notes}</ul>' if notes else ''}"
        f"<h2>Gates</h2>{_gates(result)}"
        f"<h2>Scorers</h2>{_scorers(result)}"
        f"<h2>Calls</h2>{_calls(result)}"
        f"<h2>Cases</h2>{_cases(result)}"
        "</body></html>"
    )
