"""``keel prompts …``: the prompt registry from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.output import (
    console,
    fmt_time,
    print_alias_history,
    print_alias_move,
    print_json,
    print_registered,
)

app = typer.Typer(
    help="Register prompts, render them, move and approve their aliases, compare versions.",
    no_args_is_help=True,
)
alias_app = typer.Typer(
    help="Move and trace a prompt's aliases (production, …).", no_args_is_help=True
)
app.add_typer(alias_app, name="alias")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[str, typer.Argument(help="Prompt name.")]
UriArg = Annotated[
    str, typer.Argument(help="prompts:/NAME@ALIAS or prompts:/NAME/VERSION of a prompt version.")
]


@app.command("register")
def register_command(
    name: NameArg,
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", help="YAML or JSON: template or messages, model, parameters, …"
        ),
    ],
    description: Annotated[
        str | None, typer.Option(help="What this version changes (overrides the file's).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register the prompt in FILE as NAME's next, immutable version."""
    from keel.client import Client
    from keel.llm.files import read_prompt_file
    from keel.store.sql import now_ms

    arguments = read_prompt_file(file)
    if description is not None:
        arguments["description"] = description
    started = now_ms()
    version = Client().prompts.register(name, **arguments)
    if as_json:
        print_json(version.to_dict())
    elif version.created_at < started:  # the latest version holds this document already
        console.print(f"{version.uri} already holds this prompt; nothing registered")
    else:
        console.print(f"Registered {version.uri} ({version.model})")


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List prompts with their latest version and aliases."""
    from keel.client import Client

    print_registered(
        Client().prompts.list(),
        as_json,
        "No prompts yet. Register one with keel prompts register NAME --file FILE.",
    )


@app.command("versions")
def versions_command(name: NameArg, as_json: JsonOption = False) -> None:
    """List a prompt's versions."""
    from rich.table import Table

    from keel.client import Client

    versions = Client().prompts.versions(name)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table = Table("version", "aliases", "model", "variables", "registered by", "created")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            v.model,
            ", ".join(v.variables),
            v.created_by,
            fmt_time(v.created_at),
        )
    console.print(table)


@app.command("show")
def show_command(uri: UriArg, as_json: JsonOption = False) -> None:
    """Show one version: its template, model, parameters, tools and response schema."""
    import json

    from rich.markup import escape

    from keel.client import Client

    version = Client().prompts.load(uri)
    if as_json:
        print_json(version.to_dict())
        return
    console.print(f"[bold]{version.uri}[/bold]  model {escape(version.model)}")
    console.print(f"  by         {version.created_by} at {fmt_time(version.created_at)}")
    if version.aliases:
        console.print(f"  aliases    {', '.join(version.aliases)}")
    console.print(f"  variables  {', '.join(version.variables) or '(none)'}")
    if version.parameters:
        console.print(f"  parameters {escape(json.dumps(version.parameters))}", soft_wrap=True)
    if version.description:
        console.print(f"  about      {escape(version.description)}")
    if isinstance(version.template, str):
        console.print(escape(version.template), soft_wrap=True)
    else:
        for message in version.template:
            console.print(f"[bold]\\[{message['role']}][/bold]")
            console.print(escape(message["content"]), soft_wrap=True)


@app.command("render")
def render_command(
    uri: UriArg,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="A variable as NAME=VALUE; repeat for each variable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fill in a prompt's variables and print the messages (--json: the request body)."""
    from rich.markup import escape

    from keel.client import Client
    from keel.errors import InvalidInput

    values: dict[str, str] = {}
    for item in var or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--var takes NAME=VALUE, got {item!r}")
        values[key] = value
    rendered = Client().prompts.load(uri).render(**values)
    if as_json:
        print_json(rendered.request())
        return
    if rendered.text is not None:
        console.print(escape(rendered.text), soft_wrap=True)
        return
    for message in rendered.messages or []:
        console.print(f"[bold]\\[{message['role']}][/bold]")
        console.print(escape(message["content"]), soft_wrap=True)


@app.command("diff")
def diff_command(
    name: NameArg,
    a: Annotated[str, typer.Argument(help="A version number or @alias.")],
    b: Annotated[str, typer.Argument(help="Another version number or @alias.")],
) -> None:
    """Show a unified diff of two versions: the templates, then model and parameters."""
    from rich.markup import escape

    from keel.client import Client

    text = Client().prompts.diff(name, a, b)
    if not text:
        console.print(f"{name} {a} and {b} hold the same prompt")
        return
    console.print(escape(text), soft_wrap=True, highlight=False, end="")


@app.command("approve")
def approve_command(
    name: NameArg,
    version: Annotated[int, typer.Argument(help="The version to approve.")],
    alias: Annotated[str, typer.Option("--for", help="The protected alias it may move to.")],
    comment: Annotated[str | None, typer.Option(help="What was reviewed.")] = None,
) -> None:
    """Approve a prompt version for a protected alias, as the current user."""
    from keel.client import Client

    approval = Client().prompts.approve(name, version, alias, comment)
    console.print(f"{approval.approver} approved prompts:/{name}/{version} for {alias}")


@alias_app.command("set")
def alias_set_command(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    version: Annotated[int, typer.Argument(help="Version to point it at.")],
    expected: Annotated[
        int | None,
        typer.Option(help="Only move it if it points at this version now (compare-and-set)."),
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
) -> None:
    """Point a prompt's alias at a version (protected aliases need approvals first)."""
    from keel.client import Client
    from keel.registry import UNSET

    change = Client().prompts.set_alias(
        name, alias, version, expected=UNSET if expected is None else expected, comment=comment
    )
    print_alias_move(name, alias, change)


@alias_app.command("history")
def alias_history_command(
    name: NameArg,
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every move of a prompt's aliases, oldest first."""
    from keel.client import Client

    print_alias_history(Client().prompts.alias_history(name, alias), as_json)
