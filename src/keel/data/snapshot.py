"""Snapshots of files and folders: ``add``, ``status`` and ``diff``.

``add`` scans a path, reuses the digests the state record still vouches
for, and puts every file's bytes into the content store: reflinked or
hardlinked when the ``data_link`` setting allows and the filesystem can,
otherwise copied — small files into packs (``keel.data.packs``), larger
ones one object each. Loose objects are written under temporary names,
hashed *as stored* (a file edited during the add cannot end up under a
wrong digest), renamed into place, and flushed to disk with one ``syncfs``
before the version is recorded.

``status`` compares a path with the version it was last added or checked
out as. When the state record matches the scan, that is one comparison of
tree digests; only otherwise are changed files hashed and the stored
manifest read to list what changed. Neither needs the metadata store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.artifacts import ArtifactStore, LocalBackend, hash_bytes
from keel.config import Settings, get_settings
from keel.data.links import Placer, parse_link_methods, sync_folder
from keel.data.manifest import Diff, Manifest, diff_manifests, read_manifest
from keel.data.packs import PACKABLE, PackedAt, PackIndex, PackWriter, read_pack_index
from keel.data.scan import (
    Observation,
    Scan,
    default_workers,
    hash_path,
    known_digests,
    make_record,
    map_batches,
    observe,
    scan,
)
from keel.data.state import StateCache, TrackedPath
from keel.errors import InvalidInput, NotFound, StorageError
from keel.transport import Transport, local_or
from keel.uris import is_dataset_uri
from keel.validation import check_relative_path

if TYPE_CHECKING:
    from keel.data.catalog import DatasetVersion
    from keel.data.client import DataClient
    from keel.store import Store

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
_SMALL = 1 << 20  # below this, copying means reading the bytes once and writing them


class DataContext:
    """Where dataset bytes, the catalog and local state live, resolved from settings once.

    The catalog and the artifact store come from the transport the settings choose:
    the local store and artifact root, or ``keel server`` when ``server_url`` is set
    (then file bytes go through its blob routes and catalog calls through its data
    routes). The state cache and the manifest cache are always this machine's.

    Args:
        settings: defaults to the process's settings.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._transport: Transport | None = None
        self._catalog: DataClient | None = None
        self.state = StateCache(self.settings.home / "cache" / "state")

    @property
    def transport(self) -> Transport:
        if self._transport is None:
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
        backend = self.artifacts.backend
        return backend.root if isinstance(backend, LocalBackend) else None

    def object_path(self, digest: str) -> Path:
        root = self.local_root
        assert root is not None
        return root / ArtifactStore.key(digest)

    def placer(self, tmp_dir: Path, link: str | None = None) -> Placer:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return Placer(parse_link_methods(link or self.settings.data_link), tmp_dir)

    def manifest(self, digest: str) -> Manifest:
        return read_manifest(self.artifacts, digest, self.manifest_cache)

    def packs(self, digest: str | None) -> PackIndex:
        return read_pack_index(self.artifacts, digest)

    def tracked_packs(self, tracked: TrackedPath | None) -> PackIndex:
        """The pack index of the version a path tracks (unchanged small files stay packed)."""
        if tracked is None:
            return PackIndex()
        return self.packs(self.catalog.tracked_packs_digest(tracked.digest))


def active_run_id() -> str | None:
    """The fluent API's active run, if any (datasets read or logged in it become its inputs)."""
    from keel.tracking.fluent import active_run

    run = active_run()
    return None if run is None else run.id


# -- add ---------------------------------------------------------------------------


class _Packs:
    """Packed locations for one add: reused from the tracked version, or newly written."""

    def __init__(self, ctx: DataContext, previous: PackIndex) -> None:
        self.ctx = ctx
        self.previous = previous
        self.writer = PackWriter(lambda data: ctx.artifacts.put_bytes(data).digest)
        self._packs_present: dict[str, bool] = {}

    def holds(self, digest: str) -> bool:
        at = self.previous.get(digest)
        if at is None:
            return False
        present = self._packs_present.get(at.pack)
        if present is None:
            present = self._packs_present[at.pack] = self.ctx.artifacts.exists(at.pack)
        return present

    def index_for(self, digests: set[str]) -> PackIndex:
        written = self.writer.close()
        entries: dict[str, PackedAt] = {}
        for digest in digests:
            at = written.get(digest) or (self.previous.get(digest) if self.holds(digest) else None)
            if at is not None:
                entries[digest] = at
        return PackIndex(entries)


