"""``keel gateway …``: the OpenAI-compatible LLM gateway from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.output import console, print_json

gateway_app = typer.Typer(
    help="Run the LLM gateway (OpenAI-compatible, prompt aliases, traces with cost).",
    no_args_is_help=True,
)
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The gateway config file (gateway.yaml).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@gateway_app.command("start")
def start_command(
    config: ConfigOption,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models."""
    from keel.llm.gateway.config import load_config
    from keel.llm.gateway.server import serve

    checked = load_config(config)
    models = ", ".join(m.name for m in checked.models)
    console.print(
        f"Gateway {checked.name} on http://{host}:{port}/v1 "
        f"({workers} worker{'s' if workers > 1 else ''}): {models}"
    )
    if checked.auth == "tokens":
        console.print("Tokens required (scope 'llm'): Authorization: Bearer <token>")
    else:
        console.print("[yellow]No tokens checked (auth: none): every caller is anonymous[/yellow]")
    serve(config, host=host, port=port, workers=workers)


@gateway_app.command("check")
def check_command(config: ConfigOption, as_json: JsonOption = False) -> None:
    """Check a gateway config and print it with every default filled in."""
    from rich.markup import escape
    from rich.table import Table

    from keel.llm.gateway.config import load_config

    checked = load_config(config)
    if as_json:
        print_json(checked.to_dict())
        return
    console.print(
        f"[bold]{escape(checked.name)}[/bold]: auth {checked.auth}, "
        f"bodies {'stored' if checked.store_bodies else 'not stored'} by default, "
        + (
            f"cache {checked.cache.ttl_s:g} s x {checked.cache.max_entries}"
            if checked.cache
            else "no cache"
        )
    )
    providers = Table("provider", "base url", "key from", "timeout", "retries")
    for p in checked.providers:
        key = "—"
        if p.api_key_env:
            key = f"${p.api_key_env}" + ("" if p.to_dict()["api_key_set"] else " (not set)")
        providers.add_row(
            escape(p.name), escape(p.base_url), escape(key), f"{p.timeout_s:g} s", str(p.retries)
        )
    console.print(providers)
    models = Table("model", "kind", "targets (fallback order)", "bodies", "guardrails")
    for m in checked.models:
        rails = checked.guardrails_for(m, None)
        shown = "—"
        if rails is not None:
            shown = "; ".join(
                f"{stage}: " + ", ".join(f"{s.name}:{s.action}" for s in scanners)
                for stage, scanners in (("in", rails.input), ("out", rails.output))
                if scanners
            )
        models.add_row(
            escape(m.name),
            m.kind,
            escape(", ".join(f"{t.provider}/{t.model}" for t in m.targets)),
            "stored" if m.store_bodies else "not stored",
            escape(shown),
        )
    console.print(models)
    if checked.budgets:
        budgets = Table("budget", "whose", "period", "max usd", "max tokens", "alert at")
        for b in checked.budgets:
            whose = f"team {b.team}" if b.team else f"user {b.user}" if b.user else "each caller"
            budgets.add_row(
                escape(b.name),
                escape(whose),
                b.period,
                "—" if b.max_usd is None else f"{b.max_usd:g}",
                "—" if b.max_tokens is None else str(b.max_tokens),
                "—" if b.alert_at is None else f"{b.alert_at:.0%}",
            )
        console.print(budgets)
