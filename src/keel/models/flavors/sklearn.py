"""scikit-learn estimators and pipelines, saved with skops (no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.errors import IntegrityError, InvalidInput
from keel.models.flavors.base import Flavor, class_path, from_library, require
from keel.models.package import Package

__all__ = ["SklearnFlavor"]

_FILE = "model.skops"


class SklearnFlavor(Flavor):
    """Any scikit-learn ``BaseEstimator`` (pipelines included), stored as ``model.skops``.

    skops refuses to instantiate a type it does not trust. At save time the
    types the file needs beyond skops' defaults are recorded as
    ``trusted_types``; at load time the (verified) file is inspected again
    and loading is refused if it now needs any type that was not recorded.
    """

    name = "sklearn"
    extra = "sklearn"
    libraries = ("scikit-learn", "skops")
    accepts = "a scikit-learn estimator or pipeline"

    def matches(self, model: Any) -> bool:
        if not from_library(model, "sklearn"):
            return False
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        sio = require("skops.io", self.extra)
        path = folder / _FILE
        try:
            sio.dump(model, path)
        except (TypeError, NotImplementedError) as exc:
            raise InvalidInput(
                f"skops cannot save this {type(model).__name__} ({exc}); if you trust "
                "pickles, log it with flavor='python', allow_pickle=True"
            ) from None
        return {
            "file": _FILE,
            "class": class_path(type(model)),
            "trusted_types": sorted(sio.get_untrusted_types(file=path)),
        }

    def load(self, package: Package, *, allow_pickle: bool) -> Any:
        sio = require("skops.io", self.extra)
        config = package.config
        path = package.file(config.get("file", _FILE))
        recorded = list(config.get("trusted_types") or [])
        # The digest check already passed; this guards a package whose listed digests were
        # rewritten along with the file: it may not ask skops to trust anything new.
        needed = sio.get_untrusted_types(file=path)
        unexpected = sorted(set(needed) - set(recorded))
        if unexpected:
            raise IntegrityError(
                f"{path.name} needs types that were not trusted when the model was logged: "
                f"{', '.join(unexpected)}; refusing to load it. Re-log the model from a "
                "trusted copy"
            )
        return sio.load(path, trusted=recorded)

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        import pandas as pd

        # A model fitted on arrays warns when handed column names it never saw.
        if isinstance(data, pd.DataFrame) and not hasattr(native, "feature_names_in_"):
            data = data.to_numpy()
        return native.predict(data)

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        import pandas as pd

        if not hasattr(native, "predict_proba"):
            return None
        if isinstance(data, pd.DataFrame) and not hasattr(native, "feature_names_in_"):
            data = data.to_numpy()
        return native.predict_proba(data)
