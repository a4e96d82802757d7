"""The one warning class the models package emits."""

from __future__ import annotations

import warnings

__all__ = ["KeelWarning", "warn"]


class KeelWarning(UserWarning):
    """Something about a model or its input deserves attention but does not stop the call.

    Emitted when a loaded package's recorded requirements or Python version
    differ from what is installed, when a python-flavor model's source changed
    since it was logged, when ``predict`` drops columns the signature does not
    name, when a cached package failed verification and is fetched again, and
    when a logged model needs types or functions beyond the loader's built-in
    trusted list (loading it will need ``trust=``, ``--trust`` or the
    ``trusted_types`` setting).
    """


def warn(message: str, stacklevel: int = 3) -> None:
    """Emit ``message`` as a :class:`KeelWarning` at the caller's caller."""
    warnings.warn(message, KeelWarning, stacklevel=stacklevel)
