"""ONNX models, run with onnxruntime on the CPU.

Two kinds of package use this flavor. A plain one holds any ONNX graph a user
logged; ``predict`` feeds it arrays by input name and returns its outputs. A
*compiled* one is what ``keel models compile`` makes of a registered version:
its ``flavor_config`` has a ``feed`` (``"matrix"``: one float32 input
``[N, len(columns)]``; ``"columns"``: one ``[N, 1]`` input per signature
column, named as the column unless ``input_names`` maps it to the name the
converter gave it), a ``label_output`` holding the predicted labels (class values, or
the regression target) and, for classifiers, a ``proba_output`` ``[N, C]``
with the columns in ``classes`` order. Such a package takes exactly the
input the native model took, and answers like it: labels in the native
model's dtype (``prediction_dtype``), probabilities and classes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, NotFound
from keel.models.flavors.base import Flavor, from_library, require
from keel.models.package import Package

__all__ = ["OnnxFlavor"]

_FILE = "model.onnx"
_PROVIDERS = ["CPUExecutionProvider"]
#: ``flavor_config["feed"]`` of a compiled package.
FEEDS = ("matrix", "columns")
# onnxruntime's type strings → the signature's tensor dtypes.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


class OnnxFlavor(Flavor):
    """An ``onnx.ModelProto``, the bytes of one, or the path of an ``.onnx`` file.

    Stored as ``model.onnx`` after ``onnx.checker`` accepts it; loaded as an
    ``onnxruntime.InferenceSession`` on the CPU. Without an explicit signature
    or example, the signature is the graph's own inputs and outputs.
    ``predict`` feeds an array to the single input (or a dict by input
    name) and returns the only output, or a dict of outputs by name.
    """

    name = "onnx"
    extra = "onnx"
    libraries = ("onnx", "onnxruntime")
    accepts = "an onnx.ModelProto, the bytes of one, or the path of an .onnx file"

    def matches(self, model: Any) -> bool:
        if isinstance(model, bytes | bytearray | memoryview):
            return True
        if isinstance(model, str | os.PathLike):
            return os.fspath(model).endswith(".onnx")
        if not from_library(model, "onnx"):
            return False
        import onnx

        return isinstance(model, onnx.ModelProto)

    def _bytes(self, model: Any) -> bytes:
        if isinstance(model, bytes | bytearray | memoryview):
            return bytes(model)
        if isinstance(model, str | os.PathLike):
            try:
                return Path(model).read_bytes()
            except FileNotFoundError:
                raise NotFound(f"no ONNX file at {os.fspath(model)!r}") from None
        return bytes(model.SerializeToString())

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        onnx = require("onnx", self.extra)
        data = self._bytes(model)
        try:
            proto = onnx.load_from_string(data)
            onnx.checker.check_model(proto)
        except Exception as exc:  # protobuf's DecodeError and onnx's ValidationError
            raise InvalidInput(
                f"expected a valid ONNX model, got one the checker rejects: {exc}"
            ) from None
        (folder / _FILE).write_bytes(data)
        return {
            "file": _FILE,
            "ir_version": int(proto.ir_version),
            "opset": {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import},
        }

    def requirements(self, config: dict[str, Any]) -> tuple[str, ...]:
        return ("onnxruntime",)

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        ort = require("onnxruntime", self.extra)
        config = package.config
        path = package.file(config.get("file", _FILE))
        if not _compiled(config):
            return ort.InferenceSession(str(path), providers=_PROVIDERS)
        _check_compiled(config, str(package.folder))
        options = ort.SessionOptions()
        # A server answers many small requests at once: idle intra-op threads that spin
        # waiting for work take the cores the requests need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # onnxruntime ignores OMP_NUM_THREADS; honour it as the native libraries do, so
        # `keel serve` (which sets 1 unless told otherwise) runs one thread per worker:
        # a one-row run took 35 µs on one thread and 62 µs on two.
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            options.intra_op_num_threads = int(threads)
        return ort.InferenceSession(str(path), options, providers=_PROVIDERS)

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        return config.get("feed") == "matrix"

    def runnable(self, model: Any, config: dict[str, Any]) -> Any:
        ort = require("onnxruntime", self.extra)
        return ort.InferenceSession(self._bytes(model), providers=_PROVIDERS)

    def default_signature(self, model: Any) -> dict[str, Any] | None:
        session = self.runnable(model, {})
        inputs = [_spec(arg) for arg in session.get_inputs()]
        if any(spec is None for spec in inputs):
            return None
        outputs = [_spec(arg) for arg in session.get_outputs()]
        return {
            "inputs": {"tensors": inputs},
            # Sequences and maps (a classifier's probabilities) have no tensor spec.
            "outputs": None if any(o is None for o in outputs) else {"tensors": outputs},
        }

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        if _compiled(config):
            labels = _run(native, config["label_output"], _feed(data, config))
            if labels.ndim == 2 and labels.shape[1] == 1:  # a regressor's [N, 1] "variable"
                labels = labels.reshape(-1)
            dtype = _dtype(config.get("prediction_dtype"))
            return labels if dtype is None else labels.astype(dtype, copy=False)
        return self._predict_plain(native, data)

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        if not _compiled(config):
            return None
        output = config.get("proba_output")
        return None if output is None else _run(native, output, _feed(data, config))

    def classes(self, native: Any, config: dict[str, Any]) -> Any | None:
        if not _compiled(config) or config.get("classes") is None:
            return None
        import numpy as np

        return np.array(config["classes"], dtype=_dtype(config.get("prediction_dtype")))

    def _predict_plain(self, native: Any, data: Any) -> Any:
        import numpy as np
        import pandas as pd
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        names = [arg.name for arg in native.get_inputs()]
        if isinstance(data, Mapping):
            feed = {str(k): np.asarray(v) for k, v in data.items()}
        elif len(names) == 1:
            feed = {
                names[0]: data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
            }
        else:
            raise InvalidInput(
                f"the model takes inputs {names}; pass a dict of arrays keyed by them"
            )
        try:
            results = native.run(None, feed)
        except InvalidArgument as exc:
            raise InvalidInput(f"onnxruntime rejected the input: {exc}") from None
        if len(results) == 1:
            return results[0]
        return {arg.name: value for arg, value in zip(native.get_outputs(), results, strict=True)}


# -- compiled packages ---------------------------------------------------------------


def _compiled(config: dict[str, Any]) -> bool:
    return "feed" in config


def _check_compiled(config: dict[str, Any], where: str) -> None:
    """Refuse a compiled package whose settings this flavor cannot follow, before a call."""
    problems = []
    if config.get("feed") not in FEEDS:
        problems.append(f"feed must be one of {', '.join(FEEDS)}, got {config.get('feed')!r}")
    if not isinstance(config.get("label_output"), str):
        problems.append("label_output must name an output")
    if config.get("feed") == "columns" and not isinstance(config.get("columns"), list):
        problems.append("a columns feed must list its columns")
    if config.get("feed") == "matrix" and not isinstance(config.get("input_name"), str):
        problems.append("a matrix feed must name its input")
    if problems:
        raise InvalidInput(
            f"{where}: the compiled ONNX package's flavor_config is malformed "
            f"({'; '.join(problems)}); compile the version again"
        )


_DTYPES_SEEN: dict[str, Any] = {}


def _dtype(name: str | None) -> Any:
    """The numpy dtype a compiled package's predictions are cast to (``None``: as they come)."""
    if name is None:
        return None
    hit = _DTYPES_SEEN.get(name)
    if hit is None:  # np.dtype() parses its string on every call; a request pays it once
        import numpy as np

        hit = _DTYPES_SEEN[name] = np.dtype(name)
    return hit


