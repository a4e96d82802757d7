"""Snapshots of files and folders: ``add``, ``status`` and ``diff``.

``add`` scans a path, reuses the digests the state record still vouches
for, and puts every file's bytes into the content store
(:mod:`keel.data.ingest`): reflinked or hardlinked when the ``data_link``
setting allows and the filesystem can, otherwise copied — small files into
packs (:mod:`keel.data.packs`), larger ones one object each. Every object is
fsynced before it is renamed into place and the folders holding the
version's objects are fsynced after, all before the version is recorded:
no version names bytes that a power loss could take back.

``status`` compares a path with the version it was last added or checked
out as. When the state record matches the scan, that is one comparison of
tree digests; only otherwise are changed files hashed and the stored
manifest read to list what changed. Neither needs the metadata store, so
this module imports neither it nor the artifact store until ``add`` or a
changed tree asks for them: ``keel data status`` on an unchanged tree costs
the interpreter, a ``stat`` per file and little else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.config import Settings, get_settings
from keel.data.scan import Observation, known_digests, make_record, observe, paused_gc, scan
from keel.data.state import StateCache, TrackedPath
from keel.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.data.catalog import DatasetVersion
    from keel.data.client import DataClient
    from keel.data.links import Placer
    from keel.data.manifest import Diff, Manifest
    from keel.data.packs import PackIndex
    from keel.store import Store
    from keel.transport import Transport

__all__ = [
    "DataContext",
    "StatusReport",
    "active_run_id",
    "add",
    "diff",
    "observe_path",
    "status",
]

#: Called with (items done, items in all) as work progresses.
Progress = Callable[[int, int], None]


class DataContext:
    """Where dataset bytes, the catalog and local state live, resolved from settings once.

    The catalog and the artifact store come from the transport the settings choose:
    the local store and artifact root, or ``keel server`` when ``server_url`` is set
    (then file bytes go through its blob routes and catalog calls through its data
    routes). The state cache and the manifest cache are always this machine's.

    Args:
        settings: defaults to the process's settings.
        transport: where the catalog and the bytes are; default the one ``settings`` choose.
    """

    def __init__(self, settings: Settings | None = None, transport: Transport | None = None):
        self.settings = settings or get_settings()
        self._transport = transport
        self._catalog: DataClient | None = None
        self.state = StateCache(self.settings.home / "cache" / "state")

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            from keel.transport import local_or

            self._transport = local_or(None, self.settings)
        return self._transport

    @property
    def catalog(self) -> DataClient:
        """The dataset catalog: SQL on the local store, or REST calls to the server."""
        if self._catalog is None:
            from keel.data.client import data_part

            self._catalog = data_part(self.transport)
        return self._catalog

    @property
    def artifacts(self) -> ArtifactStore:
        return self.transport.artifacts

    @property
    def store(self) -> Store:
        return self.transport.store

    @property
    def manifest_cache(self) -> Path:
        return self.settings.home / "cache" / "manifests"

    @property
    def local_root(self) -> Path | None:
        """The artifact store's folder when it is local (objects can be linked there)."""
        from keel.artifacts import LocalBackend

        backend = self.artifacts.backend
        return backend.root if isinstance(backend, LocalBackend) else None

    def object_path(self, digest: str) -> Path:
        from keel.artifacts import ArtifactStore

        root = self.local_root
        assert root is not None
        return root / ArtifactStore.key(digest)

    def placer(self, tmp_dir: Path, link: str | None = None) -> Placer:
        from keel.data.links import Placer, parse_link_methods

        tmp_dir.mkdir(parents=True, exist_ok=True)
        return Placer(parse_link_methods(link or self.settings.data_link), tmp_dir)

    def manifest(self, digest: str) -> Manifest:
        from keel.data.manifest import cached_manifest, fetch_manifest

        # the cache first: a hit opens no transport (status then imports no SQL layer)
        cached = cached_manifest(digest, self.manifest_cache)
        if cached is not None:
            return cached
        return fetch_manifest(self.artifacts, digest, self.manifest_cache)

    def packs(self, digest: str | None) -> PackIndex:
        from keel.data.packs import read_pack_index

        return read_pack_index(self.artifacts, digest)

    def tracked_packs(self, tracked: TrackedPath | None) -> PackIndex:
        """The pack index of the version a path tracks (unchanged small files stay packed)."""
        if tracked is None:
            from keel.data.packs import PackIndex

            return PackIndex()
        return self.packs(self.catalog.tracked_packs_digest(tracked.digest))


def active_run_id() -> str | None:
    """The fluent API's active run, if any (datasets read or logged in it become its inputs)."""
    fluent = sys.modules.get("keel.tracking.fluent")
    if fluent is None:  # never imported, so no run was started: spare ``add`` its imports
        return None
    run = fluent.active_run()
    return None if run is None else str(run.id)


# -- add ---------------------------------------------------------------------------


