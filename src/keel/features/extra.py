"""The ``features`` extra: what the feature store imports beyond Keel's own dependencies.

DuckDB runs training sets and materialization; MessagePack packs online values;
Redis (with its hiredis parser) is the teams' online store. Each is imported
where it is used; :func:`require` turns a missing one into the command that
installs it.
"""

from __future__ import annotations

import importlib

from keel.errors import InvalidInput

__all__ = ["INSTALL", "require"]

INSTALL = "pip install 'keel[features]'"


def require(*modules: str, what: str) -> None:
    """Check that ``modules`` import, or say what needs them and how to install them.

    Raises:
        InvalidInput: a module is not installed.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise InvalidInput(
                f"{what} needs {module}, which is not installed: {INSTALL}"
            ) from None
