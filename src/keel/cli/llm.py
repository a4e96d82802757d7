"""``keel llm …``: the LLM gateway's price table and budgets from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.output import console, fmt_time, print_json

llm_app = typer.Typer(help="The LLM gateway's price table and budgets.", no_args_is_help=True)
prices_app = typer.Typer(
    help="Prices per upstream model and token type, with start times; rows are only added.",
    no_args_is_help=True,
)
budgets_app = typer.Typer(help="Budgets of a gateway config and their spend.", no_args_is_help=True)
llm_app.add_typer(prices_app, name="prices")
llm_app.add_typer(budgets_app, name="budgets")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.6g}"


@prices_app.command("set")
def set_price_command(
    model: Annotated[str, typer.Argument(help="The upstream model's name (a target's model).")],
    input_per_million: Annotated[
        float, typer.Option("--input", help="USD per million input tokens.")
    ],
    output_per_million: Annotated[
        float, typer.Option("--output", help="USD per million output tokens.")
    ],
    starts_at: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="When it applies from: ISO-8601 (2026-01-01T00:00:00Z) or epoch ms; default "
            "now. An earlier time is allowed; costs already stored are never rewritten.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a price row for MODEL (audited); earlier rows keep pricing their own time."""
    from keel.client import Client
    from keel.llm.prices import Prices, iso_ms

    start: str | int | None = starts_at
    if starts_at is not None and starts_at.strip().isdigit():
        start = int(starts_at)
    price = Prices(Client()).set(
        model,
        input_per_million=input_per_million,
        output_per_million=output_per_million,
        starts_at=start,
    )
    if as_json:
        print_json(price.to_dict())
        return
    console.print(
        f"{price.model}: {_usd(price.input_per_million)} input, "
        f"{_usd(price.output_per_million)} output per million tokens from {iso_ms(price.starts_at)}"
    )


@prices_app.command("list")
def list_prices_command(
    model: Annotated[str | None, typer.Option("--model", help="One model's rows.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every price row, by model and start time."""
    from rich.table import Table

    from keel.client import Client
    from keel.llm.prices import Prices

    prices = Prices(Client()).list(model)
    if as_json:
        print_json([p.to_dict() for p in prices])
        return
    if not prices:
        console.print(
            "No prices yet. Add one with keel llm prices set MODEL --input USD --output USD."
        )
        return
    table = Table("model", "input $/1M", "output $/1M", "from", "added", "by")
    for p in prices:
        table.add_row(
            p.model,
            f"{p.input_per_million:.6g}",
            f"{p.output_per_million:.6g}",
            fmt_time(p.starts_at),
            fmt_time(p.created_at),
            p.created_by,
        )
    console.print(table)


@budgets_app.command("status")
def budgets_status_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's config file.")],
    as_json: JsonOption = False,
) -> None:
    """Each budget's spend in its current period against its limits, as stored."""
    from rich.table import Table

    from keel.client import Client
    from keel.llm.budgets import budget_status, read_budgets
    from keel.llm.spend import Spend

    rules, _ = read_budgets(config)
    statuses = budget_status(rules, Spend(Client()))
    if as_json:
        print_json([s.to_dict() for s in statuses])
        return
    if not statuses:
        console.print("No budget has spent anything in its current period.")
        return
    table = Table("budget", "subject", "period", "tokens", "USD", "used", "alert", "resets")
    for s in statuses:
        tokens = f"{s.tokens:,}" + ("" if s.max_tokens is None else f" / {s.max_tokens:,}")
        usd = _usd(s.usd) + ("" if s.max_usd is None else f" / {_usd(s.max_usd)}")
        alert = "—" if s.alert_at is None else f"{s.alert_at:.0%}" + (" fired" if s.alerted else "")
        table.add_row(
            s.budget,
            s.subject,
            s.period,
            tokens,
            usd,
            f"{s.share:.0%}",
            alert,
            "never" if s.resets_at is None else fmt_time(s.resets_at),
        )
    console.print(table)
