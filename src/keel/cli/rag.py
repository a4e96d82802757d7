"""``keel rag …``: build, query, list and alias RAG indexes from the command line."""

from __future__ import annotations

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

rag_app = typer.Typer(
    help="Build versioned RAG indexes from dataset versions, query them, move their aliases.",
    no_args_is_help=True,
)
alias_app = typer.Typer(
    help="Move and trace an index's aliases (production, …).", no_args_is_help=True
)
rag_app.add_typer(alias_app, name="alias")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[str, typer.Argument(help="Index name.")]
UriArg = Annotated[
    str, typer.Argument(help="rag:/NAME@ALIAS or rag:/NAME/VERSION (or NAME@ALIAS) of an index.")
]
#: What each stage of a build counts, for the progress bar.
_STAGES = {"reading": "reading files", "embedding": "embedding chunks", "indexing": "writing table"}


@rag_app.command("build")
def build_command(
    name: Annotated[str, typer.Option("--name", help="The index's name (made on first build).")],
    source: Annotated[
        str, typer.Option("--source", help="A dataset version: datasets:/docs@3 (or docs@3).")
    ],
    chunker: Annotated[
        str,
        typer.Option(help="tokens:N[,overlap:M], chars:N[,overlap:M] or lines:N[,overlap:M]."),
    ] = "tokens:200,overlap:20",
    embedder: Annotated[str, typer.Option(help="local-minilm or hash-384.")] = "local-minilm",
    backend: Annotated[
        str | None, typer.Option(help="The backend whose table is written now (lance).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What this version is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build an index version of a dataset version; only new chunks are embedded."""
    from keel.cli.progress import progress_bar
    from keel.client import Client

    with progress_bar("building", "") as bar:
        result = Client().rag.build(
            name,
            source=source,
            chunker=chunker,
            embedder=embedder,
            backend=backend,
            description=description,
            progress=lambda stage, done, total: bar.stage(_STAGES.get(stage, stage), done, total),
        )
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"{result.version.uri}  key {result.key[:16]}…")
    console.print(
        f"  {result.chunks:,} chunks from {result.documents:,} documents "
        f"({result.skipped:,} files skipped)"
    )
    console.print(
        f"  {result.embedded:,} embedded, {result.reused:,} reused: "
        f"cache hit rate {result.hit_rate:.1%}"
    )


@rag_app.command("query")
def query_command(
    uri: UriArg,
    text: Annotated[str, typer.Argument(help="The question.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many chunks (1-1000).")] = 5,
    backend: Annotated[str | None, typer.Option(help="The backend to query (lance).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the chunks of an index closest to a question, closest first."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client

    hits = Client().rag.load(uri, backend=backend).query(text, k)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    table = Table("score", "source", "chunk", "text")
    for hit in hits:
        preview = " ".join(hit.text.split())
        table.add_row(
            f"{hit.score:.3f}",
            escape(hit.path),
            str(hit.position),
            escape(preview[:120] + ("…" if len(preview) > 120 else "")),
        )
    console.print(table)


@rag_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List indexes with their latest version and aliases."""
    from keel.client import Client

    print_registered(
        Client().rag.list(),
        as_json,
        "No RAG indexes yet. Build one with keel rag build --name NAME --source datasets:/DATA@N.",
    )


@rag_app.command("versions")
def versions_command(name: NameArg, as_json: JsonOption = False) -> None:
    """List an index's versions: source, chunker, embedder, chunks."""
    from rich.table import Table

    from keel.client import Client

    versions = Client().rag.versions(name)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table = Table("version", "aliases", "source", "chunker", "embedder", "chunks", "created")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            v.source,
            v.chunker,
            v.embedder,
            f"{v.chunks:,}",
            fmt_time(v.created_at),
        )
    console.print(table)


@rag_app.command("show")
def show_command(uri: UriArg, as_json: JsonOption = False) -> None:
    """Show one index version: its source, chunker, embedder, counts and key."""
    from rich.markup import escape

    from keel.client import Client

    version = Client().rag.resolve(uri)
    if as_json:
        print_json({**version.to_dict(), "document": version.document})
        return
    console.print(f"[bold]{version.uri}[/bold]  key {version.key}")
    console.print(f"  source     {version.source}")
    console.print(f"  chunker    {version.chunker}")
    console.print(f"  embedder   {version.embedder}")
    console.print(
        f"  chunks     {version.chunks:,} from {version.document['documents']:,} documents "
        f"({version.document['skipped']:,} files skipped)"
    )
    console.print(f"  by         {version.created_by} at {fmt_time(version.created_at)}")
    if version.aliases:
        console.print(f"  aliases    {', '.join(version.aliases)}")
    if version.description:
        console.print(f"  about      {escape(version.description)}")


@rag_app.command("approve")
def approve_command(
    name: NameArg,
    version: Annotated[int, typer.Argument(help="The version to approve.")],
    alias: Annotated[str, typer.Option("--for", help="The protected alias it may move to.")],
    comment: Annotated[str | None, typer.Option(help="What was reviewed.")] = None,
) -> None:
    """Approve an index version for a protected alias, as the current user."""
    from keel.client import Client

    approval = Client().rag.approve(name, version, alias, comment)
    console.print(f"{approval.approver} approved rag:/{name}/{version} for {alias}")


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
    """Point an index's alias at a version (protected aliases need approvals first)."""
    from keel.client import Client
    from keel.registry import UNSET

    change = Client().rag.set_alias(
        name, alias, version, expected=UNSET if expected is None else expected, comment=comment
    )
    print_alias_move(name, alias, change)


@alias_app.command("get")
def alias_get_command(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    as_json: JsonOption = False,
) -> None:
    """Print the version an index's alias points at."""
    from keel.client import Client
    from keel.errors import NotFound

    version = Client().rag.get_alias(name, alias)
    if as_json:
        print_json({"name": name, "alias": alias, "version": version})
        return
    if version is None:
        raise NotFound(
            f"alias {alias!r} of RAG index {name!r} is not set; point it at a version with "
            f"`keel rag alias set {name} {alias} VERSION`"
        )
    console.print(f"rag:/{name}/{version}")


@alias_app.command("history")
def alias_history_command(
    name: NameArg,
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every move of an index's aliases, oldest first."""
    from keel.client import Client

    print_alias_history(Client().rag.alias_history(name, alias), as_json)


def _add_ops_commands() -> None:
    """``keel rag eval``, ``status``, ``watch`` and ``check``: retrieval quality and freshness."""
    from keel.cli import rag_ops

    rag_app.command("eval")(rag_ops.eval_command)
    rag_app.command("status")(rag_ops.status_command)
    rag_app.command("watch")(rag_ops.watch_command)
    rag_app.command("check")(rag_ops.check_command)


_add_ops_commands()
