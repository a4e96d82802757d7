"""What to say when a name does not exist: the names the user probably meant.

A typo (``wien`` for ``wine``, ``@champoin`` for ``@champion``) should be
answered with the existing names closest to it, not with an invitation to
create a new one. :func:`hint` builds that clause once for every kind of
name (models, aliases, experiments, datasets), so the messages read alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "hint"]

#: How many existing names to list when none is close to the one given.
_LISTED = 5


def closest(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``names`` closest to ``name``, best first (``difflib`` similarity ≥ 0.6).

    A name that differs only in letter case counts as closest of all.
    """
    existing = sorted(set(names))
    same_case = [other for other in existing if other.lower() == name.lower() and other != name]
    close = difflib.get_close_matches(name, existing, n=n, cutoff=0.6)
    return [*same_case, *(c for c in close if c not in same_case)][:n]


def hint(name: str, names: Iterable[str], *, kind: str, create: str | None = None) -> str:
    """A clause for a ``NotFound`` message about ``name``.

    Args:
        name: the name that does not exist.
        names: the names that do.
        kind: what they are, plural (``"models"``, ``"aliases of 'wine'"``).
        create: how to make one, used only when there are none at all.

    Returns:
        ``did you mean 'wine'?``, else ``the models are: a, b, c``, else
        ``there are no models yet`` (plus ``create``).
    """
    existing = sorted(set(names))
    close = closest(name, existing)
    if close:
        return f"did you mean {' or '.join(map(repr, close))}?"
    if existing:
        more = f" and {len(existing) - _LISTED} more" if len(existing) > _LISTED else ""
        return f"the {kind} are: {', '.join(existing[:_LISTED])}{more}"
    return f"there are no {kind} yet" + (f"; {create}" if create else "")
