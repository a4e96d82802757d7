"""The content-addressed artifact store.

An object's key is the BLAKE3 digest of its bytes (64 hex characters),
stored under ``objects/<first two>/<rest>``. A folder is a *manifest*: a
canonical JSON list of ``(path, digest, size)`` entries sorted by path,
itself stored as an object whose digest names the folder. Writing the same
bytes twice stores them once; every read recomputes the digest and raises
:class:`~keel.errors.IntegrityError` on a mismatch.

A manifest's paths are :data:`~keel.validation.RelativePath` values: checked
when a manifest is built and again when one is read (its bytes may come from
anywhere), and a folder is recreated only through
:func:`~keel.validation.safe_joins`, so no entry writes outside its folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from keel.artifacts.backends import Backend, backend_for_url
from keel.errors import IntegrityError, InvalidInput, NotFound, StorageError
from keel.validation import check_relative_path, safe_joins

__all__ = [
    "ArtifactStore",
    "Blob",
    "ManifestEntry",
    "check_digest",
    "check_manifest_entry",
    "folder_files",
    "hash_bytes",
    "hash_file",
]

_CHUNK = 1 << 20
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
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


def check_digest(digest: str) -> str:
    """``digest`` if it is a BLAKE3 hex digest (64 lowercase hex characters), else InvalidInput."""
    if _HEX_DIGEST.fullmatch(digest) is None:
        raise InvalidInput(f"expected a 64-character lowercase hex BLAKE3 digest, got {digest!r}")
    return digest


@dataclass(frozen=True)
class Blob:
    """A stored object: its digest and size in bytes."""

    digest: str
    size: int


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a stored folder.

    Raises:
        InvalidInput: ``path`` is not a safe relative path
            (see :func:`keel.validation.check_relative_path`).
    """

    path: str
    digest: str
    size: int

    def __post_init__(self) -> None:
        check_relative_path(self.path, "manifest path")


def folder_files(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The files under a folder as ``(relative POSIX path, path)``, sorted by relative path.

    Raises:
        InvalidInput: ``path`` is not a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"expected a folder, got {root}")
    files = ((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    return sorted(files, key=lambda item: item[0])


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
        check_digest(digest)
        return f"objects/{digest[:2]}/{digest[2:]}"

    # -- writing ---------------------------------------------------------

    def put_bytes(self, data: bytes) -> Blob:
        """Store ``data``; return its digest and size once its name is durable."""
        return self._durable([self._put_bytes(data)])[0]

    def _put_bytes(self, data: bytes) -> Blob:
        digest = hash_bytes(data)
        key = self.key(digest)
        if not self.backend.exists(key):
            self.backend.put_bytes(key, data)
        return Blob(digest, len(data))

    def put_file(self, path: str | os.PathLike[str]) -> Blob:
        """Store a file's bytes; return its digest and size once its name is durable."""
        return self._durable([self._put_file(path)])[0]

    def _put_file(self, path: str | os.PathLike[str]) -> Blob:
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

    def put_files(self, paths: list[Path], workers: int = 8) -> list[Blob]:
        """Store several files on a thread pool; blobs in the order of ``paths``."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return self._durable(list(pool.map(self._put_file, paths)))

    def _durable(self, blobs: list[Blob]) -> list[Blob]:
        """``blobs``, once their names survive a crash of the machine (the backend
        flushes the folders holding them, each once).

        Every write ends here before its digest is returned, since the caller records
        the digest next. An object that was already there is flushed too: its writer
        may have died between its rename and its flush.
        """
        self.backend.sync_folders([self.key(b.digest) for b in blobs])
        return blobs

    def put_json(self, obj: Any) -> Blob:
        """Store ``obj`` as canonical JSON (sorted keys, no spaces)."""
        return self.put_bytes(canonical_json(obj))

    def put_dir(
        self, path: str | os.PathLike[str], workers: int = 8
    ) -> tuple[Blob, list[ManifestEntry]]:
        """Store every file under ``path`` and a manifest naming them.

        Returns the manifest's blob (its digest names the folder) and its entries, once
        every name is durable.

        Raises:
            InvalidInput: ``path`` is not a folder, or a file's relative path is not a
                safe manifest path; then nothing is stored.
        """
        files = folder_files(path)
        for rel, _ in files:  # before any byte is stored
            check_relative_path(rel, "manifest path")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            blobs = list(pool.map(self._put_file, [p for _, p in files]))
        entries = [
            ManifestEntry(rel, b.digest, b.size) for (rel, _), b in zip(files, blobs, strict=True)
        ]
        manifest = self._put_bytes(_manifest_bytes(entries))
        self._durable([*blobs, manifest])  # one flush per folder for the files and the manifest
        return manifest, entries

    def put_manifest(self, entries: list[ManifestEntry]) -> Blob:
        """Store a manifest for ``entries`` (sorted by path here) and return its blob."""
        return self.put_bytes(_manifest_bytes(entries))

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
        """The entries of a folder manifest, each path and digest checked again.

        Raises:
            InvalidInput: the object is not a Keel folder manifest, or an entry is
                malformed or names an unsafe path (``../x``, ``/etc/x`` …).
        """
        doc = self.get_json(digest)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise InvalidInput(f"object {digest} is not a Keel folder manifest")
        return [ManifestEntry(*check_manifest_entry(raw, digest)) for raw in doc.get("entries", ())]

    def get_dir(self, digest: str, dest: str | os.PathLike[str], workers: int = 8) -> Path:
        """Recreate the folder named by a manifest under ``dest``; every file is verified.

        Every target is checked before the first file is written: an entry that
        would land outside ``dest`` (through a symlinked folder, say) writes nothing.
        """
        entries = self.read_manifest(digest)
        targets = safe_joins(dest, [e.path for e in entries], f"path in manifest {digest}")

        def fetch(item: tuple[ManifestEntry, Path]) -> Path:
            return self.get_file(item[0].digest, item[1])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fetch, zip(entries, targets, strict=True)))
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        return root

    def iter_digests(self) -> Iterator[str]:
        """Digests of every stored object."""
        for key in self.backend.keys("objects"):
            parts = key.split("/")
            if len(parts) == 3 and len(parts[1]) == 2:
                yield parts[1] + parts[2]


def _manifest_bytes(entries: list[ManifestEntry]) -> bytes:
    ordered = sorted(entries, key=lambda e: e.path)  # each path was checked when built
    return canonical_json(
        {"format": MANIFEST_FORMAT, "entries": [[e.path, e.digest, e.size] for e in ordered]}
    )


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_manifest_entry(raw: Any, manifest: str) -> tuple[str, str, int]:
    """One stored ``[path, digest, size]`` entry of manifest ``manifest``, checked.

    Raises:
        InvalidInput: the entry is malformed or its path is unsafe; the message
            names the manifest, since its bytes were not written by Keel as they are.
    """
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 3
        or not isinstance(raw[1], str)
        or isinstance(raw[2], bool)
        or not isinstance(raw[2], int)
        or raw[2] < 0
    ):
        raise InvalidInput(
            f"manifest {manifest} holds a malformed entry {raw!r:.200}; expected "
            "[path, digest, size]. It was not written by Keel; nothing was written"
        )
    path, digest, size = raw
    try:
        check_digest(digest)
        check_relative_path(path, "manifest path")
    except InvalidInput as exc:
        raise InvalidInput(
            f"manifest {manifest} is refused: {exc}. It was not written by Keel; nothing "
            "was written"
        ) from None
    return path, digest, size
