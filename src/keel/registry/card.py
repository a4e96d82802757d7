"""Model cards: what a version is, where it came from, how it was checked, what it is for.

The card is assembled from what Keel recorded, never typed by hand: lineage
(run, params, metrics, code commit, environment, package and signature), the
latest recorded check, approvals and aliases. Every read goes through the
client's parts and its artifact store, so a card reads the same locally and
through ``keel server``. *Intended use* and
*Limitations* come from the version's description, written as sections::

    Churn propensity for monthly plans.

    ## Intended use
    Ranking accounts for retention offers.

    ## Limitations
    Not calibrated for annual plans.
"""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["build_card", "parse_description", "render_html", "render_markdown"]

_SECTION = re.compile(r"^\s*(?:#+\s*)?(intended use|limitations)\s*:?\s*(.*)$", re.IGNORECASE)


def parse_description(text: str | None) -> dict[str, str]:
    """Split a description into ``summary``, ``intended_use`` and ``limitations``."""
    parts: dict[str, list[str]] = {"summary": [], "intended_use": [], "limitations": []}
    current = "summary"
    for line in (text or "").splitlines():
        match = _SECTION.match(line)
        if match:
            current = "intended_use" if match.group(1).lower() == "intended use" else "limitations"
            if match.group(2).strip():
                parts[current].append(match.group(2).strip())
            continue
        parts[current].append(line)
    return {k: "\n".join(v).strip() for k, v in parts.items()}


def _package_metadata(client: Client, mv: Any) -> dict[str, Any] | None:
    if not mv.manifest_digest:
        return None
    for entry in client.artifacts.read_manifest(mv.manifest_digest):
        if entry.path == "keel-model.json":
            try:
                return dict(json.loads(client.artifacts.get_bytes(entry.digest)))
            except (ValueError, TypeError):
                return None
    return None


def _datasets(client: Client, name: str, version: int) -> list[str]:
    """Dataset versions upstream of a model version: what its run read, through pipeline steps."""
    from keel.pipelines.lineage import lineage_part

    graph = lineage_part(client.transport).upstream(f"models:/{name}/{version}")
    return sorted(graph.uris("dataset"))


def build_card(client: Client, name: str, version: int) -> dict[str, Any]:
    """Everything the card shows, as one JSON-able dict."""
    from keel.checks.runner import latest_check

    mv = client.get_model_version(name, version)
    card: dict[str, Any] = {
        "model": mv.to_dict(),
        "description": parse_description(mv.description),
        "approvals": [a.to_dict() for a in client.list_approvals(name, version)],
        "alias_history": [
            h.to_dict()
            for h in client.alias_history(name)
            if h.to_version == mv.version or h.from_version == mv.version
        ],
        "check": latest_check(client.registry, name, mv.version),
        "run": None,
        "environment": None,
        "package": None,
        "datasets": [],
    }
    if mv.run_id:
        run = client.get_run(mv.run_id)
        card["run"] = run.to_dict()
        env = client.get_environment(mv.run_id)
        distributions = env.pop("distributions", [])
        env["distribution_count"] = len(distributions)
        card["environment"] = env
        card["datasets"] = _datasets(client, mv.name, mv.version)
    metadata = _package_metadata(client, mv)
    if metadata is not None:
        card["package"] = {
            k: metadata.get(k)
            for k in ("flavor", "signature", "requirements", "python_version", "keel_version")
        }
    return card