def _feed(data: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The inputs of a compiled graph from what the loaded model hands the flavor.

    That is a 2-D array (signature column order) or a DataFrame with the signature's
    columns, already checked; a 2-D array is only converted, never copied twice.
    """
    import numpy as np

    if config["feed"] == "matrix":
        if not isinstance(data, np.ndarray):
            data = data.to_numpy(dtype=np.float32) if hasattr(data, "to_numpy") else data
        return {config["input_name"]: np.ascontiguousarray(data, dtype=np.float32)}
    import pandas as pd

    columns: list[str] = config["columns"]
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data, columns=columns)
    types: dict[str, str] = config.get("column_types") or {}
    renamed: dict[str, str] = config.get("input_names") or {}
    feed = {}
    for name in columns:
        kind = types.get(name, "float32")
        column = frame[name]
        if kind == "string":
            # onnxruntime takes str objects only; a missing category is no category
            values = np.asarray(column.to_numpy(dtype=object, na_value=""), dtype=object)
        else:
            values = column.to_numpy(dtype=np.dtype(kind))
        feed[renamed.get(name, name)] = values.reshape(-1, 1)
    return feed


def _run(session: Any, output: str, feed: dict[str, Any]) -> Any:
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    try:
        return session.run([output], feed)[0]
    except InvalidArgument as exc:
        raise InvalidInput(f"onnxruntime rejected the input: {exc}") from None


def _spec(arg: Any) -> dict[str, Any] | None:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        return None
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return {"name": arg.name, "dtype": dtype, "shape": shape}
