"""Step outputs in the content store, by type, and loaded back.

=================  ==============================  ===============================
returned value     stored as                       loaded back as
=================  ==============================  ===============================
pandas DataFrame   Parquet (``.parquet``)          DataFrame
pandas Series      one-column Parquet              Series
pyarrow Table      Parquet                         pyarrow Table
NumPy array        ``.npy`` (no pickled objects)   ndarray
a model            a model package (see models)    the native model, verified
JSON-able value    canonical JSON                  the value
=================  ==============================  ===============================

An output's ``digest`` identifies its *content*: for files it is the
stored object's digest; for a model it is a fingerprint of the fitted
model (BLAKE3 of its pickle bytes, which are hashed and never stored or
loaded) because a package's files carry times and object ids that differ
between two identical fits. ``object`` is what the store holds (the file,
or the package's folder manifest).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.artifacts import ArtifactStore, canonical_json, check_digest, hash_bytes
from keel.errors import InvalidInput
from keel.validation import safe_join

__all__ = ["NOT_JSON", "OUTPUT_TYPES", "Materialized", "load", "save", "to_jsonable"]

OUTPUT_TYPES = ("dataframe", "series", "arrow", "ndarray", "json", "model")
_EXTENSIONS = {
    "dataframe": "parquet",
    "series": "parquet",
    "arrow": "parquet",
    "ndarray": "npy",
    "json": "json",
}
_SERIES_COLUMN = "__keel_series__"
#: What :func:`to_jsonable` returns for a value JSON cannot hold.
NOT_JSON = object()


@dataclass(frozen=True)
class Materialized:
    """A stored step output."""

    name: str
    type: str
    digest: str
    object: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "digest": self.digest,
            "object": self.object,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Materialized:
        return cls(doc["name"], doc["type"], doc["digest"], doc["object"], int(doc["size"]))

    @property
    def uri(self) -> str:
        return f"artifacts:/{self.digest}"

    def artifact_entries(self, store: ArtifactStore) -> list[tuple[str, str, int]]:
        """``(path, digest, size)`` rows listing this output among a run's artifacts."""
        if self.type == "model":
            return [
                (f"outputs/{self.name}/{e.path}", e.digest, e.size)
                for e in store.read_manifest(self.object)
            ]
        return [(f"outputs/{self.name}.{_EXTENSIONS[self.type]}", self.object, self.size)]


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples → lists, NumPy scalars → numbers), or ``NOT_JSON``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return NOT_JSON
        out = {k: to_jsonable(v) for k, v in value.items()}
        return NOT_JSON if any(v is NOT_JSON for v in out.values()) else out
    if isinstance(value, list | tuple):
        items = [to_jsonable(v) for v in value]
        return NOT_JSON if any(v is NOT_JSON for v in items) else items
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return NOT_JSON


def _parquet(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _model_fingerprint(model: Any, files: dict[str, Any]) -> str:
    try:
        return hash_bytes(pickle.dumps(model, protocol=5))
    except Exception:  # unpicklable (native handles): the package's file digests stand in
        return hash_bytes(canonical_json(files))


def _save_model(value: Any, name: str, store: ArtifactStore, where: str) -> Materialized:
    from keel.models.flavors import detect_flavor
    from keel.models.package import (
        build_manifest,
        detect_requirements,
        file_table,
        merge_requirements,
        write_manifest,
    )

    flavor = detect_flavor(value)
    with tempfile.TemporaryDirectory(prefix="keel-output-") as tmp:
        folder = Path(tmp)
        try:
            config = flavor.save(value, folder, allow_pickle=False)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: cannot store the returned model: {exc}") from None
        files = file_table(folder)
        signature = flavor.default_signature(value)
        doc = build_manifest(
            flavor=flavor.name,
            flavor_config=config,
            signature=signature,
            input_example=None,
            files=files,
            requirements=merge_requirements(
                detect_requirements((*flavor.requirements(config), "numpy", "pandas")), None
            ),
        )
        write_manifest(folder, doc)
        manifest, entries = store.put_dir(folder)
    fingerprint = _model_fingerprint(value, files)
    digest = hash_bytes(canonical_json({"flavor": flavor.name, "fingerprint": fingerprint}))
    return Materialized(name, "model", digest, manifest.digest, sum(e.size for e in entries))


def save(value: Any, name: str, store: ArtifactStore, where: str) -> Materialized:
    """Store one output by its type.

    Args:
        value: what the step returned (or one element of a declared tuple).
        name: the output's name (``return`` or a declared name).
        store: the content store.
        where: the step and its call site, for error messages.

    Raises:
        InvalidInput: a value of a type Keel cannot store.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(value, pd.DataFrame):
        try:
            kind, data = "dataframe", _parquet(pa.Table.from_pandas(value))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(
                f"{where}: the returned DataFrame cannot be stored as Parquet ({exc}); give "
                "mixed-type columns one type"
            ) from None
    elif isinstance(value, pd.Series):
        frame = value.to_frame(_SERIES_COLUMN if value.name is None else str(value.name))
        kind, data = "series", _parquet(pa.Table.from_pandas(frame))
    elif isinstance(value, pa.Table):
        kind, data = "arrow", _parquet(value)
    elif isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        try:
            np.save(buffer, value, allow_pickle=False)
        except ValueError:
            raise InvalidInput(
                f"{where}: returned a NumPy array of Python objects, which would need pickle; "
                "return a numeric array, a DataFrame or a list"
            ) from None
        kind, data = "ndarray", buffer.getvalue()
    else:
        plain = to_jsonable(value)
        if plain is not NOT_JSON:
            kind, data = "json", json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
        else:
            try:
                return _save_model(value, name, store, where)
            except InvalidInput as exc:
                if "cannot store the returned model" in str(exc):
                    raise
                raise InvalidInput(
                    f"{where}: returned a {type(value).__qualname__}, which Keel cannot store; "
                    "a step returns a pandas DataFrame or Series, a pyarrow Table, a NumPy "
                    "array, a model (scikit-learn, XGBoost, LightGBM, ONNX, or a class with "
                    "keel_save/keel_load), or JSON-able values (dict, list, str, number, bool, "
                    "None); use @step(outputs=[...]) to return several"
                ) from None
    blob = store.put_bytes(data)
    return Materialized(name, kind, blob.digest, blob.digest, blob.size)


def load(output: Materialized, store: ArtifactStore, cache_dir: Path) -> Any:
    """An output's value, read back from the content store (verified)."""
    if output.type == "model":
        return _load_model(output, store, cache_dir)
    data = store.get_bytes(output.object)
    if output.type == "json":
        return json.loads(data)
    if output.type == "ndarray":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(pa.py_buffer(data)))
    if output.type == "arrow":
        return table
    frame = table.to_pandas()
    if output.type == "series":
        series = frame.iloc[:, 0]
        return series.rename(None) if series.name == _SERIES_COLUMN else series
    return frame


def _load_model(output: Materialized, store: ArtifactStore, cache_dir: Path) -> Any:
    from keel.models.api import load_model

    # The object is a digest read back from a record: checked, so the names below stay in
    # cache_dir; get_dir then refuses any manifest entry that would leave the staging folder.
    digest = check_digest(output.object)
    final = safe_join(cache_dir, digest, "cached output")
    if not final.is_dir():
        staging = safe_join(cache_dir, f".{digest}.{uuid.uuid4().hex[:8]}", "cached output")
        try:
            store.get_dir(output.object, staging)
            try:
                os.replace(staging, final)
            except OSError:  # another worker cached it first
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return load_model(str(final)).unwrap()  # every file re-hashed before it is deserialized
