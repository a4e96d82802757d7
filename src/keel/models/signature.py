"""Signatures: the columns or tensors a model takes and returns, inferred and enforced.

A :class:`Schema` is either *columnar* (named, typed columns, for tabular
models fed DataFrames) or a list of *tensors* (dtype and shape, ``-1`` for
any size, for models fed arrays). A :class:`Signature` pairs the input schema
with an optional output schema.

Enforcement (:func:`enforce`) works on whole columns and arrays, never row by
row. It applies only *safe widening* — ``int32 → int64``, ``int → float``,
``float32 → float64`` — and nothing that could lose or invent information:
``float → int``, ``string → number`` and anything to or from ``bool`` raise
:class:`~keel.errors.InvalidInput` naming the column and both types.

Missing values are part of the contract. Each column (and each tensor) says
whether it takes them: ``allow_missing``. A value is *missing* when it is
null, NaN or NaT, and infinities count with it: the models that handle NaN
natively (HistGradientBoosting, XGBoost, LightGBM) take ±inf too, and the
ones that do not refuse both. :func:`infer_signature` sets ``allow_missing``
where the example holds such a value, and ``log_model(...,
reference_data=train)`` also where the training data does; ``log_model``
lets every column take them when the model itself says it handles them
(scikit-learn's ``allow_nan`` tag, XGBoost, LightGBM). Any other model
trained without missing values refuses them by default: :func:`enforce`
raises :class:`~keel.errors.InvalidInput` naming the column and the first
row, instead of the model failing somewhere inside. A signature written
before this field existed reads as ``allow_missing=False``; to take missing
values, log the model with an example or a signature that has them.

Column types: ``bool``, ``int8``…``int64``, ``uint8``…``uint64``,
``float16``/``float32``/``float64``, ``string`` and ``datetime``. Tensor
dtypes: the same numeric names and ``bool``, plus ``str`` and ``object``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from keel.errors import InvalidInput
from keel.models.warning import warn

if TYPE_CHECKING:
    from keel.data.profiling import Profile

__all__ = [
    "COLUMN_TYPES",
    "ColSpec",
    "Schema",
    "Signature",
    "TensorSpec",
    "enforce",
    "infer_schema",
    "infer_signature",
    "matrix_fits",
]

_NUMERIC = (
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)
_SCALARS = ("bool", *_NUMERIC)
COLUMN_TYPES = (*_SCALARS, "string", "datetime")
TENSOR_DTYPES = (*_SCALARS, "str", "object")

# What ``infer_dtype`` reports for an object column, in the column vocabulary.
_OBJECT_KINDS = {
    "string": "string",
    "empty": "string",
    "integer": "int64",
    "floating": "float64",
    "mixed-integer-float": "float64",
    "boolean": "bool",
    "datetime": "datetime",
    "datetime64": "datetime",
}


@dataclass(frozen=True)
class ColSpec:
    """One named, typed column of a columnar schema.

    Attributes:
        name: the column's name.
        type: one of :data:`COLUMN_TYPES`.
        allow_missing: whether the column takes missing values (null, NaN, NaT, ±inf).
    """

    name: str
    type: str
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput(f"a column name must be a non-empty string, got {self.name!r}")
        if self.type not in COLUMN_TYPES:
            raise InvalidInput(
                f"column {self.name!r}: type must be one of {', '.join(COLUMN_TYPES)}, "
                f"got {self.type!r}"
            )
        _check_flag(self.allow_missing, f"column {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        # Written only when set: the packages of models without missing values keep their bytes.
        doc: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.allow_missing:
            doc["allow_missing"] = True
        return doc


@dataclass(frozen=True)
class TensorSpec:
    """An array's dtype and shape; ``-1`` in ``shape`` matches any size (the batch dimension)."""

    dtype: str
    shape: tuple[int, ...]
    name: str | None = None
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in TENSOR_DTYPES:
            raise InvalidInput(
                f"tensor {self.label}: dtype must be one of {', '.join(TENSOR_DTYPES)}, "
                f"got {self.dtype!r}"
            )
        shape = tuple(self.shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape):
            raise InvalidInput(
                f"tensor {self.label}: shape must be integers >= 0 or -1 (any size), "
                f"got {self.shape!r}"
            )
        object.__setattr__(self, "shape", shape)
        _check_flag(self.allow_missing, f"tensor {self.label}")

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else "input"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.name:
            doc["name"] = self.name
        if self.allow_missing:
            doc["allow_missing"] = True
        return doc


