"""Parity: does the compiled form answer like the native model, on the version's own data?

The rows are the version's input example plus one table, the first of:

1. the data the caller passes (a DataFrame, a CSV/Parquet path, a ``datasets:/`` URI);
2. the dataset the version's reference profile was taken from;
3. the largest table its run read or logged that has every signature column.

Only the signature's columns are used. A row with a missing value in a column
that takes none is left out (the native model would refuse it too) and
counted; past :data:`MAX_ROWS` rows a fixed-seed sample is drawn. The report
names every source and how many rows each gave.

Both models predict every row through :class:`~keel.models.LoadedModel`, as
serving does. A classifier passes when its classes agree on at least
:data:`THRESHOLD` of the rows and its probabilities are within
:data:`TOLERANCE` of the native ones on at least :data:`THRESHOLD` of the rows
(the largest difference of a row's classes); a regressor when
``|Δ| <= TOLERANCE * max(1, |y|)`` on at least :data:`THRESHOLD` of them.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInput
from keel.models.signature import Signature

if TYPE_CHECKING:
    from keel.client import Client
    from keel.models.api import LoadedModel
    from keel.registry.entities import ModelVersion

__all__ = [
    "MAX_ROWS",
    "THRESHOLD",
    "TOLERANCE",
    "ParityRows",
    "measure",
    "ms_per_row",
    "parity_rows",
]

#: The largest difference allowed between a native and a compiled probability (or value).
TOLERANCE = 1e-5
#: The share of rows that must agree.
THRESHOLD = 0.999
#: At most this many rows are checked (a fixed-seed sample of larger data).
MAX_ROWS = 50_000
#: One-row latency is the median of this many calls (fewer when one takes long).
_TIMED_CALLS = 50
_TIMING_BUDGET_S = 1.0


@dataclass(frozen=True)
class ParityRows:
    """The rows parity is checked on.

    Attributes:
        data: a DataFrame with the signature's columns (an array for a tensor signature).
        sources: each source and the rows it gave, e.g. ``"input_example: 5 rows"``.
        excluded: rows left out for a missing value where the signature takes none.
    """

    data: Any
    sources: list[str]
    excluded: int

    def __len__(self) -> int:
        return len(self.data)


def parity_rows(
    client: Client,
    version: ModelVersion,
    signature: Signature,
    example: Any,
    data: Any = None,
) -> ParityRows:
    """The version's input example plus its holdout or reference data (see the module).

    Raises:
        InvalidInput: ``data`` is unreadable or lacks signature columns, or there is
            not one row to check (no example, no data): the message says to pass ``--data``.
    """
    parts: list[tuple[str, Any]] = []
    if example is not None:
        parts.append(("input_example", example))
    table = _given(data, client) if data is not None else _recorded(client, version, signature)
    if table is not None:
        parts.append(table)
    frames = [(name, _shaped(signature, rows, name)) for name, rows in parts]
    frames = [(name, rows) for name, rows in frames if len(rows)]
    if not frames:
        raise InvalidInput(
            f"there are no rows to check {version.uri}'s compiled form on: it has no input "
            "example and no recorded reference or training data; pass rows it takes with "
            "--data (a CSV or Parquet file, or a datasets:/ URI)"
        )
    sources = [f"{name}: {len(rows)} rows" for name, rows in frames]
    combined = _concat([rows for _, rows in frames])
    combined, excluded = _complete(signature, combined)
    if len(combined) > MAX_ROWS:
        sources.append(f"sample: {MAX_ROWS} of {len(combined)} rows (seed 0)")
        chosen = np.sort(np.random.default_rng(0).choice(len(combined), MAX_ROWS, replace=False))
        combined = combined[chosen] if isinstance(combined, np.ndarray) else combined.iloc[chosen]
    if not len(combined):
        raise InvalidInput(
            f"every row to check {version.uri}'s compiled form on has a missing value in a "
            "column its signature says takes none; pass complete rows with --data"
        )
    return ParityRows(combined, sources, excluded)


def _given(data: Any, client: Client) -> tuple[str, Any]:
    """The caller's data: a DataFrame, a CSV/Parquet path or a ``datasets:/`` URI."""
    from keel.uris import DATASETS, scheme_of

    if isinstance(data, str | os.PathLike):
        text = os.fspath(data)
        if scheme_of(text) == DATASETS:
            return text, _load_table(text, client)
        from keel.checks import read_table

        return text, read_table(text)
    if hasattr(data, "columns") or isinstance(data, np.ndarray):
        return "data", data
    raise InvalidInput(
        "data must be a DataFrame, the path of a CSV or Parquet file, or a datasets:/ URI, "
        f"got {type(data).__name__}"
    )


