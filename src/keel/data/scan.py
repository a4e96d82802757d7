"""Walking a file or folder, and digesting it through the state cache.

:func:`scan` lists regular files (following symlinks to files, never into
symlinked folders, skipping ``.git``, ``.keel`` and ``.dvc``) as columns —
relative path, device, inode, size, mtime — in the order the directories
yield them, without building an object per file: each folder is listed once
and its files are ``lstat``-ed relative to the folder's descriptor in one
C-level loop (one short path lookup per file, no ``DirEntry`` objects), which
leaves the ``stat`` calls themselves as nearly all of a scan's cost.
:func:`observe` compares the scan with the path's state record: when every
column matches, the tree's digest is the recorded one; otherwise only the
files whose identity, size or mtime moved (or that were racily clean) are
hashed, with BLAKE3, on a thread pool (reads are system calls and the hasher
releases the GIL on large buffers; files of 4 MB and more are hashed from a
memory map on several threads), and the record is rewritten.
"""

from __future__ import annotations

import contextlib
import gc
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import blake3

from keel.data.state import StateCache, StateRecord, is_racy, now_ns
from keel.errors import InvalidInput, NotFound, StorageError

if TYPE_CHECKING:
    from keel.data.manifest import Manifest

__all__ = [
    "SKIPPED_DIRS",
    "Observation",
    "Scan",
    "default_workers",
    "hash_path",
    "map_batches",
    "observe",
    "paused_gc",
    "scan",
]

#: Folder names never snapshotted: version control and Keel's own state.
SKIPPED_DIRS = frozenset({".git", ".keel", ".dvc", "__pycache__"})
#: Files at least this large are hashed from a memory map on several threads.
LARGE_FILE = 4 << 20
_BATCH = 256
_FORMAT, _REGULAR, _FOLDER, _LINK = 0o170000, 0o100000, 0o040000, 0o120000  # stat.S_IF*
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Scan:
    """The files under a root, as columns in scan order, and when the scan started."""

    root: Path
    is_file: bool
    started_ns: int
    rels: list[str]
    devs: list[int]
    inos: list[int]
    sizes: list[int]
    mtimes: list[int]

    def __len__(self) -> int:
        return len(self.rels)

    def path(self, index: int) -> str:
        """The absolute path of file ``index``."""
        return str(self.root) if self.is_file else os.path.join(self.root, self.rels[index])

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a scan or an add builds per-file objects.

    Both allocate a few containers per file (a stat result, a tuple …: tens of thousands)
    and create no cycles, yet the automatic collections those allocations trigger walk
    them, and now and then every object the process holds: an add of 20,000 files ran two
    full passes (20 to 45 ms each) where it now runs one, when the collector is back on.
    Reference counting frees everything meanwhile; the collector is left as it was found.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def scan(path: str | os.PathLike[str]) -> Scan:
    """List the regular files at ``path`` (a file or a folder).

    Raises:
        NotFound: ``path`` does not exist.
        InvalidInput: ``path`` is neither a file nor a folder.
    """
    root = Path(path).expanduser().absolute()
    started = now_ns()
    try:
        st = root.stat()
    except FileNotFoundError:
        raise NotFound(f"no such file or folder: {root}") from None
    except OSError as exc:
        raise StorageError(f"cannot read {root}: {exc}") from exc
    if root.is_file():
        return Scan(
            root,
            True,
            started,
            [root.name],
            [st.st_dev],
            [st.st_ino],
            [st.st_size],
            [st.st_mtime_ns],
        )
    if not root.is_dir():
        raise InvalidInput(f"{root} is neither a file nor a folder")
    rels: list[str] = []
    devs: list[int] = []
    inos: list[int] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    stack = [(str(root), "")]
    with paused_gc():
        while stack:
            folder, prefix = stack.pop()
            names, stats, subfolders = _list_folder(folder)
            # Per column, not per file: a comprehension per column costs far less than a loop
            # that appends five values per file.
            rels += [prefix + name for name in names]
            devs += [st.st_dev for st in stats]
            inos += [st.st_ino for st in stats]
            sizes += [st.st_size for st in stats]
            mtimes += [st.st_mtime_ns for st in stats]
            stack += [(os.path.join(folder, name), f"{prefix}{name}/") for name in subfolders]
    return Scan(root, False, started, rels, devs, inos, sizes, mtimes)


