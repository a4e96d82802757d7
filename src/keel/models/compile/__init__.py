"""Compiled forms of registered versions: ONNX and treelite, checked for parity.

::

    result = keel.models.compile.compile_version("churn", 3, to="onnx")
    result.report["max_abs_diff"]          # 3e-07: within 1e-05 on every row
    keel.load_model("models:/churn/3", runtime="auto")   # the compiled form, since it passed

``keel models compile NAME VERSION [--to onnx|treelite]`` is the same call.
See :mod:`keel.models.compile.version` for what is stored and recorded,
:mod:`keel.models.compile.parity` for the rule a compiled form must meet.
"""

from __future__ import annotations

from keel.models.compile.parity import THRESHOLD, TOLERANCE
from keel.models.compile.version import CompileResult, compile_on_register, compile_version

__all__ = ["THRESHOLD", "TOLERANCE", "CompileResult", "compile_on_register", "compile_version"]
