"""Any Python object with a ``predict`` method.

Two ways to store it:

- **keel_save / keel_load** (safe): the class defines ``keel_save(self, path)``
  writing its state into the folder ``path`` and a classmethod
  ``keel_load(cls, path)`` rebuilding it. Loading imports the class by its
  recorded module and qualified name and calls ``keel_load``. Importing a
  module runs it, so the package does not choose freely: the loader imports
  it only if the module is already imported in this process, if its source
  (found and read without running it) defines that class with ``keel_load``,
  or if the loading side trusts ``module.qualname`` (``load_model(trust=...)``,
  ``keel serve --trust``, the ``trusted_types`` setting).
- **pickle** (unsafe): only with ``log_model(..., allow_pickle=True)``, and
  loading it again needs ``load_model(..., allow_pickle=True)``. Unpickling
  runs whatever code the bytes name, so a package that holds a pickle is
  refused before its bytes are even downloaded unless the caller opts in.

Either way the BLAKE3 digest of the class's source file is recorded; a
different digest at load time is a :class:`~keel.models.KeelWarning`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pickle
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

from keel.artifacts import hash_file
from keel.errors import IntegrityError, InvalidInput, PermissionDenied
from keel.models.flavors.base import Flavor
from keel.models.package import Package
from keel.models.trust import untrusted
from keel.models.warning import warn

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

    def check_load(
        self, metadata: dict[str, Any], *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> None:
        config = metadata.get("flavor_config") or {}
        serialization = config.get("serialization")
        if serialization == "pickle" and not allow_pickle:
            raise PermissionDenied(
                f"this model is a pickle of {config.get('module')}.{config.get('qualname')}, and "
                "unpickling runs whatever code the bytes name; nothing was downloaded or loaded. "
                "If you trust whoever logged it, call load_model(uri, allow_pickle=True)"
            )
        if serialization == "keel_save":
            _check_class_trusted(config, trust)

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        # Before any import: the check decides whether the named module may run at all.
        self.check_load(package.metadata, allow_pickle=allow_pickle, trust=trust)
        config = package.config
        serialization = config.get("serialization")
        if serialization == "keel_save":
            cls = _import_class(config, required=True)
            assert cls is not None
            keel_load = getattr(cls, "keel_load", None)
            if not callable(keel_load):
                raise InvalidInput(
                    f"{cls.__module__}.{cls.__qualname__} has no keel_load classmethod, so it "
                    "cannot rebuild this model; load it with the code that logged it"
                )
            _check_source(cls, config)
            return keel_load(package.folder / config.get("path", _DATA))
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
        raise _not_importable(where) from None
    if not isinstance(target, type):
        raise InvalidInput(f"{where} is not a class")
    return target


def _not_importable(where: str) -> InvalidInput:
    return InvalidInput(
        f"cannot import {where}, the model's class; install or put on sys.path the code "
        "that defines it (classes defined in a script's __main__ or inside a function "
        "cannot be imported elsewhere: move them into a module)"
    )


def _check_class_trusted(config: dict[str, Any], trust: frozenset[str]) -> None:
    """Refuse a keel_save class whose module this loader may not import; imports nothing.

    Trusted: a module this process already imported (importing it again runs
    nothing), a class the loading side names, or a module whose source, located
    and parsed without running it, defines the class with ``keel_load``: code
    installed here and written to rebuild Keel models. Anything else (a module
    that runs code on import, a compiled module, a class inheriting
    ``keel_load``) needs the loading side's trust.
    """
    module_name, qualname = config.get("module"), config.get("qualname")
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        raise IntegrityError(
            f"a keel_save package names its class by module and qualname, got "
            f"{module_name!r} and {qualname!r}; re-log the model"
        )
    where = f"{module_name}.{qualname}"
    if where in trust or module_name in sys.modules:
        return
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise untrusted("this python-flavor model", [where])
    spec = _find_spec(module_name)
    if spec is None:
        raise _not_importable(where)
    if not _source_defines_keel_load(spec, qualname):
        raise untrusted(
            f"this python-flavor model (whose {module_name} source does not itself define "
            f"{qualname} with keel_load)",
            [where],
        )


def _find_spec(module_name: str) -> ModuleSpec | None:
    """The spec of ``module_name``, found the way ``import`` finds it but running nothing.

    ``importlib.util.find_spec`` imports (runs) the parent packages of a dotted
    name; here each level is looked up in its parent's search path instead.
    """
    spec: ModuleSpec | None = None
    path: list[str] | None = None
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
        else:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                try:
                    spec = find(name, path)
                except (ImportError, ValueError):
                    spec = None
                if spec is not None:
                    break
        if spec is None:
            return None
        if depth < len(parts):
            locations = spec.submodule_search_locations
            if locations is None:  # a module, not a package: it has no submodules
                return None
            path = list(locations)
    return spec


def _source_defines_keel_load(spec: ModuleSpec, qualname: str) -> bool:
    origin = spec.origin
    if not spec.has_location or not origin or not origin.endswith(".py"):
        return False
    try:
        tree = ast.parse(Path(origin).read_bytes(), filename=origin)
    except (OSError, SyntaxError, ValueError):
        return False
    body: list[ast.stmt] = tree.body
    for name in qualname.split("."):
        found = _class_named(body, name)
        if found is None:
            return False
        body = found.body
    return any(
        isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == "keel_load"
        for stmt in body
    )


def _class_named(body: list[ast.stmt], name: str) -> ast.ClassDef | None:
    """The class ``name`` defined in ``body``, looking into if/try/with blocks, not functions."""
    for stmt in body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return stmt
        blocks: list[list[ast.stmt]] = []
        if isinstance(stmt, ast.If | ast.While | ast.For):
            blocks = [stmt.body, stmt.orelse]
        elif isinstance(stmt, ast.Try):
            blocks = [stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)]
        elif isinstance(stmt, ast.With):
            blocks = [stmt.body]
        for block in blocks:
            found = _class_named(block, name)
            if found is not None:
                return found
    return None


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
