"""Run an on-demand feature view's function, the same way offline and online.

Training sets (:mod:`keel.features.offline`) and online reads
(:mod:`keel.features.serving_read`) both call :func:`run_on_demand`, so the function
sees its input typed the same way on both paths and its output is checked and cast
by one rule: what would differ between training and serving is only the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, KeelError
from keel.features.loading import load_function
from keel.features.sources import arrow_to_pandas, arrow_type

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["request_fields", "run_on_demand"]


def request_fields(spec: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{field: (dtype, request source)}`` of an on-demand view's request data."""
    return {
        f["name"]: (f["dtype"], source["name"])
        for source in spec.get("request") or []
        for f in source["schema"]
    }


def run_on_demand(spec: Mapping[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """The on-demand view's output for ``frame``, checked and cast to its schema.

    Args:
        spec: the on-demand view's stored spec.
        frame: one row per entity row: each source view's features by bare name and
            each request field by name. Request fields are cast to their declared
            types before the function sees them.

    Returns:
        The schema's columns, in schema order, cast to their declared types, with
        ``frame``'s index.

    Raises:
        InvalidInput: a request field is missing or not of its type; the function
            raised, returned something other than a DataFrame, lacks a schema column,
            returned another number of rows, or a column does not cast to its type.
        Conflict: the function's code changed since it was applied (from
            :func:`~keel.features.loading.load_function`).
    """
    import pandas as pd

    view = spec["name"]
    fields = request_fields(spec)
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        name = missing[0]
        raise InvalidInput(
            f"on-demand feature view {view!r} needs request field {name!r} (request source "
            f"{fields[name][1]!r}), which the rows lack; they have columns {list(frame.columns)}"
        )
    changed = {}
    for name, (dtype, _source) in fields.items():
        given = frame[name]
        column = _cast(given, dtype, f"request field {name!r}", view)
        if column is not given:
            changed[name] = column
    if changed:  # copy only when a cast changed a column: the caller's frame stays as given
        frame = frame.assign(**changed)
    fn = load_function(spec)
    try:
        out = fn(frame)
    except KeelError:
        raise
    except Exception as exc:  # the user's code: report it as the view's failure
        raise InvalidInput(
            f"on-demand feature view {view!r}: its function {spec['function']['name']!r} "
            f"raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, pd.DataFrame):
        raise InvalidInput(
            f"on-demand feature view {view!r}: its function returned {type(out).__name__}; "
            "expected a pandas DataFrame with the schema's columns"
        )
    schema = [(f["name"], f["dtype"]) for f in spec["schema"]]
    lacking = [name for name, _ in schema if name not in out.columns]
    if lacking:
        raise InvalidInput(
            f"on-demand feature view {view!r}: its function returned no column(s) {lacking}; "
            f"it returned {list(out.columns)}"
        )
    if len(out) != len(frame):
        raise InvalidInput(
            f"on-demand feature view {view!r}: its function returned {len(out)} rows for "
            f"{len(frame)}; return one row per input row, in order"
        )
    return pd.DataFrame(
        # by position: the function's own index (often a fresh RangeIndex) is not the rows'
        {name: _cast(out[name], dtype, f"column {name!r}", view).array for name, dtype in schema},
        index=frame.index,
    )


#: The pandas dtype a declared type reads as (see :func:`~keel.features.sources.arrow_to_pandas`).
_PANDAS_DTYPES = {"float64": "float64", "int64": "Int64", "bool": "boolean"}


def _cast(series: pd.Series, dtype: str, what: str, view: str) -> pd.Series:
    """``series`` as its declared type, as training sets read it.

    A column already of that type, or numbers bound for ``float64``, take pandas'
    own path (one online request would otherwise spend milliseconds in Arrow);
    everything else goes through Arrow, the rule training sets use.
    """
    import pyarrow as pa

    target = _PANDAS_DTYPES.get(dtype)
    if target is not None and str(series.dtype) == target:
        return series
    if dtype == "float64" and series.dtype.kind in "iuf":
        return series.astype("float64")

    try:
        array = pa.array(series, from_pandas=True)
        table = pa.table({str(series.name): array.cast(arrow_type(dtype))})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"on-demand feature view {view!r}: {what} is not {dtype}: {exc}"
        ) from None
    column = arrow_to_pandas(table)[str(series.name)]
    column.index = series.index
    return column
