"""``checkout``: make a folder hold exactly the files of a dataset version.

Files that already match are kept; the others are placed from the content
store — a loose object reflinked, hardlinked or copied under a temporary
name and hashed before it is renamed into place, a packed file sliced out
of its pack and verified against its own digest — and files the version
does not have are removed. Content that no stored version holds is never
overwritten or deleted without ``force``. The placed files' digests are
recorded in the state cache, so ``status`` right after needs no hashing.

Every target is resolved with :func:`keel.validation.safe_joins` before the
first byte is written: a manifest path that climbs out (``../x``) or a
folder of the target that is a symlink to somewhere else is refused, and
nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keel.config import Settings
from keel.data.manifest import Manifest, diff_manifests
from keel.data.packs import PackedAt, PackIndex, slice_of
from keel.data.scan import default_workers, hash_path, make_record, map_batches, observe, scan
from keel.data.snapshot import DataContext, Progress
from keel.errors import Conflict, IntegrityError, InvalidInput, NotFound
from keel.validation import safe_joins

if TYPE_CHECKING:
    from keel.data.catalog import DatasetVersion

__all__ = ["checkout", "place_objects"]


def checkout(
    ref: str,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    link: str | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> DatasetVersion:
    """Make ``path`` hold exactly the files of a dataset version.

    Files that already match are left alone; others are placed from the
    content store (verified as they are placed) and files the version does
    not have are removed. A one-file version checked out to an existing
    folder lands inside it.

    Raises:
        NotFound: no such version, or its objects are not in the artifact store
            (``keel data pull`` fetches them).
        Conflict: ``path`` holds content that is in no stored version and would be
            lost; add it first or pass ``force=True``.
        InvalidInput: a file would land outside ``path`` (a folder of ``path`` is a
            symlink to elsewhere, or the stored manifest names ``../x``); nothing is
            written.
    """
    ctx = DataContext(settings)
    version = ctx.catalog.get_version(ref)
    target = ctx.manifest(version.digest)
    packs = ctx.packs(version.packs_digest)
    dest = Path(path).expanduser().absolute()
    if version.kind == "file" and dest.is_dir():
        dest = dest / next(iter(target.files))
    if version.kind == "file":
        ((_rel, entry),) = target.files.items()
        folder, target = dest.parent, Manifest({dest.name: entry})
    else:
        folder = dest
        if dest.exists() and not dest.is_dir():
            raise InvalidInput(f"{dest} is a file; {version.uri} is a folder")
    seen = observe(dest, ctx.state) if dest.exists() else None
    existing = seen.manifest() if seen is not None else Manifest({})
    changes = diff_manifests(existing, target)
    at_risk = [*changes.changed, *changes.removed]
    if at_risk and not force:
        mine = ctx.tracked_packs(ctx.state.tracked_at(dest))
        candidates = [
            p
            for p in at_risk
            if existing.files[p][0] not in packs and existing.files[p][0] not in mine
        ]
        stored_nowhere = ctx.catalog.missing_objects(existing.files[p][0] for p in candidates)
        unsaved = [p for p in candidates if existing.files[p][0] in stored_nowhere]
        if unsaved:
            raise Conflict(
                f"{len(unsaved)} file(s) in {dest} (first: {unsaved[0]}) hold content that is "
                "in no stored version and would be lost; add them with `keel data add` "
                "first, or pass --force"
            )
    wanted = [*changes.added, *changes.changed]
    place_objects(ctx, folder, [(p, target.files[p]) for p in wanted], packs, link, progress)
    # Removed paths come from the scan, which never descends into a symlinked folder, and
    # unlink removes a symlink itself: nothing outside ``folder`` is touched.
    for rel in changes.removed:
        (folder / rel).unlink(missing_ok=True)
    _prune_empty_dirs(folder, changes.removed)
    _record_checkout(ctx, dest, target, version)
    return version


def _record_checkout(
    ctx: DataContext, dest: Path, target: Manifest, version: DatasetVersion
) -> None:
    """Remember the checked-out files with the digests just verified, so status needs no hashing."""
    found = scan(dest)
    digests = [target.files[rel][0] if rel in target.files else None for rel in found.rels]
    if any(d is None for d in digests):  # something else wrote there meanwhile: hash it all
        record = observe(dest, ctx.state).record
    else:
        record = make_record(found, [d for d in digests if d is not None], ctx.state.load(dest))
    record.dataset, record.version, record.digest = version.name, version.version, version.digest
    ctx.state.save(record)


def place_objects(
    ctx: DataContext,
    folder: Path,
    items: list[tuple[str, tuple[str, int]]],
    packs: PackIndex,
    link: str | None,
    progress: Progress | None,
) -> None:
    """Write ``(relative path, (digest, size))`` files under ``folder``, each verified.

    Raises:
        InvalidInput: a path would land outside ``folder`` (see
            :func:`keel.validation.safe_joins`); checked before anything is written.
    """
    if not items:
        return
    rels = [rel for rel, _ in items]
    finals = dict(zip(rels, safe_joins(folder, rels), strict=True))  # all, before any write
    pack_digests = {packs.entries[d].pack for _, (d, _) in items if d in packs}
    # one question for every object involved: over keel server that is one request, not one each
    absent = ctx.catalog.missing_objects(
        pack_digests | {d for _, (d, _) in items if d not in packs}
    )
    missing = [
        p for p, (d, _) in items if (packs.entries[d].pack in absent if d in packs else d in absent)
    ]
    if missing:
        raise NotFound(
            f"{len(missing)} object(s) of this version (first: {missing[0]}) are not in the "
            f"artifact store {ctx.artifacts.url}; fetch them with `keel data pull`"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp_dir = folder / f".keel-tmp-{uuid.uuid4().hex[:8]}"
    done = [0]
    try:
        placer = ctx.placer(tmp_dir, link)
        root = ctx.local_root
        dest_dev = os.stat(folder).st_dev
        store_dev = os.stat(root).st_dev if root is not None else dest_dev
        packed: dict[str, list[tuple[str, str, PackedAt]]] = {}
        loose: list[tuple[str, tuple[str, int]]] = []
        for rel, (digest, size) in items:
            at = packs.get(digest)
            if at is not None:
                packed.setdefault(at.pack, []).append((rel, digest, at))
            else:
                loose.append((rel, (digest, size)))

        def tick(n: int) -> None:
            if progress is not None:
                done[0] += n
                progress(done[0], len(items))

        def put(rel: str, data: bytes) -> None:
            final = finals[rel]
            final.parent.mkdir(parents=True, exist_ok=True)
            placer.write_bytes(data, final)

        for pack, members in packed.items():
            blob = ctx.artifacts.get_bytes(pack)  # verified as a whole, then each slice
            for rel, digest, at in members:
                put(rel, slice_of(blob, at, digest, ctx.artifacts.url))
            tick(len(members))

        def one(rel: str, digest: str, size: int) -> None:
            final = finals[rel]
            final.parent.mkdir(parents=True, exist_ok=True)
            if root is None:  # remote store: streamed, verified, renamed into place
                ctx.artifacts.get_file(digest, final)
                return
            tmp = placer.stage(ctx.object_path(digest), store_dev, dest_dev)
            try:
                actual = hash_path(str(tmp), size)
                if actual != digest:
                    raise IntegrityError(
                        f"object {digest} in {ctx.artifacts.url} is corrupt (its bytes hash to "
                        f"{actual}); restore it with `keel data pull` or re-add the data"
                    )
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)

        def batch(chunk: Sequence[tuple[str, tuple[str, int]]]) -> list[None]:
            for rel, (digest, size) in chunk:
                one(rel, digest, size)
            tick(len(chunk))
            return [None] * len(chunk)

        map_batches(batch, loose, default_workers())
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _prune_empty_dirs(folder: Path, removed: list[str]) -> None:
    parents = sorted(
        {p for rel in removed for p in (folder / rel).parents}, key=lambda p: -len(p.parts)
    )
    for parent in parents:
        if parent == folder or folder not in parent.parents:
            continue
        with contextlib.suppress(OSError):
            parent.rmdir()  # only succeeds when empty
