"""Incremental materialization: new source rows into the online store, latest per entity.

For each feature view, the watermark (:meth:`Features.watermark`, one per view and
online store) remembers the greatest event time and created time written so far. A run
then selects the source rows with

- ``last_event_ms < event_ms <= end`` (new rows), or
- ``created_ms > last_created_ms`` and ``event_ms <= end``, when the view has a
  created-timestamp column (late corrections of times already materialized);

``start`` replaces the lower bound (``start <= event_ms <= end``) for a backfill. DuckDB
keeps each entity's latest row, ordered as the offline join orders ties (event time,
then created time with a missing one last, then the feature values), drops rows already
expired at ``end``, and streams the rest as Arrow batches into :meth:`OnlineStore.write`,
whose conditional write keeps whichever of stored and written is newer. Rows without a
join key are counted (``rows_skipped``) and not written.

Nothing is lost to a failure: the watermark moves only after every batch of a view is
written, so a run that stops midway (an unreadable file, an unreachable Redis) leaves it
where it was, and the next run selects the same rows again; rewriting a row already
written is a no-op by the store's rule. A view applied at a new version whose source,
keys, timestamps, features or TTL changed is rebuilt: its online rows are deleted and
every row is selected again (``rebuilt`` and ``reason`` in the result say so).

Rows that arrive in the source late *without* a later created time than the watermark
(an event time at or below ``last_event_ms``) are not picked up by an incremental run:
give the view a created-timestamp column, or backfill with ``start``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound, StorageError
from keel.features.online.base import entity_key_sql
from keel.features.sources import CREATED_MS, EVENT_MS, connect, quote, register_source

if TYPE_CHECKING:
    import duckdb

    from keel.client import Client
    from keel.features.entities import FeatureDefinition, Watermark
    from keel.features.online import OnlineStore

__all__ = ["BATCH_ROWS", "MaterializeResult", "Progress", "materialize"]

#: Rows per Arrow batch handed to the online store (bounds the memory of a run).
BATCH_ROWS = 100_000

#: ``progress(view, rows_done, rows_total)``, called before the first batch and after each.
Progress = Callable[[str, int, int], None]

#: The spec entries whose change makes the stored rows wrong (a new description does not).
_MATERIAL = (
    "source",
    "join_keys",
    "timestamp_field",
    "created_timestamp_field",
    "features",
    "ttl_seconds",
)

_SOURCE = "__keel_mat_source"
_LATEST = "__keel_mat_latest"
#: The created time as the store takes it: 0 when the row has none.
_CREATED = "__keel_created_or_0"


@dataclass(frozen=True)
class MaterializeResult:
    """What one view's materialization did.

    Attributes:
        view: the feature view.
        view_version: the version materialized.
        store: the online store's URL (without credentials).
        rows_read: source rows selected (new rows and corrections up to ``end``).
        rows_written: rows the store took (one per entity at most; fewer when the
            store already held a newer row).
        last_event_ms: the watermark's event time after the run.
        last_created_ms: the watermark's created time after the run.
        seconds: how long the view took.
        rows_expired: entities whose latest row was already past the TTL at ``end``.
        rows_skipped: selected rows without a join key value.
        rebuilt: the view's online rows were dropped and rewritten from every row.
        reason: why it was rebuilt.
    """

    view: str
    view_version: int
    store: str
    rows_read: int
    rows_written: int
    last_event_ms: int | None
    last_created_ms: int | None
    seconds: float
    rows_expired: int = 0
    rows_skipped: int = 0
    rebuilt: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 4)
        return out


def _to_ms(value: datetime | int | str | None, what: str) -> int | None:
    """Milliseconds since the epoch; a datetime without a zone is UTC (as sources are read)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a datetime, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{what} must be an ISO 8601 time such as 2024-05-01T00:00:00, got {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


def materialize(
    client: Client,
    views: list[str] | None = None,
    *,
    start: datetime | int | str | None = None,
    end: datetime | int | str | None = None,
    store: str | None = None,
    progress: Progress | None = None,
) -> list[MaterializeResult]:
    """Write each view's new source rows (latest per entity) to an online store.

    Args:
        client: the client whose feature definitions and watermarks to use.
        views: the feature views (default: every feature view applied).
        start: select rows from this event time on, instead of from the watermark.
        end: select rows up to this event time, inclusive (default: now). A datetime
            without a zone is UTC.
        store: the online store URL (default: the ``online_store`` setting).
        progress: called as ``progress(view, rows_done, rows_total)``.

    Returns:
        One result per view, in order.

    Raises:
        NotFound: an unknown view.
        InvalidInput: ``start`` after ``end``, an on-demand view named, or a source
            that cannot be read (the message names the view).
        BackendUnavailable: the online store cannot be reached.
    """
    end_ms = _to_ms(end, "end")
    if end_ms is None:
        end_ms = time.time_ns() // 1_000_000
    start_ms = _to_ms(start, "start")
    if start_ms is not None and start_ms > end_ms:
        raise InvalidInput(f"start ({start_ms} ms) is after end ({end_ms} ms); swap them")
    definitions = _definitions(client, views)
    results: list[MaterializeResult] = []
    online = client.features.online_store(store)
    try:
        with connect(client.settings) as con:
            for definition in definitions:
                results.append(
                    _materialize_view(client, con, online, definition, start_ms, end_ms, progress)
                )
    finally:
        online.close()
    return results


def _definitions(client: Client, views: list[str] | None) -> list[FeatureDefinition]:
    if views is None:
        return client.features.list("feature_view")
    out = []
    for name in dict.fromkeys(views):
        try:
            out.append(client.features.get(name))
            continue
        except NotFound as exc:
            missing = exc  # names the closest views
        try:
            on_demand = client.features.get(name, kind="on_demand_feature_view")
        except NotFound:
            raise missing from None
        raise InvalidInput(
            f"{name!r} is an on-demand feature view, computed when read; materialize its "
            f"source views {on_demand.spec['views']} instead"
        )
    return out


def _rebuild_reason(
    client: Client, definition: FeatureDefinition, watermark: Watermark | None
) -> str | None:
    """Why the stored rows no longer fit the view's current version, or ``None``."""
    if watermark is None or watermark.view_version == definition.version:
        return None
    try:
        old = client.features.get(definition.name, watermark.view_version).spec
    except NotFound:
        return f"version {watermark.view_version}, materialized last, is gone"
    changed = [k for k in _MATERIAL if old.get(k) != definition.spec.get(k)]
    if not changed:
        return None
    return (
        f"version {definition.version} changed {', '.join(changed)} since version "
        f"{watermark.view_version} was materialized"
    )


def _materialize_view(
    client: Client,
    con: duckdb.DuckDBPyConnection,
    online: OnlineStore,
    definition: FeatureDefinition,
    start_ms: int | None,
    end_ms: int,
    progress: Progress | None,
) -> MaterializeResult:
    started = time.perf_counter()
    spec = definition.spec
    view = definition.name
    watermark = client.features.watermark(view, online.url)
    reason = _rebuild_reason(client, definition, watermark)
    last_event = last_created = None
    if watermark is not None and reason is None:
        last_event, last_created = watermark.last_event_ms, watermark.last_created_ms
    has_created = bool(spec.get("created_timestamp_field"))
    # push the event-time bounds into the scan where they are exact (register_source's
    # end is exclusive); corrections can sit at any event time, so no lower bound then
    lower = start_ms
    if lower is None and last_event is not None and not has_created:
        lower = last_event + 1
    register_source(con, client, spec, _SOURCE, start_ms=lower, end_ms=end_ms + 1)
    where = [f"{EVENT_MS} <= {end_ms}"]
    if start_ms is not None:
        where.append(f"{EVENT_MS} >= {start_ms}")
    elif last_event is not None:
        newer = f"{EVENT_MS} > {last_event}"
        if has_created and last_created is not None:
            newer = f"({newer} OR {CREATED_MS} > {last_created})"
        where.append(newer)
    elif has_created and last_created is not None:
        where.append(f"{CREATED_MS} > {last_created}")
    stats = _select_latest(con, spec, where, end_ms)
    rows_read, max_event, max_created, expired, skipped, total = stats
    if reason is not None:
        # only now that the source has been read: a source that fails leaves the old rows
        online.delete_view(view)
    ttl = spec.get("ttl_seconds")
    written = _write(con, online, spec, total, progress)
    if ttl is not None:
        online.purge_expired(view, int(ttl), time.time_ns() // 1_000_000)
    after = client.features.set_watermark(
        view,
        online.url,
        view_version=definition.version,
        last_event_ms=_later(last_event, max_event),
        last_created_ms=_later(last_created, max_created),
        rows=written,
    )
    return MaterializeResult(
        view=view,
        view_version=definition.version,
        store=online.url,
        rows_read=rows_read,
        rows_written=written,
        last_event_ms=after.last_event_ms,
        last_created_ms=after.last_created_ms,
        seconds=time.perf_counter() - started,
        rows_expired=expired,
        rows_skipped=skipped,
        rebuilt=reason is not None,
        reason=reason,
    )


def _later(old: int | None, new: int | None) -> int | None:
    if old is None:
        return new
    if new is None:
        return old
    return max(old, new)


def _select_latest(
    con: duckdb.DuckDBPyConnection, spec: Mapping[str, Any], where: list[str], end_ms: int
) -> tuple[int, int | None, int | None, int, int, int]:
    """Keep each entity's latest selected row in a temporary table; return its counts.

    Returns:
        ``(rows read, greatest event ms, greatest created ms, entities expired at end,
        rows without a key, rows to write)``.
    """
    import duckdb

    keys = [quote(k) for k in spec["join_keys"]]
    features = [quote(f["name"]) for f in spec["features"]]
    # the offline join's order of ties: created time (missing last), then the values
    order = [
        f"{EVENT_MS} DESC",
        f"{CREATED_MS} DESC NULLS LAST",
        *(f"{f} DESC NULLS LAST" for f in features),
    ]
    partition = ", ".join(keys)
    ttl = spec.get("ttl_seconds")
    expired = "false" if ttl is None else f"{EVENT_MS} < {end_ms - int(ttl) * 1000}"
    no_key = " OR ".join(f"{k} IS NULL" for k in keys)
    view = spec["name"]
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_LATEST} AS "
            f"SELECT {', '.join(keys)}, {EVENT_MS}, COALESCE({CREATED_MS}, 0) AS {_CREATED}, "
            f"{', '.join(features)}, count(*) OVER w AS __keel_n, "
            f"max({CREATED_MS}) OVER w AS __keel_created, {expired} AS __keel_expired, "
            f"({no_key}) AS __keel_no_key "
            f"FROM {_SOURCE} WHERE {' AND '.join(where)} "
            f"WINDOW w AS (PARTITION BY {partition}) "
            f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {', '.join(order)}) = 1"
        )
        row = con.execute(
            f"SELECT coalesce(sum(__keel_n), 0), max({EVENT_MS}), max(__keel_created), "
            "count(*) FILTER (WHERE __keel_expired AND NOT __keel_no_key), "
            "coalesce(sum(__keel_n) FILTER (WHERE __keel_no_key), 0), "
            "count(*) FILTER (WHERE NOT __keel_expired AND NOT __keel_no_key) "
            f"FROM {_LATEST}"
        ).fetchone()
    except duckdb.Error as exc:
        raise _source_error(view, exc) from None
    assert row is not None  # an aggregate always has a row
    return int(row[0]), row[1], row[2], int(row[3]), int(row[4]), int(row[5])