def _kv_rows(mapping: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), "—" if v is None else str(v)) for k, v in (mapping or {}).items()]


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (for the terminal and for pull requests)."""
    m = card["model"]
    d = card["description"]
    lines = [f"# {m['name']} version {m['version']}", ""]
    if d["summary"]:
        lines += [d["summary"], ""]
    lines += [
        "## Intended use",
        d["intended_use"] or "_Not stated: add an 'Intended use' section to the description._",
        "",
    ]
    lines += [
        "## Limitations",
        d["limitations"] or "_Not stated: add a 'Limitations' section to the description._",
        "",
    ]
    lines += [
        "## Version",
        f"- URI: `{m['uri']}`",
        f"- source: `{m['source']}`",
        f"- registered by {m['created_by']} at {m['created_at']}",
    ]
    lines += [
        f"- aliases: {', '.join(m['aliases']) or 'none'}",
        f"- package manifest: `{m['manifest_digest']}`",
        "",
    ]
    run = card["run"]
    if run:
        lines += [
            "## Lineage",
            f"- run `{run['run_id']}` ({run['name']}, {run['status']}), experiment {run['experiment_id']}",
        ]
        env = card["environment"] or {}
        commit = env.get("git_commit")
        if commit:
            dirty = (
                f" + uncommitted changes `{env['git_diff_digest'][:16]}`"
                if env.get("git_dirty")
                else ""
            )
            lines.append(f"- code: commit `{commit}`{dirty}")
        lines.append(
            f"- environment: Python {env.get('python_version')} on {env.get('platform')}, "
            f"{env.get('distribution_count')} packages (digest `{(env.get('environment_digest') or '')[:16]}`)"
        )
        if env.get("seeds"):
            lines.append(f"- seeds: {env['seeds']}")
        lines.append("- datasets: " + (", ".join(card["datasets"]) or "none recorded with the run"))
        lines += [
            "",
            "| param | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in _kv_rows(run["params"])),
        ]
        lines += [
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in _kv_rows(run["metrics"])),
        ]
        lines.append("")
    package = card["package"]
    if package:
        lines += ["## Package", f"- flavor: {package.get('flavor')}"]
        if package.get("requirements"):
            lines.append(f"- requirements: {', '.join(package['requirements'])}")
        if package.get("signature"):
            lines.append(f"- signature: `{json.dumps(package['signature'])}`")
        lines.append("")
    check = card["check"]
    lines.append("## Checks")
    if check is None:
        lines += ["_No check recorded. Run `keel models check` to add one._", ""]
    else:
        verdict = "PASSED" if check["passed"] else "FAILED"
        against = check.get("against")
        versus = f" against {against['ref']} (version {against['version']})" if against else ""
        lines += [
            f"**{verdict}** on {check['n_rows']} rows{versus}, by {check.get('checked_by')}",
            "",
        ]
        lines += [
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in _kv_rows(check["metrics"])),
        ]
        if check["gates"]:
            lines += ["", "| gate | verdict | detail |", "|---|---|---|"]
            lines += [
                f"| {g['name']} | {'pass' if g['passed'] else 'FAIL'} | {g['detail']} |"
                for g in check["gates"]
            ]
        for problem in check.get("data_problems", []):
            lines.append(f"- data problem: {problem}")
        lines.append("")
    if card["approvals"]:
        lines.append("## Approvals")
        lines += [
            f"- {a['approver']} for `{a['alias']}` at {a['time']}: {a['comment'] or ''}"
            for a in card["approvals"]
        ]
        lines.append("")
    return "\n".join(lines)


def render_html(card: dict[str, Any]) -> str:
    """A self-contained HTML page of the card (no scripts, no external assets)."""
    body = []
    for line in render_markdown(card).splitlines():
        text = html.escape(line)
        text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
        text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
        text = re.sub(r"_([^_]+)_$", r"<em>\1</em>", text)
        if line.startswith("# "):
            body.append(f"<h1>{text[2:]}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{text[3:]}</h2>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [c.strip() for c in text.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        elif line.startswith("- "):
            body.append(f"<li>{text[2:]}</li>")
        elif line.strip():
            body.append(f"<p>{text}</p>")
    joined = "\n".join(body)
    joined = re.sub(r"((?:<tr>.*</tr>\n?)+)", r"<table>\n\1</table>\n", joined)
    joined = re.sub(r"((?:<li>.*</li>\n?)+)", r"<ul>\n\1</ul>\n", joined)
    title = html.escape(f"{card['model']['name']} v{card['model']['version']} — model card")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0}td{border:1px solid #ccc;padding:.25rem .6rem}"
        "tr:first-child td{font-weight:600;background:#f4f4f4}code{background:#f4f4f4;padding:0 .2rem}"
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head>\n<body>\n{joined}\n</body></html>\n"
    )
