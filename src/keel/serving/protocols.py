"""Wire formats: Open Inference Protocol v2, MLflow's /invocations, KServe v1.

Parsing turns a request body into what a model's ``predict`` takes (a
DataFrame for columnar signatures, arrays for tensor signatures) and
raises :class:`~keel.errors.InvalidInput` with what was wrong and what was
expected. It never echoes the payload back.

The v2 binary tensor extension (used by default by tritonclient's HTTP
client) is supported both ways: a JSON header of ``Inference-Header-Content-Length``
bytes followed by raw little-endian tensors, each input declaring its
``parameters.binary_data_size``.

A request's size is checked against what it sends before anything is
allocated for it: the elements its shapes declare, summed over its inputs, are
capped (``max_elements``, the ``max_request_elements`` setting), and a binary
input's shape must fit its bytes (a ``BYTES`` element takes at least its 4-byte
length), so a small body can never make the server allocate a large array.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from keel.errors import InvalidInput

__all__ = [
    "V2_DATATYPES",
    "V2Request",
    "check_v2_input",
    "encode_v2_response",
    "parse_feedback",
    "parse_invocations",
    "parse_v1",
    "parse_v2",
    "to_jsonable",
    "to_model_input",
    "v2_array",
    "v2_datatype",
    "v2_output",
    "v2_raw",
]

#: v2 datatype → NumPy dtype.
V2_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NUMPY_TO_V2 = {v: k for k, v in V2_DATATYPES.items() if k != "BYTES"}
_COLUMN_TO_V2 = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
    "datetime": "BYTES",
}


def v2_datatype(type_name: str | np.dtype[Any]) -> str:
    """The v2 datatype for a signature column type or a NumPy dtype."""
    if isinstance(type_name, np.dtype):
        return _NUMPY_TO_V2.get(type_name, "BYTES")
    if type_name in _COLUMN_TO_V2:
        return _COLUMN_TO_V2[type_name]
    return type_name.upper() if type_name.upper() in V2_DATATYPES else "BYTES"


def _loads(body: bytes) -> Any:
    if not body:
        raise InvalidInput("the request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON ({exc.msg} at byte {exc.pos})"
        ) from None


@dataclass
class V2Request:
    """A parsed v2 request.

    ``inputs`` maps each input's name to its array. When every input is a
    JSON list of one numeric datatype and shape ``[N]`` (one input per
    column, the common tabular request), the parser builds a single ``[N,
    k]`` array instead: ``matrix``, with the inputs' ``names`` in request
    order; ``inputs`` then holds views of its columns.
    """

    id: str | None
    given_inputs: dict[str, np.ndarray] | None
    output_names: list[str] | None
    binary_output: bool
    matrix: np.ndarray | None = None
    names: tuple[str, ...] = ()

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        if self.given_inputs is None:
            assert self.matrix is not None
            self.given_inputs = {name: self.matrix[:, j] for j, name in enumerate(self.names)}
        return self.given_inputs


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be an integer, got {header_length[:20]!r}"
        ) from None
    if not 0 < n <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes"
        )
    return body[:n], body[n:]


def _decode_bytes_tensor(raw: bytes, count: int, name: str) -> np.ndarray:
    """Triton's BYTES encoding: each element is a 4-byte little-endian length then the bytes."""
    if count * 4 > len(raw):  # before allocating: the shape must fit the bytes sent
        raise InvalidInput(
            f"input {name!r}: its shape declares {count} BYTES elements, which take at least "
            f"{count * 4} bytes (a 4-byte length each), but its binary data has {len(raw)} bytes"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: binary BYTES data ends early")
        length = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(raw):
            raise InvalidInput(f"input {name!r}: binary BYTES data ends early")
        out[i] = raw[pos : pos + length].decode("utf-8", errors="replace")
        pos += length
    if pos != len(raw):
        raise InvalidInput(
            f"input {name!r}: binary BYTES data has {len(raw) - pos} bytes left over after "
            f"the {count} elements its shape declares"
        )
    return out


#: Datatypes a one-input-per-column request may share to be parsed as one matrix.
_MATRIX_DATATYPES = {k: v for k, v in V2_DATATYPES.items() if v.kind in "iuf"}


def _column_matrix(
    raw_inputs: list[Any], max_elements: int | None
) -> tuple[tuple[str, ...], np.ndarray] | None:
    """One ``[N, k]`` array from k JSON inputs of one numeric datatype and shape ``[N]``.

    ``None`` when the request is anything else; the general parser then takes
    it and reports whatever is wrong.
    """
    first = raw_inputs[0]
    if type(first) is not dict:
        return None
    datatype, shape = first.get("datatype"), first.get("shape")
    if (
        type(datatype) is not str
        or datatype not in _MATRIX_DATATYPES
        or type(shape) is not list
        or len(shape) != 1
        or type(shape[0]) is not int
    ):
        return None
    names: list[str] = []
    columns: list[Any] = []
    for item in raw_inputs:
        if type(item) is not dict:
            return None
        get = item.get
        name, data, item_shape = get("name"), get("data"), get("shape")
        if (
            get("datatype") != datatype
            or type(name) is not str
            or type(data) is not list
            or item_shape != shape
            or type(item_shape[0]) is not int  # [True] == [1]; the general parser refuses it
            or "parameters" in item
            or not name
        ):
            return None
        names.append(name)
        columns.append(data)
    if len(set(names)) != len(names):
        return None
    if max_elements is not None and shape[0] * len(columns) > max_elements:
        return None  # the general parser says so
    try:
        array = np.array(columns, dtype=_MATRIX_DATATYPES[datatype])
    except (ValueError, TypeError, OverflowError):
        return None
    if array.shape != (len(columns), shape[0]):
        return None
    return tuple(names), array.T


def parse_v2(
    body: bytes, header_length: str | None = None, *, max_elements: int | None = None
) -> V2Request:
    """Parse a v2 ``/infer`` request (JSON, or JSON plus binary tensors).

    Args:
        body: the request body.
        header_length: the ``Inference-Header-Content-Length`` header, if sent.
        max_elements: the most elements the inputs' shapes may declare in all;
            ``None`` for no cap.

    Raises:
        InvalidInput: what is wrong with the request, before allocating for it.
    """
    header, binary = _split_binary(body, header_length)
    doc = _loads(header)
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"a v2 request must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput(
            'a v2 request needs "inputs": a non-empty list of {name, shape, datatype, data}'
        )
    matrix = _column_matrix(raw_inputs, max_elements) if not binary else None
    if matrix is not None:
        names, array = matrix
        request = V2Request(None, None, None, False, array, names)
        _v2_options(doc, request)
        return request
    inputs: dict[str, np.ndarray] = {}
    offset = declared = 0
    for n, item in enumerate(raw_inputs):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"inputs[{n}] must be an object with name, shape, datatype and data")
        name, shape, datatype, count = check_v2_input(
            n, item.get("name"), item.get("shape"), item.get("datatype"), declared, max_elements
        )
        declared += count
        params = item.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, Mapping) else None
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size does not fit the binary body")
            raw = binary[offset : offset + size]
            offset += size
        inputs[name] = v2_array(name, shape, datatype, count, raw=raw, data=item.get("data"))
    if len({i.get("name") for i in raw_inputs}) != len(raw_inputs):
        raise InvalidInput("v2 input names must be unique")
    request = V2Request(None, inputs, None, False)
    _v2_options(doc, request)
    return request