def _store_local(
    ctx: DataContext,
    found: Scan,
    known: Sequence[str | None],
    packs: _Packs,
    link: str | None,
    progress: Progress | None,
) -> list[str]:
    """Put every scanned file into the local store; return the digests of what was stored."""
    root = ctx.local_root
    assert root is not None
    placer = ctx.placer(root / "tmp", link)
    store_dev = os.stat(root).st_dev
    for prefix in {d[:2] for d in known if d}:
        (root / "objects" / prefix).mkdir(parents=True, exist_ok=True)
    large = next((i for i, size in enumerate(found.sizes) if size >= PACKABLE), None)
    if large is not None and link != "copy":
        placer.probe(Path(found.path(large)), found.devs[large], store_dev)  # link or copy?
    done = [0]

    objects = os.path.join(root, "objects")

    def present(digest: str, size: int) -> bool:
        if packs.holds(digest):
            return True
        try:
            return os.stat(os.path.join(objects, digest[:2], digest[2:])).st_size == size
        except FileNotFoundError:
            return False

    def commit(tmp: Path, digest: str, size: int) -> None:
        final = root / ArtifactStore.key(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if present(digest, size):  # another file (or process) stored these bytes first
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)

    def one(index: int, digest: str | None) -> str:
        size = found.sizes[index]
        if digest is not None and present(digest, size):
            return digest
        src = found.path(index)
        # Small files are always packed: one object per file would cost more than its bytes.
        if size < PACKABLE or (size < _SMALL and placer.copies(found.devs[index], store_dev)):
            with open(src, "rb") as f:
                data = f.read()
            actual = hash_bytes(data)
            if not present(actual, len(data)):
                if len(data) < PACKABLE:
                    packs.writer.add(actual, data)
                else:
                    final = root / ArtifactStore.key(actual)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    placer.write_bytes(data, final)
            return actual
        tmp = placer.stage(Path(src), found.devs[index], store_dev)
        try:
            actual = hash_path(str(tmp), size)  # what was stored, not what was stat'ed
            commit(tmp, actual, os.stat(tmp).st_size)
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

    digests = map_batches(batch, list(enumerate(known)), default_workers(), sizes=found.sizes)
    if placer.wrote:
        sync_folder(root)
    return digests


def _store_remote(
    ctx: DataContext,
    found: Scan,
    known: Sequence[str | None],
    packs: _Packs,
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
                with open(found.path(index), "rb") as f:
                    packs.writer.add(digest, f.read())
            else:
                store.backend.put_file(ArtifactStore.key(digest), Path(found.path(index)))
        if progress is not None:
            done[0] += len(items)
            progress(done[0], len(todo))
        return [None] * len(items)

    map_batches(upload, list(todo.items()), default_workers(), batch=16)
    return digests


def add(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    link: str | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> DatasetVersion:
    """Snapshot a file or folder into the content store and record it as a dataset version.

    Args:
        path: the file or folder.
        name: the dataset's name; default the file or folder name.
        link: override the ``data_link`` setting (e.g. ``"hardlink,copy"``).
        progress: called with (files done, files in all).
        settings: defaults to the process's settings.

    Returns:
        The new version, or the latest one when the content did not change.

    Raises:
        NotFound: ``path`` does not exist.
        InvalidInput: an empty folder, a bad name, or a file whose relative path
            cannot be a manifest path (see :func:`keel.validation.check_relative_path`).
    """
    from keel.data import catalog
    from keel.data.client import NewVersion

    ctx = DataContext(settings)
    if link is not None:  # checked even where it is not used (a remote store copies)
        parse_link_methods(link)
    found = scan(path)
    dataset = catalog.check_dataset_name(name or found.root.name)
    if not len(found):
        raise InvalidInput(f"nothing to add: {found.root} holds no files")
    try:
        for rel in found.rels:  # they become the manifest's paths: checked before any byte moves
            check_relative_path(rel, "file path")
    except InvalidInput as exc:
        raise InvalidInput(f"cannot add {found.root}: {exc}; nothing was stored") from None
    record = ctx.state.load(found.root)
    known = known_digests(found, record)
    packs = _Packs(ctx, ctx.tracked_packs(None if record is None else record.tracked))
    if ctx.local_root is not None:
        digests = _store_local(ctx, found, known, packs, link, progress)
    else:
        digests = _store_remote(ctx, found, known, packs, progress)
    manifest = Manifest(
        {rel: (d, size) for rel, d, size in zip(found.rels, digests, found.sizes, strict=True)}
    )
    index = packs.index_for(set(digests))
    packs_digest = ctx.artifacts.put_bytes(index.to_bytes()).digest if len(index) else None
    blob = ctx.artifacts.put_bytes(manifest.to_bytes())  # the bytes put_manifest would store
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
    return is_dataset_uri(text) or "@" in text


def diff(
    a: str | os.PathLike[str], b: str | os.PathLike[str], *, settings: Settings | None = None
) -> Diff:
    """What changed from ``a`` to ``b``; each is a dataset reference or a local path."""
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
