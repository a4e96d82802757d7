"""``keel features …``: apply definitions, inspect them, materialize, read online values."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, fmt_time, fmt_value, print_json
from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.features.entities import FeatureDefinition, Watermark

features_app = typer.Typer(
    help="Feature views: apply definitions, materialize them online, read their values.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
KindOption = Annotated[
    str | None,
    typer.Option(help="entity, feature_view or on_demand_feature_view."),
]
NameArg = Annotated[str, typer.Argument(help="A feature view's (or entity's) name.")]
#: What each kind is called in tables.
_KIND = {"entity": "entity", "feature_view": "view", "on_demand_feature_view": "on-demand"}
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


def _names(items: list[FeatureDefinition]) -> str:
    return ", ".join(f"{d.name}@{d.version}" for d in items)


@features_app.command("apply")
def apply_command(
    definitions: Annotated[str, typer.Argument(help="The Python file that defines the views.")],
    as_json: JsonOption = False,
) -> None:
    """Check a definitions file, then version and audit each definition that changed."""
    from rich.markup import escape

    from keel.client import Client

    started = time.perf_counter()
    result = Client().features.apply(definitions)
    seconds = time.perf_counter() - started
    if as_json:
        print_json(result.to_dict())
        return
    for label, items in (
        ("created", result.created),
        ("updated", result.updated),
        ("unchanged", result.unchanged),
    ):
        names = f": {escape(_names(items))}" if items and label != "unchanged" else ""
        console.print(f"{len(items):>4} {label}{names}")
    console.print(f"applied {definitions} in {seconds:.3f}s")


def _kind_label(kind: str) -> str:
    return _KIND.get(kind, kind)


@features_app.command("list")
def list_command(kind: KindOption = None, as_json: JsonOption = False) -> None:
    """List the latest version of every entity, feature view and on-demand view."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client

    items = Client().features.list(kind)
    if as_json:
        print_json([d.to_dict() for d in items])
        return
    if not items:
        console.print("No feature definitions yet. Apply a file: keel features apply defs.py")
        return
    table = Table("kind", "name", "version", "keys / sources", "features", "ttl", "applied")
    for d in items:
        if d.kind == "on_demand_feature_view":
            keys = ", ".join(d.spec.get("views", []))
        else:
            keys = ", ".join(d.join_keys)
        table.add_row(
            _kind_label(d.kind),
            d.name,
            str(d.version),
            escape(keys),
            str(len(d.feature_names)) if d.kind != "entity" else "",
            _ttl(d.spec.get("ttl_seconds")) if d.kind == "feature_view" else "",
            fmt_time(d.created_at),
        )
    console.print(table)