def check_v2_input(
    n: int, name: Any, shape: Any, datatype: Any, declared: int, max_elements: int | None
) -> tuple[str, list[int], str, int]:
    """Check one v2 input's name, shape and datatype, and count the elements it declares.

    Shared by every v2 wire format (JSON, binary tensors, gRPC), so each says the same
    about the same mistake.

    Args:
        n: the input's position in the request.
        name: its name.
        shape: its shape, a list of non-negative integers.
        datatype: its v2 datatype.
        declared: the elements the inputs before it declare.
        max_elements: the most elements the request may declare in all (None: no cap).

    Returns:
        the name, shape and datatype, checked, and the number of elements.

    Raises:
        InvalidInput: what is wrong, before anything is allocated for the input.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{n}] needs a string name")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r} needs a shape: a list of non-negative integers")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise InvalidInput(
            f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}"
        )
    count = math.prod(shape)  # exact: np.prod wraps around on large shapes
    if max_elements is not None and declared + count > max_elements:
        raise InvalidInput(
            f"input {name!r} has shape {shape}: the request declares {declared + count} elements "
            f"or more, over the limit of {max_elements} per request "
            "(the max_request_elements setting); split it into smaller requests"
        )
    return name, shape, datatype, count


def v2_array(
    name: str,
    shape: list[int],
    datatype: str,
    count: int,
    *,
    raw: bytes | None = None,
    data: Any = None,
) -> np.ndarray:
    """One checked v2 input as an array of its shape.

    Args:
        name: the input's name (for messages).
        shape: its shape, checked by :func:`check_v2_input`.
        datatype: its v2 datatype, checked likewise.
        count: the elements its shape declares.
        raw: its raw little-endian bytes (binary tensor data, gRPC raw contents); a
            ``BYTES`` element is a 4-byte length and then its bytes.
        data: its values otherwise (a JSON list, nested or flat; strings for ``BYTES``).

    Raises:
        InvalidInput: the values do not fit the shape or the datatype.
    """
    dtype = V2_DATATYPES[datatype]
    if raw is not None:
        if datatype == "BYTES":
            array = _decode_bytes_tensor(raw, count, name)
        else:
            if len(raw) != count * dtype.itemsize:
                raise InvalidInput(
                    f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
                )
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        if data is None:
            raise InvalidInput(f"input {name!r} has no data")
        try:
            array = np.asarray(data, dtype=dtype if datatype != "BYTES" else object)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype}") from None
        if datatype == "BYTES":  # a null stays missing, not the string "None"
            array = np.array(
                [v if v is None or isinstance(v, str) else str(v) for v in array.ravel()],
                dtype=object,
            )
        if array.size != count:
            raise InvalidInput(
                f"input {name!r}: shape {shape} holds {count} values but data has {array.size}"
            )
    return array.reshape(shape) if shape else array.reshape(())


def _v2_options(doc: Mapping[str, Any], request: V2Request) -> None:
    """The request id and the requested outputs (names, binary or JSON)."""
    outputs = doc.get("outputs")
    if isinstance(outputs, list):
        request.output_names = [
            str(o["name"]) for o in outputs if isinstance(o, Mapping) and o.get("name")
        ]
        request.binary_output = any(
            isinstance(o, Mapping)
            and isinstance(o.get("parameters"), Mapping)
            and o["parameters"].get("binary_data")
            for o in outputs
        )
    params = doc.get("parameters")
    if isinstance(params, Mapping) and params.get("binary_data_output"):
        request.binary_output = True
    if "id" in doc:
        request_id = doc["id"]
        if not isinstance(request_id, str):
            raise InvalidInput(
                f'"id" must be a string, got {_json_kind(request_id)}; send "id": "<request id>"'
            )
        request.id = check_request_id(request_id)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type: what a client sent, in its own terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def check_request_id(request_id: str) -> str:
    """Request ids travel in headers and logs: printable ASCII, at most 256 characters."""
    if not request_id or len(request_id) > 256 or not all(" " <= c <= "~" for c in request_id):
        raise InvalidInput("a request id must be 1 to 256 printable ASCII characters")
    return request_id


def to_model_input(request: V2Request, signature: Any) -> Any:
    """v2 inputs → what the model takes, guided by its signature.

    Columnar signature: one input per column (shape ``[N]`` or ``[N, 1]``), or a
    single 2-D input whose width matches the number of columns (by position).
    Tensor signature: arrays by name (or the only one). A request parsed as one
    matrix whose names are exactly the signature's columns stays one 2-D array
    (columns in signature order), which the model's own checks accept as is; so
    does a single numeric ``[N, k]`` input whose dtype the signature takes unchanged.
    """
    import pandas as pd

    if request.matrix is not None and signature is not None and not signature.inputs.is_tensor:
        columns = signature.inputs.names
        if request.names == columns:
            return request.matrix
        if len(request.names) == len(columns) and set(request.names) == set(columns):
            order = {name: j for j, name in enumerate(request.names)}
            return request.matrix[:, [order[c] for c in columns]]
    # only now: for a matrix request this builds a column view per input
    inputs = request.inputs
    if signature is None or signature.inputs.is_tensor:
        if len(inputs) == 1:
            return next(iter(inputs.values()))
        return dict(inputs)
    columns = [c.name for c in signature.inputs.columns]
    if len(inputs) == 1:
        (only,) = inputs.values()
        name = next(iter(inputs))
        if name not in columns:
            if only.ndim != 2 or only.shape[1] != len(columns):
                raise InvalidInput(
                    f"input {name!r} has shape {list(only.shape)}; expected one input per column "
                    f"({', '.join(columns[:8])}{'…' if len(columns) > 8 else ''}) or one [N, {len(columns)}] input"
                )
            from keel.models.signature import matrix_fits

            if matrix_fits(signature.inputs, only.dtype):
                # by position, as the frame below would be; without building a frame per
                # request (a model predicts a frame of one row several times slower)
                return only
            return pd.DataFrame(only, columns=columns)
    frame: dict[str, Any] = {}
    lengths = set()
    for name, array in inputs.items():
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidInput(
                f"input {name!r} has shape {list(array.shape)}; a column input must be [N] or [N, 1]"
            )
        frame[name] = array
        lengths.add(len(array))
    if len(lengths) > 1:
        raise InvalidInput(
            f"column inputs must have the same length, got lengths {sorted(lengths)}"
        )
    return pd.DataFrame(frame)


def count_values(data: Any) -> int:
    """How many values a parsed request holds (a DataFrame's or an array's size, summed)."""
    if isinstance(data, dict):
        return sum(int(np.size(v)) for v in data.values())
    return int(np.size(data))


def signature_inputs(signature: Any, data: Any) -> tuple[Any, int]:
    """The inputs of ``data`` that ``signature`` names, and how many others it holds.

    The others never reach the model (it would only drop them) nor the prediction log,
    whose columns a client must not choose. Inputs the signature names but the request
    lacks are left for the signature check to report.
    """
    if signature is None:
        return data, 0
    if signature.inputs.is_tensor:
        names = {t.name for t in signature.inputs.tensors if t.name}
        if not names or not isinstance(data, dict):
            return data, 0
        kept = {k: v for k, v in data.items() if k in names}
        return kept, len(data) - len(kept)
    columns = getattr(data, "columns", None)
    if columns is None:
        return data, 0
    names = signature.inputs.names
    if len(columns) == len(names) and tuple(map(str, columns)) == names:
        return data, 0  # the common request: exactly the signature's columns
    wanted = set(names)
    keep = [c for c in columns if str(c) in wanted]
    if len(keep) == len(columns):
        return data, 0
    return data[keep], len(columns) - len(keep)


def to_jsonable(predictions: Any) -> list[Any]:
    """Model output as JSON-ready Python values."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return list(predictions.to_dict(orient="records"))
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_numpy()
    array = np.asarray(predictions)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON has no NaN or infinity: send null for them.
        values = array.astype(object)
        values[~np.isfinite(array)] = None
        array = values
    return list(array.tolist()) if array.ndim else [array.item()]