def _load_table(uri: str, client: Client) -> Any:
    from keel.data import load_dataset

    loaded = load_dataset(uri, settings=client.settings)
    if not hasattr(loaded, "columns"):
        raise InvalidInput(
            f"{uri} is a version of files, not a table; pass a table (keel.log_dataset) or "
            "a CSV or Parquet file"
        )
    return loaded


def _recorded(
    client: Client, version: ModelVersion, signature: Signature
) -> tuple[str, Any] | None:
    """The reference's dataset, else the run's largest table with every signature column."""
    if signature.inputs.is_tensor:
        return None
    info = client.monitoring.reference_info(version.name, version.version) or {}
    if info.get("dataset"):
        uri = str(info["dataset"])
        return f"{uri} (reference)", _load_table(uri, client)
    if not version.run_id:
        return None
    wanted = set(signature.inputs.names)
    tables = [
        v
        for v in client.data.run_inputs(version.run_id)
        if v.kind == "table" and wanted <= {str(f.get("name")) for f in (v.schema or [])}
    ]
    if not tables:
        return None
    best = max(tables, key=lambda v: v.num_rows or 0)
    return f"{best.uri} (training data)", _load_table(best.uri, client)


def _shaped(signature: Signature, rows: Any, name: str) -> Any:
    """``rows`` narrowed to what the model takes: its columns, or its one tensor."""
    import pandas as pd

    inputs = signature.inputs
    if inputs.is_tensor:
        array = rows.to_numpy() if isinstance(rows, pd.DataFrame) else np.asarray(rows)
        width = inputs.tensors[0].shape[-1] if inputs.tensors[0].shape else None
        if array.ndim != 2 or (width not in (None, -1) and array.shape[1] != width):
            raise InvalidInput(
                f"{name}: the model takes one array of {width} columns, got shape "
                f"{array.shape}; pass exactly its feature columns"
            )
        return array
    if isinstance(rows, np.ndarray):
        rows = pd.DataFrame(rows, columns=list(inputs.names))
    if not isinstance(rows, pd.DataFrame):
        rows = pd.DataFrame(rows)
    missing = [c for c in inputs.names if c not in rows.columns]
    if missing:
        raise InvalidInput(
            f"{name} lacks the model's input column(s) {', '.join(map(repr, missing))}; "
            "pass data with every column of its signature"
        )
    return rows[list(inputs.names)].reset_index(drop=True)


def _concat(parts: list[Any]) -> Any:
    import pandas as pd

    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)


def _complete(signature: Signature, rows: Any) -> tuple[Any, int]:
    """``rows`` without those holding a missing value where the signature takes none."""
    import pandas as pd

    if isinstance(rows, np.ndarray):
        spec = signature.inputs.tensors[0]
        if spec.allow_missing or rows.dtype.kind != "f":
            return rows, 0
        bad = ~np.isfinite(rows).all(axis=1)
        return rows[~bad], int(bad.sum())
    strict = [c.name for c in signature.inputs.columns if not c.allow_missing]
    if not strict:
        return rows, 0
    bad = np.array(rows[strict].isna().any(axis=1), dtype=bool)
    numeric = [c for c in strict if pd.api.types.is_float_dtype(rows[c])]
    if numeric:
        bad |= np.isinf(rows[numeric].to_numpy(dtype=float)).any(axis=1)
    return rows[~bad].reset_index(drop=True), int(bad.sum())