def _ttl(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _source(spec: dict[str, Any]) -> str:
    source = spec.get("source") or {}
    kind = source.get("type")
    if kind == "file":
        return f"file {source['path']}" + (f" ({source['format']})" if source.get("format") else "")
    if kind == "dataset":
        return f"dataset {source['uri']}"
    if kind == "sql":
        from keel.store import redact_url

        what = source.get("table") or source.get("query")
        return f"sql {redact_url(source['url'])} {what}"
    return str(source)


@features_app.command("show")
def show_command(
    name: NameArg,
    version: Annotated[int | None, typer.Option(help="A version (default: the latest).")] = None,
    kind: KindOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a definition: its keys, typed features, TTL, source and watermarks per store."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client
    from keel.store import redact_url

    features = Client().features
    if version is not None and version < 1:
        raise InvalidInput(f"--version must be a positive integer, got {version}")
    if kind is None:
        uri = f"features:/{name}" + ("" if version is None else f"@{version}")
        definition = features.resolve(uri)
    else:
        definition = features.get(name, version, kind=kind)
    watermarks: list[Watermark] = []
    if definition.kind == "feature_view":
        watermarks = [w for w in features.watermarks() if w.view == definition.name]
    if as_json:
        print_json({**definition.to_dict(), "watermarks": [w.to_dict() for w in watermarks]})
        return
    spec = definition.spec
    console.print(f"[bold]{_kind_label(definition.kind)} {escape(definition.name)}[/bold]")
    console.print(f"  version     {definition.version}  digest {definition.digest[:16]}…")
    console.print(
        f"  applied     {fmt_time(definition.created_at)} by {escape(definition.created_by)}"
    )
    if definition.source_file:
        console.print(f"  file        {escape(definition.source_file)}")
    if spec.get("description"):
        console.print(f"  description {escape(spec['description'])}")
    if definition.kind == "entity":
        console.print(f"  join keys   {', '.join(definition.join_keys)} ({spec.get('dtype')})")
        return
    if definition.kind == "feature_view":
        console.print(
            f"  entities    {', '.join(spec['entities'])} "
            f"(join keys {', '.join(definition.join_keys)})"
        )
        console.print(f"  source      {escape(_source(spec))}")
        created = spec.get("created_timestamp_field")
        console.print(
            f"  timestamps  event {spec['timestamp_field']}"
            + (f", created {created}" if created else "")
        )
        console.print(f"  ttl         {_ttl(spec.get('ttl_seconds'))}")
        fields = spec["features"]
    else:
        console.print(f"  views       {', '.join(spec['views']) or '—'}")
        for request in spec.get("request", []):
            typed = ", ".join(f"{f['name']}: {f['dtype']}" for f in request["schema"])
            console.print(f"  request     {request['name']} ({typed})")
        fn = spec["function"]
        console.print(f"  function    {fn['name']} in {escape(fn['file'])}")
        fields = spec["schema"]
    table = Table("feature", "type")
    for f in fields:
        table.add_row(f["name"], f["dtype"])
    console.print(table)
    if definition.kind == "feature_view":
        if not watermarks:
            console.print("  not materialized yet: keel features materialize " + definition.name)
        for w in watermarks:
            console.print(
                f"  online {escape(redact_url(w.store))}: up to {fmt_time(w.last_event_ms)} "
                f"(version {w.view_version}, {w.rows_written:,} rows in {w.runs} runs)"
            )


@features_app.command("history")
def history_command(
    name: NameArg,
    kind: Annotated[
        str, typer.Option(help="entity, feature_view or on_demand_feature_view.")
    ] = "feature_view",
    as_json: JsonOption = False,
) -> None:
    """List every version of a definition: when, by whom, from which file."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client

    versions = Client().features.history(name, kind=kind)
    if as_json:
        print_json([d.to_dict() for d in versions])
        return
    table = Table("version", "digest", "applied", "by", "file")
    for d in versions:
        table.add_row(
            str(d.version),
            d.digest[:12],
            fmt_time(d.created_at),
            escape(d.created_by),
            escape(d.source_file or ""),
        )
    console.print(table)


def _time(text: str | None, option: str) -> datetime | None:
    """An ISO time option as an aware datetime (UTC when no offset is given)."""
    if text is None:
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{option} takes an ISO time such as 2024-05-01 or 2024-05-01T12:00:00+00:00, "
            f"got {text!r}"
        ) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


@features_app.command("materialize")
def materialize_command(
    views: Annotated[
        list[str] | None, typer.Argument(help="Feature views (default: every one).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Read rows from this event time (ISO; default: the watermark)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Read rows up to this event time (ISO; default: now).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Online store URL (default: the online_store setting).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the rows that are new since the last run to the online store, per view."""
    from rich.markup import escape
    from rich.table import Table

    from keel.cli.progress import progress_bar
    from keel.client import Client
    from keel.store import redact_url

    begin, finish = _time(start, "--start"), _time(end, "--end")
    with progress_bar("materializing", "rows") as bar:
        results = Client().features.materialize(
            views or None, start=begin, end=finish, store=store, progress=bar.stage
        )
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    if not results:
        console.print("No feature views to materialize. Apply a file: keel features apply defs.py")
        return
    table = Table("view", "version", "store", "rows read", "rows written", "up to", "seconds")
    for r in results:
        table.add_row(
            r.view,
            str(r.view_version),
            escape(redact_url(r.store)),
            f"{r.rows_read:,}",
            f"{r.rows_written:,}",
            fmt_time(r.last_event_ms),
            f"{r.seconds:.2f}",
        )
    console.print(table)


def _lag(ms: int | None, now: int) -> str:
    if ms is None:
        return "—"
    seconds = max(0, (now - ms) // 1000)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


@features_app.command("status")
def status_command(as_json: JsonOption = False) -> None:
    """Show how far each feature view is materialized into each online store, and its lag."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client
    from keel.store import redact_url
    from keel.store.sql import now_ms

    features = Client().features
    views = features.list("feature_view")
    marks = features.watermarks()
    now = now_ms()
    by_view: dict[str, list[Watermark]] = {}
    for w in marks:
        by_view.setdefault(w.view, []).append(w)
    rows: list[dict[str, Any]] = []
    for view in views:
        found = by_view.pop(view.name, [])
        if not found:
            rows.append({"view": view.name, "version": view.version, "store": None})
        for w in found:
            rows.append(
                {
                    "view": view.name,
                    "version": view.version,
                    **w.to_dict(),
                    "lag_seconds": None
                    if w.last_event_ms is None
                    else max(0, now - w.last_event_ms) / 1000,
                    "stale_version": w.view_version != view.version,
                }
            )
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No feature views yet. Apply a file: keel features apply defs.py")
        return
    table = Table("view", "version", "store", "last event", "lag", "rows", "runs", "updated")
    for row in rows:
        if row["store"] is None:
            table.add_row(row["view"], str(row["version"]), "never materialized", *[""] * 5)
            continue
        version = str(row["version"])
        if row["stale_version"]:
            version += f" (online: {row['view_version']})"
        table.add_row(
            row["view"],
            version,
            escape(redact_url(row["store"])),
            fmt_time(row["last_event_ms"]),
            _lag(row["last_event_ms"], now),
            f"{row['rows_written']:,}",
            str(row["runs"]),
            row["updated_at"][:19].replace("T", " "),
        )
    console.print(table)


def _value(text: str) -> Any:
    """A command-line value: an integer, a number, or else the text itself."""
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def entity_rows(pairs: list[str]) -> list[dict[str, Any]]:
    """``KEY=VALUE`` options as entity rows: a key given n times makes n rows.

    Keys given once apply to every row, so ``driver_id=7 driver_id=8 city=Oslo``
    makes two rows, each with ``city`` (a composite key, or request data).
    """
    columns: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--entity takes KEY=VALUE such as driver_id=7, got {pair!r}")
        columns.setdefault(key.strip(), []).append(_value(value.strip()))
    counts = {len(values) for values in columns.values()} - {1}
    if len(counts) > 1:
        sizes = {key: len(values) for key, values in columns.items()}
        raise InvalidInput(
            f"each --entity key is given once (for every row) or once per row; got {sizes}"
        )
    n = counts.pop() if counts else 1
    return [
        {key: values[i] if len(values) > 1 else values[0] for key, values in columns.items()}
        for i in range(n)
    ]


@features_app.command("get")
def get_command(
    entity: Annotated[
        list[str],
        typer.Option(
            "--entity",
            "-e",
            help="KEY=VALUE of a join key or request field; repeat a key for more rows.",
        ),
    ],
    feature: Annotated[
        list[str], typer.Option("--feature", "-f", help="view:feature; repeat for more.")
    ],
    store: Annotated[
        str | None, typer.Option(help="Online store URL (default: the online_store setting).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Read the online values of features for entity keys."""
    from rich.markup import escape
    from rich.table import Table

    from keel.client import Client

    rows = entity_rows(entity)
    result = Client().features.get_online_features(rows, list(feature), store=store)
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    table = Table(*data)
    for i in range(len(rows)):
        table.add_row(*(escape(fmt_value(values[i])) for values in data.values()))
    console.print(table)


@features_app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 6566,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Online store URL (default: the online_store setting)."),
    ] = None,
) -> None:
    """Serve online features over HTTP (POST /features/online, Feast's /get-online-features)."""
    from keel.features.server import serve

    serve(
        host,
        port,
        store=store,
        announce=lambda url: console.print(
            f"Feature server on {url}: POST /features/online, POST /get-online-features, GET /health"
        ),
    )
