"""``push`` and ``pull``: moving dataset objects between the artifact store and a remote.

A remote is laid out like any content store (``objects/ab/cdef…``), so it
is an :class:`~keel.artifacts.ArtifactStore` of its own. A transfer lists
the destination once, moves only the objects it lacks, and moves each
version's manifest after that version's files: a manifest on the remote
therefore means the files it names are there too.

Every object is written atomically under its digest (an S3 PUT, or a
temporary name flushed to disk and renamed into place) and verified as it
is read, so a transfer that is killed or loses its connection leaves whole
objects behind; running it again moves only what is still missing. Into a
local store, the folders of the files are flushed before any manifest is
moved, so not even a power loss leaves a manifest without its files.

A pull trusts nothing it reads from the remote: every manifest is checked
entry by entry before anything is moved (a path like ``../x`` refuses the
whole pull), and each object is written only where the store's own folder
holds it, symlinks resolved.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.artifacts import ArtifactStore, LocalBackend
from keel.config import Settings
from keel.data.manifest import read_manifest
from keel.data.packs import PackIndex, read_pack_index
from keel.data.scan import hash_path, map_batches
from keel.data.snapshot import DataContext, Progress
from keel.errors import IntegrityError, InvalidInput, NotFound, StorageError
from keel.uris import parse_dataset_ref
from keel.validation import safe_join

__all__ = ["TransferReport", "pull", "push"]

#: Called with the number of objects moved so far, after each one.
OnObject = Callable[[int], None]
_WORKERS = 8


@dataclass(frozen=True)
class TransferReport:
    """What a push or pull did.

    Attributes:
        versions: the dataset versions (``name@N``, or a digest) transferred.
        objects: objects those versions need (files, manifests, profiles).
        present: how many of them the destination already had.
        moved: how many this call moved.
        bytes: bytes moved.
    """

    versions: list[str]
    objects: int
    present: int
    moved: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "objects": self.objects,
            "present": self.present,
            "moved": self.moved,
            "bytes": self.bytes,
        }


def _remote(ctx: DataContext, remote: str | None) -> ArtifactStore:
    url = remote or ctx.settings.data_remote
    if not url:
        raise InvalidInput(
            "no data remote: pass --remote s3://bucket/prefix, or set KEEL_DATA_REMOTE "
            "(or data_remote in config.toml)"
        )
    return ArtifactStore.from_url(url, ctx.settings.s3_endpoint_url)


def _versions(
    ctx: DataContext, refs: Sequence[str] | None
) -> list[tuple[str, str, str | None, str | None]]:
    """``(label, manifest, profile, pack index)`` digests of the named versions (all when none)."""
    catalog = ctx.catalog
    if not refs:
        found = [
            v for latest in catalog.list_datasets() for v in catalog.list_versions(latest.name)
        ]
        return [
            (f"{v.name}@{v.version}", v.digest, v.profile_digest, v.packs_digest) for v in found
        ]
    out: list[tuple[str, str, str | None, str | None]] = []
    for ref in refs:
        parsed = parse_dataset_ref(ref)
        try:
            v = catalog.get_version(parsed)
        except NotFound:
            if parsed.digest is None:
                raise
            out.append((parsed.digest, parsed.digest, None, None))  # known to the remote only
            continue
        out.append((f"{v.name}@{v.version}", v.digest, v.profile_digest, v.packs_digest))
    return out


def _plan(
    versions: Iterable[tuple[str, str, str | None, str | None]],
    manifests: Callable[[str], Any],
    pack_indexes: Callable[[str | None], PackIndex],
) -> tuple[list[str], list[str]]:
    """Objects to move: files and packs first, then the indexes and manifests that name them."""
    files: dict[str, None] = {}
    tail: dict[str, None] = {}
    for _label, digest, profile, packs_digest in versions:
        packed = pack_indexes(packs_digest)
        for file_digest, _size in manifests(digest).files.values():
            at = packed.get(file_digest)
            files.setdefault(at.pack if at is not None else file_digest)
        for name in (profile, packs_digest, digest):
            if name:
                tail.setdefault(name)
    return list(files), [d for d in tail if d not in files]


def _copy(src: ArtifactStore, dst: ArtifactStore, digest: str) -> int:
    """Copy one object, verified on the way; return its size."""
    key = ArtifactStore.key(digest)
    local = dst.backend if isinstance(dst.backend, LocalBackend) else None
    if local is not None:
        # Resolved before any byte moves, so a symlinked folder in the store cannot send them
        # elsewhere (the local-to-local copy below writes the same name through the backend).
        final = safe_join(local.root, key, "object")
    if isinstance(src.backend, LocalBackend):
        path = src.backend.root / key
        size = os.stat(path).st_size
        actual = hash_path(str(path), size)
        if actual != digest:
            raise IntegrityError(
                f"object {digest} in {src.url} is corrupt (its bytes hash to {actual}); it was "
                "not copied. Re-add the data it belongs to"
            )
        dst.backend.put_file(key, path)
        return size
    if local is not None:
        # Streamed and verified into the store's tmp folder, flushed, then renamed into place.
        staged = src.get_file(
            digest, safe_join(local.root, f"tmp/{uuid.uuid4().hex}.pull", "object")
        )
        final.parent.mkdir(parents=True, exist_ok=True)
        size = staged.stat().st_size
        try:
            local.sync_file(staged)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise StorageError(f"cannot flush {final} to disk: {exc}; nothing was pulled") from exc
        os.replace(staged, final)
        return size
    data = src.get_bytes(digest)
    dst.backend.put_bytes(key, data)
    return len(data)


def _transfer(
    src: ArtifactStore,
    dst: ArtifactStore,
    labels: list[str],
    plan: tuple[list[str], list[str]],
    progress: Progress | None,
    on_object: OnObject | None,
) -> TransferReport:
    files, tail = plan
    everything = [*files, *tail]
    have = _present(dst, everything)
    todo_files = [d for d in files if d not in have]
    todo_tail = [d for d in tail if d not in have]
    missing = [d for d in (*todo_files, *todo_tail) if not src.exists(d)]
    if missing:
        raise NotFound(
            f"{len(missing)} object(s) to transfer (first: {missing[0]}) are not in {src.url}; "
            "the data was never added here, or was pulled only in part"
        )
    lock = threading.Lock()
    counts = [0, 0]

    def move(chunk: Sequence[str]) -> list[None]:
        for digest in chunk:
            size = _copy(src, dst, digest)
            with lock:
                counts[0] += 1
                counts[1] += size
                moved = counts[0]
            if on_object is not None:
                on_object(moved)
            if progress is not None:
                progress(moved, len(todo_files) + len(todo_tail))
        return [None] * len(chunk)

    # Manifests only after every file they name is in place (and, in a local store, on disk:
    # a manifest that outlived a power loss must not name files that did not).
    map_batches(move, todo_files, _WORKERS, batch=8)
    _make_durable(dst, todo_files)
    map_batches(move, todo_tail, _WORKERS, batch=8)
    _make_durable(dst, todo_tail)
    return TransferReport(labels, len(everything), len(have), counts[0], counts[1])


def _make_durable(store: ArtifactStore, digests: list[str]) -> None:
    """Flush the folders of objects just moved into a local store (a remote's PUTs are durable)."""
    if digests and isinstance(store.backend, LocalBackend):
        store.backend.sync_folders(ArtifactStore.key(d) for d in digests)


def _present(store: ArtifactStore, digests: list[str]) -> set[str]:
    if isinstance(store.backend, LocalBackend):
        root = store.backend.root
        return {d for d in digests if (root / ArtifactStore.key(d)).is_file()}
    return set(store.iter_digests()) & set(digests)  # one listing instead of a HEAD each


def push(
    refs: Sequence[str] | None = None,
    *,
    remote: str | None = None,
    progress: Progress | None = None,
    on_object: OnObject | None = None,
    settings: Settings | None = None,
) -> TransferReport:
    """Copy the objects of dataset versions to the remote; only missing ones move.

    Args:
        refs: dataset references (``churn@3``, ``churn``, a digest); default every version.
        remote: the remote URL; default the ``data_remote`` setting.
        progress: called with (objects moved, objects to move).
        on_object: called with the count of objects moved after each one.
    """
    ctx = DataContext(settings)
    dst = _remote(ctx, remote)
    versions = _versions(ctx, refs)
    plan = _plan(versions, ctx.manifest, ctx.packs)
    return _transfer(ctx.artifacts, dst, [v[0] for v in versions], plan, progress, on_object)


def pull(
    refs: Sequence[str] | None = None,
    *,
    remote: str | None = None,
    progress: Progress | None = None,
    on_object: OnObject | None = None,
    settings: Settings | None = None,
) -> TransferReport:
    """Fetch the objects of dataset versions from the remote; only missing ones move.

    A digest the metadata store does not know is pulled by its manifest alone.

    Raises:
        InvalidInput: a manifest on the remote names an unsafe path (``../x``) or a
            malformed entry; nothing is pulled.
        NotFound: objects a version needs are not on the remote.
    """
    ctx = DataContext(settings)
    src = _remote(ctx, remote)
    versions = _versions(ctx, refs)
    plan = _plan(
        versions,
        lambda d: read_manifest(src, d, ctx.manifest_cache),
        lambda d: read_pack_index(src, d),
    )
    return _transfer(src, ctx.artifacts, [v[0] for v in versions], plan, progress, on_object)
