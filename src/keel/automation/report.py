"""The loop report: one self-contained HTML page of what the automation did and why.

It shows the policy's decisions as a timeline (every event with its reason),
the lineage of one served prediction back to the data and code that made its
model (prediction → model version → training run → pipeline steps → dataset
versions and code digests), and the drift report of the window that started
a retrain, embedded as it is (it carries its own charts and opens offline).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from keel.automation.events import Event

__all__ = ["render_loop_report", "write_loop_report"]

_KIND_COLOURS = {
    "triggered": "#8a6d00",
    "gate_passed": "#1a7f37",
    "promoted": "#1a7f37",
    "gate_failed": "#b42318",
    "rolled_back": "#b42318",
    "retrain_failed": "#b42318",
    "approval_requested": "#6941c6",
    "canary_started": "#175cd3",
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2939;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #eaecf0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{border-bottom:1px solid #eaecf0;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f9fafb}.kind{font-weight:600;white-space:nowrap}
code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}
.node{margin:.2rem 0}.muted{color:#667085}
iframe{width:100%;height:900px;border:1px solid #eaecf0}
"""


def _time(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _timeline(events: list[Event]) -> str:
    rows = []
    for e in events:
        colour = _KIND_COLOURS.get(e.kind, "#344054")
        target = e.model + ("" if e.version is None else f"/{e.version}")
        rows.append(
            f"<tr><td>{_time(e.at)}</td><td>{html.escape(e.policy)}</td>"
            f'<td class="kind" style="color:{colour}">{html.escape(e.kind)}</td>'
            f"<td>{html.escape(target)}</td><td>{html.escape(e.reason)}</td></tr>"
        )
    return (
        "<table><tr><th>time (UTC)</th><th>policy</th><th>event</th><th>model</th>"
        "<th>reason</th></tr>" + "".join(rows) + "</table>"
    )


def _lineage(prediction: dict[str, Any] | None, graph: Any) -> str:
    if graph is None:
        return '<p class="muted">No lineage recorded.</p>'
    parts = []
    if prediction is not None:
        parts.append(
            "<p>Prediction <code>{rid}</code> at {at} was answered by "
            "<code>{model}</code> (route {route}).</p>".format(
                rid=html.escape(str(prediction["request_id"])),
                at=html.escape(str(prediction["time"])),
                model=html.escape(graph.root),
                route=html.escape(str(prediction["route"])),
            )
        )
    by_depth: dict[int, list[Any]] = {}
    for node in graph.nodes.values():
        by_depth.setdefault(node.depth, []).append(node)
    for depth in sorted(by_depth):
        for node in sorted(by_depth[depth], key=lambda n: n.uri):
            details = ", ".join(
                f"{k}={v}"
                for k, v in node.attributes.items()
                if isinstance(v, str | int | float) and k not in ("uri", "kind", "depth")
            )
            parts.append(
                f'<div class="node" style="margin-left:{depth * 1.5}rem">'
                f"{'↳ ' if depth else ''}<b>{html.escape(node.kind)}</b> "
                f"<code>{html.escape(node.uri)}</code> "
                f'<span class="muted">{html.escape(details[:200])}</span></div>'
            )
    edges = "".join(
        f"<tr><td><code>{html.escape(e.src)}</code></td><td>{html.escape(e.relation)}</td>"
        f"<td><code>{html.escape(e.dst)}</code></td></tr>"
        for e in graph.edges
    )
    parts.append(
        "<details><summary>every edge</summary><table><tr><th>from</th><th>relation</th>"
        f"<th>to</th></tr>{edges}</table></details>"
    )
    return "".join(parts)


def render_loop_report(
    *,
    title: str,
    summary: list[tuple[str, str]],
    events: list[Event],
    lineage: Any = None,
    prediction: dict[str, Any] | None = None,
    drift_html: str | None = None,
) -> str:
    """The page as a string (see :func:`write_loop_report`)."""
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary
    )
    drift = (
        '<p class="muted">No drift report.</p>'
        if drift_html is None
        else f'<iframe title="drift report" srcdoc="{html.escape(drift_html, quote=True)}"></iframe>'
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{facts}</table>"
        f"<h2>Timeline: every decision and its reason</h2>{_timeline(events)}"
        f"<h2>Lineage: from a prediction back to the data</h2>{_lineage(prediction, lineage)}"
        f"<h2>Drift that started the retrain</h2>{drift}"
        "</body></html>"
    )


def write_loop_report(path: str | os.PathLike[str], **parts: Any) -> Path:
    """Write :func:`render_loop_report` to ``path`` atomically; returns the path."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(render_loop_report(**parts), encoding="utf-8")
    os.replace(tmp, target)
    return target
