"""Tabular datasets: ``keel.log_dataset(df, name=...)`` and ``keel.load_dataset(uri)``.

A table is stored as one Parquet file (``data.parquet``) in a folder
manifest, like any other dataset version, with its schema and a profile:
per-column statistics computed over whole columns with pyarrow (counts,
missing values, min/max/mean/std, quantiles and a histogram for numbers;
distinct count and the most frequent values for everything else). The
profile is a JSON object in the content store and is what drift checks
later compare new data against.

Inside an active run, logging or loading a version records it as one of the
run's inputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.artifacts import ManifestEntry
from keel.config import Settings
from keel.data import catalog
from keel.data.catalog import DatasetVersion
from keel.data.checkout import place_objects
from keel.data.manifest import Manifest
from keel.data.snapshot import DataContext, active_run_id
from keel.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["TABLE_FILE", "load_dataset", "log_dataset", "profile_table"]

TABLE_FILE = "data.parquet"
_QUANTILES = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
_BINS = 20
_TOP = 20


def _to_arrow(data: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            return pa.Table.from_pandas(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(
                f"cannot store this DataFrame as Parquet: {exc}; give mixed-type object "
                "columns one type (e.g. df[col].astype(str))"
            ) from None
    to_arrow = getattr(data, "to_arrow", None)  # polars and other Arrow-backed frames
    if callable(to_arrow):
        table = to_arrow()
        if isinstance(table, pa.Table):
            return table
    raise InvalidInput(
        f"log_dataset takes a pandas DataFrame or a pyarrow Table, got {type(data).__name__}"
    )


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if number == number else None


def profile_table(table: pa.Table) -> dict[str, Any]:
    """Per-column statistics of ``table``, computed over whole columns."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    columns: dict[str, Any] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        stats: dict[str, Any] = {
            "type": str(kind),
            "count": len(column),
            "missing": column.null_count,
        }
        valid = len(column) - column.null_count
        if (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and valid:
            values = column.to_numpy(zero_copy_only=False).astype("float64")
            values = values[np.isfinite(values)]
            stats["kind"] = "numeric"
            if len(values):
                counts, edges = np.histogram(values, bins=_BINS)
                stats.update(
                    min=float(values.min()),
                    max=float(values.max()),
                    mean=float(values.mean()),
                    std=float(values.std()),
                    quantiles=dict(
                        zip(
                            (str(q) for q in _QUANTILES),
                            (float(x) for x in np.quantile(values, _QUANTILES)),
                            strict=True,
                        )
                    ),
                    histogram={"edges": edges.tolist(), "counts": counts.tolist()},
                )
        elif pa.types.is_boolean(kind):
            stats.update(kind="boolean", true=int(pc.sum(column).as_py() or 0))
        elif pa.types.is_temporal(kind) and valid:
            bounds = pc.min_max(column)
            stats.update(
                kind="temporal", min=str(bounds["min"].as_py()), max=str(bounds["max"].as_py())
            )
        else:
            stats["kind"] = "categorical"
            if pa.types.is_dictionary(kind):
                column = column.cast(kind.value_type)
            counted = pc.value_counts(column.drop_null()).flatten()
            order = pc.sort_indices(counted[1], sort_keys=[("", "descending")])[:_TOP]
            stats.update(
                distinct=len(counted[0]),
                top={
                    str(v): int(c)
                    for v, c in zip(
                        counted[0].take(order).to_pylist(),
                        counted[1].take(order).to_pylist(),
                        strict=True,
                    )
                },
            )
        columns[name] = stats
    return {"format": "keel.profile/v1", "num_rows": table.num_rows, "columns": columns}


def log_dataset(data: Any, name: str, *, settings: Settings | None = None) -> DatasetVersion:
    """Store a table as a new version of dataset ``name`` (Parquet, schema and profile).

    Logging the same content as the latest version returns that version. Inside
    an active run the version is recorded as one of the run's inputs.

    Args:
        data: a pandas DataFrame or a pyarrow Table (or a frame with ``to_arrow()``).
        name: the dataset's name.

    Returns:
        The version (``.uri`` is ``datasets:/<name>@<version>``).
    """
    import pyarrow.parquet as pq

    dataset = catalog.check_dataset_name(name)
    table = _to_arrow(data)
    ctx = DataContext(settings)
    tmp_root = ctx.settings.home / "cache" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        path = Path(tmp) / TABLE_FILE
        pq.write_table(table, path)
        blob = ctx.artifacts.put_file(path)
    profile = ctx.artifacts.put_json(profile_table(table))
    manifest = ctx.artifacts.put_manifest([ManifestEntry(TABLE_FILE, blob.digest, blob.size)])
    run_id = active_run_id()
    version, _new = catalog.register_version(
        ctx.store,
        name=dataset,
        digest=manifest.digest,
        kind="table",
        files=1,
        nbytes=blob.size,
        actor=ctx.settings.user,
        schema=[{"name": f.name, "type": str(f.type)} for f in table.schema],
        num_rows=table.num_rows,
        profile_digest=profile.digest,
        run_id=run_id,
        input_context="log_dataset" if run_id else None,
    )
    return version


def load_dataset(uri: str, *, settings: Settings | None = None) -> Any:
    """Load a dataset version: a table as a pandas DataFrame, files as a local path.

    Args:
        uri: ``datasets:/<name>@<version>``, ``datasets:/<name>`` (the latest) or
            ``datasets:/<digest>``.

    Returns:
        A DataFrame for versions logged with :func:`log_dataset`; for versions
        made by ``keel data add``, the path of a read-only local copy (the file
        itself for a one-file version, else the folder).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ctx = DataContext(settings)
    version = catalog.get_version(ctx.store, uri)
    run_id = active_run_id()
    if run_id:
        catalog.record_input(ctx.store, run_id, version, "load_dataset")
    manifest = ctx.manifest(version.digest)
    if version.kind == "table":
        digest, _size = manifest.files[TABLE_FILE]
        buffer = pa.py_buffer(ctx.artifacts.get_bytes(digest))  # verified
        return pq.read_table(pa.BufferReader(buffer)).to_pandas()
    folder = _materialized(ctx, version, manifest)
    return folder / next(iter(manifest.files)) if version.kind == "file" else folder


def _materialized(ctx: DataContext, version: DatasetVersion, manifest: Manifest) -> Path:
    """A local copy of a version's files under ``<home>/cache/datasets/<digest>``."""
    digest = version.digest
    final = ctx.settings.home / "cache" / "datasets" / digest
    if final.is_dir():
        return final
    staging = final.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
    try:
        packs = ctx.packs(version.packs_digest)
        place_objects(ctx, staging, sorted(manifest.files.items()), packs, None, None)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, final)
        except OSError:  # another process materialized it first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
