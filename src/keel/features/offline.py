"""Point-in-time correct training sets: each entity row gets the feature values known at its time.

For each row of ``entity_df`` (join keys and a timestamp ``ts``) and each feature
view, the value joined is the view's latest row for those keys whose event time
``e`` satisfies::

    ts - ttl <= e <= ts          (a view without a TTL: e <= ts)

Both bounds are inclusive, as in Feast: a value exactly ``ttl`` old still counts, a
value one millisecond older does not, and a value stamped after ``ts`` is never
used. Of several rows at one event time, the one with the greatest created
timestamp wins (a late correction replaces the value it corrects); rows without a
created time lose to rows with one; of rows equal in both (true duplicates, usually
equal in value too) a fixed one is picked by a hash of its values, so the choice
never depends on file order or thread scheduling. Times are compared in milliseconds
since the epoch, UTC (entity timestamps without a zone are UTC). The created time only breaks ties: a
correction created after ``ts`` still replaces the value at its event time, as in
Feast.

How: every source becomes a DuckDB view (:func:`keel.features.sources.register_source`)
joined with ``ASOF LEFT JOIN … ON keys = keys AND probe >= row``, where rows are
ordered by (event time, created time, content) so that the one row the ASOF join
picks is the one the rule above names (see ``_ordered_rows``); values older than the
TTL are then nulled. DuckDB runs under ``memory_limit`` and spills to
``<home>/cache/duckdb``, reading only the columns asked for; with ``output`` the
result is written by DuckDB straight to Parquet (a temporary name renamed into
place), so a training set larger than memory never passes through Python.

On-demand features are computed after the join by
:func:`keel.features.on_demand.run_on_demand`, from the point-in-time values of
their source views' features and the request fields taken from ``entity_df``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.features.definitions import FeatureRef, parse_feature_refs
from keel.features.on_demand import request_fields, run_on_demand
from keel.features.registry import INPUT_LABEL
from keel.features.sources import (
    CREATED_MS,
    DEFAULT_MEMORY_LIMIT,
    EVENT_MS,
    arrow_to_pandas,
    arrow_type,
    connect,
    duckdb_type,
    epoch_ms_sql,
    key_dtypes,
    quote,
    register_source,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from keel.client import Client
    from keel.features.entities import FeatureDefinition

__all__ = ["LINEAGE_LABEL", "get_historical_features", "record_feature_inputs"]

#: The label of the lineage edges a training set records (view version -> run).
LINEAGE_LABEL = INPUT_LABEL

_ROW = "__keel_row"
_TS = "__keel_ts"
_ORDER = "__keel_order"
#: the greatest BIGINT: the entity side's created time, after every row's
_MAX_MS = "CAST(9223372036854775807 AS BIGINT)"
_ENTITIES = "__keel_entities"
_VIEW, _ON_DEMAND = "feature_view", "on_demand_feature_view"


@dataclass
class _View:
    """One feature view to join: its stored definition and the features to read."""

    definition: FeatureDefinition
    index: int
    #: the declared type of each join key (from the view's entities)
    keys: dict[str, str]
    features: list[str] = field(default_factory=list)

    @property
    def spec(self) -> dict[str, Any]:
        return self.definition.spec

    @property
    def name(self) -> str:
        return self.definition.name

    def column(self, feature: str) -> str:
        """The internal column that carries ``feature`` through the join."""
        return f"__keel_v{self.index}_{self.features.index(feature)}"


@dataclass
class _Plan:
    """What to join and what to compute, resolved from the registry before any data is read."""

    views: dict[str, _View]
    on_demand: dict[str, FeatureDefinition]
    #: (requested ref, output column name), in the order asked for
    outputs: list[tuple[FeatureRef, str]]

    @property
    def definitions(self) -> list[FeatureDefinition]:
        return [v.definition for v in self.views.values()] + list(self.on_demand.values())


def get_historical_features(
    client: Client,
    entity_df: Any,
    features: list[str],
    *,
    timestamp_column: str = "event_timestamp",
    full_feature_names: bool = False,
    output: str | Path | None = None,
    format: str = "pandas",
    memory_limit: str | None = None,
    run_id: str | None = None,
) -> pd.DataFrame | pa.Table | Path:
    """A point-in-time correct training set (the rule is in the module docstring).

    Args:
        client: the client whose registry holds the definitions.
        entity_df: the entity rows: a pandas DataFrame, a pyarrow Table, or the path of a
            Parquet file (or a folder of them). It holds every join key of the views
            asked for and ``timestamp_column``; other columns are carried unchanged.
        features: ``["view:feature", …]``, on-demand view features included.
        timestamp_column: the column of ``entity_df`` holding each row's time
            (datetimes with or without a zone, the latter read as UTC; ISO strings; or
            integer milliseconds since the epoch).
        full_feature_names: name the columns ``view__feature`` instead of ``feature``.
        output: write the result to this Parquet file and return its path.
        format: ``pandas`` or ``arrow`` (without ``output``).
        memory_limit: DuckDB's memory limit (``"4GB"``; default
            :data:`keel.features.sources.DEFAULT_MEMORY_LIMIT`).
        run_id: record the views' versions as inputs of this run (default: the active
            run, if any).

    Returns:
        ``entity_df``'s columns, in order and unchanged, then one column per feature, with
        the rows in ``entity_df``'s order: a DataFrame (int64 and bool features as
        nullable ``Int64``/``boolean``), an Arrow table, or the Parquet file's path.

    Raises:
        InvalidInput: no features, a malformed reference, a view without that feature,
            ``entity_df`` without a join key or the timestamp column, a request field
            missing, a column name clash, or a source lacking a column.
        NotFound: an unknown view, or an unknown ``run_id``.
    """
    import duckdb

    from keel.data.snapshot import active_run_id

    refs = parse_feature_refs(features)
    if format not in ("pandas", "arrow"):
        raise InvalidInput(f"format must be 'pandas' or 'arrow', got {format!r}")
    plan = _plan(client, refs, full_feature_names)
    run = _resolve_run(client, run_id) if run_id is not None else active_run_id()
    result: pd.DataFrame | pa.Table | Path
    with connect(client.transport.settings, memory_limit) as con:
        try:
            entities = _register_entities(con, entity_df)
            _check_entities(con, plan, entities.columns, timestamp_column)
            for view in plan.views.values():
                register_source(con, client, view.spec, _source_name(view), columns=view.features)
            if output is not None:
                result = _to_parquet(con, plan, entities, timestamp_column, Path(output))
            else:
                result = _in_memory(con, plan, entities, timestamp_column, format)
        except (
            duckdb.ConversionException,
            duckdb.OutOfMemoryException,
            duckdb.InvalidInputException,  # a CSV row that does not parse, found mid-scan
        ) as exc:
            raise _explain(exc, memory_limit) from None
    if run is not None:
        record_feature_inputs(client, run, plan.definitions)
    return result


# -- planning ---------------------------------------------------------------------------------


def _plan(client: Client, refs: list[FeatureRef], full_names: bool) -> _Plan:
    """Resolve the views (and on-demand views' sources) and name the output columns."""
    found = client.features.views_for(refs)
    views: dict[str, _View] = {}
    on_demand: dict[str, FeatureDefinition] = {}

    def view(definition: FeatureDefinition) -> _View:
        if definition.name not in views:
            keys = key_dtypes(client, definition.spec)
            views[definition.name] = _View(definition, len(views), keys)
        return views[definition.name]

    def need(v: _View, features: list[str]) -> None:
        v.features += [f for f in features if f not in v.features]

    for ref in refs:
        definition = found[ref.view]
        if definition.kind == _VIEW:
            need(view(definition), [ref.feature])
            continue
        on_demand[definition.name] = definition
        # an on-demand function sees every feature of its source views, asked for or not
        for source in definition.spec["views"]:
            src = found.get(source)
            if src is None or src.kind != _VIEW:
                src = client.features.get(source)
            need(view(src), src.feature_names)
    outputs = [(ref, f"{ref.view}__{ref.feature}" if full_names else ref.feature) for ref in refs]
    names = [name for _, name in outputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        clashing = [str(ref) for ref, name in outputs if name in twice]
        raise InvalidInput(
            f"the features {clashing} would share the column name(s) {twice}; pass "
            "full_feature_names=True to name them view__feature"
        )
    return _Plan(views, on_demand, outputs)


def _resolve_run(client: Client, run_id: str) -> str:
    tracking = client.tracking
    return tracking.get_run_info(tracking.resolve_run_id(run_id)).id


def _source_name(view: _View) -> str:
    return f"__keel_src{view.index}"


# -- entity rows ------------------------------------------------------------------------------


@dataclass
class _Entities:
    """``entity_df`` as registered: its columns, and the object it came as (None: a file)."""

    columns: list[str]
    table: pa.Table | None = None
    frame: pd.DataFrame | None = None


def _register_entities(con: duckdb.DuckDBPyConnection, entity_df: Any) -> _Entities:
    """Register ``entity_df`` as ``__keel_entities``, numbered in order by ``__keel_row``."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(entity_df, str | os.PathLike):
        path = Path(entity_df)
        if not path.exists():
            raise NotFound(
                f"no entity file at {path}; pass a Parquet file, a DataFrame or a pyarrow Table"
            )
        target = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
        literal = "'" + target.replace("'", "''") + "'"
        columns = list(con.sql(f"SELECT * FROM read_parquet({literal})").columns)
        _check_reserved(columns)
        # files in name order, rows in file order: the order pyarrow reads a folder in
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {_ENTITIES} AS SELECT "
            f"{', '.join(quote(c) for c in columns)}, "
            f"row_number() OVER (ORDER BY filename, file_row_number) - 1 AS {_ROW} "
            f"FROM read_parquet({literal}, filename = true, file_row_number = true)"
        )
        return _Entities(columns)
    frame = None
    if isinstance(entity_df, pd.DataFrame):
        frame = entity_df
        table = pa.Table.from_pandas(entity_df, preserve_index=False)
    elif isinstance(entity_df, pa.Table):
        table = entity_df
    else:
        raise InvalidInput(
            "entity_df must be a pandas DataFrame, a pyarrow Table or the path of a Parquet "
            f"file, got {type(entity_df).__name__}"
        )
    columns = [str(c) for c in table.column_names]
    _check_reserved(columns)
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    con.register(_ENTITIES, table.append_column(_ROW, rows))
    return _Entities(columns, table, frame)


def _check_reserved(columns: list[str]) -> None:
    reserved = [c for c in columns if c.startswith("__keel_")]
    if reserved:
        raise InvalidInput(
            f"entity_df's columns {reserved} use the prefix __keel_, which is reserved; rename them"
        )


def _entity_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rel = con.sql(f"SELECT * FROM {_ENTITIES}")
    return {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}


def _check_entities(
    con: duckdb.DuckDBPyConnection, plan: _Plan, columns: list[str], ts: str
) -> None:
    """Every join key, the timestamp and the request fields are there and usable."""
    if ts not in columns:
        raise InvalidInput(
            f"entity_df has no timestamp column {ts!r}; it has columns {columns}; "
            "pass timestamp_column= to name the column holding each row's time"
        )
    keys: dict[str, tuple[str, str]] = {}
    for view in plan.views.values():
        for key in view.spec["join_keys"]:
            if key not in columns:
                raise InvalidInput(
                    f"feature view {view.name!r} needs join key {key!r}; entity_df has "
                    f"columns {columns}"
                )
            keys.setdefault(key, (view.keys[key], view.name))
    for definition in plan.on_demand.values():
        for name in request_fields(definition.spec):
            if name not in columns:
                raise InvalidInput(
                    f"on-demand feature view {definition.name!r} needs request field {name!r}; "
                    f"entity_df has columns {columns}"
                )
    clash = [name for _, name in plan.outputs if name in columns]
    if clash:
        raise InvalidInput(
            f"the feature column(s) {clash} clash with entity_df's columns of the same name; "
            "pass full_feature_names=True or rename those columns"
        )
    types = _entity_types(con)
    epoch_ms_sql(quote(ts), types[ts], f"entity_df's timestamp column {ts!r}")  # type check
    checks = [f"count(*) FILTER (WHERE {quote(ts)} IS NULL)"] + [
        f"count(*) FILTER (WHERE {quote(k)} IS NOT NULL AND "
        f"TRY_CAST({quote(k)} AS {duckdb_type(dtype)}) IS NULL)"
        for k, (dtype, _) in keys.items()
    ]
    counts = con.sql(f"SELECT {', '.join(checks)} FROM {_ENTITIES}").fetchone()
    assert counts is not None  # an aggregate always has a row
    if counts[0]:
        raise InvalidInput(
            f"entity_df has {counts[0]} row(s) without a time in {ts!r}; give every row a time"
        )
    for (key, (dtype, owner)), bad in zip(keys.items(), counts[1:], strict=True):
        if bad:
            raise InvalidInput(
                f"entity_df's join key {key!r} has {bad} value(s) that are not {dtype}, the "
                f"type the entity of feature view {owner!r} declares"
            )


# -- the join ---------------------------------------------------------------------------------


def _join_sql(con: duckdb.DuckDBPyConnection, plan: _Plan, ts: str, carry: list[str]) -> str:
    """The ASOF join, unordered: ``carry`` entity columns, the row number, each view's columns."""
    types = _entity_types(con)
    key_columns: dict[str, str] = {}
    entity_select = [*(quote(c) for c in carry), _ROW]
    entity_select.append(f"{epoch_ms_sql(quote(ts), types[ts], repr(ts))} AS {_TS}")
    # the probe sorts after every row at its own time: see _ordered_rows
    entity_select.append(
        f"struct_pack(ev := {_TS}, hc := true, c := {_MAX_MS}, h := CAST(NULL AS UBIGINT)) "
        f"AS {_ORDER}"
    )
    ctes: list[str] = []
    joins: list[str] = []
    select = [*(f"e.{quote(c)}" for c in carry), f"e.{_ROW}"]
    for view in plan.views.values():
        keys = view.spec["join_keys"]
        for key in keys:
            if key not in key_columns:
                key_columns[key] = f"__keel_k{len(key_columns)}"
                entity_select.append(
                    f"CAST({quote(key)} AS {duckdb_type(view.keys[key])}) AS {key_columns[key]}"
                )
        alias = f"v{view.index}"
        ctes.append(f"{alias} AS ({_ordered_rows(view)})")
        on = [f"e.{key_columns[k]} = {alias}.{quote(k)}" for k in keys]
        on.append(f"e.{_ORDER} >= {alias}.{_ORDER}")
        joins.append(f"ASOF LEFT JOIN {alias} ON {' AND '.join(on)}")
        ttl = view.spec.get("ttl_seconds")
        for feature in view.features:
            column = f"{alias}.{view.column(feature)}"
            if ttl is not None:
                # inclusive lower bound: a value exactly ttl old still counts (Feast's rule)
                bound = f"e.{_TS} - {int(ttl) * 1000}"
                column = f"CASE WHEN {alias}.{EVENT_MS} >= {bound} THEN {column} END"
            select.append(f"{column} AS {view.column(feature)}")
    entities = f"e AS (SELECT {', '.join(entity_select)} FROM {_ENTITIES})"
    return f"WITH {entities}, {', '.join(ctes)} SELECT {', '.join(select)} FROM e {' '.join(joins)}"


def _ordered_rows(view: _View) -> str:
    """A view's source rows, each with the key the ASOF join orders them by.

    The key is ``(event time, has a created time, created time, hash of the values)``,
    compared field by field, and the entity row probes with ``(ts, true, max, NULL)``
    (a NULL sorts last), which no row at or before ``ts`` exceeds. So the ASOF join
    picks, among the rows at the latest event time not after ``ts``, the latest
    created (a row without a created time losing), and among true duplicates a fixed
    one by content; one sorted pass, where deduplicating first (a window or an
    aggregate over every row) would cost more than the join itself.
    """
    keys = ", ".join(quote(k) for k in view.spec["join_keys"])
    values = ", ".join(f"{quote(f)} AS {view.column(f)}" for f in view.features)
    content = ", ".join(quote(f) for f in view.features)
    order = (
        f"struct_pack(ev := {EVENT_MS}, hc := {CREATED_MS} IS NOT NULL, c := {CREATED_MS}, "
        f"h := hash({content}))"
    )
    return (
        f"SELECT {keys}, {EVENT_MS}, {values}, {order} AS {_ORDER} "
        f"FROM {_source_name(view)} WHERE {EVENT_MS} IS NOT NULL"
    )


def _feature_columns(plan: _Plan, joined: pa.Table) -> list[tuple[str, pa.ChunkedArray | pa.Array]]:
    """The output columns, by output name, from the join's columns (on-demand ones computed)."""
    import pyarrow as pa

    computed: dict[str, pd.DataFrame] = {}
    for definition in plan.on_demand.values():
        spec = definition.spec
        names: list[str] = []
        arrays: list[Any] = []
        for source in spec["views"]:
            view = plan.views[source]
            for feature in view.features:
                names.append(feature)
                arrays.append(joined.column(view.column(feature)))
        for name in request_fields(spec):
            names.append(name)
            arrays.append(joined.column(name))
        frame = arrow_to_pandas(pa.table(arrays, names=names)) if names else None
        if frame is None:  # no inputs at all: one empty row per entity row
            import pandas as pd

            frame = pd.DataFrame(index=range(joined.num_rows))
        computed[definition.name] = run_on_demand(spec, frame)
    out: list[tuple[str, pa.ChunkedArray | pa.Array]] = []
    for ref, name in plan.outputs:
        if ref.view in plan.views:
            out.append((name, joined.column(plan.views[ref.view].column(ref.feature))))
        else:
            dtype = next(
                f["dtype"]
                for f in plan.on_demand[ref.view].spec["schema"]
                if f["name"] == ref.feature
            )
            series = computed[ref.view][ref.feature]
            out.append((name, pa.array(series, from_pandas=True, type=arrow_type(dtype))))
    return out


def _in_memory(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    entities: _Entities,
    ts: str,
    fmt: str,
) -> pd.DataFrame | pa.Table:
    import pandas as pd
    import pyarrow as pa

    from_file = entities.table is None
    # entity columns travel through DuckDB only when they must: read from a file, or
    # request data for on-demand views; otherwise the caller's own columns are reused
    carry = entities.columns if from_file else _request_columns(plan)
    joined = con.execute(f"{_join_sql(con, plan, ts, carry)} ORDER BY {_ROW}").to_arrow_table()
    features = _feature_columns(plan, joined)
    base: pa.Table = joined.select(entities.columns) if from_file else entities.table
    if fmt == "arrow":
        for name, column in features:
            base = base.append_column(name, column)
        return base
    frame = entities.frame if entities.frame is not None else base.to_pandas()
    values = arrow_to_pandas(pa.table([c for _, c in features], names=[n for n, _ in features]))
    values.index = frame.index
    return pd.concat([frame, values], axis=1)


def _request_columns(plan: _Plan) -> list[str]:
    names: dict[str, None] = {}
    for definition in plan.on_demand.values():
        names.update(dict.fromkeys(request_fields(definition.spec)))
    return list(names)


def _to_parquet(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    entities: _Entities,
    ts: str,
    output: Path,
) -> Path:
    """Write the training set to ``output`` through a temporary name; return ``output``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = output.expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    joined = f"SELECT * FROM ({_join_sql(con, plan, ts, entities.columns)}) ORDER BY {_ROW}"
    try:
        if not plan.on_demand:  # all in DuckDB: the rows never pass through Python
            columns = [quote(c) for c in entities.columns] + [
                f"{plan.views[ref.view].column(ref.feature)} AS {quote(name)}"
                for ref, name in plan.outputs
            ]
            target = "'" + str(partial).replace("'", "''") + "'"
            con.execute(
                f"COPY (SELECT {', '.join(columns)} FROM ({joined}) ORDER BY {_ROW}) "
                f"TO {target} (FORMAT parquet)"
            )
        else:  # on-demand functions run in Python, one batch of rows at a time
            reader = con.execute(joined).to_arrow_reader(_BATCH_ROWS)
            writer: pq.ParquetWriter | None = None
            try:
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    part = pa.Table.from_batches([batch])
                    table = part.select(entities.columns)
                    for name, column in _feature_columns(plan, part):
                        table = table.append_column(name, column)
                    if writer is None:
                        writer = pq.ParquetWriter(partial, table.schema)
                    writer.write_table(table)
                if writer is None:  # no rows: the columns alone
                    pq.write_table(_empty_result(plan, reader.schema, entities.columns), partial)
            finally:
                if writer is not None:
                    writer.close()
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output


#: rows per batch when on-demand features are computed on the way to Parquet
_BATCH_ROWS = 100_000


def _empty_result(plan: _Plan, schema: pa.Schema, columns: list[str]) -> pa.Table:
    import pyarrow as pa

    fields = [schema.field(c) for c in columns]
    for ref, name in plan.outputs:
        if ref.view in plan.views:
            fields.append(
                pa.field(name, schema.field(plan.views[ref.view].column(ref.feature)).type)
            )
        else:
            spec = plan.on_demand[ref.view].spec
            dtype = next(f["dtype"] for f in spec["schema"] if f["name"] == ref.feature)
            fields.append(pa.field(name, arrow_type(dtype)))
    return pa.schema(fields).empty_table()


def _explain(exc: Exception, memory_limit: str | None) -> InvalidInput:
    """A DuckDB failure the caller can act on, as an :class:`InvalidInput`."""
    import duckdb

    first = str(exc).splitlines()[0]
    if isinstance(exc, duckdb.OutOfMemoryException):
        return InvalidInput(
            f"the training set needs more memory than memory_limit="
            f"{memory_limit or DEFAULT_MEMORY_LIMIT!r} even when spilling to disk ({first}); "
            "pass a larger memory_limit"
        )
    if isinstance(exc, duckdb.InvalidInputException):
        return InvalidInput(f"a feature source could not be read ({first}); fix the file")
    return InvalidInput(
        f"a value does not convert to the type its definition declares ({first}); check the "
        "sources' columns and entity_df's against the definitions' types"
    )


# -- lineage ----------------------------------------------------------------------------------


def record_feature_inputs(
    client: Client, run_id: str, definitions: list[FeatureDefinition]
) -> None:
    """Record ``features:/<view>@<version> -> runs:/<run_id>`` (relation ``input``) for each view.

    Locally the edges go in the store; through ``keel server``, to its feature-inputs route.
    """
    client.features.record_inputs(run_id, definitions)
