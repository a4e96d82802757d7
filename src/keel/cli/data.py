"""``keel data …``: dataset versions from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import console, fmt_time, print_json
from keel.cli.progress import progress_bar


def say(text: str) -> None:
    """One line of output, never wrapped (paths and digests stay copyable)."""
    console.print(text, soft_wrap=True)


app = typer.Typer(
    help="Version files and folders: add, status, diff, checkout, list, show, push, pull.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
LinkOption = Annotated[
    str | None,
    typer.Option(
        "--link",
        help="How files are placed, tried in order: reflink, hardlink, copy "
        "(default: the data_link setting, 'reflink,copy'). hardlink makes the files read-only.",
    ),
]
RemoteOption = Annotated[
    str | None,
    typer.Option("--remote", help="Remote URL, e.g. s3://bucket/keel-data (default: data_remote)."),
]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


@app.command("add")
def add_command(
    path: Annotated[Path, typer.Argument(help="File or folder to snapshot.")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset name (default: the path's name).")
    ] = None,
    link: LinkOption = None,
    as_json: JsonOption = False,
) -> None:
    """Snapshot a file or folder into the content store as a new dataset version.

    Only files the state cache cannot vouch for are hashed (BLAKE3, in
    parallel); bytes already stored are not stored again. Adding content equal
    to the dataset's latest version returns that version.
    """
    from keel.data.snapshot import add

    with progress_bar("adding", "files") as progress:
        version = add(path, name, link=link, progress=progress)
    if as_json:
        print_json(version.to_dict())
        return
    say(
        f"[bold]{version.uri}[/bold]  {version.files:,} files, {_size(version.bytes)}  "
        f"digest {version.digest[:16]}"
    )


@app.command("status")
def status_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="A tracked path, or a folder holding some (default: the current one)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List files added, changed and removed since each tracked path was added or checked out."""
    # Usually answered before Typer starts (keel.cli.quick); this runs the forms it declines.
    from keel.cli.quick import print_status
    from keel.data.snapshot import status

    print_status(status(path), as_json)


@app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="Dataset reference (name@3, digest) or a local path.")],
    b: Annotated[str, typer.Argument(help="Dataset reference or a local path.")],
    as_json: JsonOption = False,
) -> None:
    """Files added, changed and removed from A to B."""
    from keel.data.snapshot import diff

    changes = diff(a, b)
    if as_json:
        print_json(changes.to_dict())
        return
    if changes.clean:
        say("identical")
        return
    for marker, paths in (("A", changes.added), ("M", changes.changed), ("D", changes.removed)):
        for rel in paths:
            say(f"{marker} {rel}")
    say(
        f"[dim]{len(changes.added)} added, {len(changes.changed)} changed, "
        f"{len(changes.removed)} removed[/dim]"
    )


@app.command("checkout")
def checkout_command(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME (the latest) or a digest.")],
    path: Annotated[Path, typer.Argument(help="Where to put the files.")],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite content no stored version holds.")
    ] = False,
    link: LinkOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make PATH hold exactly the files of a dataset version (unchanged files are kept)."""
    from keel.data.restore import checkout

    with progress_bar("checking out", "files") as progress:
        version = checkout(ref, path, force=force, link=link, progress=progress)
    if as_json:
        print_json({**version.to_dict(), "path": str(path.resolve())})
        return
    say(f"{path} now holds {version.uri} ({version.files:,} files)")


@app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="List this dataset's versions.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List datasets with their latest version, or the versions of one dataset."""
    import keel.data

    versions = keel.data.list_versions(name) if name else keel.data.list_datasets()
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    if not versions:
        say("No datasets yet. Add one with `keel data add PATH`.")
        return
    from rich.table import Table

    table = Table("dataset", "version", "kind", "files", "size", "digest", "created")
    for v in versions:
        table.add_row(
            v.name,
            str(v.version),
            v.kind,
            f"{v.files:,}",
            _size(v.bytes),
            v.digest[:12],
            fmt_time(v.created_at),
        )
    console.print(table)


@app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME (the latest) or a digest.")],
    as_json: JsonOption = False,
) -> None:
    """Show a dataset version: digest, size, source, run, and for tables the schema and profile."""
    import keel.data

    version = keel.data.get(ref)
    profile = keel.data.get_profile(f"{version.name}@{version.version}")
    if as_json:
        print_json({**version.to_dict(), "profile": profile})
        return
    say(f"[bold]{version.uri}[/bold]  ({version.kind})")
    say(f"  digest   {version.digest}")
    say(f"  files    {version.files:,}, {_size(version.bytes)}")
    if version.source:
        say(f"  source   {version.source}")
    say(f"  by       {version.created_by} at {fmt_time(version.created_at)}")
    if version.run_id:
        say(f"  run      {version.run_id}")
    if version.schema:
        from rich.table import Table

        table = Table("column", "type", "missing", "summary", title=f"{version.num_rows:,} rows")
        columns = (profile or {}).get("columns", {})
        for col in version.schema:
            stats = columns.get(col["name"], {})
            if stats.get("kind") == "numeric" and "mean" in stats:
                summary = (
                    f"mean {stats['mean']:.4g}, min {stats['min']:.4g}, max {stats['max']:.4g}"
                )
            elif "distinct" in stats:
                summary = f"{stats['distinct']} distinct"
            else:
                summary = ""
            table.add_row(col["name"], col["type"], str(stats.get("missing", "")), summary)
        console.print(table)


def _report(report: Any, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(report.to_dict())
        return
    say(
        f"{verb} {report.moved:,} object(s), {_size(report.bytes)}; "
        f"{report.present:,} of {report.objects:,} were already there "
        f"({', '.join(report.versions) or 'no versions'})"
    )


@app.command("push")
def push_command(
    refs: Annotated[
        list[str] | None, typer.Argument(help="Versions to push (default: every version).")
    ] = None,
    remote: RemoteOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy dataset versions' objects to the remote; only missing objects move.

    An interrupted push leaves whole objects behind; running it again moves
    only what is still missing.
    """
    from keel.data.transfer import push

    with progress_bar("pushing", "objects") as progress:
        report = push(refs, remote=remote, progress=progress)
    _report(report, "pushed", as_json)


@app.command("pull")
def pull_command(
    refs: Annotated[
        list[str] | None, typer.Argument(help="Versions to pull (default: every version).")
    ] = None,
    remote: RemoteOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch dataset versions' objects from the remote; only missing objects move."""
    from keel.data.transfer import pull

    with progress_bar("pulling", "objects") as progress:
        report = pull(refs, remote=remote, progress=progress)
    _report(report, "pulled", as_json)