def _source_error(view: str, exc: Exception) -> Exception:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "IO Error" in first or "No files found" in first:
        return StorageError(
            f"feature view {view!r}: reading its source failed: {first}; nothing was "
            "recorded, so the next run selects the same rows again"
        )
    return InvalidInput(f"feature view {view!r}: reading its source failed: {first}")


def _write(
    con: duckdb.DuckDBPyConnection,
    online: OnlineStore,
    spec: Mapping[str, Any],
    total: int,
    progress: Progress | None,
) -> int:
    """Stream the rows to write from DuckDB into the store, one Arrow batch at a time."""
    import duckdb
    import pyarrow as pa

    view = spec["name"]
    keys = list(spec["join_keys"])
    features = [f["name"] for f in spec["features"]]
    ttl = spec.get("ttl_seconds")
    columns = ", ".join(quote(c) for c in [*keys, EVENT_MS, _CREATED, *features])
    order = f"ORDER BY {entity_key_sql([quote(k) for k in keys])}" if online.sorted_writes else ""
    if progress is not None:
        progress(view, 0, total)
    written = done = 0
    try:
        reader = con.execute(
            f"SELECT {columns} FROM {_LATEST} WHERE NOT __keel_expired AND NOT __keel_no_key "
            f"{order}"
        ).to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            written += online.write(
                view,
                table.select(keys),
                table.column(EVENT_MS).to_numpy(),
                table.column(_CREATED).to_numpy(),
                table.select(features),
                ttl,
            )
            done += batch.num_rows
            if progress is not None:
                progress(view, done, total)
    except duckdb.Error as exc:
        raise _source_error(view, exc) from None
    return written
