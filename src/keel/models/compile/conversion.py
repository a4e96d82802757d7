"""What a converter takes (the facts of a loaded version) and gives (a compiled form).

A converter (:mod:`keel.models.compile.onnx`, :mod:`keel.models.compile.treelite`)
reads :class:`ModelFacts` and returns :class:`Converted`, or raises
:class:`Refused` with the reason a user reads: which step or class cannot be
converted and what can be done. A refusal is a fact about the model, recorded
as a failed compilation; the caller's mistakes (an unknown target, a data file
that does not exist) are :class:`~keel.errors.InvalidInput` and record nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInput
from keel.models.signature import Signature

__all__ = [
    "Converted",
    "ModelFacts",
    "Refused",
    "check_target_libraries",
    "model_classes",
    "numeric_matrix",
]

_NUMERIC_KINDS = "biuf"


class Refused(Exception):
    """The model (or one of its steps) cannot be converted to the target; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ModelFacts:
    """A registered version as the converters see it.

    Attributes:
        native: the model object its flavor loaded (an estimator, a booster).
        flavor: the native package's flavor name.
        signature: its recorded signature.
        task: ``"classification"`` or ``"regression"``.
        classes: a classifier's labels in probability-column order, as JSON values.
        prediction_dtype: the dtype of the native model's predictions (``numpy`` string).
    """

    native: Any
    flavor: str
    signature: Signature
    task: str
    classes: list[Any] | None
    prediction_dtype: str

    @property
    def columns(self) -> list[str] | None:
        """The signature's column names in order; ``None`` for a tensor signature."""
        inputs = self.signature.inputs
        return None if inputs.is_tensor else list(inputs.names)


@dataclass(frozen=True)
class Converted:
    """A compiled form: its files and the flavor settings its package records.

    Attributes:
        flavor: ``"onnx"`` or ``"treelite"``, the compiled package's flavor.
        files: ``{file name: bytes}``; the first one is the model file.
        config: the flavor's settings (merged into ``flavor_config``).
        converter: ``{"name", "version"}`` of the library that converted it.
        requirements: distributions the compiled package needs to run.
    """

    flavor: str
    files: dict[str, bytes]
    config: dict[str, Any]
    converter: dict[str, str]
    requirements: tuple[str, ...] = field(default=())

    @property
    def size_bytes(self) -> int:
        """The size of the model file."""
        return len(next(iter(self.files.values())))


def model_classes(classes: Any) -> list[Any] | None:
    """A classifier's labels as JSON values (numpy scalars unwrapped), or ``None``."""
    if classes is None:
        return None
    import numpy as np

    values = np.asarray(classes).tolist()
    for value in values:
        if not isinstance(value, bool | int | float | str):
            raise Refused(
                f"the classifier's class labels include {value!r} ({type(value).__name__}); "
                "a compiled model records labels as numbers, strings or booleans"
            )
    return list(values)


def numeric_matrix(facts: ModelFacts, target: str) -> int:
    """The width of the one numeric matrix the model takes, or :class:`Refused`.

    A columnar signature must be all numeric (booleans count); a tensor signature
    must be one 2-D numeric tensor of known width.
    """
    inputs = facts.signature.inputs
    if inputs.is_tensor:
        if len(inputs.tensors) != 1:
            raise Refused(
                f"the model takes {len(inputs.tensors)} tensors; {target} compiles models "
                "that take one table of features"
            )
        spec = inputs.tensors[0]
        import numpy as np

        if len(spec.shape) != 2 or spec.shape[1] < 1 or spec.dtype in ("str", "object"):
            raise Refused(
                f"the model takes a {spec.dtype} tensor of shape {list(spec.shape)}; {target} "
                "compiles models that take a 2-D numeric array [rows, features]"
            )
        if np.dtype(spec.dtype).kind not in _NUMERIC_KINDS:
            raise Refused(f"the model takes a {spec.dtype} tensor; {target} needs numbers")
        return int(spec.shape[1])
    other = [c for c in inputs.columns if c.type in ("string", "datetime")]
    if other:
        listed = ", ".join(f"{c.name!r} ({c.type})" for c in other)
        raise Refused(
            f"{target} takes numeric columns only, and the model takes {listed}; "
            + (
                "use --to onnx, which encodes categories inside the graph"
                if target == "treelite"
                else "encode them as numbers in the pipeline"
            )
        )
    return len(inputs.columns)


def check_target_libraries(target: str) -> None:
    """Fail with the install command when the converter libraries are missing."""
    import importlib.util

    needed = {
        "onnx": ("onnx", "onnxruntime", "skl2onnx", "onnxmltools"),
        "treelite": ("treelite",),
    }[target]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidInput(
            f"compiling to {target} needs {', '.join(missing)}, which is not installed; "
            "run: pip install 'keel[compile]'"
        )
