"""XGBoost boosters and scikit-learn-API models, in XGBoost's own UBJSON format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.models.flavors.base import (
    Flavor,
    class_path,
    from_library,
    import_library_class,
    library_class,
    require,
)
from keel.models.package import Package

__all__ = ["XGBoostFlavor"]

_FILE = "model.ubj"


class XGBoostFlavor(Flavor):
    """``xgboost.Booster`` or an ``XGBModel`` (``XGBClassifier`` …), stored as ``model.ubj``.

    A scikit-learn-API model loads back as the same XGBoost class (a user's
    subclass loads as the XGBoost class it derives from); a booster as a booster.
    """

    name = "xgboost"
    extra = "xgboost"
    libraries = ("xgboost",)
    accepts = "an xgboost.Booster or XGBModel"

    def matches(self, model: Any) -> bool:
        if not from_library(model, "xgboost"):
            return False
        import xgboost as xgb

        return isinstance(model, xgb.Booster | xgb.XGBModel)

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        xgb = require("xgboost", self.extra)
        model.save_model(folder / _FILE)
        if isinstance(model, xgb.XGBModel):
            return {
                "file": _FILE,
                "api": "sklearn",
                "class": class_path(library_class(model, "xgboost")),
            }
        return {"file": _FILE, "api": "booster"}

    def requirements(self, config: dict[str, Any]) -> tuple[str, ...]:
        return (
            (*self.libraries, "scikit-learn") if config.get("api") == "sklearn" else self.libraries
        )

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        xgb = require("xgboost", self.extra)
        config = package.config
        path = package.file(config.get("file", _FILE))
        if config.get("api") == "sklearn":
            model = import_library_class(config["class"], "xgboost", xgb.XGBModel)()
        else:
            model = xgb.Booster()
        model.load_model(path)
        return model

    def takes_missing(self, model: Any) -> bool:
        return True  # gradient-boosted trees learn a default direction for missing values

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        import xgboost as xgb

        if isinstance(native, xgb.Booster):
            return native.predict(xgb.DMatrix(data))
        return native.predict(data)
