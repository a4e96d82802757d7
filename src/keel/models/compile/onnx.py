"""Converting a version to ONNX: skl2onnx for scikit-learn, onnxmltools for XGBoost and LightGBM.

The graph takes what the native model took (see :mod:`keel.models.flavors.onnx`):

- ``feed="matrix"``: one float32 input ``[N, features]``, columns in signature
  order, for models that take a numeric table and select nothing by name;
- ``feed="columns"``: one ``[N, 1]`` input per signature column, named as the
  column (float32 numbers, strings as strings), for pipelines with a
  ``ColumnTransformer`` or with text columns (one-hot categories).

Its first output holds the labels (class values; a booster's class indices are
mapped back to the labels inside the graph) or the regression target; a
classifier's second output holds the probabilities ``[N, C]`` (ZipMap disabled).
Opsets are pinned (ONNX 17 for skl2onnx, 15 for onnxmltools, which goes no higher;
``ai.onnx.ml`` 3) so onnxruntime-web runs the same graph.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections.abc import Iterator
from typing import Any

from keel.models.compile.conversion import (
    Converted,
    ModelFacts,
    Refused,
    numeric_matrix,
)
from keel.models.flavors.base import from_library

__all__ = ["OPSET", "to_onnx"]

#: The opsets skl2onnx writes graphs for.
OPSET = {"": 17, "ai.onnx.ml": 3}
#: The highest ONNX opset onnxmltools' booster converters write.
_BOOSTER_OPSET = 15
_FILE = "model.onnx"
_MATRIX_INPUT = "input"
_CLASS_PATTERN = re.compile(r"<class '([^']+)'>")


def to_onnx(facts: ModelFacts) -> Converted:
    """The version as an ONNX graph with the settings of a compiled package.

    Raises:
        Refused: a step or estimator the converters cannot convert, or a graph that
            does not take the model's inputs; the reason names it.
    """
    import onnx

    native = facts.native
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converters' deprecation chatter is not the user's
        if from_library(native, "xgboost"):
            proto, converter, feed, by_index = _xgboost(facts)
        elif from_library(native, "lightgbm"):
            proto, converter, feed, by_index = _lightgbm(facts)
        elif from_library(native, "sklearn"):
            proto, converter, feed, by_index = _sklearn(facts)
        else:
            raise Refused(
                f"a {type(native).__qualname__} (flavor {facts.flavor}) is not a model Keel "
                "compiles to ONNX; it compiles scikit-learn estimators and pipelines, XGBoost "
                "and LightGBM models"
            )
    _dynamic_batch(proto)
    outputs = [o.name for o in proto.graph.output]
    label = outputs[0]
    if by_index and facts.classes is not None and facts.classes != list(range(len(facts.classes))):
        _labels_from_indices(proto, label, facts.classes)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx's ValidationError and its kin
        raise Refused(f"the converted graph does not pass the ONNX checker: {exc}") from None
    data = proto.SerializeToString()
    config = _settings(facts, data, feed, label, outputs)
    config["opset"] = {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import}
    return Converted("onnx", {_FILE: data}, config, converter, ("onnxruntime",))


# -- scikit-learn ----------------------------------------------------------------------


def _sklearn(facts: ModelFacts) -> tuple[Any, dict[str, str], str, bool]:
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _skl2onnx_leaf_flags()
    model = facts.native
    if _contains_boosters(model):
        _register_boosters()
    columns = facts.columns
    if columns is not None and (
        _contains(model, "ColumnTransformer")
        or any(c.type == "string" for c in facts.signature.inputs.columns)
    ):
        if any(c.type == "datetime" for c in facts.signature.inputs.columns):
            numeric_matrix(facts, "ONNX")  # raises, naming the datetime columns
        feed = "columns"
        types: list[tuple[str, Any]] = [
            (
                c.name,
                StringTensorType([None, 1]) if c.type == "string" else FloatTensorType([None, 1]),
            )
            for c in facts.signature.inputs.columns
        ]
    else:
        feed = "matrix"
        types = [(_MATRIX_INPUT, FloatTensorType([None, numeric_matrix(facts, "ONNX")]))]
    options = {id(model): {"zipmap": False}} if facts.task == "classification" else None
    try:
        proto = skl2onnx.convert_sklearn(
            model, initial_types=types, options=options, target_opset=dict(OPSET)
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, its own kinds
        raise Refused(_sklearn_refusal(model, exc)) from None
    return proto, {"name": "skl2onnx", "version": skl2onnx.__version__}, feed, False


def _sklearn_refusal(model: Any, exc: Exception) -> str:
    """The reason a user reads: the step skl2onnx has no converter for, or its own words."""
    text = str(exc)
    found = _CLASS_PATTERN.search(text)
    if found is not None and ("shape calculator" in text or "converter" in text.lower()):
        path = found.group(1)
        where = next(
            (name for name, step in _steps(model) if _class_path(step) == path),
            None,
        )
        step = f"step {where!r} ({path})" if where else path
        return (
            f"{step} has no ONNX converter: skl2onnx converts scikit-learn's own estimators "
            "and transformers (and XGBoost and LightGBM models). Rebuild that step from "
            "them, or keep serving this version natively (--runtime native)"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (
        f"skl2onnx cannot convert this {type(model).__name__} ({type(exc).__name__}: {first}); "
        "keep serving it natively (--runtime native)"
    )


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _steps(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every estimator inside ``model`` with its path (``prep/num``), outermost first."""
    children: list[tuple[str, Any]] = []
    if hasattr(model, "steps"):
        children = list(model.steps)
    elif hasattr(model, "transformer_list"):
        children = list(model.transformer_list)
    elif hasattr(model, "transformers_"):
        children = [(name, step) for name, step, _ in model.transformers_]
    for name, step in children:
        if isinstance(step, str):  # "drop" and "passthrough"
            continue
        path = f"{prefix}{name}"
        yield path, step
        yield from _steps(step, path + "/")


