"""A model's columns as logs and profiles name them, and the reference profile in its package.

Prediction logs and reference profiles name a model's inputs ``input.<column>``
and its outputs ``output.prediction`` (one value per row), ``output.0`` …
(several), or ``output.<name>`` (a DataFrame's columns, a dict's keys).
:func:`log_columns` is that rule, in one place: the server logs by it and the
reference profile is built by it, so live traffic and its reference always
line up column for column.

``keel.log_model(model, ..., reference_data=train_df)`` profiles the data and
the model's predictions on it (:func:`reference_profile`) and stores
``reference-profile.json`` inside the package, so a registered version carries
its drift reference, pinned by digest (see :mod:`keel.monitoring.reference`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keel.data.profiling import Profile, open_source, profile
from keel.errors import InvalidInput

__all__ = [
    "INPUT_PREFIX",
    "OUTPUT_PREFIX",
    "REFERENCE_FILE",
    "log_columns",
    "reference_profile",
    "write_package_reference",
]

REFERENCE_FILE = "reference-profile.json"
INPUT_PREFIX = "input."
OUTPUT_PREFIX = "output."
_PREDICT_ROWS = 100_000


def log_columns(prefix: str, value: Any, n: int, name: str | None = None) -> dict[str, Any]:
    """A request's inputs (``prefix="input"``) or a model's outputs (``"output"``) as columns.

    A DataFrame gives a column per column and a dict a column per key; a 2-D
    array a column per position (``output.0`` …); a 1-D array is
    ``output.prediction`` (``input.value``); arrays of more dimensions (and a
    dict's 2-D values) become one column holding a flat list per row. Values
    that are not one per row are left out.
    """
    if hasattr(value, "columns"):  # a DataFrame
        return {f"{prefix}.{c}": value[c].to_numpy() for c in value.columns}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(log_columns(prefix, item, n, str(key)))
        return out
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != n:
        return {}
    single = f"{prefix}.{name or ('prediction' if prefix == 'output' else 'value')}"
    if array.ndim == 1:
        return {single: array}
    if array.ndim == 2 and name is None:
        return {f"{prefix}.{j}": array[:, j] for j in range(array.shape[1])}
    return {single: array.reshape(n, -1)}


def reference_profile(
    data: Any,
    *,
    predict: Callable[[Any], Any] | None = None,
    categorical: Sequence[str] | None = None,
) -> Profile:
    """Profile ``data`` as a model's inputs and, given ``predict``, its outputs on it.

    Args:
        data: the training or validation features (DataFrame, Arrow table, Parquet/CSV
            path), or a :class:`Profile` (names without ``input.``/``output.`` are inputs).
        predict: called with DataFrame chunks of ``data``; returns the model's output.
        categorical: numeric input columns to treat as categories.
    """
    import pyarrow as pa

    if isinstance(data, Profile):
        if any(n.startswith((INPUT_PREFIX, OUTPUT_PREFIX)) for n in data.columns):
            return data
        return data.rename(lambda c: INPUT_PREFIX + c)
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
        for column, values in log_columns("output", output, batch.num_rows).items():
            if np.asarray(values).ndim == 1:  # list columns: no drift test reads them
                collected.setdefault(column, []).append(np.asarray(values))
    if not collected:
        return inputs
    outputs = profile(pa.table({k: _concat(v) for k, v in collected.items()}))
    return Profile(
        inputs.rows, {**inputs.columns, **outputs.columns}, {**inputs.skipped, **outputs.skipped}
    )


def _concat(parts: list[np.ndarray]) -> Any:
    import pyarrow as pa

    array = np.concatenate(parts)
    if array.dtype.kind == "O":
        return pa.array(array.tolist())
    return pa.array(array)


def write_package_reference(
    folder: Path, data: Any, predict: Callable[[Any], Any] | None
) -> Profile:
    """Profile ``data`` (and the model's predictions on it) into a model package folder."""
    result = reference_profile(data, predict=predict)
    text = json.dumps(result.to_dict(), sort_keys=True, allow_nan=False)
    (folder / REFERENCE_FILE).write_text(text + "\n", encoding="utf-8")
    return result
