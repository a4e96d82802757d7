"""Trees of files to snapshot, and an ``fsync`` that records (or fails) what it flushes."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from keel.data.state import RACY_WINDOW_NS


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def settle() -> None:
    """Let fresh mtimes age past the racy window, so the state cache may remember them."""
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)


def is_folder(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


class Flushes:
    """An ``fsync`` that records what it flushed and fails where ``fail`` says so.

    Pass it as a local backend's ``fsync`` (the real call is ``os.fsync``; a disk that
    fails it is not something a test machine has). ``fail`` may be replaced meanwhile.
    """

    def __init__(self, fail: Callable[[int], bool] = lambda fd: False) -> None:
        self.fail = fail
        self.files: set[int] = set()  # inodes: a renamed file keeps its own
        self.folders: set[str] = set()
        self.folder_flushes: list[str] = []  # every folder flush, in order

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        if self.fail(fd):
            raise OSError(errno.EIO, "Input/output error")
        if stat.S_ISDIR(info.st_mode):
            folder = os.readlink(f"/proc/self/fd/{fd}")
            self.folders.add(folder)
            self.folder_flushes.append(folder)
        else:
            self.files.add(info.st_ino)
        os.fsync(fd)