def _contains(model: Any, class_name: str) -> bool:
    return type(model).__name__ == class_name or any(
        type(step).__name__ == class_name for _, step in _steps(model)
    )


def _contains_boosters(model: Any) -> bool:
    return any(
        from_library(step, "xgboost") or from_library(step, "lightgbm") for _, step in _steps(model)
    )


@functools.cache
def _skl2onnx_leaf_flags() -> None:
    """Pass skl2onnx's tree-node missing-value flags to ONNX as the ints they mean.

    skl2onnx (1.20) records ``False`` for a HistGradientBoosting leaf's flag, and the
    protobuf that onnx now builds on refuses a bool in an int list ("Expected an int,
    got a boolean"), so every HistGradientBoosting model failed to convert.
    """
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        flag = int(nodes_missing_value_tracks_true)
        return original(*args, nodes_missing_value_tracks_true=flag, **kwargs)

    tree_ensemble.add_node = add_node


@functools.cache
def _register_boosters() -> None:
    """Teach skl2onnx onnxmltools' converters, for pipelines that end in a booster."""
    import lightgbm
    import xgboost
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for cls, alias, shapes, convert, options in (
        (
            xgboost.XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            classifier_options,
        ),
        (
            xgboost.XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
            None,
        ),
        (
            lightgbm.LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            classifier_options,
        ),
        (
            lightgbm.LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
            None,
        ),
    ):
        update_registered_converter(cls, alias, shapes, convert, options=options)


# -- XGBoost and LightGBM ------------------------------------------------------------------


def _xgboost(facts: ModelFacts) -> tuple[Any, dict[str, str], str, bool]:
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = facts.native
    _check_booster_task(facts, isinstance(model, xgboost.Booster))
    width = numeric_matrix(facts, "ONNX")
    # onnxmltools reads features as f0, f1, …: a model trained on a DataFrame names them
    # after its columns, so a copy forgets the names (the matrix is in signature order).
    model = copy.deepcopy(model)
    booster = model if isinstance(model, xgboost.Booster) else model.get_booster()
    booster.feature_names = None
    booster.feature_types = None
    try:
        proto = onnxmltools.convert_xgboost(
            model,
            initial_types=[(_MATRIX_INPUT, FloatTensorType([None, width]))],
            target_opset=_BOOSTER_OPSET,
        )
    except Exception as exc:  # onnxmltools raises RuntimeError, AttributeError, …
        raise Refused(_booster_refusal("XGBoost", model, exc)) from None
    return proto, {"name": "onnxmltools", "version": onnxmltools.__version__}, "matrix", True


