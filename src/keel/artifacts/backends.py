"""Where artifact bytes live: a small interface and its two implementations.

A backend stores opaque bytes under string keys. It knows nothing of
digests; :class:`keel.artifacts.ArtifactStore` builds content addressing
on top. Every ``put_*`` is atomic: a reader sees the whole object under its
key or nothing, even if the writer is killed midway.

- :class:`LocalBackend` writes to a temporary file in the same folder tree,
  flushes it to disk (``fsync``), then renames it into place: a name under
  ``objects/`` always has its bytes on disk. The rename itself is made durable
  by fsyncing the folder that holds it; :meth:`LocalBackend.sync_folders` does
  that for a whole batch of keys at once (on a thread pool: ``os.fsync``
  releases the GIL, and concurrent syncs share the filesystem's journal
  commits). Every :class:`~keel.artifacts.ArtifactStore` write calls it before
  returning the digest its caller records; ``keel data add``, which writes
  through the backend itself, calls it once for the whole version.
- :class:`FsspecBackend` serves any fsspec filesystem (``s3://`` through
  s3fs). An S3 PUT or completed multipart upload is atomic by itself; other
  filesystems get the temporary-name-then-move treatment.

Besides bytes, a backend writes a Parquet table whole (:meth:`Backend.put_table`),
lists one folder (:meth:`Backend.list_dir`) and hands pyarrow a filesystem rooted
at the backend (:meth:`Backend.arrow_filesystem`), so columnar logs
(:mod:`keel.predictions`) live in the same roots, through the same code, as
artifacts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from keel.errors import (
    BackendUnavailable,
    InvalidInput,
    KeelError,
    StorageError,
    from_os_error,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

__all__ = ["PARQUET_COMPRESSION", "Backend", "FsspecBackend", "LocalBackend", "backend_for_url"]


@runtime_checkable
class Backend(Protocol):
    """Bytes under keys. Keys are ``/``-separated relative paths."""

    url: str

    def exists(self, key: str) -> bool: ...

    def put_file(self, key: str, src: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def delete(self, key: str) -> None: ...

    def move(self, key: str, new_key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def sync_folders(self, keys: Iterable[str]) -> None:
        """Make the names of ``keys``, already written, survive a crash of the machine.

        A writer calls it before it records anything that names the keys elsewhere.
        """
        ...

    def put_table(self, key: str, table: pa.Table) -> None:
        """Write ``table`` as a zstd Parquet file at ``key``: whole or not at all."""
        ...

    def list_dir(self, key: str) -> list[tuple[str, bool]]:
        """``(name, is_folder)`` of the entries directly in folder ``key``; empty if absent."""
        ...

    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem in which a key is a path (for datasets and footers)."""
        ...


#: The compression of every Parquet file a backend writes.
PARQUET_COMPRESSION = "zstd"
#: Temporary Parquet files untouched this long belong to writers that died.
_STALE_SECONDS = 3600.0
#: Protocols whose single PUT is atomic: no temporary name is needed.
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return bytes(sink.getvalue().to_pybytes())


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"artifact key {key!r} must be a relative path without '..' or '//'")
    return key


#: How many folders :meth:`LocalBackend.sync_folders` fsyncs at once.
_SYNC_WORKERS = 8


