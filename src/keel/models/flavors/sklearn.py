"""scikit-learn estimators and pipelines, saved with skops (no pickle).

skops rebuilds only the types it is told to trust, and a type it trusts may be
imported and called with arguments the file chooses. So the loader, never the
package, decides what it trusts (see :mod:`keel.models.trust`). Beyond skops'
own defaults its built-in list holds:

- classes that scikit-learn defines (estimators, transformers and their parts:
  trees, kernels, losses, optimizers), except its test helpers;
- numpy and scipy *data* types: arrays, scalars, dtypes, random generators,
  sparse matrices, B-splines (not, say, ``numpy.memmap``, which opens files);
- a few pure functions estimators hold by default (``f_classif``, ``numpy.mean``).

Any other function (``FunctionTransformer(func=...)``, a custom scorer) or
class must be trusted by the loading side.

skops itself flags scikit-learn's ``Tree`` and ``TreePredictor``: a crafted file
can give them out-of-range node indices that crash the process at predict time.
They are on the list anyway, since every tree model needs them; they run no
code the file names.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

from keel.errors import IntegrityError, InvalidInput
from keel.models.flavors.base import Flavor, class_path, from_library, require
from keel.models.package import Package
from keel.models.trust import trust_hint, untrusted
from keel.models.warning import warn

__all__ = ["SklearnFlavor", "builtin_trusted", "load_skops"]

_FILE = "model.skops"
#: Libraries whose classes the built-in list considers; nothing outside them.
_LIBRARIES = ("sklearn", "numpy", "scipy")
#: Module path parts of test helpers, which are no part of a model.
_TEST_PARTS = frozenset({"tests", "testing", "_testing", "conftest"})


class SklearnFlavor(Flavor):
    """Any scikit-learn ``BaseEstimator`` (pipelines included), stored as ``model.skops``.

    At save time the types the file needs beyond skops' defaults are recorded
    as ``trusted_types``, the package's statement of what it needs, and those
    beyond the built-in list are named in a warning. At load time the
    (verified) file is inspected again: a type that was not recorded means the
    package was tampered with, and one that neither the built-in list nor the
    loading side trusts is refused before skops imports anything.
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
        needed = sorted(sio.get_untrusted_types(file=path))
        beyond = [name for name in needed if not builtin_trusted(name)]
        if beyond:
            warn(
                f"this {type(model).__name__} holds {', '.join(beyond)}, which Keel does not "
                "trust by default: loading a model can call what it names, so whoever loads "
                f"this one must trust them explicitly: {trust_hint(beyond)}",
                stacklevel=4,
            )
        return {"file": _FILE, "class": class_path(type(model)), "trusted_types": needed}

    def check_load(
        self, metadata: dict[str, Any], *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> None:
        # What the package says it needs, checked before a byte of it is downloaded; the
        # file itself is checked again in load().
        stated = (metadata.get("flavor_config") or {}).get("trusted_types") or []
        if not isinstance(stated, list) or not all(isinstance(t, str) for t in stated):
            raise IntegrityError(
                f"flavor_config.trusted_types must be a list of type names, got {stated!r}; "
                "re-log the model"
            )
        refused = [name for name in stated if name not in trust and not builtin_trusted(name)]
        if refused:
            raise untrusted(_FILE, refused)

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        self.check_load(package.metadata, allow_pickle=allow_pickle, trust=trust)
        config = package.config
        path = package.file(config.get("file", _FILE))
        return load_skops(path, trust, recorded=set(config.get("trusted_types") or []))

    def takes_missing(self, model: Any) -> bool:
        # scikit-learn's own estimator tags say whether NaN is handled natively
        # (HistGradientBoosting, trees since 1.4); a pipeline answers for its first step.
        from sklearn.utils import get_tags

        try:
            return bool(get_tags(model).input_tags.allow_nan)
        except Exception:  # a third-party estimator with broken tags: let the data decide
            return False

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        return True

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        return native.predict(_shaped(native, data))

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        if not hasattr(native, "predict_proba"):
            return None
        return native.predict_proba(_shaped(native, data))


def load_skops(path: Path, trust: frozenset[str], recorded: set[str] | None = None) -> Any:
    """The estimator in the skops file at ``path``, if it needs only what the loader trusts.

    Args:
        path: a verified skops file.
        trust: names the loading side trusts beyond :func:`builtin_trusted`.
        recorded: the types the package stated when it was logged, if it did; the
            file may not need any other.

    Raises:
        PermissionDenied: the file needs a type nothing trusts; nothing was built.
        IntegrityError: the file needs a type its package did not state.
    """
    sio = require("skops.io", "sklearn")
    # get_untrusted_types only reads the file's schema; it imports and builds nothing.
    needed = sorted(sio.get_untrusted_types(file=path))
    if recorded is not None:
        # The digest check already passed; this guards a package whose listed digests were
        # rewritten along with the file: it may not need anything it did not state.
        unexpected = [name for name in needed if name not in recorded]
        if unexpected:
            raise IntegrityError(
                f"{path.name} needs types that were not trusted when the model was logged: "
                f"{', '.join(unexpected)}; refusing to load it. Re-log the model from a "
                "trusted copy"
            )
    refused = [name for name in needed if name not in trust and not builtin_trusted(name)]
    if refused:
        raise untrusted(path.name, refused)
    return sio.load(path, trusted=needed)


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


@functools.lru_cache(maxsize=4096)
def builtin_trusted(name: str) -> bool:
    """Whether the sklearn flavor trusts the type or function ``name`` without being told.

    Names outside scikit-learn, numpy and scipy are never looked up. Inside them,
    resolving a name imports only those libraries' own modules, and the object
    must be *defined* where the name says (a module's ``from subprocess import
    Popen`` does not make ``sklearn.x.Popen`` a scikit-learn class).
    """
    if name in _pure_functions():
        return True
    parts = name.split(".")
    if (
        len(parts) < 2
        or parts[0] not in _LIBRARIES
        or any(not p.isidentifier() or p.startswith("__") or p in _TEST_PARTS for p in parts)
    ):
        return False
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # not a module of the installed library: nothing to trust
        return False
    cls = getattr(module, attr, None)
    if not isinstance(cls, type) or cls.__module__ != module_name:
        return False
    if parts[0] == "sklearn":
        return True
    exact, families = _data_types()
    return cls in exact or issubclass(cls, families)


@functools.cache
def _data_types() -> tuple[frozenset[type], tuple[type, ...]]:
    """numpy and scipy classes that hold data and run no code a file could choose.

    The classes themselves, then families trusted with their subclasses. Only the
    array classes themselves: subclasses of ``ndarray`` include ``memmap``, which
    opens (and creates) the file its arguments name.
    """
    import numpy as np
    import scipy.interpolate
    import scipy.sparse

    random = np.random
    return frozenset({np.ndarray, np.ma.MaskedArray}), (
        np.generic,
        np.dtype,
        random.RandomState,
        random.Generator,
        random.BitGenerator,
        random.SeedSequence,
        scipy.sparse.spmatrix,
        scipy.sparse.sparray,
        scipy.interpolate.BSpline,
    )


@functools.cache
def _pure_functions() -> frozenset[str]:
    """Functions that estimators hold by default and that only compute on their arguments."""
    import numpy as np
    from sklearn import feature_selection as fs

    functions = (
        fs.chi2,
        fs.f_classif,
        fs.f_regression,
        fs.r_regression,
        fs.mutual_info_classif,
        fs.mutual_info_regression,
        np.mean,
        np.median,
    )
    return frozenset(f"{f.__module__}.{f.__name__}" for f in functions)
