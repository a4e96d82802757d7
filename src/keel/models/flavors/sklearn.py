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

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        return True

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        return native.predict(_shaped(native, data))

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        if not hasattr(native, "predict_proba"):
            return None
        return native.predict_proba(_shaped(native, data))


def _shaped(native: Any, data: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        # A model fitted on arrays warns when handed column names it never saw.
        return data if hasattr(native, "feature_names_in_") else data.to_numpy()
    if isinstance(data, np.ndarray) and hasattr(native, "feature_names_in_"):
        _quiet_feature_names()
    return data


_quieted_in: object = None


def _quiet_feature_names() -> None:
    """Silence scikit-learn's "X does not have valid feature names" in this process.

    Keel hands a model fitted on a DataFrame a plain array only after checking
    the columns against the signature (names and order), so the warning says
    nothing true. Checking it per call (``catch_warnings``) costs more than the
    prediction and is not thread-safe; the filter is installed once, narrowly,
    and again whenever ``catch_warnings`` swapped the filter list.
    """
    global _quieted_in
    import warnings

    if _quieted_in is not warnings.filters:
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )
        _quieted_in = warnings.filters
