"""Spill folders: rows that cannot be queued or written yet wait on local disk, then land once.

Each logger, in each process, owns a folder
``<spill base>/<root key>[-<dataset>]/<pid>-<tag>/``, locked (``flock``) while
the process lives. Rows go there as Parquet files when the queue stays full or
the root keeps failing; rows Arrow cannot take at all go to ``rejected/`` as
JSON lines. Once the root works, the files are moved into the dataset
(:meth:`SpillFolder.import_into`), exactly once even across crashes: they are
moved into a batch folder first, the batch's output names derive from its
content, and the batch is removed only after every output is written, so a
crash anywhere in between makes the next import write the same names again.

A folder whose lock is free belongs to a dead process: the next logger on the
same root and spill base adopts its files (:meth:`SpillFolder.adopt_dead`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from keel.artifacts.backends import PARQUET_COMPRESSION, Backend
from keel.errors import StorageError
from keel.predictions.arrow import Entry, flatten, json_text, split_hours, unify_tables
from keel.predictions.layout import file_key, now_ms, part_name, tag8

if sys.platform != "win32":
    import fcntl

__all__ = ["SpillFolder", "default_spill_base"]

# The logger name operators already configure: these messages came from serving before.
log = logging.getLogger("keel.serving")

_SPILL_RE = re.compile(r"^spill-(\d+)-(\d+)-[0-9a-f]{8}\.parquet$")
_STALE_SECONDS = 3600.0  # a folder that never finished starting, untouched this long, is dead
_BATCH_FILES = 256  # most spill files imported as one batch


def default_spill_base() -> Path:
    """``keel-predlog-<uid>`` in the system temp folder: this user's spill folders."""
    owner = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"keel-predlog-{owner}"