def _check_flag(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what}: allow_missing must be True or False, got {value!r}")


@dataclass(frozen=True)
class Schema:
    """Either columns or tensors (exactly one of the two is non-empty)."""

    columns: tuple[ColSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "tensors", tuple(self.tensors))
        if bool(self.columns) == bool(self.tensors):
            raise InvalidInput("a schema holds either columns or tensors, and at least one")
        names = [c.name for c in self.columns] or [t.name for t in self.tensors if t.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInput(f"schema names must be unique; repeated: {', '.join(duplicates)}")
        if len(self.tensors) > 1 and not all(t.name for t in self.tensors):
            raise InvalidInput("a schema with several tensors must name every one of them")

    @property
    def is_tensor(self) -> bool:
        return bool(self.tensors)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The column names in order (empty for a tensor schema)."""
        return tuple(c.name for c in self.columns)

    @cached_property
    def is_numeric(self) -> bool:
        """Whether every column is an integer or float column (False for tensors)."""
        return bool(self.columns) and all(c.type in _NUMERIC for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        if self.columns:
            return {"columns": [c.to_dict() for c in self.columns]}
        return {"tensors": [t.to_dict() for t in self.tensors]}

    @classmethod
    def from_dict(cls, doc: Any) -> Schema:
        if not isinstance(doc, Mapping) or set(doc) not in ({"columns"}, {"tensors"}):
            raise InvalidInput(
                'a schema must be {"columns": [{"name", "type"}, …]} or '
                f'{{"tensors": [{{"dtype", "shape"}}, …]}}, got {doc!r}'
            )
        try:
            if "columns" in doc:
                return cls(
                    columns=tuple(
                        ColSpec(c["name"], c["type"], c.get("allow_missing", False))
                        for c in doc["columns"]
                    )
                )
            return cls(
                tensors=tuple(
                    TensorSpec(
                        t["dtype"], tuple(t["shape"]), t.get("name"), t.get("allow_missing", False)
                    )
                    for t in doc["tensors"]
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"malformed schema {doc!r}: {exc!r}") from None

    def allowing_missing(self) -> Schema:
        """This schema with every column (or tensor) taking missing values."""
        return Schema(
            columns=tuple(replace(c, allow_missing=True) for c in self.columns),
            tensors=tuple(replace(t, allow_missing=True) for t in self.tensors),
        )

    def with_missing_from(self, profile: Profile) -> Schema:
        """This schema, taking missing values in every column where ``profile`` saw some.

        ``profile`` is a model's reference profile (columns named ``input.<column>``),
        built from its training data: a column that held missing or infinite values
        there is one the model was trained to take them in. Tensor schemas are
        returned as they are (their profile names no tensor).
        """
        from keel.models.reference import INPUT_PREFIX

        if not self.columns:
            return self
        seen = {
            name[len(INPUT_PREFIX) :]
            for name, column in profile.columns.items()
            if name.startswith(INPUT_PREFIX) and (column.missing or getattr(column, "infinite", 0))
        }
        return Schema(
            columns=tuple(
                replace(c, allow_missing=True) if c.name in seen else c for c in self.columns
            )
        )


@dataclass(frozen=True)
class Signature:
    """What a model takes (``inputs``) and, if known, what it returns (``outputs``)."""

    inputs: Schema
    outputs: Schema | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs.to_dict(),
            "outputs": None if self.outputs is None else self.outputs.to_dict(),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Signature:
        """Rebuild a signature from :meth:`to_dict`'s output."""
        if isinstance(doc, Signature):
            return doc
        if not isinstance(doc, Mapping) or "inputs" not in doc:
            raise InvalidInput(
                'a signature must be a Signature or a dict {"inputs": …, "outputs": …}, '
                f"got {type(doc).__name__}"
            )
        outputs = doc.get("outputs")
        return cls(
            Schema.from_dict(doc["inputs"]),
            None if outputs is None else Schema.from_dict(outputs),
        )

    def allowing_missing(self) -> Signature:
        """This signature, its inputs taking missing values in every column."""
        return Signature(self.inputs.allowing_missing(), self.outputs)

    def with_missing_from(self, profile: Profile) -> Signature:
        """This signature, its inputs taking missing values where ``profile`` saw some.

        See :meth:`Schema.with_missing_from`.
        """
        return Signature(self.inputs.with_missing_from(profile), self.outputs)


# -- inference -----------------------------------------------------------------


def infer_signature(input_example: Any, output_example: Any = None) -> Signature:
    """The signature an example input (and, optionally, output) implies.

    Args:
        input_example: a DataFrame (→ columns), a dict of equal-length lists or
            1-D arrays or a list of records (→ columns), a NumPy array or list
            (→ one tensor, batch dimension ``-1``), or a dict of arrays (→ named tensors).
        output_example: what the model returns for it, of the same kinds; a
            Series counts as a 1-D array.

    Raises:
        InvalidInput: a column or array type a signature cannot describe.
    """
    outputs = None if output_example is None else infer_schema(output_example)
    return Signature(infer_schema(input_example), outputs)


def infer_schema(data: Any) -> Schema:
    """The schema of one example (see :func:`infer_signature`)."""
    value = normalize(data)
    if isinstance(value, pd.DataFrame):
        specs = []
        for label in value.columns:
            kind = column_type(value[label])
            if kind not in COLUMN_TYPES:
                raise InvalidInput(
                    f"column {str(label)!r} is {kind}, which a signature cannot describe; "
                    f"convert it to one of {', '.join(COLUMN_TYPES)} first"
                )
            column = value[label]
            specs.append(ColSpec(str(label), kind, _missing_rows(column.to_numpy()) is not None))
        return Schema(columns=tuple(specs))
    if isinstance(value, dict):
        return Schema(tensors=tuple(_tensor_spec(arr, name) for name, arr in value.items()))
    return Schema(tensors=(_tensor_spec(value, None),))


def _tensor_spec(arr: np.ndarray, name: str | None) -> TensorSpec:
    if arr.ndim == 0:
        raise InvalidInput(
            f"tensor {name or 'input'!r} is a scalar; an example needs a batch dimension"
        )
    dtype = tensor_dtype(arr)
    if dtype not in TENSOR_DTYPES:
        raise InvalidInput(
            f"tensor {name or 'input'!r} has dtype {arr.dtype}, which a signature cannot "
            f"describe; use one of {', '.join(TENSOR_DTYPES)}"
        )
    return TensorSpec(dtype, (-1, *arr.shape[1:]), name, _missing_rows(arr) is not None)


def tensor_dtype(arr: np.ndarray) -> str:
    """An array's dtype in the tensor vocabulary (``str`` for any unicode width)."""
    kind = arr.dtype.kind
    if kind == "U":
        return "str"
    if kind == "O":
        if arr.size and pd.api.types.infer_dtype(arr.ravel(), skipna=True) == "string":
            return "str"
        return "object"
    return arr.dtype.name


def column_type(series: pd.Series) -> str:
    """A column's type in the column vocabulary, or a description of what it is instead."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, np.dtype):
        if dtype.kind in "iuf":
            return dtype.name
        if dtype.kind == "O":
            inferred = pd.api.types.infer_dtype(series, skipna=True)
            return _OBJECT_KINDS.get(inferred, f"object holding {inferred} values")
        return str(dtype)
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # nullable Int64, Float32 …
    if isinstance(numpy_dtype, np.dtype) and numpy_dtype.kind in "iuf":
        return numpy_dtype.name
    return str(dtype)


# -- normalizing what callers pass ---------------------------------------------


def normalize(data: Any) -> pd.DataFrame | np.ndarray | dict[str, np.ndarray]:
    """A DataFrame, an array, or a dict of named arrays, from any accepted input.

    Dicts of equal-length lists or 1-D arrays and lists of records become
    DataFrames; a dict holding any array of two or more dimensions is a set of
    named tensors; other lists become arrays.
    """
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, Mapping):
        if not data:
            raise InvalidInput("expected data, got an empty dict")
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        if (
            all(a.ndim == 1 for a in arrays.values())
            and len({len(a) for a in arrays.values()}) == 1
        ):
            return pd.DataFrame(dict(data))
        return arrays
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if data and isinstance(data[0], Mapping):
            return pd.DataFrame.from_records(list(data))
        return np.asarray(data)
    raise InvalidInput(
        "expected a pandas DataFrame, a NumPy array, a dict of columns or arrays, or a list "
        f"of records, got {type(data).__name__}"
    )


# -- enforcement -----------------------------------------------------------------


def enforce(
    schema: Schema, data: Any, *, as_matrix: bool = False, check_missing: bool = True
) -> Any:
    """Check ``data`` against ``schema`` and return it in the schema's exact form.

    Columnar schemas return a DataFrame with exactly the schema's columns, in
    its order, each cast to its type (safe widening only); extra columns are
    dropped with a :class:`~keel.models.KeelWarning`. A 2-D array as wide as
    the schema maps to the columns by position. Tensor schemas return the
    array (or dict of arrays), cast to the spec's dtype.

    Args:
        schema: the signature's input schema.
        data: what the caller passed to ``predict``.
        as_matrix: for a schema whose columns are all numeric, return one 2-D
            array (columns in schema order, their common dtype) instead of a
            DataFrame. The checks are the same; a numeric 2-D array passes
            through without a copy, which is what keeps one-row serving cheap.
        check_missing: refuse missing values (null, NaN, NaT, ±inf) in the columns
            and tensors whose ``allow_missing`` is False. Off only to learn from
            data where the model takes them (its training data, at log time).

    Raises:
        InvalidInput: missing columns or tensors, a type that does not widen
            safely, a shape that does not match, or a missing value where the
            signature does not allow one.
    """
    if schema.is_tensor:
        return _enforce_tensors(schema.tensors, data, check_missing)
    if as_matrix and schema.is_numeric:
        return _enforce_matrix(schema.columns, data, check_missing)
    return _enforce_columns(schema.columns, data, check_missing)


def matrix_fits(schema: Schema, dtype: np.dtype[Any]) -> bool:
    """Whether a 2-D array of ``dtype`` passes :func:`enforce` with ``as_matrix`` unchanged."""
    return schema.is_numeric and dtype.kind in "iuf" and _narrowing(schema.columns, dtype) is None


def _enforce_matrix(specs: tuple[ColSpec, ...], data: Any, check_missing: bool) -> np.ndarray:
    if (
        isinstance(data, np.ndarray)
        and data.ndim == 2
        and data.shape[1] == len(specs)
        and data.dtype.kind in "iuf"
    ):
        bad = _narrowing(specs, data.dtype)
        if bad is None:
            if check_missing and data.dtype.kind == "f":
                missing = _missing_rows(data)
                if missing is not None:
                    for j, spec in enumerate(specs):
                        if not spec.allow_missing and missing[:, j].any():
                            raise _refused(f"column {spec.name!r}", missing[:, j])
            return data
        raise InvalidInput(
            f"column {bad.name!r}: expected {bad.type}, got {data.dtype.name}; only safe "
            "widening is applied (int32→int64, int→float, float32→float64), so convert "
            f"the column to {bad.type} before calling predict"
        )
    frame = _enforce_columns(specs, data, check_missing)
    return frame.to_numpy(dtype=np.result_type(*(np.dtype(c.type) for c in specs)))


_NARROWING: dict[tuple[int, np.dtype[Any]], tuple[tuple[ColSpec, ...], ColSpec | None]] = {}


def _narrowing(specs: tuple[ColSpec, ...], dtype: np.dtype[Any]) -> ColSpec | None:
    """The first column a ``dtype`` matrix does not widen to safely.

    Memoized by the specs' identity (hashing 30 column specs costs more than the
    check itself, and this runs once per request).
    """
    key = (id(specs), dtype)
    hit = _NARROWING.get(key)
    if hit is None or hit[0] is not specs:
        if len(_NARROWING) > 1024:
            _NARROWING.clear()
        bad = next((s for s in specs if not _widens(dtype, np.dtype(s.type))), None)
        hit = _NARROWING[key] = (specs, bad)
    return hit[1]


def _enforce_columns(specs: tuple[ColSpec, ...], data: Any, check_missing: bool) -> pd.DataFrame:
    names = [s.name for s in specs]
    value = normalize(data)
    if isinstance(value, np.ndarray):
        if value.ndim != 2 or value.shape[1] != len(specs):
            raise InvalidInput(
                f"expected a DataFrame with columns {names}, or a 2-D array with "
                f"{len(specs)} columns in that order; got an array of shape {value.shape}"
            )
        value = pd.DataFrame(value, columns=names)
        if value.dtypes.eq(object).any():
            value = value.infer_objects()
    elif isinstance(value, dict):
        raise InvalidInput(
            f"expected columns {names}; got a dict of arrays that are not all 1-D and of one length"
        )
    by_name = {str(label): label for label in value.columns}
    if len(by_name) != len(value.columns):
        raise InvalidInput("input has repeated column names; give each column one name")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InvalidInput(
            f"input is missing column(s) {', '.join(map(repr, missing))}; "
            f"the model's signature expects {names}"
        )
    extra = [n for n in by_name if n not in set(names)]
    if extra:
        warn(f"dropping column(s) the model's signature does not name: {', '.join(extra)}", 5)
    columns = {s.name: _convert_column(value[by_name[s.name]], s, check_missing) for s in specs}
    return pd.DataFrame(columns, index=value.index)


def _convert_column(series: pd.Series, spec: ColSpec, check_missing: bool) -> pd.Series:
    dtype = series.dtype
    plain = isinstance(dtype, np.dtype) and dtype.kind in "iub"  # no value of these is missing
    missing = None if plain else _missing_rows(series.to_numpy())
    if missing is not None and check_missing and not spec.allow_missing:
        raise _refused(f"column {spec.name!r}", missing)
    expected = spec.type
    # A column of nothing but nulls has no type of its own: say so, not "string".
    nulls = missing is not None and dtype.kind == "O" and bool(missing.all())
    received = "null" if nulls else column_type(series)
    if expected in ("string", "datetime") and received in (expected, "null"):
        return series
    if received == "null" and expected.startswith("float"):
        return series.astype(expected)  # NaN where the nulls were
    if (
        expected in _SCALARS
        and received in _SCALARS
        and _widens(np.dtype(received), np.dtype(expected))
    ):
        if series.dtype == np.dtype(expected):
            return series
        if missing is not None and not expected.startswith("float"):
            # astype would fail, or worse turn a null into False: ints and bools have no null.
            raise InvalidInput(
                f"column {spec.name!r}: expected {expected}, got {received} with "
                f"missing values, which {expected} cannot hold; fill or drop them first"
            )
        try:
            converted = series.astype(expected)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"column {spec.name!r}: expected {expected}, got {received} with "
                "missing values; fill or drop them first"
            ) from None
        if dtype.kind == "O" and missing is None and check_missing and not spec.allow_missing:
            late = _missing_rows(converted.to_numpy())  # infinities inside an object column
            if late is not None:
                raise _refused(f"column {spec.name!r}", late)
        return converted
    raise InvalidInput(
        f"column {spec.name!r}: expected {expected}, got {received}; only safe widening is "
        f"applied (int32→int64, int→float, float32→float64), so convert the column to "
        f"{expected} before calling predict"
    )


def _widens(received: np.dtype, expected: np.dtype) -> bool:
    if received.kind == "b" or expected.kind == "b":  # bool never mixes with numbers
        return received.kind == expected.kind
    return bool(np.can_cast(received, expected, casting="safe"))


def _enforce_tensors(specs: tuple[TensorSpec, ...], data: Any, check_missing: bool) -> Any:
    if len(specs) == 1 and not isinstance(data, Mapping):
        return _convert_tensor(_as_array(data, specs[0]), specs[0], check_missing)
    expected = [s.name for s in specs]
    if not isinstance(data, Mapping) or expected == [None]:
        what = "one array" if expected == [None] else f"a dict of arrays keyed by {expected}"
        raise InvalidInput(f"the model's signature expects {what}, got {type(data).__name__}")
    given = {str(k): v for k, v in data.items()}
    missing = [n for n in expected if n not in given]
    if missing:
        raise InvalidInput(
            f"input is missing tensor(s) {', '.join(map(repr, missing))}; the model's "
            f"signature expects {expected}"
        )
    extra = sorted(set(given) - set(map(str, expected)))
    if extra:
        warn(f"dropping input(s) the model's signature does not name: {', '.join(extra)}", 5)
    return {
        str(s.name): _convert_tensor(_as_array(given[str(s.name)], s), s, check_missing)
        for s in specs
    }


def _as_array(data: Any, spec: TensorSpec) -> np.ndarray:
    if isinstance(data, pd.DataFrame | pd.Series):
        return data.to_numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return np.asarray(data)
    raise InvalidInput(
        f"tensor {spec.label}: expected a NumPy array (or a DataFrame or list), "
        f"got {type(data).__name__}"
    )


def _convert_tensor(arr: np.ndarray, spec: TensorSpec, check_missing: bool) -> np.ndarray:
    converted = _tensor_of_dtype(arr, spec)
    if check_missing and not spec.allow_missing and converted.dtype.kind not in "iub":
        missing = _missing_rows(converted)
        if missing is not None:
            raise _refused(f"tensor {spec.label}", missing)
    return converted


def _tensor_of_dtype(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    shape = spec.shape
    if arr.ndim != len(shape) or any(
        want not in (-1, got) for want, got in zip(shape, arr.shape, strict=True)
    ):
        raise InvalidInput(
            f"tensor {spec.label}: expected shape {shape} (-1 = any size), got {arr.shape}"
        )
    expected = spec.dtype
    if expected == "object":
        return arr
    received = tensor_dtype(arr)
    if expected == "str":
        if received == "str":
            return arr
    elif received in _SCALARS and _widens(np.dtype(received), np.dtype(expected)):
        return arr.astype(expected, copy=False)
    raise InvalidInput(
        f"tensor {spec.label}: expected dtype {expected}, got {received}; only safe widening "
        f"is applied (int32→int64, int→float, float32→float64), so cast it with "
        f".astype({expected!r}) before calling predict"
    )


# -- missing values ----------------------------------------------------------------


def _missing_rows(values: np.ndarray) -> np.ndarray | None:
    """Where ``values`` holds a null, NaN, NaT or ±inf (a mask of its shape), or None if nowhere."""
    kind = values.dtype.kind
    if kind in "iub":
        return None
    if kind in "fc":
        finite = np.isfinite(values)
        return None if finite.all() else ~finite
    mask = np.isnat(values) if kind in "mM" else np.asarray(pd.isna(values), dtype=bool)
    return mask if mask.any() else None


def _refused(what: str, missing: np.ndarray) -> InvalidInput:
    """The error for missing values where the signature does not allow them."""
    first = np.argwhere(missing)[0]
    where = f"row {first[0]}" if missing.ndim == 1 else f"index {tuple(int(i) for i in first)}"
    return InvalidInput(
        f"{what} has {int(missing.sum())} missing value(s) (null, NaN or infinite), the "
        f"first at {where}; the model's signature does not allow missing values there "
        "(allow_missing is False: the model was logged from data without any). Send "
        "values, or log the model with allow_missing=True for it if the model takes them"
    )
