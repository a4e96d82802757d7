"""Loader-side trust: what a model package may make the loader import or call.

A package only *states* what it needs: the sklearn flavor records the types its
skops file names (``flavor_config.trusted_types``), the python flavor the class
that rebuilds the model. The loader decides what it trusts:

- each flavor's built-in list (for scikit-learn: skops' defaults, scikit-learn's
  own classes, numpy and scipy data types; for the python flavor: a class whose
  installed source defines ``keel_load``), and
- the names the loading side gives: ``keel.load_model(uri, trust=[...])``,
  ``keel serve --trust NAME`` and the ``trusted_types`` setting
  (``KEEL_TRUSTED_TYPES`` or ``trusted_types`` in ``config.toml``).

A package that needs anything else is refused with :class:`PermissionDenied`
before anything it names is imported or deserialized. Names are dotted paths
as skops reports them: ``module.name`` (``mymodule.my_function``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from keel.config import get_settings
from keel.errors import InvalidInput, PermissionDenied

__all__ = ["check_names", "loader_trust", "trust_hint", "untrusted"]

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def loader_trust(trust: Iterable[str] | None = None) -> frozenset[str]:
    """The names this load trusts beyond the flavors' built-in lists.

    Args:
        trust: names the caller trusts for this load (``load_model(trust=...)``,
            ``keel serve --trust``); the ``trusted_types`` setting is always added.

    Raises:
        InvalidInput: ``trust`` is a single string, or holds something that is not
            a dotted name.
    """
    return frozenset(check_names(trust)) | frozenset(get_settings().trusted_type_list)


def check_names(trust: Any) -> list[str]:
    """``trust`` as a list of dotted names, checked (``None`` is the empty list)."""
    if trust is None:
        return []
    if isinstance(trust, str):
        raise InvalidInput(
            f"trust must be a list of dotted names like ['mymodule.my_function'], got the "
            f"single string {trust!r}; wrap it in a list"
        )
    if not isinstance(trust, Iterable):
        raise InvalidInput(
            f"trust must be a list of dotted names like ['mymodule.my_function'], "
            f"got {type(trust).__name__}"
        )
    names = list(trust)
    for name in names:
        if not isinstance(name, str) or not _DOTTED.match(name):
            raise InvalidInput(
                f"each trusted name must be a dotted path like 'mymodule.my_function', got {name!r}"
            )
    return names


def trust_hint(names: Sequence[str]) -> str:
    """The exact argument, flag and setting that trust ``names``."""
    listed = ", ".join(repr(n) for n in names)
    flags = " ".join(f"--trust {n}" for n in names)
    return (
        f"keel.load_model(uri, trust=[{listed}]), `keel serve TARGET {flags}`, or the "
        f"trusted_types setting (KEEL_TRUSTED_TYPES={','.join(names)} in the environment, "
        "or trusted_types in .keel/config.toml)"
    )


def untrusted(what: str, names: Iterable[str]) -> PermissionDenied:
    """The refusal of a package whose ``what`` needs ``names``, which the loader does not trust."""
    needed = sorted(set(names))
    return PermissionDenied(
        f"{what} needs {', '.join(needed)}, which this loader does not trust: loading "
        "can import and call whatever a model package names, and the package does not "
        "decide what is trusted. Nothing was imported or deserialized. If you trust "
        f"whoever logged this model, trust these names when loading: {trust_hint(needed)}"
    )