def _lock_file(path: Path, *, create: bool) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``; None if another process holds it."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    if sys.platform != "win32":
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def _write_parquet_file(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` and push it to disk before anyone renames it into place."""
    pq.write_table(table, str(path), compression=PARQUET_COMPRESSION)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _spill_rows(path: Path) -> int:
    if path.is_dir():
        return sum(pq.read_metadata(p).num_rows for p in path.glob("spill-*.parquet"))
    return int(pq.read_metadata(path).num_rows)


class SpillFolder:
    """One logger's spill folder in this process.

    Args:
        base: the spill base folder (``spill_dir=``).
        group: the subfolder shared by every logger of one root and dataset.
        root_url: the root, written once into the group as ``root.txt`` for people.

    Attributes:
        path: this process's folder once :meth:`open` ran.
        dirty: files may be waiting to be imported.
        rows_recovered: rows adopted from dead processes' folders.
        rows_imported: rows moved into the dataset.
        files_written: data files written by imports.
    """

    def __init__(self, base: Path, group: str, root_url: str) -> None:
        self.base = base
        self.group = group
        self.root_url = root_url
        self.path: Path | None = None
        self.dirty = False
        self.rows_recovered = 0
        self.rows_imported = 0
        self.files_written = 0
        self._lock_fd: int | None = None

    def _own(self) -> Path:
        if self.path is None:
            raise RuntimeError("the spill folder is used before open()")
        return self.path

    def open(self) -> None:
        """Create and lock this process's folder.

        Raises:
            StorageError: the folder cannot be created.
        """
        group = self.base / self.group
        procid = f"{os.getpid()}-{tag8()}"
        staging = group / f".new-{procid}"
        try:
            for attempt in (1, 2):
                group.mkdir(parents=True, exist_ok=True)
                try:
                    staging.mkdir()
                    break
                except FileNotFoundError:  # another logger's release() removed the empty group
                    if attempt == 2:
                        raise
            note = group / "root.txt"
            if not note.exists():
                note.write_text(self.root_url + "\n")
            # Lock, then publish under the final name: a folder without a held lock is a dead one.
            self._lock_fd = _lock_file(staging / ".lock", create=True)
            os.replace(staging, group / procid)
        except OSError as exc:
            raise StorageError(
                f"cannot create the prediction-log spill folder under {self.base}: {exc}; "
                "pass spill_dir= a writable local folder"
            ) from exc
        self.path = group / procid

    def forget(self) -> None:
        """In a forked child: let go of the parent's lock descriptor (the parent keeps its lock)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # -- adopting dead processes' files ------------------------------------------------

    def adopt_dead(self) -> int:
        """Move spill files of dead processes on this root into our folder; return their rows."""
        if sys.platform == "win32" or self.path is None:
            return 0
        own = self.path
        try:
            folders = sorted(p for p in own.parent.iterdir() if p.is_dir())
        except OSError:
            return 0
        rows = 0
        for folder in folders:
            if folder == own:
                continue
            if folder.name.startswith("."):
                with contextlib.suppress(OSError):
                    if time.time() - folder.stat().st_mtime > _STALE_SECONDS:
                        shutil.rmtree(folder, ignore_errors=True)  # a start that never finished
                continue
            try:
                fd = _lock_file(folder / ".lock", create=False)
            except FileNotFoundError:
                fd = -1  # closed logger: lock released and removed, files may remain
            except OSError:
                continue
            if fd is None:
                continue  # alive
            try:
                rows += self._take_over(folder)
            finally:
                if fd >= 0:
                    os.close(fd)
        return rows

    def _take_over(self, folder: Path) -> int:
        own = self._own()
        recovered = 0
        for sub in sorted(folder.iterdir()):
            if not sub.is_dir():
                continue
            target = own / sub.name
            target.mkdir(exist_ok=True)
            for item in sorted(sub.iterdir()):
                if item.name.startswith("."):  # a spill file its writer never finished
                    with contextlib.suppress(OSError):
                        shutil.rmtree(item) if item.is_dir() else item.unlink()
                    continue
                rows = 0
                if sub.name.startswith("deployment="):
                    try:
                        rows = _spill_rows(item)
                    except (OSError, pa.ArrowException):
                        rows = 0
                try:
                    os.replace(item, target / item.name)
                except OSError:
                    continue  # another new logger took it first
                recovered += rows
                self.dirty = True
        with contextlib.suppress(OSError):
            (folder / ".lock").unlink()
        shutil.rmtree(folder, ignore_errors=True)
        self.rows_recovered += recovered
        if self.dirty:
            log.info("keel: recovering prediction logs spilled by a dead process in %s", folder)
        return recovered

    # -- writing ----------------------------------------------------------------------------

    def write(self, deployment: str, table: pa.Table) -> None:
        """Write rows to a local spill file, atomically.

        Raises:
            StorageError: even that fails (a full or read-only disk).
        """
        folder = self._own() / f"deployment={deployment}"
        name = f"spill-{now_ms()}-{os.getpid()}-{tag8()}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            for attempt in (1, 2):
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    _write_parquet_file(table, tmp)
                    break
                except FileNotFoundError:  # the empty folder was just removed by release()
                    if attempt == 2:
                        raise
            os.replace(tmp, folder / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(
                f"cannot spill {table.num_rows} prediction rows to {folder}: {exc}; free space "
                "there or pass spill_dir= another local folder"
            ) from exc
        self.dirty = True

    def reject(self, deployment: str, entries: Sequence[Entry], exc: BaseException) -> int:
        """Keep rows Arrow cannot take as JSON lines beside the spill files; return their count."""
        rows = sum(e.n_rows for e in entries)
        folder = self._own() / "rejected"
        path = folder / f"{deployment}-{now_ms()}-{tag8()}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                for e in entries:
                    record = {"deployment": deployment, "n_rows": e.n_rows, "error": str(exc)}
                    record["columns"] = {k: flatten([v]) for k, v in e.all_columns().items()}
                    fh.write(json_text(record) + "\n")
        except OSError as io_error:
            log.error(
                "keel: LOST %d prediction rows of %r: they cannot be stored as Parquet (%s) "
                "and %s cannot be written (%s)",
                rows,
                deployment,
                exc,
                path,
                io_error,
            )
            return rows
        log.error(
            "keel: %d prediction rows of %r cannot be stored as Parquet (%s); kept in %s",
            rows,
            deployment,
            exc,
            path,
        )
        return rows

    # -- importing into the dataset -------------------------------------------------------

    def import_into(self, backend: Backend, dataset: str, max_file_rows: int) -> int:
        """Move spill files (ours and adopted) into ``dataset``; return the rows written."""
        own = self._own()
        written = 0
        self.dirty = False  # a spill landing during this pass sets it again
        try:
            for sub in sorted(own.glob("deployment=*")):
                written += self._import_folder(backend, dataset, max_file_rows, sub)
        except BaseException:
            self.dirty = True
            raise
        return written

    def _import_folder(self, backend: Backend, dataset: str, max_file_rows: int, sub: Path) -> int:
        """Import one ``deployment=<name>`` folder: unfinished batches, then loose files."""
        written = 0
        deployment = sub.name.split("=", 1)[1]
        for leftover in sub.glob(".done-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for batch in sorted(sub.glob("import-*")):
            written += self._import_batch(backend, dataset, max_file_rows, deployment, batch)
        loose = sorted(p for p in sub.glob("spill-*.parquet"))
        while loose:
            chunk: list[Path] = []
            rows = 0
            while loose and len(chunk) < _BATCH_FILES:
                size = _spill_rows(loose[0])
                if chunk and rows + size > max_file_rows:
                    break
                chunk.append(loose.pop(0))
                rows += size
            batch = sub / f"import-{tag8()}"
            batch.mkdir()
            for path in chunk:
                os.replace(path, batch / path.name)
            written += self._import_batch(backend, dataset, max_file_rows, deployment, batch)
        return written

    def _import_batch(
        self, backend: Backend, dataset: str, max_file_rows: int, deployment: str, batch: Path
    ) -> int:
        files = sorted(batch.glob("spill-*.parquet"))
        tables: list[pa.Table] = []
        for path in files:
            try:
                tables.append(pq.read_table(path))
            except (OSError, pa.ArrowException) as exc:
                target = self._own() / "rejected"
                target.mkdir(exist_ok=True)
                os.replace(path, target / path.name)
                log.error("keel: spill file %s is unreadable (%s); moved to %s", path, exc, target)
        if not files:
            shutil.rmtree(batch, ignore_errors=True)
            return 0
        match = _SPILL_RE.match(files[0].name)
        stamp, pid = (match.group(1), match.group(2)) if match else (str(now_ms()), "0")
        key = "\n".join(p.name for p in files)
        rows = 0
        for t_index, table in enumerate(unify_tables(tables)):
            for hour, part in split_hours(table):
                for offset in range(0, part.num_rows, max_file_rows):
                    digest = hashlib.sha256(f"{key}|{t_index}|{hour}|{offset}".encode()).hexdigest()
                    name = part_name(stamp, pid, digest[:8])
                    chunk = part.slice(offset, max_file_rows)
                    backend.put_table(file_key(dataset, deployment, hour, name), chunk)
                    rows += chunk.num_rows
                    self.files_written += 1
        done = batch.parent / f".done-{batch.name}"
        os.replace(batch, done)
        shutil.rmtree(done, ignore_errors=True)
        self.rows_imported += rows
        return rows

    # -- letting go -----------------------------------------------------------------------

    def release(self) -> None:
        """Unlock this process's folder and remove it if nothing is left in it (at close)."""
        self.forget()
        if self.path is None:
            return
        own = self.path
        with contextlib.suppress(OSError):
            for sub in own.iterdir():
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()  # only if empty
            if all(p.name == ".lock" for p in own.iterdir()):
                with contextlib.suppress(FileNotFoundError):
                    (own / ".lock").unlink()
                own.rmdir()
            group = own.parent
            if [p.name for p in group.iterdir()] == ["root.txt"]:  # no other logger on this root
                (group / "root.txt").unlink()
                group.rmdir()  # fails, harmlessly, if another logger just started here
