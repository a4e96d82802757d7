"""ONNX models, run with onnxruntime on the CPU."""

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
        path = package.file(package.config.get("file", _FILE))
        return ort.InferenceSession(str(path), providers=_PROVIDERS)

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


def _spec(arg: Any) -> dict[str, Any] | None:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        return None
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return {"name": arg.name, "dtype": dtype, "shape": shape}
