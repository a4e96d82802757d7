"""Packs: many small files stored as one object.

Writing one object per file costs a handful of filesystem metadata
operations each, which on most disks (and for every S3 PUT) dwarfs the cost
of the bytes: 20,000 files of 2 KB take seconds to store one by one, and
linking them costs as much. So ``add`` appends the bytes of small files
(under 256 KB) to *packs* of about 16 MB and stores each pack as one
ordinary object, named by its own digest. A version's *pack
index* (one more object, recorded with the version) lists, for each packed
file digest, the pack, offset and size that hold its bytes.

The manifest is unchanged: every file still has its own digest, and
reading a packed file verifies the slice against that digest. Larger files
stay loose, one object each, so that they can be reflinked or hardlinked in
and out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.artifacts import ArtifactStore, canonical_json, hash_bytes
from keel.errors import IntegrityError, InvalidInput

__all__ = [
    "PACKABLE",
    "PackIndex",
    "PackWriter",
    "PackedAt",
    "read_pack_index",
    "slice_of",
]

PACK_FORMAT = "keel.packs/v1"
#: Files smaller than this are packed when they would otherwise be copied.
PACKABLE = 256 << 10
#: A pack is stored once it holds this many bytes.
PACK_TARGET = 16 << 20


@dataclass(frozen=True, slots=True)
class PackedAt:
    """Where a packed file's bytes are: ``size`` bytes at ``offset`` in object ``pack``."""

    pack: str
    offset: int
    size: int


class PackIndex:
    """File digest → :class:`PackedAt`, for the packed files of one version."""

    def __init__(self, entries: dict[str, PackedAt] | None = None) -> None:
        self.entries: dict[str, PackedAt] = entries or {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self.entries

    def get(self, digest: str) -> PackedAt | None:
        return self.entries.get(digest)

    @property
    def packs(self) -> list[str]:
        return sorted({at.pack for at in self.entries.values()})

    def to_bytes(self) -> bytes:
        rows = [[d, at.pack, at.offset, at.size] for d, at in sorted(self.entries.items())]
        return canonical_json({"format": PACK_FORMAT, "entries": rows})

    @classmethod
    def from_bytes(cls, data: bytes, digest: str) -> PackIndex:
        try:
            doc: Any = json.loads(data)
        except ValueError:
            raise IntegrityError(f"object {digest} is not JSON, so not a pack index") from None
        if not isinstance(doc, dict) or doc.get("format") != PACK_FORMAT:
            raise InvalidInput(f"object {digest} is not a Keel pack index")
        return cls({d: PackedAt(p, int(o), int(s)) for d, p, o, s in doc["entries"]})


def read_pack_index(store: ArtifactStore, digest: str | None) -> PackIndex:
    """The pack index stored under ``digest`` (an empty one for ``None``)."""
    if not digest:
        return PackIndex()
    return PackIndex.from_bytes(store.get_bytes(digest), digest)


class PackWriter:
    """Collects small files into packs and stores each pack as it fills (thread-safe).

    Args:
        store: called with a full pack's bytes; stores them and returns their digest.
    """

    def __init__(self, store: Callable[[bytes], str]) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._parts: list[tuple[str, bytes]] = []
        self._pending: set[str] = set()
        self._size = 0
        self.index = PackIndex()

    def add(self, digest: str, data: bytes) -> None:
        """Pack ``data`` (whose digest is ``digest``) unless it is already packed."""
        with self._lock:
            if digest in self.index or digest in self._pending:
                return
            self._pending.add(digest)
            self._parts.append((digest, data))
            self._size += len(data)
            if self._size < PACK_TARGET:
                return
            parts, self._parts, self._size = self._parts, [], 0
        self._flush(parts)

    def _flush(self, parts: list[tuple[str, bytes]]) -> None:
        if not parts:
            return
        blob = b"".join(data for _, data in parts)
        pack = self._store(blob)
        offset = 0
        found: dict[str, PackedAt] = {}
        for digest, data in parts:
            found.setdefault(digest, PackedAt(pack, offset, len(data)))
            offset += len(data)
        with self._lock:
            for digest, at in found.items():
                self.index.entries.setdefault(digest, at)
                self._pending.discard(digest)

    def close(self) -> PackIndex:
        """Store the last, partly filled pack; return every packed file's location."""
        with self._lock:
            parts, self._parts, self._size = self._parts, [], 0
        self._flush(parts)
        return self.index


def slice_of(pack_bytes: bytes, at: PackedAt, digest: str, where: str) -> bytes:
    """A packed file's bytes, verified against its digest."""
    data = pack_bytes[at.offset : at.offset + at.size]
    actual = hash_bytes(data)
    if actual != digest:
        raise IntegrityError(
            f"file {digest} packed in object {at.pack} of {where} is corrupt (its bytes hash to "
            f"{actual}); restore the pack with `keel data pull` or re-add the data"
        )
    return data