# -- measuring ---------------------------------------------------------------------------------


def measure(native: LoadedModel, compiled: LoadedModel, rows: Any, task: str) -> dict[str, Any]:
    """The parity figures of ``compiled`` against ``native`` on ``rows``.

    Returns:
        ``rows``, ``class_agreement`` (``None`` for a regressor), ``max_abs_diff``,
        ``within_tolerance`` and ``disagreeing_rows`` (the first few row positions that
        failed), then ``passed`` and ``reason`` (``None`` when it passed).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(native.predict(rows))
        got = np.asarray(compiled.predict(rows))
    n = len(expected)
    if got.shape != expected.shape:
        return _verdict(
            n,
            None,
            None,
            0.0,
            np.arange(min(n, 10)),
            f"the compiled form returns shape {got.shape}, the native model {expected.shape}",
        )
    if task == "classification":
        same = _equal(expected, got)
        agreement = float(same.mean()) if n else 1.0
        native_p = _probabilities(native, rows)
        if native_p is not None:
            compiled_p = np.asarray(compiled.predict_proba(rows), dtype=np.float64)
            diff = np.abs(compiled_p - native_p).max(axis=1)
        else:  # a classifier without probabilities: its labels are all there is
            diff = np.zeros(n)
        ok = diff <= TOLERANCE
        bad = np.flatnonzero(~(ok & same))
        return _verdict(n, agreement, _max(diff), _share(ok), bad, None)
    expected_f = expected.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - expected_f)
    ok = diff <= TOLERANCE * np.maximum(1.0, np.abs(expected_f))
    return _verdict(n, None, _max(diff), _share(ok), np.flatnonzero(~ok), None)


def _probabilities(model: LoadedModel, rows: Any) -> Any:
    from keel.errors import KeelError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(model.predict_proba(rows), dtype=np.float64)
    except KeelError:  # the native model gives none: InvalidInput from LoadedModel
        return None


def _equal(expected: Any, got: Any) -> Any:
    if expected.dtype.kind == "f" and got.dtype.kind == "f":
        return (expected == got) | (np.isnan(expected) & np.isnan(got))
    return np.asarray(expected == got, dtype=bool).reshape(len(expected), -1).all(axis=1)


def _max(diff: Any) -> float:
    return float(np.nanmax(diff)) if len(diff) and not np.isnan(diff).all() else 0.0


def _share(ok: Any) -> float:
    return float(ok.mean()) if len(ok) else 1.0


def _verdict(
    n: int,
    agreement: float | None,
    max_diff: float | None,
    within: float,
    bad: Any,
    problem: str | None,
) -> dict[str, Any]:
    reasons = [problem] if problem else []
    if agreement is not None and agreement < THRESHOLD:
        reasons.append(f"classes agree on {agreement:.1%} of {n} rows (need {THRESHOLD:.1%})")
    if not problem and within < THRESHOLD:
        what = "probabilities" if agreement is not None else "predictions"
        reasons.append(
            f"{what} are within {TOLERANCE:g} on {within:.1%} of rows (need {THRESHOLD:.1%}), "
            f"max |Δ| {max_diff or 0.0:.3g}"
        )
    return {
        "rows": n,
        "class_agreement": agreement,
        "max_abs_diff": max_diff,
        "within_tolerance": within,
        "disagreeing_rows": [int(i) for i in bad[:10]],
        "passed": not reasons,
        "reason": None if not reasons else "parity failed: " + "; ".join(reasons),
    }


def ms_per_row(model: LoadedModel, row: Any) -> float:
    """The median milliseconds of one-row ``predict`` calls, as a server makes them.

    A server checks a request once (``check_input``: one array for an all-numeric
    signature) and predicts on that; so does this, so the figure is the model's own.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = model.check_input(row)
        model.predict(row)  # the first call warms caches
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < _TIMED_CALLS and time.perf_counter() - started < _TIMING_BUDGET_S:
            t0 = time.perf_counter()
            model.predict(row)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)