def add(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    link: str | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    transport: Transport | None = None,
) -> DatasetVersion:
    """Snapshot a file or folder into the content store and record it as a dataset version.

    Args:
        path: the file or folder.
        name: the dataset's name; default the file or folder name.
        link: override the ``data_link`` setting (e.g. ``"hardlink,copy"``).
        progress: called with (files done, files in all).
        settings: defaults to the process's settings.
        transport: where the catalog and the bytes go; default the one ``settings`` choose.

    Returns:
        The new version, or the latest one when the content did not change.

    Raises:
        NotFound: ``path`` does not exist.
        InvalidInput: an empty folder, a bad name, or a file whose relative path
            cannot be a manifest path (see :func:`keel.validation.check_relative_path`).
        StorageError: a file could not be read, or stored and flushed to disk; no
            version was recorded.
    """
    from keel.artifacts import LocalBackend
    from keel.data.client import NewVersion
    from keel.data.ingest import Packs, object_keys, store_local, store_remote
    from keel.data.links import parse_link_methods
    from keel.data.manifest import Manifest, cache_manifest
    from keel.validation import check_name, check_relative_path

    ctx = DataContext(settings, transport)
    if link is not None:  # checked even where it is not used (a remote store copies)
        parse_link_methods(link)
    found = scan(path)
    dataset = check_name(name or found.root.name, "dataset name")
    if not len(found):
        raise InvalidInput(f"nothing to add: {found.root} holds no files")
    try:
        for rel in found.rels:  # they become the manifest's paths: checked before any byte moves
            check_relative_path(rel, "file path")
    except InvalidInput as exc:
        raise InvalidInput(f"cannot add {found.root}: {exc}; nothing was stored") from None
    record = ctx.state.load(found.root)
    known = known_digests(found, record)
    packs = Packs(ctx.artifacts, ctx.tracked_packs(None if record is None else record.tracked))
    backend = ctx.artifacts.backend
    with paused_gc():
        if isinstance(backend, LocalBackend):
            digests, sizes = store_local(ctx, found, known, packs, link, progress)
        else:
            digests, sizes = store_remote(ctx, found, known, packs, progress), found.sizes
        manifest = Manifest(
            {rel: (d, size) for rel, d, size in zip(found.rels, digests, sizes, strict=True)}
        )
        index = packs.index_for(set(digests))
        packs_digest = ctx.artifacts.put_bytes(index.to_bytes()).digest if len(index) else None
        manifest_bytes = manifest.to_bytes()  # the bytes put_manifest stores
        blob = ctx.artifacts.put_bytes(manifest_bytes)
    if isinstance(backend, LocalBackend):
        # The durability point: every name the version needs is on disk before it is recorded.
        backend.sync_folders(object_keys(set(digests), index, packs_digest, blob.digest))
    run_id = active_run_id()
    version, _new = ctx.catalog.register_version(
        NewVersion(
            name=dataset,
            digest=blob.digest,
            kind="file" if found.is_file else "folder",
            files=len(manifest),
            nbytes=manifest.total_bytes,
            source=str(found.root),
            packs_digest=packs_digest,
            run_id=run_id,
            input_context="add" if run_id else None,
        )
    )
    cache_manifest(manifest_bytes, blob.digest, ctx.manifest_cache)  # status reads it here
    fresh = make_record(found, digests, record, blob.digest)
    fresh.dataset, fresh.version, fresh.digest = version.name, version.version, version.digest
    ctx.state.save(fresh)
    return version


# -- status and diff ------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """How a local path differs from the version it tracks."""

    path: str
    dataset: str
    version: int
    digest: str
    current_digest: str
    diff: Diff
    hashed: int

    @property
    def clean(self) -> bool:
        return self.current_digest == self.digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dataset": self.dataset,
            "version": self.version,
            "digest": self.digest,
            "current_digest": self.current_digest,
            "clean": self.clean,
            "hashed": self.hashed,
            **self.diff.to_dict(),
        }


def _status_one(ctx: DataContext, tracked: TrackedPath) -> StatusReport:
    from keel.data.manifest import Diff, Manifest, diff_manifests

    seen = observe(tracked.path, ctx.state)
    current = seen.tree
    if seen.scan.is_file and current != tracked.digest:
        # A one-file version checked out under another name: compare the bytes, not the name.
        ((name, _entry),) = ctx.manifest(tracked.digest).files.items()
        current = Manifest({name: next(iter(seen.manifest().files.values()))}).digest
    if current == tracked.digest:
        changes = Diff()
    else:
        changes = diff_manifests(ctx.manifest(tracked.digest), seen.manifest())
    return StatusReport(
        tracked.path,
        tracked.dataset,
        tracked.version,
        tracked.digest,
        current,
        changes,
        seen.hashed,
    )


def status(
    path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
) -> list[StatusReport]:
    """Files added, changed and removed in tracked paths since they were added or checked out.

    Args:
        path: a tracked file or folder, or a folder holding tracked paths; default
            the working directory.

    Raises:
        NotFound: nothing tracked at or under ``path``.
    """
    ctx = DataContext(settings)
    base = Path(path if path is not None else Path.cwd()).expanduser().absolute()
    exact = ctx.state.tracked_at(base)
    targets = [exact] if exact is not None else ctx.state.tracked(base)
    if not targets:
        raise NotFound(
            f"no dataset is tracked at or under {base}; add one with `keel data add PATH`"
        )
    return [_status_one(ctx, t) for t in targets if t is exact or Path(t.path).exists()]


def _is_ref(text: str) -> bool:
    from keel.uris import is_dataset_uri

    return is_dataset_uri(text) or "@" in text


def diff(
    a: str | os.PathLike[str], b: str | os.PathLike[str], *, settings: Settings | None = None
) -> Diff:
    """What changed from ``a`` to ``b``; each is a dataset reference or a local path."""
    from keel.data.manifest import diff_manifests

    ctx = DataContext(settings)

    def resolve(ref: str | os.PathLike[str]) -> Manifest:
        text = os.fspath(ref)
        if not _is_ref(text) and Path(text).exists():
            return observe(text, ctx.state).manifest()
        return ctx.manifest(ctx.catalog.get_version(text).digest)

    return diff_manifests(resolve(a), resolve(b))


def observe_path(path: str | os.PathLike[str], settings: Settings | None = None) -> Observation:
    """A path's digest through the state cache (external inputs of pipeline steps use it)."""
    return observe(path, DataContext(settings).state)
