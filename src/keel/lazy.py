"""Lazy exports for package ``__init__`` modules: names load from their modules on first use.

A package lists where each public name lives; importing the package stays
cheap (``import keel`` must not load SQLAlchemy, pandas or NumPy), and the
first ``keel.models.load_model`` imports :mod:`keel.models.api` then caches
the name in the package, so later lookups are plain attribute reads::

    _EXPORTS = {"load_model": "keel.models.api"}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys

# Not ``typing.TYPE_CHECKING``: ``import keel`` loads this module, and typing would be its
# largest import. Type checkers read any constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], *, submodules: Collection[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy names.

    Args:
        package: the package's ``__name__`` (its module must be importing or imported).
        exports: public name → the module that defines it.
        submodules: subpackages reachable as attributes without an import
            (``keel.models`` after ``import keel``).

    Returns:
        ``(__getattr__, __dir__)``, to assign to those names in the package.
    """
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        # Cached in the package, so the next lookup never reaches __getattr__.
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
