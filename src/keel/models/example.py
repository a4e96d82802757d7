"""Input examples as small JSON documents inside ``keel-model.json``.

At most :data:`MAX_EXAMPLE_ROWS` rows (the first ones) are kept, and the
encoded example must fit in :data:`MAX_EXAMPLE_BYTES`; missing values are
JSON ``null`` and datetimes ISO-8601 strings. Three shapes::

    {"type": "dataframe", "columns": [...], "dtypes": [...], "data": [[row], ...]}
    {"type": "ndarray", "dtype": "float32", "data": [[...], ...]}
    {"type": "tensors", "data": {"name": {"type": "ndarray", ...}, ...}}
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from keel.errors import InvalidInput
from keel.models.signature import normalize

__all__ = ["MAX_EXAMPLE_BYTES", "MAX_EXAMPLE_ROWS", "decode_example", "encode_example", "head"]

MAX_EXAMPLE_ROWS = 10
MAX_EXAMPLE_BYTES = 1 << 20


def head(example: Any) -> pd.DataFrame | np.ndarray | dict[str, np.ndarray]:
    """The normalized example cut to its first :data:`MAX_EXAMPLE_ROWS` rows."""
    value = normalize(example)
    if isinstance(value, pd.DataFrame):
        return value.head(MAX_EXAMPLE_ROWS)
    if isinstance(value, dict):
        return {k: v[:MAX_EXAMPLE_ROWS] if v.ndim else v for k, v in value.items()}
    return value[:MAX_EXAMPLE_ROWS] if value.ndim else value


def encode_example(example: Any) -> dict[str, Any]:
    """A JSON-ready document holding the first rows of ``example``.

    Raises:
        InvalidInput: a type JSON cannot carry, or an example too large even when cut.
    """
    value = head(example)
    if isinstance(value, pd.DataFrame):
        split = json.loads(value.to_json(orient="split", date_format="iso", index=False))
        doc: dict[str, Any] = {
            "type": "dataframe",
            "columns": split["columns"],
            "dtypes": [str(t) for t in value.dtypes],
            "data": split["data"],
        }
    elif isinstance(value, dict):
        doc = {"type": "tensors", "data": {k: _encode_array(v, k) for k, v in value.items()}}
    else:
        doc = _encode_array(value, "input")
    try:
        size = len(json.dumps(doc, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input_example cannot be stored as JSON: {exc}") from None
    if size > MAX_EXAMPLE_BYTES:
        raise InvalidInput(
            f"input_example is {size} bytes as JSON even cut to {MAX_EXAMPLE_ROWS} rows; "
            f"the limit is {MAX_EXAMPLE_BYTES}; pass a smaller example"
        )
    return doc


def _encode_array(arr: np.ndarray, name: str) -> dict[str, Any]:
    if arr.dtype.kind not in "biufUO":
        raise InvalidInput(
            f"input_example {name!r} has dtype {arr.dtype}; store examples as bool, "
            "integer, float or string arrays"
        )
    data = arr
    if arr.dtype.kind == "f":
        data = arr.astype(object)
        data[np.isnan(arr)] = None
    return {"type": "ndarray", "dtype": str(arr.dtype), "data": data.tolist()}


def decode_example(doc: dict[str, Any] | None) -> Any:
    """The example a document from :func:`encode_example` describes (``None`` for ``None``)."""
    if doc is None:
        return None
    kind = doc.get("type")
    if kind == "dataframe":
        frame = pd.DataFrame(doc["data"], columns=doc["columns"])
        for column, dtype in zip(doc["columns"], doc["dtypes"], strict=True):
            if dtype.startswith("datetime64"):
                frame[column] = pd.to_datetime(frame[column]).astype(dtype)
            else:
                frame[column] = frame[column].astype(dtype)
        return frame
    if kind == "tensors":
        return {k: decode_example(v) for k, v in doc["data"].items()}
    if kind == "ndarray":
        dtype = np.dtype(doc["dtype"])
        if dtype.kind == "f":
            return np.array(doc["data"], dtype=object).astype(dtype)
        return np.array(doc["data"], dtype=dtype)
    raise InvalidInput(f"unknown input example type {kind!r}")
