"""Converting a tree ensemble to a treelite checkpoint, predicted by treelite's GTIL.

scikit-learn's random forests, extra trees, gradient boosting and
histogram gradient boosting import through ``treelite.sklearn.import_model``;
XGBoost and LightGBM boosters through ``treelite.frontend``. The checkpoint
(``Model.serialize_bytes``) is data: the package never holds a compiled library.
Pipelines and other models are refused: treelite only knows trees.
"""

from __future__ import annotations

import warnings
from typing import Any

from keel.models.compile.conversion import Converted, ModelFacts, Refused, numeric_matrix
from keel.models.flavors.base import from_library

__all__ = ["to_treelite"]

_FILE = "model.tl"
#: The scikit-learn ensembles ``treelite.sklearn.import_model`` takes, by class name.
_SKLEARN_ENSEMBLES = frozenset(
    {
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    }
)
_ONLY_TREES = "treelite compiles tree ensembles; use --to onnx"


def to_treelite(facts: ModelFacts) -> Converted:
    """The version as a treelite checkpoint with the settings of a compiled package.

    Raises:
        Refused: not a tree ensemble treelite imports (a pipeline, a linear model),
            text columns, or an import treelite refuses; the reason names it.
    """
    import treelite

    native = facts.native
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if from_library(native, "xgboost") or from_library(native, "lightgbm"):
            model = _booster(facts)
        elif from_library(native, "sklearn"):
            model = _sklearn(facts)
        else:
            raise Refused(
                f"a {type(native).__qualname__} (flavor {facts.flavor}) is not a tree ensemble: "
                f"{_ONLY_TREES}"
            )
    width = numeric_matrix(facts, "treelite")
    if int(model.num_feature) != width:
        raise Refused(
            f"the ensemble reads {model.num_feature} features but the signature gives {width}"
        )
    config = {
        "file": _FILE,
        "columns": facts.columns,
        "input_dtype": str(model.input_type),
    }
    converter = {"name": "treelite", "version": str(treelite.__version__)}
    return Converted(
        "treelite", {_FILE: bytes(model.serialize_bytes())}, config, converter, ("treelite",)
    )


def _sklearn(facts: ModelFacts) -> Any:
    import treelite.sklearn

    native = facts.native
    name = type(native).__name__
    if name not in _SKLEARN_ENSEMBLES or not type(native).__module__.startswith("sklearn."):
        kind = "a pipeline" if hasattr(native, "steps") else f"a {name}"
        raise Refused(f"{kind} is not a tree ensemble: {_ONLY_TREES}")
    numeric_matrix(facts, "treelite")
    try:
        return treelite.sklearn.import_model(native)
    except Exception as exc:  # treelite raises TreeliteError, NotImplementedError, …
        raise Refused(_refusal(name, exc)) from None


def _booster(facts: ModelFacts) -> Any:
    import treelite

    native = facts.native
    numeric_matrix(facts, "treelite")
    if from_library(native, "xgboost"):
        import xgboost

        bare = isinstance(native, xgboost.Booster)
        booster = native if bare else native.get_booster()
        load = treelite.frontend.from_xgboost
    else:
        import lightgbm

        bare = isinstance(native, lightgbm.Booster)
        booster = native if bare else native.booster_
        load = treelite.frontend.from_lightgbm
    if bare and facts.task == "classification" and facts.classes is None:
        raise Refused(
            "a bare booster's classes are not recorded, so its labels cannot be checked; "
            "log the scikit-learn API model (XGBClassifier, LGBMClassifier) to compile it"
        )
    try:
        return load(booster)
    except Exception as exc:  # treelite raises TreeliteError, NotImplementedError, …
        raise Refused(_refusal(type(native).__name__, exc)) from None


def _refusal(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"treelite cannot import this {name} ({type(exc).__name__}: {first}); "
        "try --to onnx, or keep serving it natively (--runtime native)"
    )