def _lightgbm(facts: ModelFacts) -> tuple[Any, dict[str, str], str, bool]:
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = facts.native
    _check_booster_task(facts, isinstance(model, lightgbm.Booster))
    width = numeric_matrix(facts, "ONNX")
    try:
        proto = onnxmltools.convert_lightgbm(
            model,
            initial_types=[(_MATRIX_INPUT, FloatTensorType([None, width]))],
            target_opset=_BOOSTER_OPSET,
            zipmap=False,
        )
    except Exception as exc:  # onnxmltools raises RuntimeError, AttributeError, …
        raise Refused(_booster_refusal("LightGBM", model, exc)) from None
    return proto, {"name": "onnxmltools", "version": onnxmltools.__version__}, "matrix", True


def _check_booster_task(facts: ModelFacts, bare: bool) -> None:
    """A bare booster's predictions are scores; only recorded classes say they are labels."""
    if bare and facts.task == "classification" and facts.classes is None:
        raise Refused(
            "a bare booster's classes are not recorded, so its labels cannot be checked; "
            "log the scikit-learn API model (XGBClassifier, LGBMClassifier) to compile it"
        )


def _booster_refusal(library: str, model: Any, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"onnxmltools cannot convert this {library} {type(model).__name__} "
        f"({type(exc).__name__}: {first}); keep serving it natively (--runtime native)"
    )


# -- the graph's interface ------------------------------------------------------------------


def _dynamic_batch(proto: Any) -> None:
    """Declare every input's and output's first dimension as the batch, of any size.

    onnxmltools declares a LightGBM label output of size 1, which onnxruntime then
    warns about on every call with more rows.
    """
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"


def _labels_from_indices(proto: Any, label: str, classes: list[Any]) -> None:
    """Make output ``label`` hold class values: gather them by the index it held."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    index = f"{label}_index"
    for node in proto.graph.node:
        node.output[:] = [index if name == label else name for name in node.output]
    values = np.array(classes)
    if values.dtype.kind == "U":
        values = values.astype(object)
        elem = TensorProto.STRING
    elif values.dtype.kind == "b":
        elem = TensorProto.BOOL
    elif values.dtype.kind in "iu":
        values = values.astype(np.int64)
        elem = TensorProto.INT64
    else:
        values = values.astype(np.float32)
        elem = TensorProto.FLOAT
    table = f"{label}_classes"
    proto.graph.initializer.append(numpy_helper.from_array(values, name=table))
    proto.graph.node.append(helper.make_node("Gather", [table, index], [label], axis=0))
    for value in proto.graph.output:
        if value.name == label:
            value.type.tensor_type.elem_type = elem


def _settings(
    facts: ModelFacts, data: bytes, feed: str, label: str, outputs: list[str]
) -> dict[str, Any]:
    """The compiled package's ONNX settings, checked against the graph onnxruntime loads."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inputs = [arg.name for arg in session.get_inputs()]
    columns = facts.columns
    config: dict[str, Any] = {"file": _FILE, "feed": feed, "columns": columns}
    if feed == "matrix":
        if len(inputs) != 1:
            raise Refused(f"the converted graph takes {inputs}, not one feature matrix")
        config["input_name"] = inputs[0]
    else:
        assert columns is not None  # a columns feed is only chosen for a columnar signature
        if len(inputs) != len(columns):
            raise Refused(
                f"the converted graph takes inputs {inputs}, not one per signature column {columns}"
            )
        if inputs != columns:
            # skl2onnx renames a column that is not a plain identifier ("mean texture");
            # its inputs keep the order they were declared in, which is the signature's
            config["input_names"] = dict(zip(columns, inputs, strict=True))
        config["column_types"] = {
            c.name: "string" if c.type == "string" else "float32"
            for c in facts.signature.inputs.columns
        }
    proba = None
    if facts.task == "classification" and _gives_probabilities(facts.native):
        proba = next((o for o in outputs[1:] if _is_matrix(session, o)), None)
        if proba is None:
            raise Refused(f"the converted graph gives no probability matrix (outputs {outputs})")
    config.update(label_output=label, proba_output=proba)
    return config


def _gives_probabilities(native: Any) -> bool:
    if from_library(native, "sklearn") and not (
        from_library(native, "xgboost") or from_library(native, "lightgbm")
    ):
        return hasattr(native, "predict_proba")
    return True  # a booster with recorded classes: its probabilities are its output


def _is_matrix(session: Any, name: str) -> bool:
    arg = next(a for a in session.get_outputs() if a.name == name)
    return bool(arg.type == "tensor(float)" and len(arg.shape or []) == 2)