def _drop_cached(fd: int) -> None:
    """Let the kernel drop a flushed file's pages (clean now, so nothing is written)."""
    fadvise = getattr(os, "posix_fadvise", None)  # not on macOS or Windows
    if fadvise is not None:
        with contextlib.suppress(OSError):  # advice only
            fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class LocalBackend:
    """A folder on this machine (or a mounted share).

    Args:
        root: the folder.
        durable: fsync what is written (off only for scratch stores).
        fsync: the call that flushes one open file or folder to disk; ``os.fsync``
            unless a test stands in a failing one.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        durable: bool = True,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self.durable = durable
        self.fsync = fsync
        self._tmp = self.root / "tmp"
        self._swept = False

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @contextlib.contextmanager
    def _staged(self, key: str, tag: str = "") -> Iterator[Path]:
        """Yield a temporary path; on success move it to ``key`` atomically."""
        final = self._path(key)
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"folders under {self.root}", named=False) from exc
        tmp = self._tmp / f"{tag}{uuid.uuid4().hex}.part"
        try:
            yield tmp
            self.sync_file(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            raise from_os_error(exc, f"a write of {final}", named=False) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_file(self, key: str, src: Path) -> None:
        with self._staged(key) as tmp:
            shutil.copyfile(src, tmp)

    def put_bytes(self, key: str, data: bytes, *, cached: bool = True) -> None:
        """Store ``data`` at ``key``: written, fsynced, then renamed into place.

        Args:
            cached: keep the written pages in the page cache. A writer that stores
                copies for later (``keel data add``) passes False: once the bytes are on
                disk their pages are dropped, so hundreds of megabytes of snapshot do not
                evict what is in use, and the next writes reuse those pages.
        """
        final = self._path(key)
        tmp = os.path.join(self._tmp, f"{uuid.uuid4().hex}.part")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:  # the first write into this root: make its folders
                self._tmp.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable:
                    self.fsync(fd)  # the bytes reach the disk before the name does
                    if not cached:
                        _drop_cached(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except OSError as exc:
            raise from_os_error(exc, f"a write of {final}", named=False) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def adopt(self, key: str, tmp: str | os.PathLike[str], *, cached: bool = True) -> None:
        """Move a finished temporary file of this filesystem to ``key``, fsynced first.

        For a writer that staged the bytes itself (copied, reflinked or hard-linked them
        into the root's ``tmp`` folder) and checked them: the same last steps as every
        ``put_*``. ``tmp`` is removed if the move fails. ``cached`` as for :meth:`put_bytes`
        (a hard link shares its pages with the file it links: keep those cached).
        """
        final = self._path(key)
        try:
            self.sync_file(tmp, cached=cached)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                if not os.path.exists(tmp):
                    raise
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise from_os_error(exc, f"a write of {final}", named=False) from exc

    def sync_file(self, path: str | os.PathLike[str], *, cached: bool = True) -> None:
        """Flush one file (or folder) under the root to disk; nothing when not durable.

        Raises:
            OSError: the file cannot be opened or flushed (the caller translates it).
        """
        if not self.durable:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.fsync(fd)
            if not cached:
                _drop_cached(fd)
        finally:
            os.close(fd)

    def sync_folders(self, keys: Iterable[str]) -> None:
        """Make the names of ``keys`` durable: fsync the folders holding them, and their parents.

        Call it after the objects are in place and before anything that names them is
        recorded. Each folder is flushed once, several at a time; nothing when not durable.

        Raises:
            StorageError: a folder could not be flushed; the caller must not record the keys.
        """
        if not self.durable:
            return
        folders: set[str] = set()
        for key in keys:
            parts = _check_key(key).split("/")[:-1]
            while parts:
                folders.add("/".join(parts))
                parts.pop()
        # Parents too: a folder made by this writer is itself an entry of its parent. The
        # order does not matter, since nothing names the keys until every flush returned.
        paths = [str(self.root / f) for f in sorted(folders)] + [str(self.root)]

        def sync(path: str) -> None:
            try:
                self.sync_file(path)
            except OSError as exc:
                raise StorageError(
                    f"cannot flush folder {path} to disk ({exc}); nothing that names its "
                    "objects was recorded. Check the disk, then run the command again"
                ) from exc

        if len(paths) <= 2:
            for path in paths:
                sync(path)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(_SYNC_WORKERS, len(paths))) as pool:
            list(pool.map(sync, paths))

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise from_os_error(exc, f"object {key!r} in {self.root}") from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def move(self, key: str, new_key: str) -> None:
        target = self._path(new_key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path(key), target)
        except OSError as exc:
            raise from_os_error(exc, f"object {key!r} in {self.root}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == "tmp" or rel.startswith("tmp/"):
                continue
            for name in files:
                yield name if rel == "." else f"{rel}/{name}"

    def put_table(self, key: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if not self._swept:
            self._sweep_stale_tables()
        with self._staged(key, tag="table-") as tmp:
            pq.write_table(table, str(tmp), compression=PARQUET_COMPRESSION)

    def _sweep_stale_tables(self) -> None:
        """Remove temporary tables of writers killed mid-write (they are never renamed)."""
        self._swept = True
        cutoff = time.time() - _STALE_SECONDS
        with contextlib.suppress(OSError):
            for item in self._tmp.glob("table-*.part"):
                with contextlib.suppress(OSError):
                    if item.stat().st_mtime < cutoff:
                        item.unlink()

    def list_dir(self, key: str) -> list[tuple[str, bool]]:
        try:
            with os.scandir(self._path(key)) as entries:
                return [(e.name, e.is_dir()) for e in entries]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise from_os_error(exc, f"folder {key!r} in {self.root}", named=False) from exc

    def arrow_filesystem(self) -> pafs.FileSystem:
        import pyarrow.fs as pafs

        return pafs.SubTreeFileSystem(str(self.root), pafs.LocalFileSystem())


class FsspecBackend:
    """Any fsspec filesystem; ``s3://bucket/prefix`` is the one Keel tests."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a core dependency
            raise InvalidInput("remote artifact stores need fsspec: pip install fsspec") from None
        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        try:
            self.fs = fsspec.filesystem(protocol, **(storage_options or {}))
        except ImportError:
            extra = {"s3": "s3"}.get(protocol)
            hint = (
                f"pip install 'keel[{extra}]'"
                if extra
                else f"install the fsspec driver for {protocol}"
            )
            raise InvalidInput(f"artifact store {url!r} needs a driver: {hint}") from None
        self._base = self.url.split("://", 1)[1]
        self._atomic_put = protocol in _ATOMIC_PUT
        self._bucket = self._base.split("/", 1)[0] if self._atomic_put else None
        self._root_checked = False

    def _check_root(self) -> None:
        """Fail clearly, once, when the bucket itself is missing (not just an object)."""
        if self._root_checked or self._bucket is None:
            return
        try:
            present = self.fs.exists(self._bucket)
        except PermissionError:
            present = True  # listing may be denied while objects are readable
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach {self.url}: {exc}") from exc
        if not present:
            raise StorageError(
                f"bucket {self._bucket!r} of artifact store {self.url} does not exist or is not "
                "visible with these credentials; create it, or fix KEEL_ARTIFACTS_URL / "
                "KEEL_S3_ENDPOINT_URL"
            )
        self._root_checked = True

    def _path(self, key: str) -> str:
        return f"{self._base}/{_check_key(key)}"

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        self._check_root()
        try:
            yield
        except KeelError:
            raise
        except OSError as exc:
            raise from_os_error(exc, f"object {key!r} in {self.url}") from exc

    def exists(self, key: str) -> bool:
        with self._errors(key):
            return bool(self.fs.exists(self._path(key)))

    def put_file(self, key: str, src: Path) -> None:
        with self._errors(key):
            if self._atomic_put:
                self.fs.put_file(str(src), self._path(key))
            else:
                tmp = f"{self._base}/tmp/{uuid.uuid4().hex}.part"
                self.fs.put_file(str(src), tmp)
                self.fs.mv(tmp, self._path(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(key):
            if self._atomic_put:
                self.fs.pipe_file(self._path(key), data)
            else:
                tmp = f"{self._base}/tmp/{uuid.uuid4().hex}.part"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, self._path(key))

    def sync_folders(self, keys: Iterable[str]) -> None:
        """Nothing to do: an object store's PUT is durable once it returns, and fsspec
        offers no flush for other filesystems."""

    def open(self, key: str) -> BinaryIO:
        with self._errors(key):
            return self.fs.open(self._path(key), "rb")

    def delete(self, key: str) -> None:
        with self._errors(key), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def move(self, key: str, new_key: str) -> None:
        with self._errors(key):
            self.fs.mv(self._path(key), self._path(new_key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = f"{self._base}/{prefix}".rstrip("/")
        with self._errors(prefix or "/"):
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return
        for path in found:
            rel = path[len(self._base) + 1 :]
            if not rel.startswith("tmp/"):
                yield rel

    def put_table(self, key: str, table: pa.Table) -> None:
        self.put_bytes(key, _parquet_bytes(table))

    def list_dir(self, key: str) -> list[tuple[str, bool]]:
        with self._errors(key):
            try:
                entries = self.fs.ls(self._path(key), detail=True)
            except FileNotFoundError:
                return []
        return [
            (str(e["name"]).rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
            for e in entries
        ]

    def arrow_filesystem(self) -> pafs.FileSystem:
        import pyarrow.fs as pafs

        return pafs.SubTreeFileSystem(self._base, pafs.PyFileSystem(pafs.FSSpecHandler(self.fs)))


def backend_for_url(url: str, s3_endpoint_url: str | None = None) -> Backend:
    """The backend for a local path, ``file://`` URL or fsspec URL such as ``s3://bucket/x``."""
    if "://" not in url:
        return LocalBackend(url)
    if url.startswith("file://"):
        return LocalBackend(url[len("file://") :])
    options: dict[str, Any] = {}
    if url.startswith(("s3://", "s3a://")):
        if s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
        # Fresh listings matter more than saved round trips: another process may
        # have written the object a moment ago.
        options["use_listings_cache"] = False
        options["skip_instance_cache"] = True
    return FsspecBackend(url, options)
