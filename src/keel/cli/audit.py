"""``keel audit …``: read and verify the audit chain."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.output import console, err, fmt_time, print_json

app = typer.Typer(help="Read and verify the tamper-evident audit trail.", no_args_is_help=True)


@app.command("list")
def list_command(
    object_ref: Annotated[
        str | None,
        typer.Option(
            "--object",
            help="Only this object, as TYPE:ID (e.g. alias:churn@champion, run:<id>, "
            "model_version:churn/3); an ID ending in * matches a prefix.",
        ),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only entries by this user.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many, newest first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List audit entries, newest first."""
    from rich.table import Table

    from keel.config import get_settings
    from keel.governance import audit
    from keel.store import get_store

    object_type, object_id = audit.parse_object_ref(object_ref) if object_ref else (None, None)
    entries = audit.list_entries(
        get_store(get_settings()),
        object_type=object_type,
        object_id=object_id,
        actor=actor,
        limit=limit,
    )
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        console.print("No audit entries match.")
        return
    table = Table("seq", "time", "actor", "action", "object", "after")
    for e in entries:
        table.add_row(
            str(e.seq),
            fmt_time(e.at),
            e.actor,
            e.action,
            f"{e.object_type}:{e.object_id}",
            "" if e.after is None else str(e.after)[:60],
        )
    console.print(table)


@app.command("verify")
def verify_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Check the hash chain and the newest checkpoint; exit 1 and say what broke."""
    from keel.config import get_settings
    from keel.governance import audit
    from keel.store import get_store

    result = audit.verify(get_store(get_settings()))
    if as_json:
        print_json(result)
    elif result.ok:
        console.print(f"[green]ok[/green]: {result.checked} entries, chain intact")
        console.print(f"compared with: {result.anchor}")
    elif result.first_bad_seq is None:
        err.print(f"[bold red]broken[/bold red]: {result.reason}")
    else:
        err.print(f"[bold red]broken[/bold red] at entry {result.first_bad_seq}: {result.reason}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Verify the chain, then anchor its newest entry in the artifact store now.

    Checkpoints are written by themselves at protected actions and every 100
    entries; run this after setting KEEL_AUDIT_KEY, or on a schedule.
    """
    from keel.config import get_settings
    from keel.governance import audit
    from keel.store import get_store

    settings = get_settings()
    written = audit.checkpoint(get_store(settings), settings=settings)
    if as_json:
        print_json(written.to_dict())
        return
    signed = "signed" if written.signature is not None else "unsigned: KEEL_AUDIT_KEY is not set"
    console.print(f"checkpoint of entry {written.seq} written ({signed})")
