"""Keel's URIs, parsed in one place.

- ``datasets:/<name>@<version>`` — one version of a dataset;
- ``datasets:/<name>`` or ``datasets:/<name>@latest`` — whichever version is
  newest when the reference is resolved;
- ``datasets:/<digest>`` — the version whose manifest has that 64-hex digest.

Parsing only splits a URI into its parts and checks its shape; whether the
dataset exists is the data catalog's question, asked when it is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import InvalidInput

__all__ = ["DATASETS", "DatasetURI", "is_dataset_uri", "parse_dataset_uri"]

#: The scheme of a dataset URI.
DATASETS = "datasets:/"

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[^\s/@]+$")


@dataclass(frozen=True)
class DatasetURI:
    """A parsed ``datasets:/`` URI: a name with a version (``None``: the latest), or a digest."""

    name: str | None
    version: int | None = None
    digest: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the URI names one version for good (a number or a digest)."""
        return self.digest is not None or self.version is not None

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{DATASETS}{self.digest}"
        return f"{DATASETS}{self.name}" + ("" if self.version is None else f"@{self.version}")


def is_dataset_uri(value: object) -> bool:
    """True when ``value`` is a string in the ``datasets:/`` scheme (well formed or not)."""
    return isinstance(value, str) and value.startswith(DATASETS)


def parse_dataset_uri(uri: str) -> DatasetURI:
    """Split ``datasets:/name[@version|@latest]`` or ``datasets:/<digest>`` into its parts.

    Raises:
        InvalidInput: ``uri`` is not a ``datasets:/`` URI of one of those shapes; the
            message shows each.
    """
    if not is_dataset_uri(uri):
        raise InvalidInput(
            f"expected a dataset URI such as datasets:/churn@3, datasets:/churn (the latest) "
            f"or datasets:/<digest>, got {uri!r}"
        )
    text = uri[len(DATASETS) :].strip("/")
    if _DIGEST_RE.match(text):
        return DatasetURI(None, None, text)
    name, sep, version = text.rpartition("@") if "@" in text else (text, "", "")
    if not _NAME_RE.match(name) or (
        sep and version != "latest" and (not version.isdigit() or int(version) < 1)
    ):
        raise InvalidInput(
            f"expected datasets:/<name>@<version>, datasets:/<name>[@latest] or "
            f"datasets:/<digest>, got {uri!r}"
        )
    return DatasetURI(name, int(version) if sep and version != "latest" else None)
