"""The content-addressed artifact store.

An object's key is the BLAKE3 digest of its bytes (64 hex characters),
stored under ``objects/<first two>/<rest>``. A folder is a *manifest*: a
canonical JSON list of ``(path, digest, size)`` entries sorted by path,
itself stored as an object whose digest names the folder. Writing the same
bytes twice stores them once; every read recomputes the digest and raises
:class:`~keel.errors.IntegrityError` on a mismatch.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import blake3

from keel.artifacts.backends import Backend, backend_for_url
from keel.errors import IntegrityError, InvalidInput, NotFound, StorageError

__all__ = ["ArtifactStore", "Blob", "ManifestEntry", "hash_bytes", "hash_file"]

_CHUNK = 1 << 20
_MMAP_THRESHOLD = 1 << 22  # below this, plain reads beat mapping the file
MANIFEST_FORMAT = "keel.manifest/v1"


def hash_bytes(data: bytes) -> str:
    """BLAKE3 hex digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def hash_file(path: str | os.PathLike[str]) -> str:
    """BLAKE3 hex digest of a file; large files are hashed on several threads."""
    size = os.path.getsize(path)
    if size >= _MMAP_THRESHOLD:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(os.fspath(path))
        return hasher.hexdigest()
    with open(path, "rb") as f:
        return blake3.blake3(f.read()).hexdigest()


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"expected a 64-character lowercase hex BLAKE3 digest, got {digest!r}")
    return digest


@dataclass(frozen=True)
class Blob:
    """A stored object: its digest and size in bytes."""

    digest: str
    size: int


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a stored folder."""

    path: str
    digest: str
    size: int


class ArtifactStore:
    """Content-addressed objects and folder manifests over a :class:`Backend`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def from_url(cls, url: str, s3_endpoint_url: str | None = None) -> ArtifactStore:
        return cls(backend_for_url(url, s3_endpoint_url))

    @property
    def url(self) -> str:
        return self.backend.url

    @staticmethod
    def key(digest: str) -> str:
        """The backend key of an object."""
        _check_digest(digest)
        return f"objects/{digest[:2]}/{digest[2:]}"

    # -- writing ---------------------------------------------------------

    def put_bytes(self, data: bytes) -> Blob:
        """Store ``data``; return its digest and size."""
        digest = hash_bytes(data)
        key = self.key(digest)
        if not self.backend.exists(key):
            self.backend.put_bytes(key, data)
        return Blob(digest, len(data))

    def put_file(self, path: str | os.PathLike[str]) -> Blob:
        """Store a file's bytes; return its digest and size."""
        src = Path(path)
        try:
            size = src.stat().st_size
            digest = hash_file(src)
        except FileNotFoundError:
            raise NotFound(f"no such file: {src}") from None
        except IsADirectoryError:
            raise InvalidInput(f"{src} is a folder; use put_dir for folders") from None
        except OSError as exc:
            raise StorageError(f"cannot read {src}: {exc}") from exc
        key = self.key(digest)
        if not self.backend.exists(key):
            self.backend.put_file(key, src)
        return Blob(digest, size)

    def put_json(self, obj: Any) -> Blob:
        """Store ``obj`` as canonical JSON (sorted keys, no spaces)."""
        return self.put_bytes(canonical_json(obj))

    def put_dir(
        self, path: str | os.PathLike[str], workers: int = 8
    ) -> tuple[Blob, list[ManifestEntry]]:
        """Store every file under ``path`` and a manifest naming them.

        Returns the manifest's blob (its digest names the folder) and its entries.
        """
        root = Path(path)
        if not root.is_dir():
            raise InvalidInput(f"expected a folder, got {root}")
        files = sorted(
            (p for p in root.rglob("*") if p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            blobs = list(pool.map(self.put_file, files))
        entries = [
            ManifestEntry(f.relative_to(root).as_posix(), b.digest, b.size)
            for f, b in zip(files, blobs, strict=True)
        ]
        return self.put_manifest(entries), entries

    def put_manifest(self, entries: list[ManifestEntry]) -> Blob:
        """Store a manifest for ``entries`` (sorted by path here) and return its blob."""
        ordered = sorted(entries, key=lambda e: e.path)
        for entry in ordered:
            _check_relative(entry.path)
        return self.put_json(
            {
                "format": MANIFEST_FORMAT,
                "entries": [[e.path, e.digest, e.size] for e in ordered],
            }
        )

    # -- reading ---------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return self.backend.exists(self.key(digest))

    def _open(self, digest: str) -> BinaryIO:
        try:
            return self.backend.open(self.key(digest))
        except NotFound:
            if self.backend.exists(f"corrupt/{digest}"):
                raise IntegrityError(
                    f"object {digest} in {self.url} was found corrupt earlier and moved to "
                    f"corrupt/{digest}; re-log the artifact to restore it"
                ) from None
            raise

    def get_bytes(self, digest: str) -> bytes:
        """The object's bytes, verified against its digest."""
        with self._open(digest) as f:
            data = f.read()
        actual = hash_bytes(data)
        if actual != digest:
            raise self._corrupt(digest, actual)
        return data

    def _corrupt(self, digest: str, actual: str) -> IntegrityError:
        """Move a damaged object aside so that storing the right bytes again repairs it."""
        aside = f"corrupt/{digest}"
        try:
            self.backend.move(self.key(digest), aside)
            where = f"it was moved to {aside}"
        except Exception as exc:  # the move is a courtesy; the error below is the news
            where = f"it could not be moved aside ({exc})"
        return IntegrityError(
            f"object {digest} in {self.url} is corrupt: its bytes hash to {actual}; {where}. "
            "Restore it from a copy or re-log the artifact"
        )

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get_bytes(digest))

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Write the object to ``dest`` (atomically), verified; return ``dest``."""
        dest_path = Path(dest)
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest_path.with_name(f".{dest_path.name}.{uuid.uuid4().hex[:8]}.part")
        hasher = blake3.blake3()
        try:
            with self._open(digest) as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            actual = hasher.hexdigest()
            if actual != digest:
                raise self._corrupt(digest, actual)
            os.replace(tmp, dest_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest_path

    def read_manifest(self, digest: str) -> list[ManifestEntry]:
        """The entries of a folder manifest."""
        doc = self.get_json(digest)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise InvalidInput(f"object {digest} is not a Keel folder manifest")
        return [ManifestEntry(p, d, s) for p, d, s in doc["entries"]]

    def get_dir(self, digest: str, dest: str | os.PathLike[str], workers: int = 8) -> Path:
        """Recreate the folder named by a manifest under ``dest``; every file is verified."""
        root = Path(dest)
        entries = self.read_manifest(digest)

        def fetch(entry: ManifestEntry) -> Path:
            return self.get_file(entry.digest, root / _check_relative(entry.path))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fetch, entries))
        root.mkdir(parents=True, exist_ok=True)
        return root

    def iter_digests(self) -> Iterator[str]:
        """Digests of every stored object."""
        for key in self.backend.keys("objects"):
            parts = key.split("/")
            if len(parts) == 3 and len(parts[1]) == 2:
                yield parts[1] + parts[2]


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_relative(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not path:
        raise InvalidInput(f"manifest path {path!r} must be relative and stay inside the folder")
    return path
