"""Flavors: one per kind of model, chosen from the model's type."""

from __future__ import annotations

from typing import Any

from keel.errors import InvalidInput
from keel.models.flavors.base import Flavor
from keel.models.flavors.lightgbm import LightGBMFlavor
from keel.models.flavors.mlflow import MlflowFlavor
from keel.models.flavors.onnx import OnnxFlavor
from keel.models.flavors.python import PythonFlavor
from keel.models.flavors.sklearn import SklearnFlavor
from keel.models.flavors.treelite import TreeliteFlavor
from keel.models.flavors.xgboost import XGBoostFlavor

__all__ = ["FLAVORS", "Flavor", "detect_flavor", "get_flavor"]

# Detection order matters: XGBoost and LightGBM models are scikit-learn estimators too,
# and everything with a predict method would match the python flavor. MLflow's format
# and treelite checkpoints match nothing: Keel loads them, never logs them.
FLAVORS: dict[str, Flavor] = {
    f.name: f
    for f in (
        XGBoostFlavor(),
        LightGBMFlavor(),
        OnnxFlavor(),
        SklearnFlavor(),
        PythonFlavor(),
        MlflowFlavor(),
        TreeliteFlavor(),
    )
}


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``."""
    try:
        return FLAVORS[name]
    except (KeyError, TypeError):
        saved = ", ".join(n for n, f in FLAVORS.items() if f.saves)
        raise InvalidInput(f"flavor must be one of {saved}, got {name!r}") from None


def detect_flavor(model: Any, name: str | None = None) -> Flavor:
    """The flavor for ``model``: the one named, which must accept it, or the first that does."""
    if name is not None:
        flavor = get_flavor(name)
        if not flavor.matches(model):
            raise InvalidInput(
                f"flavor {name!r} stores {flavor.accepts}, got a {type(model).__qualname__}"
            )
        return flavor
    for flavor in FLAVORS.values():
        if flavor.matches(model):
            return flavor
    raise InvalidInput(
        f"cannot tell how to store a {type(model).__qualname__}: expected "
        + "; ".join(f.accepts for f in FLAVORS.values() if f.saves)
    )
