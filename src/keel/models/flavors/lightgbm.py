"""LightGBM boosters and scikit-learn-API models, in LightGBM's text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.errors import InvalidInput
from keel.models.flavors.base import Flavor, class_path, from_library, require
from keel.models.package import Package

__all__ = ["LightGBMFlavor"]

_FILE = "model.txt"


class LightGBMFlavor(Flavor):
    """``lightgbm.Booster`` or an ``LGBMModel``, stored as ``model.txt``; loads as a ``Booster``.

    For an ``LGBMClassifier`` the classes are recorded, so ``predict`` returns
    the same labels the classifier's own ``predict`` did (argmax of the class
    probabilities, ``p > 0.5`` for two classes). ``unwrap()`` returns the booster,
    whose ``predict`` gives probabilities.
    """

    name = "lightgbm"
    extra = "lightgbm"
    libraries = ("lightgbm",)
    accepts = "a lightgbm.Booster or LGBMModel"

    def matches(self, model: Any) -> bool:
        if not from_library(model, "lightgbm"):
            return False
        import lightgbm as lgb

        return isinstance(model, lgb.Booster | lgb.LGBMModel)

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        lgb = require("lightgbm", self.extra)
        config: dict[str, Any] = {"file": _FILE, "api": "booster"}
        booster = model
        if isinstance(model, lgb.LGBMModel):
            if not model.__sklearn_is_fitted__():
                raise InvalidInput(
                    f"this {type(model).__name__} is not fitted; fit it before logging it"
                )
            booster = model.booster_
            config.update(api="sklearn", **{"class": class_path(type(model))})
            if isinstance(model, lgb.LGBMClassifier):
                classes = model.classes_
                config.update(classes=classes.tolist(), classes_dtype=classes.dtype.str)
        booster.save_model(str(folder / _FILE))
        return config

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        lgb = require("lightgbm", self.extra)
        path = package.file(package.config.get("file", _FILE))
        return lgb.Booster(model_file=str(path))

    def takes_missing(self, model: Any) -> bool:
        return True  # gradient-boosted trees learn a default direction for missing values

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        import lightgbm as lgb
        import numpy as np

        output = native.predict(data)
        if "classes" not in config or isinstance(native, lgb.LGBMModel):
            return output  # a regressor or ranker, or the in-memory classifier itself
        classes = np.asarray(config["classes"], dtype=np.dtype(config["classes_dtype"]))
        index = (output > 0.5).astype(np.intp) if output.ndim == 1 else output.argmax(axis=1)
        return classes[index]

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        import lightgbm as lgb
        import numpy as np

        if isinstance(native, lgb.LGBMModel):
            return native.predict_proba(data) if hasattr(native, "predict_proba") else None
        if "classes" not in config:
            return None
        output = native.predict(data)
        return np.column_stack([1 - output, output]) if output.ndim == 1 else output

    def classes(self, native: Any, config: dict[str, Any]) -> Any | None:
        import numpy as np

        if "classes" not in config:
            return getattr(native, "classes_", None)
        return np.asarray(config["classes"], dtype=np.dtype(config["classes_dtype"]))
