"""The flavor interface: how one kind of model is saved, loaded and called."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from keel.errors import InvalidInput
from keel.models.package import Package

__all__ = [
    "Flavor",
    "class_path",
    "from_library",
    "import_library_class",
    "library_class",
    "require",
]


class Flavor(ABC):
    """Saves, loads and calls one kind of model.

    A flavor writes only files (its settings go to ``flavor_config`` in
    ``keel-model.json``) and reads only files that :meth:`Package.file`
    hands it, after the package has been verified.
    """

    #: The name recorded in ``keel-model.json`` and accepted by ``log_model(flavor=...)``.
    name: ClassVar[str]
    #: The ``pip install 'keel[<extra>]'`` that provides the flavor's libraries.
    extra: ClassVar[str | None] = None
    #: Distributions recorded as ``name==version`` requirements of every package.
    libraries: ClassVar[tuple[str, ...]] = ()
    #: What :meth:`matches` accepts, for error messages.
    accepts: ClassVar[str]
    #: Whether ``log_model`` may write it (a foreign format is only read).
    saves: ClassVar[bool] = True

    @abstractmethod
    def matches(self, model: Any) -> bool:
        """Whether this flavor handles ``model`` (cheap; imports nothing the model does not)."""

    @abstractmethod
    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        """Write the model's files into ``folder``; return the flavor's settings."""

    @abstractmethod
    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        """The native model from a verified package.

        ``trust`` holds the names the loading side trusts beyond the flavor's
        built-in list (see :mod:`keel.models.trust`); a flavor that would import
        or call anything else the package names raises ``PermissionDenied`` first.
        """

    def check_load(
        self, metadata: dict[str, Any], *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> None:
        """Refuse, before anything is downloaded, a package this call may not load."""
        return None

    def requirements(self, config: dict[str, Any]) -> tuple[str, ...]:
        """Distributions the package needs; ``numpy`` and ``pandas`` are always added."""
        return self.libraries

    def predict(self, native: Any, data: Any, config: dict[str, Any]) -> Any:
        """Run the native model on data already shaped by the signature."""
        return native.predict(data)

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        """Whether :meth:`predict` also accepts one 2-D array in signature column order.

        A loaded model uses it for all-numeric signatures once the stored input
        example predicts the same both ways; it skips building a DataFrame.
        """
        return False

    def predict_proba(self, native: Any, data: Any, config: dict[str, Any]) -> Any | None:
        """Class probabilities, one column per class in :meth:`classes` order; ``None`` if none."""
        method = getattr(native, "predict_proba", None)
        return None if method is None else method(data)

    def classes(self, native: Any, config: dict[str, Any]) -> Any | None:
        """The class labels of a classifier, in the order of its probability columns."""
        return getattr(native, "classes_", None)

    def runnable(self, model: Any, config: dict[str, Any]) -> Any:
        """What :meth:`predict` accepts, made from the in-memory model (to infer outputs)."""
        return model

    def default_signature(self, model: Any) -> dict[str, Any] | None:
        """A signature the model itself declares (ONNX does), as a dict."""
        return None

    def takes_missing(self, model: Any) -> bool:
        """Whether the model itself says it handles missing values (NaN) in its inputs.

        An inferred signature lets every input column take them when it does, so a
        model trained on complete data that handles NaN natively keeps doing so in
        serving. ``False`` when the model says nothing: the data decides then.
        """
        return False


def require(module: str, extra: str | None) -> ModuleType:
    """Import ``module`` or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'keel[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise InvalidInput(
            f"this model needs {module}, which is not installed ({exc}); run: {hint}"
        ) from None


def from_library(model: Any, library: str) -> bool:
    """Whether any class in ``model``'s type hierarchy comes from ``library``."""
    return any(
        (getattr(cls, "__module__", "") or "").split(".")[0] == library
        for cls in type(model).__mro__
    )


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def library_class(model: Any, library: str) -> type:
    """The most derived class of ``model`` that ``library`` itself defines (not a user subclass)."""
    for cls in type(model).__mro__:
        if (cls.__module__ or "").split(".")[0] == library:
            return cls
    raise InvalidInput(f"{type(model).__name__} is not a {library} model")


def import_library_class(path: str, library: str, base: type) -> type:
    """Import a class recorded by :func:`class_path`, only from ``library`` and only a ``base``."""
    module, _, qualname = path.rpartition(".")
    if module.split(".")[0] != library or not qualname:
        raise InvalidInput(
            f"refusing to import {path!r}: a {library} package may only name {library} classes"
        )
    cls = getattr(require(module, None), qualname, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise InvalidInput(f"{path!r} is not a {base.__name__} class in this {library} version")
    return cls