def _list_folder(folder: str) -> tuple[list[str], list[os.stat_result], list[str]]:
    """The regular files of one folder (names and stat results) and its subfolders to walk.

    ``lstat`` tells folders, files and symlinks apart in one call per entry; only a
    symlink costs a second ``stat``, to see what it names (a file is followed, a
    folder is not).
    """
    try:
        fd = os.open(folder, _OPEN_FOLDER)
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc}") from exc
    try:
        names = os.listdir(fd)
        try:
            stats = list(map(partial(os.stat, dir_fd=fd, follow_symlinks=False), names))
        except FileNotFoundError:  # an entry went away meanwhile: go one by one
            names, stats = _lstat_each(fd, names)
        modes = [st.st_mode & _FORMAT for st in stats]
        if modes.count(_REGULAR) == len(modes):  # only files: the usual case, at C speed
            return names, stats, []
        subfolders = [n for n, m in zip(names, modes, strict=True) if m == _FOLDER]
        subfolders = [n for n in subfolders if n not in SKIPPED_DIRS]
        files, found = [], []
        for name, st, mode in zip(names, stats, modes, strict=True):
            if mode == _LINK:
                try:
                    st = os.stat(name, dir_fd=fd)  # what the link names
                except (FileNotFoundError, NotADirectoryError):  # dangling: not a file
                    continue
                mode = st.st_mode & _FORMAT
            if mode == _REGULAR:
                files.append(name)
                found.append(st)
        return files, found, subfolders
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc}") from exc
    finally:
        os.close(fd)


def _lstat_each(fd: int, names: list[str]) -> tuple[list[str], list[os.stat_result]]:
    kept, stats = [], []
    for name in names:
        try:
            stats.append(os.stat(name, dir_fd=fd, follow_symlinks=False))
        except FileNotFoundError:
            continue
        kept.append(name)
    return kept, stats


def map_batches(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    workers: int,
    batch: int = _BATCH,
    sizes: Sequence[int] | None = None,
    batch_bytes: int = 32 << 20,
) -> list[R]:
    """``fn`` over ``items`` in batches on a thread pool, results in input order.

    With ``sizes`` (bytes per item), a batch also ends once it holds
    ``batch_bytes``, so that a few threads do not get all the large files.
    """
    if not items:
        return []
    if sizes is None:
        chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    else:
        chunks, start, held = [], 0, 0
        for i, size in enumerate(sizes):
            held += size
            if i + 1 - start >= batch or held >= batch_bytes:
                chunks.append(items[start : i + 1])
                start, held = i + 1, 0
        if start < len(items):
            chunks.append(items[start:])
    if len(chunks) == 1 or workers <= 1:
        return [r for chunk in chunks for r in fn(chunk)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for part in pool.map(fn, chunks) for r in part]


def default_workers() -> int:
    # Reads and hashing release the GIL; a few threads per core keep the disk busy.
    return min(32, (os.cpu_count() or 2) * 4)


def hash_path(path: str, size: int) -> str:
    """BLAKE3 of one file: read whole when small, memory-mapped on several threads when large."""
    try:
        if size >= LARGE_FILE:
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            hasher.update_mmap(path)
            return hasher.hexdigest()
        with open(path, "rb") as f:
            return blake3.blake3(f.read()).hexdigest()
    except FileNotFoundError:
        raise StorageError(f"{path} disappeared while it was being hashed") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


