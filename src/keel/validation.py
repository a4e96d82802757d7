"""Names, paths and limits, checked in one place.

Names of models, datasets, deployments and policies follow one rule,
:func:`check_name`: 1-128 letters, digits, ``_``, ``-`` or ``.``, starting with
a letter or digit. A name may become a folder (a deployment's prediction
partition) or part of a URI (``models:/churn@champion``), so it holds no
``/``, ``@``, space or control character. Aliases (``champion``) follow
:func:`check_alias`: they start with a letter and hold no ``.``, and
``latest`` is reserved for "the newest version".

Artifact paths (``plots/roc.png`` under a run) and manifest paths (a file
of a stored folder or dataset version) are one type, :data:`RelativePath`:
a ``/``-separated path that stays inside whatever folder it is written
under, on every operating system. :func:`check_relative_path` is the only
way to make one. It refuses:

- an empty path, an absolute one (``/etc/x``), a drive letter (``C:x``) or a
  backslash (``a\\b`` means ``a`` then ``b`` on Windows);
- an empty, ``.`` or ``..`` segment (``a//b``, ``./a``, ``a/../../x``);
- control characters (a newline in a file name breaks every listing);
- a segment over 255 bytes or a path over 1,024 bytes (UTF-8), the limits
  common filesystems and object stores share.

Paths are checked when they are logged or added, and again when a stored
manifest or listing is read back, since bytes in a store may have been
written by anything. A writer then places each file with :func:`safe_join`,
which resolves the destination and the folders on the way (symlinks
included) and refuses to leave the destination.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NewType

from keel.errors import InvalidInput

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "RelativePath",
    "check_alias",
    "check_name",
    "check_relative_path",
    "check_version",
    "safe_join",
    "safe_joins",
]

#: Bytes (UTF-8) one segment of a relative path may hold: most filesystems' name limit.
MAX_SEGMENT_BYTES = 255
#: Bytes (UTF-8) a whole relative path may hold: S3's key limit, with room for a prefix.
MAX_PATH_BYTES = 1024

#: Characters a name (model, dataset, deployment, policy) or an alias may hold.
MAX_NAME_CHARS = 128

#: A path checked by :func:`check_relative_path`: relative, POSIX, inside its folder.
RelativePath = NewType("RelativePath", str)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXAMPLE = "like 'plots/roc.png'"
_NAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_NAME_CHARS - 1}}}$")
_ALIAS_RE = re.compile(rf"^[A-Za-z][A-Za-z0-9_\-]{{0,{MAX_NAME_CHARS - 1}}}$")
_RESERVED_ALIASES = frozenset({"latest"})


def check_name(value: object, what: str = "name") -> str:
    """``value`` if it is a valid name, else :class:`~keel.errors.InvalidInput` saying the rule.

    Args:
        value: the candidate.
        what: what the name is, for the message (``"model name"``, ``"deployment name"``).
    """
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidInput(
            f"{what} must be 1-{MAX_NAME_CHARS} letters, digits, '_', '-' or '.', starting "
            f"with a letter or digit; got {value!r}"
        )
    return value


def check_alias(value: object, what: str = "alias") -> str:
    """``value`` if it is a valid alias, else :class:`~keel.errors.InvalidInput` saying the rule."""
    if not isinstance(value, str) or not _ALIAS_RE.match(value) or value in _RESERVED_ALIASES:
        raise InvalidInput(
            f"{what} must start with a letter and contain only letters, digits, '_' or '-' "
            f"(up to {MAX_NAME_CHARS}, and not 'latest'); got {value!r}"
        )
    return value


def check_version(value: object, expected: str = "a positive integer") -> int:
    """A version number (``3`` or ``"3"``) as an int; a bool, zero or text is refused.

    Raises:
        InvalidInput: ``value`` is not a positive whole number (``expected`` says what is).
    """
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"version must be {expected}, got {value!r}")
    return int(text)


def check_relative_path(path: object, what: str = "path") -> RelativePath:
    """``path`` as a :data:`RelativePath`, or :class:`~keel.errors.InvalidInput` saying why not.

    Args:
        path: the candidate.
        what: what the path is, for the message (``"artifact path"``, ``"manifest path"``).
    """
    if not isinstance(path, str):
        raise InvalidInput(f"{what} must be a string {_EXAMPLE}, got {path!r}")
    reason = _unsafe(path)
    if reason is not None:
        shown = path if len(path) <= 80 else f"{path[:60]}…"
        raise InvalidInput(
            f"{what} {shown!r} must be relative and stay inside the folder: {reason}"
        )
    return RelativePath(path)


def _unsafe(path: str) -> str | None:
    """Why ``path`` is not a safe relative path (with what to do), or ``None``."""
    if not path:
        return f"it is empty; give a path {_EXAMPLE}"
    if path.startswith("/") or _DRIVE.match(path):
        return f"it is absolute; give a path relative to its folder, {_EXAMPLE}"
    if "\\" in path:
        return f"it contains a backslash; separate folders with '/', {_EXAMPLE}"
    found = _CONTROL.search(path)
    if found:
        return (
            f"it contains the control character {found.group()!r}; rename it to printable "
            "characters"
        )
    try:
        total = len(path.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: a file name that was not valid UTF-8
        return "it is not valid UTF-8; rename the file to a UTF-8 name"
    if total > MAX_PATH_BYTES:
        return (
            f"it is {total} bytes long; the limit is {MAX_PATH_BYTES} bytes (UTF-8); use "
            "shorter folder or file names"
        )
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return f"it has an empty, '.' or '..' segment; name each folder once, {_EXAMPLE}"
        size = len(segment.encode("utf-8"))
        if size > MAX_SEGMENT_BYTES:
            return (
                f"it has a segment of {size} bytes; the limit is {MAX_SEGMENT_BYTES} bytes "
                "(UTF-8) per file or folder name; shorten it"
            )
    return None


def safe_join(dest: str | os.PathLike[str], rel: str, what: str = "path") -> Path:
    """Where ``rel`` lands under ``dest``, refusing any route that leaves ``dest``.

    ``rel`` is checked with :func:`check_relative_path`; then ``dest`` and every
    folder between it and the file are resolved (following symlinks) and must
    stay inside the resolved ``dest``. The file's own name is not followed:
    Keel's writers put a file in place by renaming a temporary file over the
    name, which replaces a symlink there rather than writing through it.

    The check holds for the folders as they are at the time of the call; a
    folder that another process swaps for a symlink afterwards is not covered.

    Args:
        dest: the destination folder (it need not exist yet).
        rel: the relative path of the file under ``dest``.
        what: what ``rel`` is, for messages.

    Returns:
        ``resolved dest / rel``.

    Raises:
        InvalidInput: ``rel`` is not a safe relative path, or a folder on the way
            is a symlink (or a ``..`` of one) that leads outside ``dest``.
    """
    return safe_joins(dest, [rel], what)[0]


def safe_joins(dest: str | os.PathLike[str], rels: Iterable[str], what: str = "path") -> list[Path]:
    """:func:`safe_join` for many paths under one ``dest``; each folder is resolved once.

    Every path is checked before the list is returned, so a caller that
    checks first and writes after writes nothing when one path is refused.
    """
    root = Path(dest).expanduser().resolve()
    folders: dict[str, bool] = {"": True}
    out: list[Path] = []
    for rel in rels:
        checked = check_relative_path(rel, what)
        parent, _, _name = checked.rpartition("/")
        if parent not in folders:
            resolved = (root / parent).resolve()
            folders[parent] = resolved == root or root in resolved.parents
        if not folders[parent]:
            raise InvalidInput(
                f"{what} {checked!r} would be written outside {root}: the folder "
                f"{root / parent} leads to {(root / parent).resolve()} (through a symlink); "
                "nothing was written. Remove the symlink or choose another destination"
            )
        out.append(root / checked)
    return out