def v2_output(predictions: Any) -> tuple[np.ndarray, str]:
    """A model's output as a v2 tensor: its array and datatype (strings and objects: BYTES)."""
    array = np.asarray(predictions)
    return array, "BYTES" if array.dtype.kind in "OUS" else v2_datatype(array.dtype)


def v2_raw(array: np.ndarray, datatype: str) -> bytes:
    """A v2 tensor's raw bytes: little-endian values, or for BYTES a 4-byte length before each."""
    if datatype == "BYTES":
        return b"".join(len(b := str(v).encode()).to_bytes(4, "little") + b for v in array.ravel())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_v2_response(
    model_name: str,
    version: str,
    request_id: str | None,
    predictions: Any,
    binary: bool,
    output_name: str = "predict",
) -> tuple[bytes, dict[str, str]]:
    """A v2 response body (JSON, or JSON plus binary) and the extra headers it needs."""
    array, datatype = v2_output(predictions)
    output: dict[str, Any] = {"name": output_name, "shape": list(array.shape), "datatype": datatype}
    head: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": [output]}
    if request_id is not None:
        head["id"] = request_id
    if binary:
        raw = v2_raw(array, datatype)
        output["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps(head)
        return header + raw, {"Inference-Header-Content-Length": str(len(header))}
    output["data"] = (
        to_jsonable(array.ravel()) if datatype != "BYTES" else [str(v) for v in array.ravel()]
    )
    return orjson.dumps(head), {}


def parse_invocations(body: bytes, content_type: str | None, signature: Any = None) -> Any:
    """MLflow's scoring formats → a DataFrame (or an array for ``instances``/``inputs`` tensors).

    With the answering model's ``signature``, a ``dataframe_split`` of numbers whose
    columns are the signature's becomes one 2-D array in signature order instead
    of a DataFrame (the same values, without building a DataFrame per request).
    """
    import pandas as pd

    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body))
        except (ValueError, pd.errors.ParserError) as exc:
            raise InvalidInput(
                f"the CSV body could not be parsed: {str(exc).splitlines()[0]}"
            ) from None
    if kind not in ("application/json", ""):
        raise InvalidInput(
            f"content type {kind!r} is not supported; send application/json or text/csv"
        )
    doc = _loads(body)
    if not isinstance(doc, Mapping):
        raise InvalidInput(
            "expected a JSON object with one of dataframe_split, dataframe_records, instances or inputs"
        )
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in doc]
    if len(keys) != 1:
        raise InvalidInput(
            "expected exactly one of dataframe_split, dataframe_records, instances or inputs; "
            f"got {', '.join(map(str, doc)) or 'none'}"
        )
    value = doc[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(value, Mapping) or "data" not in value:
            raise InvalidInput('dataframe_split needs {"columns": [...], "data": [[...], ...]}')
        matrix = _split_matrix(value, signature)
        if matrix is not None:
            return matrix
        try:
            return pd.DataFrame(
                value["data"], columns=value.get("columns"), index=value.get("index")
            )
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"dataframe_split does not form a table: {exc}") from None
    if keys[0] == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
            raise InvalidInput("dataframe_records must be a list of objects, one per row")
        return pd.DataFrame.from_records(value)
    return _records_or_tensor(value, keys[0])


