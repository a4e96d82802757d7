"""Tree ensembles compiled to a treelite checkpoint, predicted by treelite's GTIL.

Only ``keel models compile NAME VERSION --to treelite`` writes these packages:
``model.tl`` holds the checkpoint bytes (``Model.serialize_bytes``), which
loading parses as data (``Model.deserialize_bytes``); predictions come from
GTIL, treelite's interpreter, so no shared library is built or loaded and
nothing in the package runs as code.

``flavor_config``: ``file``; ``input_dtype`` (``float32``/``float64``, what
the checkpoint's thresholds are); ``columns`` (the signature's, in order);
``task`` (``classification``/``regression``); ``classes`` (JSON values, in
probability-column order) and ``prediction_dtype`` (the native model's
prediction dtype); ``source`` (the version it was compiled from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.errors import InvalidInput
from keel.models.flavors.base import Flavor, require
from keel.models.package import Package

__all__ = ["TreeliteFlavor"]

_FILE = "model.tl"
#: Below this many rows GTIL runs on one thread: starting a pool costs more than a row.
_THREADED_ROWS = 1024


class TreeliteFlavor(Flavor):
    """A treelite checkpoint made by ``keel models compile``; never written by ``log_model``."""

    name = "treelite"
    extra = "compile"
    libraries = ("treelite",)
    accepts = "nothing: treelite packages are made by `keel models compile --to treelite`"
    saves = False

    def matches(self, model: Any) -> bool:
        return False

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        raise InvalidInput(
            "treelite packages are made from a registered version: run "
            "`keel models compile NAME VERSION --to treelite`"
        )

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        treelite = require("treelite", self.extra)
        path = package.file(package.config.get("file", _FILE))
        try:
            return treelite.Model.deserialize_bytes(path.read_bytes())
        except treelite.TreeliteError as exc:
            raise InvalidInput(
                f"{package.folder}: {path.name} is not a treelite checkpoint this treelite "
                f"{treelite.__version__} reads ({exc}); compile the version again"
            ) from None

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        return True

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        import numpy as np

        out = _gtil(native, data, config)
        if config.get("task") == "classification":
            classes = np.array(config["classes"], dtype=_dtype(config))
            return classes[_probabilities(out, len(classes)).argmax(axis=1)]
        values = out[:, 0, 0]
        dtype = _dtype(config)
        return values if dtype is None else values.astype(dtype, copy=False)

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        if config.get("task") != "classification":
            return None
        return _probabilities(_gtil(native, data, config), len(config["classes"]))

    def classes(self, native: Any, config: dict[str, Any]) -> Any | None:
        import numpy as np

        if config.get("task") != "classification":
            return None
        return np.array(config["classes"], dtype=_dtype(config))


def _dtype(config: dict[str, Any]) -> Any:
    import numpy as np

    name = config.get("prediction_dtype")
    return None if name is None else np.dtype(name)


def _gtil(native: Any, data: Any, config: dict[str, Any]) -> Any:
    """GTIL's output, ``[N, targets, classes]``, for a checked 2-D array or DataFrame."""
    import numpy as np
    import treelite.gtil

    dtype = np.dtype(config.get("input_dtype", "float64"))
    if not isinstance(data, np.ndarray):
        data = data.to_numpy(dtype=dtype)
    matrix = np.ascontiguousarray(data, dtype=dtype)
    threads = 1 if len(matrix) < _THREADED_ROWS else -1
    try:
        out = treelite.gtil.predict(native, matrix, nthread=threads)
    except treelite.TreeliteError as exc:
        raise InvalidInput(f"treelite rejected the input: {exc}") from None
    return np.asarray(out).reshape(len(matrix), -1, np.asarray(out).shape[-1])


def _probabilities(out: Any, n_classes: int) -> Any:
    """One column per class from GTIL's output (a binary model gives the positive class's)."""
    import numpy as np

    scores = out[:, 0, :]
    if scores.shape[1] == 1 and n_classes == 2:
        positive = scores[:, 0]
        return np.column_stack([1.0 - positive, positive])
    return scores
