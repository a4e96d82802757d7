"""Folder manifests as dataset versions see them: build, digest, read (cached) and compare.

A dataset version *is* a folder manifest of the content store
(``keel.manifest/v1``: canonical JSON of sorted ``[path, digest, size]``
entries); its digest names the version. This module computes that digest
for a folder on disk without storing anything, so ``status`` can tell an
unchanged tree with one comparison, and keeps a verified local copy of the
manifests it reads so that checking a folder against a version stored on
S3 does not cross the network.

Every manifest read is checked entry by entry (paths with
:func:`keel.validation.check_relative_path`, digests and sizes for shape):
a manifest's bytes may come from a remote anyone can write to, and its
paths decide where ``checkout`` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from keel.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore, ManifestEntry

# The artifact store is imported where manifests are encoded or read, not here: `keel data
# status` on an unchanged tree needs only :class:`Diff`, and should not pay for the store.

__all__ = [
    "Diff", "Manifest", "cache_manifest", "cached_manifest", "diff_manifests", "fetch_manifest",
    "read_manifest",
]  # fmt: skip


@dataclass
class Manifest:
    """Files by relative path: ``{path: (digest, size)}``."""

    files: dict[str, tuple[str, int]]
    _bytes: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_entries(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        return cls({e.path: (e.digest, e.size) for e in entries})

    def entries(self) -> list[ManifestEntry]:
        from keel.artifacts import ManifestEntry

        return [ManifestEntry(p, d, s) for p, (d, s) in sorted(self.files.items())]

    def to_bytes(self) -> bytes:
        """The exact bytes :meth:`ArtifactStore.put_manifest` stores for these entries."""
        from keel.artifacts import canonical_json
        from keel.artifacts.store import MANIFEST_FORMAT

        if self._bytes is None:  # computed once: large trees have tens of thousands of entries
            ordered = sorted(self.files.items())
            self._bytes = canonical_json(
                {"format": MANIFEST_FORMAT, "entries": [[p, d, s] for p, (d, s) in ordered]}
            )
        return self._bytes

    @property
    def digest(self) -> str:
        return blake3.blake3(self.to_bytes()).hexdigest()  # as the store names its objects

    @property
    def total_bytes(self) -> int:
        return sum(s for _, s in self.files.values())

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class Diff:
    """How ``new`` differs from ``old``: relative paths, sorted."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def diff_manifests(old: Manifest, new: Manifest) -> Diff:
    """Files added, removed and changed (by digest) from ``old`` to ``new``."""
    old_keys, new_keys = old.files.keys(), new.files.keys()
    both = old_keys & new_keys
    # Set algebra over (path, digest) pairs: C-speed, no per-file Python loop on large trees.
    old_pairs = {(p, old.files[p][0]) for p in both}
    new_pairs = {(p, new.files[p][0]) for p in both}
    changed = sorted(p for p, _ in new_pairs - old_pairs)
    return Diff(sorted(new_keys - old_keys), sorted(old_keys - new_keys), changed)


def cached_manifest(digest: str, cache_dir: Path) -> Manifest | None:
    """The manifest named ``digest`` from this machine's cache if a verified copy is there.

    Needs no artifact store, so a status that finds the copy opens none.
    """
    try:
        data = (cache_dir / digest).read_bytes()
    except OSError:
        return None
    if data and blake3.blake3(data).hexdigest() == digest:
        return _parse(data, digest)
    return None


def read_manifest(store: ArtifactStore, digest: str, cache_dir: Path | None) -> Manifest:
    """The manifest named ``digest``, from a verified local copy when there is one."""
    if cache_dir is not None:
        manifest = cached_manifest(digest, cache_dir)
        if manifest is not None:
            return manifest
    return fetch_manifest(store, digest, cache_dir)


def fetch_manifest(store: ArtifactStore, digest: str, cache_dir: Path | None) -> Manifest:
    """The manifest named ``digest`` from the store, its copy then kept in ``cache_dir``."""
    data = store.get_bytes(digest)  # verified by the store
    manifest = _parse(data, digest)
    if cache_dir is not None:
        cache_manifest(data, digest, cache_dir)
    return manifest


def cache_manifest(data: bytes, digest: str, cache_dir: Path) -> None:
    """Keep a copy of manifest ``digest`` (its stored ``data``) in this machine's cache.

    Best effort: a copy that cannot be written is read from the store next time, and
    a torn one fails its digest check and is read from the store too.
    """
    cached = cache_dir / digest
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)


def _parse(data: bytes, digest: str) -> Manifest:
    from keel.artifacts import check_manifest_entry
    from keel.artifacts.store import MANIFEST_FORMAT

    try:
        doc = json.loads(data)
    except ValueError:
        raise IntegrityError(f"object {digest} is not JSON, so not a folder manifest") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise InvalidInput(f"object {digest} is not a Keel folder manifest")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise InvalidInput(f"object {digest} is not a Keel folder manifest: it has no entries")
    files: dict[str, tuple[str, int]] = {}
    for raw in entries:
        path, file_digest, size = check_manifest_entry(raw, digest)
        files[path] = (file_digest, size)
    return Manifest(files)