@dataclass
class Observation:
    """A scanned path with the digest of every file and of the tree."""

    scan: Scan
    tree: str
    hashed: int
    record: StateRecord
    #: Per file, in scan order: ``None`` when the file's digest is only in the record.
    _digests: list[str] | None = None
    _manifest: Manifest | None = None

    def digests(self) -> list[str]:
        if self._digests is None:
            self._digests = [self.record.digest_at(i) for i in range(len(self.scan))]
        return self._digests

    def manifest(self) -> Manifest:
        if self._manifest is None:
            from keel.data.manifest import Manifest

            found = self.scan
            self._manifest = Manifest(
                {
                    rel: (d, size)
                    for rel, d, size in zip(found.rels, self.digests(), found.sizes, strict=True)
                }
            )
        return self._manifest


def _matches(found: Scan, record: StateRecord) -> bool:
    """Whether every file is where, what and as old as the record says (C-speed comparisons)."""
    return (
        record.rels_blob == "\0".join(found.rels).encode()
        and record.inos == array("q", found.inos)
        and record.sizes == array("q", found.sizes)
        and record.mtimes == array("q", found.mtimes)
        and record.devs == array("q", found.devs)
        and not any(record.racy)
    )


def known_digests(found: Scan, record: StateRecord | None) -> list[str | None]:
    """Per file, the digest the record still vouches for, else ``None``."""
    if record is None:
        return [None] * len(found)
    if _matches(found, record):
        return [record.digest_at(i) for i in range(len(found))]
    where = {rel: i for i, rel in enumerate(record.rels)}
    known: list[str | None] = []
    for i, rel in enumerate(found.rels):
        j = where.get(rel)
        if (
            j is not None
            and not record.racy[j]
            and record.inos[j] == found.inos[i]
            and record.sizes[j] == found.sizes[i]
            and record.mtimes[j] == found.mtimes[i]
            and record.devs[j] == found.devs[i]
        ):
            known.append(record.digest_at(j))
        else:
            known.append(None)
    return known


def make_record(
    found: Scan, digests: Sequence[str], previous: StateRecord | None, tree: str | None = None
) -> StateRecord:
    """A record of ``found`` with these digests (and tree digest, if known), keeping what
    ``previous`` tracked."""
    if tree is None:
        from keel.data.manifest import Manifest

        tree = Manifest(
            {rel: (d, size) for rel, d, size in zip(found.rels, digests, found.sizes, strict=True)}
        ).digest
    started = found.started_ns
    return StateRecord(
        str(found.root),
        tree,
        "\0".join(found.rels).encode(),
        array("q", found.devs),
        array("q", found.inos),
        array("q", found.sizes),
        array("q", found.mtimes),
        b"".join(bytes.fromhex(d) for d in digests),
        bytes(is_racy(m, started) for m in found.mtimes),
        None if previous is None else previous.dataset,
        None if previous is None else previous.version,
        None if previous is None else previous.digest,
    )


def observe(path: str | os.PathLike[str], state: StateCache) -> Observation:
    """Scan ``path`` and digest it, hashing only what the state record cannot vouch for."""
    found = scan(path)
    record = state.load(found.root)
    if record is not None and _matches(found, record):
        return Observation(found, record.tree, 0, record)
    known = known_digests(found, record)
    missing = [i for i, d in enumerate(known) if d is None]
    hashed = map_batches(
        lambda chunk: [hash_path(found.path(i), found.sizes[i]) for i in chunk],
        missing,
        default_workers(),
    )
    for i, digest in zip(missing, hashed, strict=True):
        known[i] = digest
    digests = [d for d in known if d is not None]
    from keel.data.manifest import Manifest

    manifest = Manifest(
        {rel: (d, size) for rel, d, size in zip(found.rels, digests, found.sizes, strict=True)}
    )
    fresh = make_record(found, digests, record, manifest.digest)
    state.save(fresh)
    return Observation(found, fresh.tree, len(missing), fresh, digests, manifest)
