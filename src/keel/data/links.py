"""Placing file bytes without copying them when the filesystem allows.

``keel data add`` puts each file into the local content store and ``keel
data checkout`` puts stored objects back into a folder. Both try the
methods the ``data_link`` setting lists, in order, and remember per pair
of filesystems the first one that worked:

- ``reflink``: a copy-on-write clone (Btrfs, XFS, APFS …). Free, and the two
  files stay independent: editing one never changes the other.
- ``hardlink``: one file under two names. Free, but the store and the
  folder then share bytes, so both are made read-only: an in-place edit
  would otherwise rewrite a stored version. Tools that replace files
  (write a new file, then rename) keep working.
- ``copy``: the bytes are copied (``copy_file_range`` where the kernel has it).

Every method writes under a temporary name and renames into place, or
creates the final name in one step (``link``), so a crash never leaves a
half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import threading
import uuid
from pathlib import Path

from keel.errors import InvalidInput, StorageError

__all__ = ["LINK_METHODS", "Placer", "parse_link_methods"]

LINK_METHODS = ("reflink", "hardlink", "copy")
_FICLONE = 0x40049409  # Linux ioctl: clone the whole source file into the destination
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
# errnos meaning "this filesystem (pair) cannot do that", as opposed to a real failure
_UNSUPPORTED = {
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOTTY,
    errno.EPERM,
    errno.EMLINK,
    errno.ENOSYS,
}


def parse_link_methods(text: str) -> tuple[str, ...]:
    """``"reflink,copy"`` → ``("reflink", "copy")``, validated."""
    methods = tuple(part.strip() for part in str(text).split(",") if part.strip())
    bad = [m for m in methods if m not in LINK_METHODS]
    if not methods or bad:
        raise InvalidInput(
            f"data_link must list one or more of {', '.join(LINK_METHODS)} separated by commas "
            f"(e.g. 'reflink,copy'), got {text!r}"
        )
    return methods


def _reflink(src: Path, tmp: Path) -> None:
    if sys.platform != "linux":
        raise OSError(errno.EOPNOTSUPP, "reflink is only attempted on Linux")
    import fcntl

    with open(src, "rb") as s, open(tmp, "wb") as d:
        fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())


class Placer:
    """Stages files under temporary names with the first ``data_link`` method that works.

    The caller hashes the staged file (what will be stored, not what was
    stat'ed) and renames it into place.

    Args:
        methods: the methods to try, in order.
        tmp_dir: a folder on the destination's filesystem for temporary names.
    """

    def __init__(self, methods: tuple[str, ...], tmp_dir: Path) -> None:
        self.methods = methods
        self.tmp_dir = tmp_dir
        self._working: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()
        #: True once anything was written (not only linked): the folder needs a sync.
        self.wrote = False

    def _tmp(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def probe(self, src: Path, src_dev: int, dst_dev: int) -> str:
        """Find (and remember) the method that works between two filesystems; return it.

        Links cost nothing to try; ``copy`` always works, so it is never tried here (a
        probe must not copy a large file only to throw the copy away).
        """
        pair = (src_dev, dst_dev)
        known = self._working.get(pair)
        if known is not None:
            return known
        for method in self.methods:
            if method == "copy":
                break
            tmp = self._tmp()
            try:
                self._stage(method, src, tmp)
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    continue
                raise StorageError(f"cannot {method} {src} to {self.tmp_dir}: {exc}") from exc
            finally:
                tmp.unlink(missing_ok=True)
            break
        else:
            raise StorageError(
                f"none of the data_link methods {', '.join(self.methods)} works from {src} to "
                f"{self.tmp_dir}; add 'copy' to KEEL_DATA_LINK"
            )
        with self._lock:
            return self._working.setdefault(pair, method)

    def copies(self, src_dev: int, dst_dev: int) -> bool:
        """Whether files between these filesystems are copied (so reading them once is best)."""
        return self._working.get((src_dev, dst_dev), self.methods[0]) == "copy"

    def stage(self, src: Path, src_dev: int, dst_dev: int) -> Path:
        """A temporary file on the destination's filesystem holding ``src``'s bytes."""
        pair = (src_dev, dst_dev)
        known = self._working.get(pair)
        last: OSError | None = None
        for method in (known,) if known else self.methods:
            tmp = self._tmp()
            try:
                self._stage(method, src, tmp)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if exc.errno in _UNSUPPORTED and method != "copy" and known is None:
                    last = exc
                    continue
                raise StorageError(f"cannot {method} {src} to {self.tmp_dir}: {exc}") from exc
            if known is None:
                with self._lock:
                    self._working.setdefault(pair, method)
            if method != "hardlink":
                self.wrote = True
            return tmp
        raise StorageError(
            f"none of the data_link methods {', '.join(self.methods)} works from {src} to "
            f"{self.tmp_dir} ({last}); add 'copy' to KEEL_DATA_LINK"
        )

    @staticmethod
    def _stage(method: str, src: Path, tmp: Path) -> None:
        if method == "hardlink":
            # Shared bytes must not be edited in place, or the stored version changes too.
            mode = os.stat(src).st_mode
            if mode & 0o222:
                os.chmod(src, (mode & ~0o222) | _READ_ONLY)
            os.link(src, tmp)
        elif method == "reflink":
            _reflink(src, tmp)
        else:
            shutil.copyfile(src, tmp)

    def write_bytes(self, data: bytes, dst: Path) -> None:
        """Write ``data`` at ``dst`` under a temporary name first (for bytes already read)."""
        tmp = self._tmp()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, dst)
        except OSError as exc:
            raise StorageError(f"cannot write {dst}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.wrote = True
