"""Reference profiles of model versions: what their live traffic is compared with.

A model version's reference profile describes its training (or validation)
data in the prediction log's terms: inputs as ``input.<column>``, and the
model's own predictions on that data as ``output.<name>`` (named the way the
server logs them: ``output.prediction`` for one value per row,
``output.0`` … for several, ``output.<column>`` for a DataFrame). Comparing
outputs catches prediction drift even before any label arrives.

A version gets its reference in one of two ways:

- ``keel.log_model(model, ..., reference_data=train_df)`` profiles the data
  and the model's predictions on it and stores ``reference-profile.json``
  inside the package, so a registered version carries it, pinned by digest;
- :func:`set_reference` (``keel monitor reference set``) stores a profile for
  a registered version afterwards; the newest one wins over the package's.
  It is audited.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import select

from keel.errors import InvalidInput
from keel.monitoring._client import resolve_client
from keel.monitoring.profiles import Profile
from keel.monitoring.profiling import profile
from keel.monitoring.sources import open_source

__all__ = [
    "INPUT_PREFIX",
    "OUTPUT_PREFIX",
    "REFERENCE_FILE",
    "get_reference",
    "output_columns",
    "reference_info",
    "reference_profile",
    "set_reference",
    "write_package_reference",
]

REFERENCE_FILE = "reference-profile.json"
INPUT_PREFIX = "input."
OUTPUT_PREFIX = "output."
_PREDICT_ROWS = 100_000


def output_columns(output: Any, n: int) -> dict[str, np.ndarray]:
    """A model's output as prediction-log columns, named as the server names them."""
    if hasattr(output, "columns"):  # a DataFrame
        return {f"{OUTPUT_PREFIX}{c}": output[c].to_numpy() for c in output.columns}
    if isinstance(output, dict):
        columns: dict[str, np.ndarray] = {}
        for key, value in output.items():
            array = np.asarray(value)
            if array.ndim == 1 and len(array) == n:
                columns[f"{OUTPUT_PREFIX}{key}"] = array
        return columns
    array = np.asarray(output)
    if array.ndim == 0 or array.shape[0] != n:
        return {}
    if array.ndim == 1:
        return {f"{OUTPUT_PREFIX}prediction": array}
    if array.ndim == 2:
        return {f"{OUTPUT_PREFIX}{j}": array[:, j] for j in range(array.shape[1])}
    return {}  # more dimensions: the log stores lists, which no drift test reads


def reference_profile(
    data: Any,
    *,
    predict: Callable[[Any], Any] | None = None,
    categorical: Sequence[str] | None = None,
) -> Profile:
    """Profile ``data`` as a model's inputs and, given ``predict``, its outputs on it.

    Args:
        data: the training or validation features (DataFrame, Arrow table, Parquet/CSV path).
        predict: called with DataFrame chunks of ``data``; returns the model's output.
        categorical: numeric input columns to treat as categories.
    """
    if isinstance(data, Profile):
        named = _prefixed(data)
        return named
    source = open_source(data)
    inputs = profile(source, categorical=categorical).rename(lambda c: INPUT_PREFIX + c)
    if predict is None:
        return inputs
    collected: dict[str, list[np.ndarray]] = {}
    for batch in source.batches(_PREDICT_ROWS):
        frame = batch.to_pandas()
        try:
            output = predict(frame)
        except Exception as exc:
            raise InvalidInput(
                f"the model failed to predict on the reference data ({type(exc).__name__}: "
                f"{exc}); pass data it accepts, or skip the outputs (predict=False)"
            ) from exc
        for name, values in output_columns(output, batch.num_rows).items():
            collected.setdefault(name, []).append(values)
    if not collected:
        return inputs
    outputs = profile(pa.table({k: _concat(v) for k, v in collected.items()}))
    return Profile(
        inputs.rows, {**inputs.columns, **outputs.columns}, {**inputs.skipped, **outputs.skipped}
    )


def _concat(parts: list[np.ndarray]) -> pa.Array:
    array = np.concatenate(parts)
    if array.dtype.kind == "O":
        return pa.array(array.tolist())
    return pa.array(array)


