"""The state cache: what each tracked folder looked like when it was last hashed.

For every path Keel added, checked out or checked, one *record* keeps the
files in the order the scan found them with their device, inode, size,
modification time (nanoseconds) and digest, the digest of the whole tree,
and the dataset version the path tracks. The next scan reuses a file's
digest when its path, device, inode, size and mtime all still match, so
checking an unchanged tree costs one ``stat`` per file and no reads; when
*every* file matches, the tree's digest is the recorded one and nothing is
even compared file by file. That is what makes ``keel data status``
near-instant.

A file modified within the timestamp granularity of the moment it was
hashed could change again without its mtime moving (git's "racily clean"
problem), so such files are marked and hashed again next time.

Records are small binary files under ``<home>/cache/state/`` (columns as
packed arrays, so loading and comparing 20,000 entries takes a millisecond
or two). They describe this machine's files; deleting them only costs
re-hashing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

__all__ = ["StateCache", "StateRecord", "TrackedPath", "is_racy", "now_ns"]

_MAGIC = b"KEELSTATE1\n"
#: Files modified this recently (relative to the scan) are hashed but not trusted next time.
RACY_WINDOW_NS = 100_000_000
#: Filesystems with whole-second timestamps need a wider window.
COARSE_RACY_WINDOW_NS = 2_000_000_000


def now_ns() -> int:
    """The wall clock in nanoseconds, the unit of ``st_mtime_ns``."""
    return time.time_ns()


def is_racy(mtime_ns: int, scanned_at_ns: int) -> bool:
    """Whether a file this fresh could change again without its mtime moving."""
    window = COARSE_RACY_WINDOW_NS if mtime_ns % 1_000_000_000 == 0 else RACY_WINDOW_NS
    return mtime_ns >= scanned_at_ns - window


@dataclass(frozen=True)
class TrackedPath:
    """A local file or folder and the dataset version it was last added or checked out as."""

    path: str
    dataset: str
    version: int
    digest: str


@dataclass
class StateRecord:
    """One path's files as last scanned (in scan order) and the version it tracks."""

    root: str
    tree: str
    rels_blob: bytes  # relative paths, NUL-separated (compared whole: no list needed)
    devs: array[int]
    inos: array[int]
    sizes: array[int]
    mtimes: array[int]
    digests: bytes  # 32 raw bytes per file
    racy: bytes  # 1 per file: hash it again next time
    dataset: str | None = None
    version: int | None = None
    digest: str | None = None
    _rels: list[str] | None = field(default=None, repr=False)

    @property
    def rels(self) -> list[str]:
        if self._rels is None:
            self._rels = self.rels_blob.decode().split("\0") if self.rels_blob else []
        return self._rels

    def __len__(self) -> int:
        return len(self.racy)

    def digest_at(self, index: int) -> str:
        return self.digests[32 * index : 32 * index + 32].hex()

    @property
    def tracked(self) -> TrackedPath | None:
        if self.dataset is None or self.version is None or self.digest is None:
            return None
        return TrackedPath(self.root, self.dataset, self.version, self.digest)

    def to_bytes(self) -> bytes:
        header = {
            "root": self.root,
            "tree": self.tree,
            "count": len(self),
            "rels": len(self.rels_blob),
            "dataset": self.dataset,
            "version": self.version,
            "digest": self.digest,
        }
        return b"".join(
            [
                _MAGIC,
                json.dumps(header, sort_keys=True).encode(),
                b"\n",
                self.rels_blob,
                self.devs.tobytes(),
                self.inos.tobytes(),
                self.sizes.tobytes(),
                self.mtimes.tobytes(),
                self.digests,
                self.racy,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> StateRecord:
        if not data.startswith(_MAGIC):
            raise ValueError("not a Keel state record")
        end = data.index(b"\n", len(_MAGIC))
        header: dict[str, Any] = json.loads(data[len(_MAGIC) : end])
        n, pos = int(header["count"]), end + 1
        rels_blob = data[pos : pos + header["rels"]]
        pos += header["rels"]
        columns = []
        for _ in range(4):
            column = array("q")
            column.frombytes(data[pos : pos + 8 * n])
            columns.append(column)
            pos += 8 * n
        digests = data[pos : pos + 32 * n]
        racy = data[pos + 32 * n : pos + 33 * n]
        if len(racy) != n or len(digests) != 32 * n:
            raise ValueError("truncated Keel state record")
        devs, inos, sizes, mtimes = columns
        return cls(
            header["root"],
            header["tree"],
            rels_blob,
            devs,
            inos,
            sizes,
            mtimes,
            digests,
            racy,
            header.get("dataset"),
            header.get("version"),
            header.get("digest"),
        )


class StateCache:
    """State records, one file per path, under ``folder``.

    Args:
        folder: where records live (created on first save).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, root: str | Path) -> Path:
        return self.folder / f"{blake3.blake3(str(root).encode()).hexdigest()[:32]}.state"

    def load(self, root: str | Path) -> StateRecord | None:
        """The record of ``root``, or ``None`` (missing or unreadable: it is only a cache)."""
        try:
            record = StateRecord.from_bytes(self._file(root).read_bytes())
        except (OSError, ValueError, KeyError):
            return None
        return record if record.root == str(root) else None

    def save(self, record: StateRecord) -> None:
        """Write ``record`` atomically; a failure to write a cache is not an error."""
        import uuid  # only writers need it

        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            final = self._file(record.root)
            tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(record.to_bytes())
            os.replace(tmp, final)

    def tracked(self, under: Path | None = None) -> list[TrackedPath]:
        """Tracked paths at or under ``under`` (all of them when ``None``), by path."""
        found = []
        base = None if under is None else str(under)
        for file in self.folder.glob("*.state") if self.folder.is_dir() else ():
            header = _header(file)
            if header is None or header.get("dataset") is None:
                continue
            path = str(header["root"])
            if base is None or path == base or path.startswith(base.rstrip(os.sep) + os.sep):
                found.append(
                    TrackedPath(path, header["dataset"], int(header["version"]), header["digest"])
                )
        return sorted(found, key=lambda t: t.path)

    def tracked_at(self, path: Path) -> TrackedPath | None:
        header = _header(self._file(path))
        if header is None or header.get("dataset") is None or header["root"] != str(path):
            return None
        return TrackedPath(str(path), header["dataset"], int(header["version"]), header["digest"])


def _header(file: Path) -> dict[str, Any] | None:
    try:
        with open(file, "rb") as f:
            head = f.read(len(_MAGIC))
            line = f.readline()
    except OSError:
        return None
    if head != _MAGIC:
        return None
    try:
        header: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    return header