def _split_matrix(split: Mapping[str, Any], signature: Any) -> np.ndarray | None:
    """A numeric ``dataframe_split`` as one 2-D array in signature order, or None."""
    from keel.models.signature import matrix_fits

    if signature is None or signature.inputs.is_tensor or not signature.inputs.is_numeric:
        return None
    columns, rows = split.get("columns"), split["data"]
    names = signature.inputs.names
    if (
        "index" in split
        or type(columns) is not list
        or type(rows) is not list
        or not rows
        or len(columns) != len(names)
    ):
        return None
    given = tuple(columns)
    if given != names and set(given) != set(names):
        return None
    try:
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if (
        array.ndim != 2
        or array.shape[1] != len(names)
        or not matrix_fits(signature.inputs, array.dtype)
    ):
        return None  # the DataFrame path types each column on its own and says what is wrong
    if given != names:
        order = {name: j for j, name in enumerate(given)}
        array = array[:, [order[name] for name in names]]
    return array


def _records_or_tensor(value: Any, key: str) -> Any:
    import pandas as pd

    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        return pd.DataFrame.from_records(value)
    if isinstance(value, Mapping):
        try:
            return pd.DataFrame({k: np.asarray(v) for k, v in value.items()})
        except ValueError as exc:
            raise InvalidInput(f"{key}: columns must have the same length ({exc})") from None
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{key} must be a non-empty list of rows (or of objects)")
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidInput(f"{key}: rows must all have the same length") from None
    if array.dtype == object:
        raise InvalidInput(f"{key}: rows must be numbers or strings of one shape")
    return array