def _prefixed(given: Profile) -> Profile:
    """A profile in log terms: names without ``input.``/``output.`` become inputs."""
    if any(n.startswith((INPUT_PREFIX, OUTPUT_PREFIX)) for n in given.columns):
        return given
    return given.rename(lambda c: INPUT_PREFIX + c)


def write_package_reference(
    folder: Path, data: Any, predict: Callable[[Any], Any] | None
) -> Profile:
    """Profile ``data`` (and the model's predictions on it) into a model package folder."""
    result = reference_profile(data, predict=predict)
    text = json.dumps(result.to_dict(), sort_keys=True, allow_nan=False)
    (folder / REFERENCE_FILE).write_text(text + "\n", encoding="utf-8")
    return result


# -- stored references --------------------------------------------------------------------------


def set_reference(
    model_name: str,
    version: int,
    data: Any,
    *,
    predict: bool = True,
    categorical: Sequence[str] | None = None,
    client: Any = None,
) -> Profile:
    """Store the reference profile of a registered model version (audited).

    Args:
        model_name: the registered model.
        version: its version number.
        data: the reference features (DataFrame, Arrow table, Parquet/CSV path), or a
            :class:`Profile` (names without ``input.``/``output.`` are taken as inputs).
        predict: also profile the version's predictions on ``data`` (loads the model).
        categorical: numeric input columns to treat as categories.

    Raises:
        NotFound: no such model or version.
        InvalidInput: unreadable data, or a model that cannot predict on it.
    """
    from keel.governance import audit
    from keel.store import schema as s
    from keel.store.sql import now_ms

    client = resolve_client(client)
    mv = client.get_model_version(model_name, version)
    predictor = None
    if predict and not isinstance(data, Profile):
        from keel.models import load_model

        predictor = load_model(mv.uri).predict
    result = reference_profile(data, predict=predictor, categorical=categorical)
    blob = client.artifacts.put_json(result.to_dict())
    actor = client._settings.user
    with client.store.write() as conn:
        model_id = conn.execute(
            select(s.registered_models.c.id).where(s.registered_models.c.name == mv.name)
        ).scalar_one()
        conn.execute(
            s.reference_profiles.insert().values(
                model_id=model_id,
                version=mv.version,
                profile_digest=blob.digest,
                rows=result.rows,
                created_at=now_ms(),
                created_by=actor,
            )
        )
        audit.record(
            conn,
            actor=actor,
            action="monitor.reference.set",
            object_type="model_version",
            object_id=f"{mv.name}/{mv.version}",
            after={"profile_digest": blob.digest, "rows": result.rows, "columns": result.names},
        )
    return result


def reference_info(model_name: str, version: int, *, client: Any = None) -> dict[str, Any] | None:
    """Where a version's reference comes from (``set`` or ``package``), or ``None``."""
    client = resolve_client(client)
    mv = client.get_model_version(model_name, version)
    from keel.store import schema as s

    with client.store.read() as conn:
        row = conn.execute(
            select(s.reference_profiles)
            .join(s.registered_models, s.registered_models.c.id == s.reference_profiles.c.model_id)
            .where(
                s.registered_models.c.name == mv.name, s.reference_profiles.c.version == mv.version
            )
            .order_by(s.reference_profiles.c.id.desc())
            .limit(1)
        ).first()
    if row is not None:
        return {
            "source": "set",
            "digest": row.profile_digest,
            "rows": row.rows,
            "created_at": row.created_at,
            "created_by": row.created_by,
        }
    if mv.manifest_digest:
        for entry in client.artifacts.read_manifest(mv.manifest_digest):
            if entry.path == REFERENCE_FILE:
                return {"source": "package", "digest": entry.digest, "rows": None}
    return None


def get_reference(model_name: str, version: int, *, client: Any = None) -> Profile | None:
    """The reference profile of a model version, or ``None`` if it has none.

    The newest profile stored with :func:`set_reference` wins; otherwise the one
    ``log_model(reference_data=...)`` put in the package.

    Raises:
        NotFound: no such model or version.
    """
    client = resolve_client(client)
    info = reference_info(model_name, version, client=client)
    if info is None:
        return None
    return Profile.from_dict(client.artifacts.get_json(info["digest"]))
