"""Tabular datasets: ``keel.log_dataset(df, name=...)`` and ``keel.load_dataset(uri)``.

A table is stored as one Parquet file (``data.parquet``) in a folder
manifest, like any other dataset version, with its schema and a profile
(:mod:`keel.data.profiling`: counts, missing values, min/max/mean, a
histogram on equal-mass bins for numbers, value counts for categories). The
profile is a JSON object in the content store, the same kind monitoring
compares live traffic against.

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
from keel.data.client import NewVersion
from keel.data.manifest import Manifest
from keel.data.restore import place_objects
from keel.data.snapshot import DataContext, active_run_id
from keel.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["TABLE_FILE", "load_dataset", "log_dataset"]

TABLE_FILE = "data.parquet"


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
    from keel.data.profiling import profile as build_profile

    # The same profile monitoring uses: a model trained on this version can take it as
    # its drift reference (keel monitor reference set MODEL VERSION datasets:/...).
    profile = ctx.artifacts.put_json(build_profile(table).to_dict())
    manifest = ctx.artifacts.put_manifest([ManifestEntry(TABLE_FILE, blob.digest, blob.size)])
    run_id = active_run_id()
    version, _new = ctx.catalog.register_version(
        NewVersion(
            name=dataset,
            digest=manifest.digest,
            kind="table",
            files=1,
            nbytes=blob.size,
            schema=[{"name": f.name, "type": str(f.type)} for f in table.schema],
            num_rows=table.num_rows,
            profile_digest=profile.digest,
            run_id=run_id,
            input_context="log_dataset" if run_id else None,
        )
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
    version = ctx.catalog.get_version(uri)
    run_id = active_run_id()
    if run_id:
        # pinned (name@N): the version just read, even if a newer one is added meanwhile
        ctx.catalog.record_input(run_id, version.uri, "load_dataset")
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
