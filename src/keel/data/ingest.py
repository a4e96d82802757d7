"""Putting the files of an ``add`` into the content store, durably.

:func:`store_local` fills a local store: small files go into packs
(:mod:`keel.data.packs`); files the filesystem would copy anyway and that
fit in memory are read once, hashed and written from the same bytes;
larger ones, and those that can be reflinked or hard-linked, are staged
under a temporary name and hashed as staged. Either way the digest is of
the bytes stored, never of what was stat'ed, so a file edited during the
add cannot end up under a wrong digest.

Durability, without one global flush. Every object this add writes is
fsynced under its temporary name, by the worker thread that wrote it,
before it is renamed into place (``os.fsync`` releases the GIL, so other
workers keep reading and hashing meanwhile, and concurrent fsyncs share the
filesystem's journal commits). A name under ``objects/`` therefore always
has its bytes on disk. Once every object of the version is in place, the
folders holding them are fsynced (:meth:`LocalBackend.sync_folders`), and
only then may the version be recorded. Measured against one ``syncfs`` of
the whole filesystem after the renames (and against fsyncing every object
in a batch after all were written), this was the fastest; it also flushes
only this add's files, not whatever else the machine had written.

Once a copied object is on disk its pages are dropped from the page cache
(``posix_fadvise``): a snapshot is a copy kept for later, and keeping
hundreds of megabytes of it cached would only evict what is in use, while
the next objects reuse those pages. Hard links are left alone (their pages
are the user's file's).

:func:`store_remote` hashes what the state record does not vouch for and
uploads what the store lacks (an S3 PUT is atomic and durable by itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keel.artifacts import ArtifactStore, LocalBackend, hash_bytes
from keel.data.packs import PACKABLE, PackedAt, PackIndex, PackWriter
from keel.data.scan import LARGE_FILE, Scan, default_workers, hash_path, map_batches
from keel.errors import StorageError

if TYPE_CHECKING:
    from keel.data.snapshot import DataContext, Progress

__all__ = ["Packs", "object_keys", "store_local", "store_remote"]

#: Files below this size that the filesystem copies are read once into memory.
_READ_WHOLE = LARGE_FILE
_OPEN_READ = os.O_RDONLY | os.O_CLOEXEC


class Packs:
    """Packed locations for one add: reused from the tracked version, or newly written."""

    def __init__(self, store: ArtifactStore, previous: PackIndex) -> None:
        self.store = store
        self.previous = previous
        self.writer = PackWriter(self._put)
        self._packs_present: dict[str, bool] = {}

    def _put(self, data: bytes) -> str:
        backend = self.store.backend
        if not isinstance(backend, LocalBackend):
            return self.store.put_bytes(data).digest
        digest = hash_bytes(data)
        key = ArtifactStore.key(digest)
        if not backend.exists(key):
            backend.put_bytes(key, data, cached=False)  # a copy kept for later: see put_bytes
        return digest

    def holds(self, digest: str) -> bool:
        at = self.previous.get(digest)
        if at is None:
            return False
        present = self._packs_present.get(at.pack)
        if present is None:
            present = self._packs_present[at.pack] = self.store.exists(at.pack)
        return present

    def index_for(self, digests: set[str]) -> PackIndex:
        written = self.writer.close()
        entries: dict[str, PackedAt] = {}
        for digest in digests:
            at = written.get(digest) or (self.previous.get(digest) if self.holds(digest) else None)
            if at is not None:
                entries[digest] = at
        return PackIndex(entries)


def object_keys(digests: set[str], index: PackIndex, *named: str | None) -> list[str]:
    """The keys of every object a version needs: loose files, packs, and ``named`` ones."""
    loose = {d for d in digests if d not in index}
    return [ArtifactStore.key(d) for d in sorted({*loose, *index.packs, *filter(None, named)})]


def _read(path: str, size: int) -> bytes:
    """A file's bytes, read to its end whatever size the scan saw."""
    fd = os.open(path, _OPEN_READ)
    try:
        data = os.read(fd, size + 1)  # one call when the size held; asking one more sees growth
        if len(data) == size:
            return data
        chunks = [data]
        while chunk := os.read(fd, max(size, 1 << 16)):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def store_local(
    ctx: DataContext,
    found: Scan,
    known: Sequence[str | None],
    packs: Packs,
    link: str | None,
    progress: Progress | None,
) -> tuple[list[str], list[int]]:
    """Put every scanned file into the local store.

    Returns:
        Per file in scan order, the digest and the size of the bytes stored (a file
        that changed size since the scan is stored, and listed, as read).
    """
    backend = ctx.artifacts.backend
    assert isinstance(backend, LocalBackend)
    root = backend.root
    placer = ctx.placer(root / "tmp", link)
    store_dev = os.stat(root).st_dev
    large = next((i for i, size in enumerate(found.sizes) if size >= PACKABLE), None)
    if large is not None and link != "copy":
        placer.probe(Path(found.path(large)), found.devs[large], store_dev)  # link or copy?
    objects = os.path.join(root, "objects")
    scanned = found.sizes
    sizes = list(scanned)
    done = [0]

    def present(digest: str, size: int) -> bool:
        if packs.holds(digest):
            return True
        try:
            return os.stat(os.path.join(objects, digest[:2], digest[2:])).st_size == size
        except FileNotFoundError:
            return False

    def put(data: bytes) -> str:
        digest = hash_bytes(data)
        if len(data) < PACKABLE:
            # Packed even when the same bytes are loose already: a second copy of a small
            # file costs less than a stat per small file to look for the first.
            if not packs.holds(digest):
                packs.writer.add(digest, data)
        elif not present(digest, len(data)):
            backend.put_bytes(ArtifactStore.key(digest), data, cached=False)  # fsynced, renamed
        return digest

    def one(index: int, digest: str | None) -> str:
        size = scanned[index]
        if digest is not None and present(digest, size):
            return digest
        src = found.path(index)
        # Small files are always packed: one object per file would cost more than its bytes.
        if size < PACKABLE or (size < _READ_WHOLE and placer.copies(found.devs[index], store_dev)):
            data = _read(src, size)
            if len(data) != size:
                sizes[index] = len(data)
            return put(data)
        tmp = placer.stage(Path(src), found.devs[index], store_dev)
        try:
            stored = os.stat(tmp).st_size
            actual = hash_path(str(tmp), stored)  # what was stored, not what was stat'ed
            if stored != size:
                sizes[index] = stored
            if not present(actual, stored):  # else another file (or process) stored it first
                # Fsynced, then renamed; a copy's pages are dropped, a hard link's are the
                # user's own file's and stay.
                copied = placer.copies(found.devs[index], store_dev)
                backend.adopt(ArtifactStore.key(actual), tmp, cached=not copied)
        finally:
            tmp.unlink(missing_ok=True)
        return actual

    def batch(items: Sequence[tuple[int, str | None]]) -> list[str]:
        try:
            out = [one(i, d) for i, d in items]
        except FileNotFoundError as exc:
            raise StorageError(f"a file disappeared while it was being added: {exc}") from None
        except OSError as exc:
            raise StorageError(f"cannot add to {root}: {exc}") from exc
        if progress is not None:
            done[0] += len(items)
            progress(done[0], len(found))
        return out

    digests = map_batches(batch, list(enumerate(known)), default_workers(), sizes=scanned)
    return digests, sizes


def store_remote(
    ctx: DataContext,
    found: Scan,
    known: Sequence[str | None],
    packs: Packs,
    progress: Progress | None,
) -> list[str]:
    """Hash what the state record does not know; upload what the store lacks (small files packed)."""
    missing = [i for i, d in enumerate(known) if d is None]
    hashed = iter(
        map_batches(
            lambda chunk: [hash_path(found.path(i), found.sizes[i]) for i in chunk],
            missing,
            default_workers(),
        )
    )
    digests = [d if d is not None else next(hashed) for d in known]
    store = ctx.artifacts
    absent = ctx.catalog.missing_objects(d for d in digests if not packs.holds(d))
    todo = {d: i for i, d in enumerate(digests) if d in absent}
    done = [0]

    def upload(items: Sequence[tuple[str, int]]) -> list[None]:
        for digest, index in items:
            if found.sizes[index] < PACKABLE:
                packs.writer.add(digest, _read(found.path(index), found.sizes[index]))
            else:
                store.backend.put_file(ArtifactStore.key(digest), Path(found.path(index)))
        if progress is not None:
            done[0] += len(items)
            progress(done[0], len(todo))
        return [None] * len(items)

    map_batches(upload, list(todo.items()), default_workers(), batch=16)
    return digests
