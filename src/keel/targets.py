"""The user's own code, named ``module:attr`` (a pipeline, a custom scorer): how it is imported.

Keel imports such code only because the user named it, and imports it as
``python -m`` would: the working directory comes first on the path.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from keel.errors import NotFound

__all__ = ["import_user_module"]


def import_user_module(where: str, target: str, what: str, hint: str) -> ModuleType:
    """Import module ``where`` of ``target`` (``where:attr``), from the working directory too.

    Args:
        where: the module's dotted name.
        target: the whole ``module:attr`` the user gave, for the message.
        what: what the target is (``"scorer"``, ``"target"``), for the message.
        hint: what to do when the module is missing, appended to the message.

    Raises:
        NotFound: no module of that name (a module that exists but fails to import raises
            its own error: that is the user's code speaking).
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the working directory imports
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise NotFound(f"no module named {where!r} (from {what} {target!r}); {hint}") from None
        raise
