"""Feedback: labels that arrive after the predictions, joined to them later by request id.

Labels are written synchronously, one file per call, under
``feedback/deployment=<name>/hour=<now>/`` (:data:`~keel.predictions.schema.FEEDBACK_SCHEMA`):
the JSON text of each label, and the label as a number when it is one, so
quality metrics read a float column without parsing.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from keel.artifacts.backends import Backend
from keel.errors import InvalidInput
from keel.predictions.arrow import json_text
from keel.predictions.layout import (
    HOUR_MS,
    check_deployment,
    file_key,
    now_ms,
    parquet_tree,
    part_name,
    partition,
    reaching,
    tag8,
)
from keel.predictions.schema import FEEDBACK, FEEDBACK_SCHEMA, UTC_MS

__all__ = ["LabelFile", "read_label_file", "read_labels", "write_labels"]


@dataclass(frozen=True)
class LabelFile:
    """The labels of a label file, ready for :func:`write_labels`.

    Attributes:
        request_ids: the request id of each label, as text (ids read as numbers
            from a CSV still match the string ids the server logged).
        labels: the label values, one per request id.
        rows: the row within the request each label is for (``None`` entries mean
            every row); ``None`` when the file has no ``row`` column.
    """

    request_ids: list[str]
    labels: list[Any]
    rows: list[int | None] | None


def read_label_file(path: str | os.PathLike[str]) -> LabelFile:
    """Read labels from a CSV or Parquet file with ``request_id``, ``label`` and optionally ``row``.

    Raises:
        InvalidInput: the file is missing, not ``.csv`` or ``.parquet``, or lacks ``request_id``
            or ``label``.
    """
    import pandas as pd

    file = Path(path)
    if not file.exists():
        raise InvalidInput(f"data file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(file)
    elif suffix in (".csv", ".txt"):
        frame = pd.read_csv(file)
    else:
        raise InvalidInput(
            f"data file {file} must be .parquet or .csv, got {suffix or 'no suffix'!r}"
        )
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{file} needs columns request_id and label; missing {', '.join(missing)}"
        )
    rows = (
        None
        if "row" not in frame.columns
        # A CSV row column with gaps reads as floats with NaN: a gap means every row.
        else [None if r != r else int(r) for r in frame["row"]]
    )
    return LabelFile([str(i) for i in frame["request_id"]], list(frame["label"]), rows)


def write_labels(
    backend: Backend,
    deployment: str,
    request_ids: Sequence[str],
    labels: Sequence[Any],
    rows: Sequence[int | None] | None = None,
) -> int:
    """Write one feedback file; return the number of labels written.

    Raises:
        InvalidInput: lengths differ, or an id or row is malformed.
        StorageError, BackendUnavailable: the root cannot be written.
    """
    check_deployment(deployment)
    ids = list(request_ids)
    values = list(labels)
    if len(values) != len(ids):
        raise InvalidInput(f"give one label per request id: {len(ids)} ids, {len(values)} labels")
    row_list: list[int | None] = [None] * len(ids) if rows is None else list(rows)
    if len(row_list) != len(ids):
        raise InvalidInput(f"give one row per request id: {len(ids)} ids, {len(row_list)} rows")
    for i, request_id in enumerate(ids):
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInput(f"request id #{i} must be a non-empty string, got {request_id!r}")
    for i, row in enumerate(row_list):
        if row is not None and (
            isinstance(row, bool) or not isinstance(row, numbers.Integral) or row < 0
        ):
            raise InvalidInput(f"row #{i} must be a whole number >= 0 or None, got {row!r}")
    if not ids:
        return 0
    texts: list[str] = []
    nums: list[float | None] = []
    for value in values:
        plain = value.item() if isinstance(value, np.generic) else value
        texts.append(json_text(plain))
        nums.append(float(plain) if isinstance(plain, numbers.Real) else None)
    now = now_ms()
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array([None if r is None else int(r) for r in row_list], pa.int64()),
            pa.array(texts, pa.string()),
            pa.array(nums, pa.float64()),
            pa.array([now] * len(ids), pa.int64()).cast(UTC_MS),
        ],
        schema=FEEDBACK_SCHEMA,
    )
    key = file_key(FEEDBACK, deployment, now // HOUR_MS, part_name(now, os.getpid(), tag8()))
    with reaching(backend, key):
        backend.put_table(key, table)
    return len(ids)


def read_labels(backend: Backend, deployment: str) -> pa.Table:
    """Every label stored for ``deployment`` (:data:`FEEDBACK_SCHEMA`), oldest first."""
    check_deployment(deployment)
    folder = partition(FEEDBACK, deployment)
    files = parquet_tree(backend, folder)
    if not files:
        return FEEDBACK_SCHEMA.empty_table()
    with reaching(backend, folder):
        table = ds.dataset(
            files, schema=FEEDBACK_SCHEMA, format="parquet", filesystem=backend.arrow_filesystem()
        ).to_table()
    return table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