def parse_v1(body: bytes) -> Any:
    """KServe v1 ``{"instances": [...]}`` → a DataFrame or an array."""
    doc = _loads(body)
    if not isinstance(doc, Mapping) or "instances" not in doc:
        raise InvalidInput('a v1 request must be {"instances": [...]}')
    return _records_or_tensor(doc["instances"], "instances")


def parse_feedback(body: bytes) -> tuple[list[str], list[Any], list[int] | None]:
    """``{"ids": [...], "labels": [...], "rows": [...]?}`` → request ids, labels, row indexes."""
    doc = _loads(body)
    if (
        not isinstance(doc, Mapping)
        or not isinstance(doc.get("ids"), list)
        or not isinstance(doc.get("labels"), list)
    ):
        raise InvalidInput(
            'feedback must be {"ids": [request ids], "labels": [labels], '
            '"rows": [optional row indexes]}'
        )
    ids, labels, rows = doc["ids"], doc["labels"], doc.get("rows")
    if len(ids) != len(labels) or not ids:
        raise InvalidInput(
            "feedback needs as many labels as ids (and at least one); "
            f"got {len(ids)} ids, {len(labels)} labels"
        )
    if rows is not None and (
        not isinstance(rows, list) or len(rows) != len(ids) or not all(type(r) is int for r in rows)
    ):
        raise InvalidInput("feedback rows must be a list of integers, one per id")
    return [str(i) for i in ids], labels, rows


def frame_rows(data: Any) -> int:
    """How many rows a parsed request holds."""
    if hasattr(data, "shape") and data.shape:
        return int(data.shape[0])
    if isinstance(data, Mapping) and data:
        return len(next(iter(data.values())))
    return 1


def as_sequence(values: Any) -> Sequence[Any]:
    return list(values) if not isinstance(values, list) else values
