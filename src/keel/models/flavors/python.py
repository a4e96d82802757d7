"""Any Python object with a ``predict`` method.

Two ways to store it:

- **keel_save / keel_load** (safe): the class defines ``keel_save(self, path)``
  writing its state into the folder ``path`` and a classmethod
  ``keel_load(cls, path)`` rebuilding it. Loading imports the class by its
  recorded module and qualified name and calls ``keel_load``.
- **pickle** (unsafe): only with ``log_model(..., allow_pickle=True)``, and
  loading it again needs ``load_model(..., allow_pickle=True)``. Unpickling
  runs whatever code the bytes name, so a package that holds a pickle is
  refused before its bytes are even downloaded unless the caller opts in.

Either way the BLAKE3 digest of the class's source file is recorded; a
different digest at load time is a :class:`~keel.models.KeelWarning`.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path
from typing import Any

from keel.artifacts import hash_file
from keel.errors import IntegrityError, InvalidInput, PermissionDenied
from keel.models._warn import warn
from keel.models.flavors.base import Flavor
from keel.models.package import Package

__all__ = ["PythonFlavor"]

_PICKLE = "model.pkl"
_DATA = "data"


class PythonFlavor(Flavor):
    name = "python"
    accepts = "an object with a predict method"

    def matches(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None))

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        cls = type(model)
        config: dict[str, Any] = {
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "source_digest": _source_digest(cls),
        }
        if callable(getattr(cls, "keel_save", None)) and callable(getattr(cls, "keel_load", None)):
            data = folder / _DATA
            data.mkdir()
            model.keel_save(data)
            return {**config, "serialization": "keel_save", "path": _DATA}
        if not allow_pickle:
            raise InvalidInput(
                f"{cls.__qualname__} has no keel_save/keel_load, so it can only be stored as a "
                "pickle, and loading a pickle runs whatever code it names. Either give the class "
                "keel_save(self, path) and a classmethod keel_load(cls, path), or, if everyone "
                "who will load this model trusts you, pass allow_pickle=True"
            )
        with open(folder / _PICKLE, "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        return {**config, "serialization": "pickle", "file": _PICKLE}

    def check_load(self, metadata: dict[str, Any], *, allow_pickle: bool) -> None:
        config = metadata.get("flavor_config") or {}
        if config.get("serialization") == "pickle" and not allow_pickle:
            raise PermissionDenied(
                f"this model is a pickle of {config.get('module')}.{config.get('qualname')}, and "
                "unpickling runs whatever code the bytes name; nothing was downloaded or loaded. "
                "If you trust whoever logged it, call load_model(uri, allow_pickle=True)"
            )

    def load(self, package: Package, *, allow_pickle: bool) -> Any:
        self.check_load(package.metadata, allow_pickle=allow_pickle)
        config = package.config
        serialization = config.get("serialization")
        if serialization == "keel_save":
            cls = _import_class(config, required=True)
            assert cls is not None
            _check_source(cls, config)
            return cls.keel_load(package.folder / config.get("path", _DATA))  # type: ignore[attr-defined]
        if serialization != "pickle":
            raise IntegrityError(
                f"unknown python-flavor serialization {serialization!r}; re-log the model"
            )
        cls = _import_class(config, required=False)
        if cls is not None:
            _check_source(cls, config)
        with open(package.file(config.get("file", _PICKLE)), "rb") as f:
            model = pickle.load(f)
        if not callable(getattr(model, "predict", None)):
            raise IntegrityError(
                f"the unpickled object is a {type(model).__name__}, not a model with a predict "
                "method; re-log the model"
            )
        return model


def _source_digest(cls: type) -> str | None:
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # built-in or dynamically created class
        return None
    return hash_file(source) if source and Path(source).is_file() else None


def _import_class(config: dict[str, Any], *, required: bool) -> type | None:
    module_name, qualname = str(config.get("module")), str(config.get("qualname"))
    where = f"{module_name}.{qualname}"
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        if not required:
            return None
        raise InvalidInput(
            f"cannot import {where}, the model's class; install or put on sys.path the code "
            "that defines it (classes defined in a script's __main__ or inside a function "
            "cannot be imported elsewhere: move them into a module)"
        ) from None
    if not isinstance(target, type):
        raise InvalidInput(f"{where} is not a class")
    return target


def _check_source(cls: type, config: dict[str, Any]) -> None:
    recorded = config.get("source_digest")
    current = _source_digest(cls)
    if recorded and current != recorded:
        warn(
            f"the source of {cls.__module__} (which defines {cls.__qualname__}) changed since "
            f"the model was logged (recorded digest {recorded[:12]}…, now "
            f"{current[:12] + '…' if current else 'no source file'}); its predictions may differ",
            stacklevel=5,
        )
