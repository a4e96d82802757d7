"""Prediction logs: every served prediction, appended to Parquet files in the artifact root.

Prediction logs are not rows in the metadata database. The serving process
hands each request's rows to :class:`PredictionLogger`, which queues them in
memory (bounded) and a writer thread appends them as Parquet files, one file
per deployment, hour and flush, under the artifact root::

    predictions/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<unix ms>-<pid>-<uuid8>.parquet
    feedback/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<unix ms>-<pid>-<uuid8>.parquet

The folders are Hive-style, so ``pyarrow.dataset.dataset(root, partitioning="hive")``
reads them too; the hour is each row's ``time`` in UTC. Each file carries its
own schema (inputs and outputs differ between versions); the readers here
unify them: a column missing from a file reads as null, ints and floats widen
to float, and a column whose types cannot be reconciled reads as strings.

Columns of a prediction file: ``request_id`` (string), ``time`` (timestamp[ms,
UTC]), ``model`` (string), ``version`` (int64), ``route`` (string),
``latency_ms`` (float64), ``row`` (int64, the row's index within its request),
then ``input.<name>`` and ``output.<name>`` as the caller gave them. An output
with several values per row (a 2-D array, or a list per row) is stored as an
Arrow **list column** (``list<double>``, ``list<string>`` …); a column whose
values Arrow cannot type (mixed kinds, arbitrary objects) is stored as the JSON
text of each value.

What is guaranteed:

- **Nothing is dropped silently.** :meth:`PredictionLogger.log` enqueues
  without I/O while the queue has room; when it is full it waits up to
  ``put_timeout`` for the writer, then writes the rows to a local *spill* file.
  When writing to the root fails (bucket missing, network down) the rows stay
  in memory and are retried every interval; after a few failures they are
  spilled too. Spill files are moved into the dataset once the root works,
  by this process or, if it died, by the next logger started on the same root
  and spill folder. Rows that cannot be converted to Arrow at all (a caller
  bug) are written as JSON lines under ``rejected/`` in the spill folder and
  logged as an error.
- **Files are whole or absent.** A local file is written under ``tmp/`` in
  the root, flushed to disk and renamed into place; an object store PUT is
  atomic. A process killed mid-write leaves no partial file under
  ``predictions/``.
- **Processes do not collide.** File names carry the process id and a random
  part, so any number of server workers can log to one root; a logger used
  in a forked child starts over with an empty queue (the parent writes its own).
- **close() flushes.** It is idempotent, and safe to call from a signal
  handler that interrupted :meth:`PredictionLogger.log` (the handler's thread
  may hold no lock the writer needs). A SIGKILL loses at most what was queued
  since the last flush.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import numbers
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from keel.errors import BackendUnavailable, InvalidInput, KeelError, StorageError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DATASETS",
    "ERRORS",
    "FEEDBACK_SCHEMA",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "Block",
    "PredictionLogger",
    "check_deployment",
    "count_rows",
    "iter_prediction_batches",
    "logged_deployments",
    "read_feedback",
    "read_predictions",
    "to_ms",
]

log = logging.getLogger("keel.serving")

PREDICTIONS = "predictions"
ERRORS = "errors"
#: The datasets a logger can append to: served predictions, and requests a model version failed.
DATASETS = (PREDICTIONS, ERRORS)
FEEDBACK = "feedback"
HOUR_MS = 3_600_000
UTC_MS = pa.timestamp("ms", tz="UTC")

#: The columns every prediction row has, with their stored types, in file order.
PREDICTION_COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "time": UTC_MS,
    "model": pa.string(),
    "version": pa.int64(),
    "route": pa.string(),
    "latency_ms": pa.float64(),
    "row": pa.int64(),
}

#: Columns of a feedback file: ``row`` null means every row of the request;
#: ``label`` is the JSON text of the label, ``label_num`` the label as a
#: number (booleans as 0/1) or null.
FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int64()),
        ("label", pa.string()),
        ("label_num", pa.float64()),
        ("time", UTC_MS),
    ]
)

_RESERVED = frozenset({"deployment", "hour"})  # partition keys: a column so named would clash
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_HOUR_RE = re.compile(r"^hour=(\d{4}-\d{2}-\d{2}T\d{2})$")
_SPILL_RE = re.compile(r"^spill-(\d+)-(\d+)-[0-9a-f]{8}\.parquet$")
_COMPRESSION = "zstd"
_SPILL_AFTER_FAILURES = 3  # consecutive failed flushes before queued rows go to local disk
_STALE_SECONDS = 3600.0  # temporary files untouched this long belong to dead writers
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


# -- small helpers -------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _uuid8() -> str:
    return uuid.uuid4().hex[:8]


def check_deployment(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(
            "deployment name must be 1-128 letters, digits, '_', '-' or '.', starting with a "
            f"letter or digit (it names a folder); got {name!r}"
        )
    return name


def _hour_label(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H")


def _hour_start_ms(label: str) -> int:
    start = dt.datetime.strptime(label, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)
    return int(start.timestamp()) * 1000


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def to_ms(value: Any, name: str) -> int | None:
    """Epoch milliseconds from ``None``, epoch ms, a datetime (naive = UTC) or ISO-8601 text."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a datetime, epoch milliseconds or ISO-8601 text")
    if isinstance(value, numbers.Real):
        return int(value) if isinstance(value, numbers.Integral) else int(float(value))
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ms]").astype(np.int64))
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{name} {value!r} is not ISO-8601; use e.g. '2026-11-23T14:00:00Z'"
            ) from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    raise InvalidInput(
        f"{name} must be a datetime, epoch milliseconds or ISO-8601 text, got {type(value).__name__}"
    )


def _fault(exc: BaseException, what: str) -> KeelError:
    """The Keel error for an exception raised while reaching a root."""
    if isinstance(exc, KeelError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, ConnectionError | TimeoutError) or "Connect" in name or "Timeout" in name:
        return BackendUnavailable(f"cannot reach {what}: {exc}; check the endpoint and network")
    if isinstance(exc, PermissionError):
        return StorageError(f"access denied to {what}: {exc}; check the credentials")
    return StorageError(f"{what}: {exc}")


def _check_column_name(name: object) -> None:
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise InvalidInput(
            f"column name {name!r} is not allowed: names are non-empty strings other "
            f"than {', '.join(sorted(_RESERVED))} (partition keys)"
        )


# -- where the dataset lives ---------------------------------------------------------------


class _Root:
    """The artifact root: a local folder, or an fsspec URL such as ``s3://bucket/prefix``."""

    def __init__(self, url: str, s3_endpoint_url: str | None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise InvalidInput(f"root_url must be a folder or s3://bucket/prefix, got {url!r}")
        self.url = url
        self.s3_endpoint_url = s3_endpoint_url
        self.local: Path | None = None
        self.fs: Any = None
        self.bucket: str | None = None
        if "://" not in url or url.startswith("file://"):
            self.local = Path(url.removeprefix("file://")).expanduser().resolve()
            self.base = str(self.local)
            self.atomic_put = False
            self.pa_fs: pafs.FileSystem = pafs.LocalFileSystem()
        else:
            from keel.artifacts.backends import FsspecBackend, backend_for_url

            backend = backend_for_url(url, s3_endpoint_url)
            assert isinstance(backend, FsspecBackend)
            self.fs = backend.fs
            protocol, _, rest = url.partition("://")
            self.base = rest.rstrip("/")
            self.atomic_put = protocol in _ATOMIC_PUT
            if self.atomic_put:
                self.bucket = self.base.split("/", 1)[0]
            self.pa_fs = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        #: Names this root in spill folders: the same root always gets the same key.
        self.key = hashlib.sha256(
            (str(self.local) if self.local else url.rstrip("/")).encode()
        ).hexdigest()[:16]

    def describe(self, rel: str = "") -> str:
        return f"{self.url.rstrip('/')}/{rel}" if rel else self.url

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def _missing_root(self) -> KeelError | None:
        """A clear error when the bucket itself is missing, else None."""
        if self.bucket is None:
            return None
        try:
            present = self.fs.exists(self.bucket)
        except Exception:
            return None
        if present:
            return None
        return StorageError(
            f"bucket {self.bucket!r} of {self.url} does not exist or is not visible with these "
            "credentials; create it, or fix KEEL_ARTIFACTS_URL / KEEL_S3_ENDPOINT_URL"
        )

    @contextlib.contextmanager
    def errors(self, rel: str) -> Iterator[None]:
        try:
            yield
        except KeelError:
            raise
        except FileNotFoundError as exc:
            raise (self._missing_root() or _fault(exc, self.describe(rel))) from exc
        except Exception as exc:
            raise _fault(exc, self.describe(rel)) from exc

    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write ``table`` as Parquet at ``rel``, atomically: whole or not at all."""
        with self.errors(rel):
            if self.local is not None:
                final = self.local / rel
                staging = self.local / "tmp"
                staging.mkdir(parents=True, exist_ok=True)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = staging / f"predlog-{uuid.uuid4().hex}.part"
                try:
                    _write_parquet_file(table, tmp)
                    os.replace(tmp, final)
                except BaseException:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    raise
                return
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression=_COMPRESSION)
            data = sink.getvalue().to_pybytes()
            if self.atomic_put:
                self.fs.pipe_file(self.path(rel), data)
            else:
                tmp_path = self.path(f"tmp/predlog-{uuid.uuid4().hex}.part")
                self.fs.pipe_file(tmp_path, data)
                self.fs.mv(tmp_path, self.path(rel))

    def listdir(self, rel: str) -> list[tuple[str, bool]]:
        """``(name, is_dir)`` of the entries in folder ``rel``; empty if it does not exist."""
        with self.errors(rel):
            if self.local is not None:
                try:
                    with os.scandir(self.local / rel) as it:
                        return [(e.name, e.is_dir()) for e in it]
                except (FileNotFoundError, NotADirectoryError):
                    return []
            try:
                entries = self.fs.ls(self.path(rel), detail=True)
            except FileNotFoundError:
                missing = self._missing_root()
                if missing is not None:
                    raise missing from None
                return []
            return [
                (str(e["name"]).rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
                for e in entries
            ]

    def parquet_files(self, rel: str) -> list[str]:
        """Relative paths of the Parquet files directly in folder ``rel``."""
        return sorted(
            f"{rel}/{name}" for name, is_dir in self.listdir(rel) if _is_data(name, is_dir)
        )

    def parquet_tree(self, rel: str) -> list[str]:
        """Relative paths of the Parquet files anywhere below folder ``rel``."""
        found: list[str] = []
        for name, is_dir in self.listdir(rel):
            if is_dir and not name.startswith((".", "_")):
                found.extend(self.parquet_tree(f"{rel}/{name}"))
            elif _is_data(name, is_dir):
                found.append(f"{rel}/{name}")
        return sorted(found)

    def footer(self, rel: str) -> pq.FileMetaData:
        with self.errors(rel):
            try:
                return pq.read_metadata(self.path(rel), filesystem=self.pa_fs)
            except pa.ArrowInvalid as exc:
                raise StorageError(
                    f"{self.describe(rel)} is not a readable Parquet file ({exc}); the logger "
                    "never leaves partial files, so something else wrote it: move it out of "
                    "the dataset and read again"
                ) from None

    def footers(self, rels: Sequence[str]) -> list[pq.FileMetaData]:
        if self.local is not None or len(rels) < 2:
            return [self.footer(r) for r in rels]
        with ThreadPoolExecutor(max_workers=min(16, len(rels))) as pool:
            return list(pool.map(self.footer, rels))


def _is_data(name: str, is_dir: bool) -> bool:
    return not is_dir and name.endswith(".parquet") and not name.startswith((".", "_"))


def _write_parquet_file(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` and push it to disk before anyone renames it into place."""
    pq.write_table(table, str(path), compression=_COMPRESSION)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- building Arrow tables from queued requests --------------------------------------------------


class Block(NamedTuple):
    """Several columns as one 2-D array, ``values[:, j]`` being column ``names[j]``.

    One request's inputs arrive as a matrix; queuing the matrix is one reference
    where k columns would be k, and the writer slices columns once per file.
    """

    names: tuple[str, ...]
    values: np.ndarray


class _Entry(NamedTuple):
    deployment: str
    columns: dict[str, Any]
    n_rows: int
    block: Block | None = None

    def all_columns(self) -> dict[str, Any]:
        """The columns with the block's spread out, in file order."""
        if self.block is None:
            return self.columns
        spread = {name: self.block.values[:, j] for j, name in enumerate(self.block.names)}
        return {**self.columns, **spread}


class _Piece(NamedTuple):
    """Rows ready to write: one deployment, one hour, at most ``max_file_rows``; named once."""

    deployment: str
    rel: str
    table: pa.Table


def _same_kind(arrays: Sequence[np.ndarray]) -> bool:
    kinds = {a.dtype.kind for a in arrays}
    return len(kinds) == 1 or kinds <= {"i", "u", "f"}


def _from_numpy(values: np.ndarray) -> pa.Array:
    return pa.array(values, from_pandas=values.dtype == object)


def _flatten(chunks: Sequence[Any]) -> list[Any]:
    return list(
        itertools.chain.from_iterable(
            c.tolist() if isinstance(c, np.ndarray) else c for c in chunks
        )
    )


def _infer_array(chunks: Sequence[Any]) -> pa.Array:
    """One Arrow array from per-request chunks (lists or numpy arrays), without a row loop."""
    if all(isinstance(c, np.ndarray) for c in chunks) and _same_kind(chunks):
        if all(c.ndim == 1 for c in chunks):
            return _from_numpy(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))
        widths = {c.shape[1] for c in chunks if c.ndim == 2}
        if all(c.ndim == 2 for c in chunks) and len(widths) == 1:
            merged = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            n, k = merged.shape
            offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int64), pa.int64())
            values = _from_numpy(np.ascontiguousarray(merged).reshape(-1))
            return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(values.type))
    values = _flatten(chunks)
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.array(values, from_pandas=True)  # None and NaN mixed with text


def _time_array(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_integer(kind):
        out = array.cast(pa.int64()).cast(UTC_MS)
    elif pa.types.is_floating(kind):
        out = array.cast(pa.int64(), safe=False).cast(UTC_MS)
    elif pa.types.is_timestamp(kind):
        out = array.cast(UTC_MS, safe=False)
    else:
        raise InvalidInput(f"column 'time' must hold epoch milliseconds or datetimes, got {kind}")
    if out.null_count:
        out = pc.fill_null(out, pa.scalar(_now_ms(), UTC_MS))
    return out


def _column(name: str, chunks: Sequence[Any]) -> pa.Array:
    required = PREDICTION_COLUMNS.get(name)
    if required is not None:
        array = _infer_array(chunks)
        if name == "time":
            return _time_array(array)
        return array if array.type == required else array.cast(required)
    try:
        return _infer_array(chunks)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.array([_json_text(v) for v in _flatten(chunks)], pa.string())


def _build(entries: Sequence[_Entry]) -> pa.Table:
    """One table from requests that share their column names (and block names)."""
    first = entries[0]
    names = [*PREDICTION_COLUMNS, *(n for n in first.columns if n not in PREDICTION_COLUMNS)]
    arrays = [_column(name, [e.columns[name] for e in entries]) for name in names]
    block = first.block
    if block is not None:
        values = [e.block.values for e in entries if e.block is not None]
        if len({v.dtype for v in values}) == 1:
            merged = np.concatenate(values) if len(values) > 1 else values[0]
            columns = np.ascontiguousarray(merged.T)  # one contiguous row per column
            arrays += [_from_numpy(columns[j]) for j in range(len(block.names))]
        else:
            arrays += [_column(n, [e.all_columns()[n] for e in entries]) for n in block.names]
        names += block.names
    return pa.Table.from_arrays(arrays, names=names)


def _unify_tables(tables: list[pa.Table]) -> list[pa.Table]:
    """One table if the schemas reconcile (nulls for missing columns, int → float), else as given."""
    if len(tables) < 2:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowException, TypeError, ValueError):
        return tables


def _split_hours(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """``(hour, rows of that hour)`` for each UTC hour the table's ``time`` column touches."""
    if table.num_rows == 0:
        return []
    hours = table.column("time").cast(pa.int64()).to_numpy() // HOUR_MS
    low, high = int(hours.min()), int(hours.max())
    if low == high:
        return [(low, table)]
    order = np.argsort(hours, kind="stable")
    ordered = hours[order]
    table = table.take(pa.array(order))
    bounds = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), len(ordered)]
    return [(int(ordered[a]), table.slice(a, b - a)) for a, b in itertools.pairwise(bounds)]


def _file_rel(dataset: str, deployment: str, hour: int, name: str) -> str:
    return f"{dataset}/deployment={deployment}/hour={_hour_label(hour)}/{name}"


# -- process bookkeeping: live loggers, exit and fork ---------------------------------------------------

_LIVE: weakref.WeakSet[PredictionLogger] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for logger in list(_LIVE):
        try:
            logger.close()
        except Exception as exc:  # exit must go on; the rows are in the spill folder if anywhere
            log.error("keel: closing the prediction logger at exit failed: %s", exc)


def _after_fork_in_child() -> None:
    for logger in list(_LIVE):
        logger._forget_parent()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


def _default_spill_base() -> Path:
    owner = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"keel-predlog-{owner}"


# -- the logger -------------------------------------------------------------------------------


class PredictionLogger:
    """Append prediction rows to Parquet under ``root_url``, in the background, losing none.

    Args:
        root_url: the artifact root (``Settings.artifacts_url``): a folder or ``s3://bucket/prefix``.
        s3_endpoint_url: S3-compatible endpoint (MinIO, a loopback server), if not AWS.
        flush_interval: seconds between background writes.
        max_rows: rows the in-memory queue holds before :meth:`log` applies back-pressure.
        max_file_rows: most rows in one Parquet file.
        spill_dir: local folder for rows that cannot be queued or written yet. Each process
            uses its own subfolder ``<spill_dir>/<root key>/<pid>-<id>/``, locked while it
            lives; a new logger for the same root moves dead processes' files into the
            dataset. Default: ``keel-predlog-<uid>`` in the system temp folder.
        put_timeout: seconds :meth:`log` waits for room in a full queue before spilling.
        dataset: ``predictions`` (the default), or ``errors`` for requests a model version
            failed (the same columns plus ``status`` and ``error``).

    Raises:
        InvalidInput: a malformed argument.
        StorageError: the spill folder cannot be created.
    """

    def __init__(
        self,
        root_url: str,
        *,
        s3_endpoint_url: str | None = None,
        flush_interval: float = 1.0,
        max_rows: int = 200_000,
        max_file_rows: int = 100_000,
        spill_dir: str | os.PathLike[str] | None = None,
        put_timeout: float = 5.0,
        dataset: str = PREDICTIONS,
    ) -> None:
        if dataset not in DATASETS:
            raise InvalidInput(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        self._dataset = dataset
        for name, value in (("flush_interval", flush_interval), ("put_timeout", put_timeout)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise InvalidInput(f"{name} must be a number of seconds >= 0, got {value!r}")
        if flush_interval <= 0:
            raise InvalidInput(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
        for name, count in (("max_rows", max_rows), ("max_file_rows", max_file_rows)):
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
                raise InvalidInput(f"{name} must be a whole number >= 1, got {count!r}")
        self._root_url = root_url
        self._s3_endpoint_url = s3_endpoint_url
        self._root = _Root(root_url, s3_endpoint_url)
        self._flush_interval = float(flush_interval)
        self._tick = min(0.05, self._flush_interval)
        self._max_rows = int(max_rows)
        self._wake_rows = max(1, self._max_rows // 2)
        self._max_file_rows = int(max_file_rows)
        self._put_timeout = float(put_timeout)
        self._spill_base = (
            Path(spill_dir).expanduser().resolve() if spill_dir else _default_spill_base()
        )
        self._known: set[str] = set()
        self._known_blocks: set[tuple[str, ...]] = set()
        self._known_columns: set[str] = set()
        self._closed = False
        self._reset_process_state()
        self._start_in_this_process()
        _LIVE.add(self)

    # -- per-process state ----------------------------------------------------------

    def _reset_process_state(self) -> None:
        """Everything that belongs to one process: queue, locks, counters, writer, spill folder."""
        self._pid = os.getpid()
        self._setup_lock = threading.Lock()
        # Producers take _count_lock, only around O(1) work. Writes take _write_lock (an
        # RLock: close() may run in a signal handler on a thread inside flush()). The
        # writer never takes _count_lock, so close() from a handler that interrupted log()
        # cannot deadlock with it.
        self._count_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._queue: deque[_Entry] = deque()
        self._pending: list[_Piece] = []
        # Counters of producers (under _count_lock) ...
        self._rows_in = 0
        self._rows_logged = 0
        self._spilled_by_log = 0
        self._rejected_by_log = 0
        # ... and of the writing side (under _write_lock).
        self._rows_out = 0
        self._rows_written = 0
        self._files_written = 0
        self._spilled_by_writer = 0
        self._rejected_by_writer = 0
        self._rows_recovered = 0
        self._rows_imported = 0
        self._pending_rows = 0
        self._write_errors = 0
        self._failures = 0
        self._stop = False
        self._wake = False
        self._overflowing = False
        self._spill_dirty = False
        self._warned_closed = False
        self._warned_at = 0.0
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._own: Path | None = None

    def _forget_parent(self) -> None:
        """In a forked child: the parent's queue, locks and writer are not ours."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # the parent keeps its own descriptor and lock
        self._reset_process_state()
        self._pid = -1  # set up again on first use in this process

    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        with self._setup_lock:
            if self._pid != os.getpid():
                self._root = _Root(self._root_url, self._s3_endpoint_url)  # fresh connections
                self._start_in_this_process()

    def _start_in_this_process(self) -> None:
        self._pid = os.getpid()
        self._make_own_spill_dir()
        self._adopt_dead_spills()
        self._clean_stale_tmp()
        if self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="keel-predlog-writer", daemon=True)
        self._thread.start()

    # -- spill folders ----------------------------------------------------------------

    @property
    def spill_dir(self) -> Path:
        """This process's spill folder (files waiting to be moved into the dataset)."""
        self._ensure_process()
        assert self._own is not None
        return self._own

    def _make_own_spill_dir(self) -> None:
        # Each dataset spills apart, so a logger never imports another dataset's rows.
        key = (
            self._root.key if self._dataset == PREDICTIONS else f"{self._root.key}-{self._dataset}"
        )
        group = self._spill_base / key
        procid = f"{os.getpid()}-{_uuid8()}"
        staging = group / f".new-{procid}"
        try:
            for attempt in (1, 2):
                group.mkdir(parents=True, exist_ok=True)
                try:
                    staging.mkdir()
                    break
                except FileNotFoundError:  # another logger's close() removed the empty group
                    if attempt == 2:
                        raise
            note = group / "root.txt"
            if not note.exists():
                note.write_text(self._root.url + "\n")
            # Lock, then publish under the final name: a folder without a held lock is a dead one.
            self._lock_fd = _lock_file(staging / ".lock", create=True)
            os.replace(staging, group / procid)
        except OSError as exc:
            raise StorageError(
                f"cannot create the prediction-log spill folder under {self._spill_base}: {exc}; "
                "pass spill_dir= a writable local folder"
            ) from exc
        self._own = group / procid

    def _adopt_dead_spills(self) -> None:
        """Move spill files of dead processes on this root into our folder, to be imported."""
        if sys.platform == "win32" or self._own is None:
            return
        group = self._own.parent
        try:
            folders = sorted(p for p in group.iterdir() if p.is_dir())
        except OSError:
            return
        for folder in folders:
            if folder == self._own:
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
                self._take_over(folder)
            finally:
                if fd >= 0:
                    os.close(fd)

    def _take_over(self, folder: Path) -> None:
        assert self._own is not None
        for sub in sorted(folder.iterdir()):
            if not sub.is_dir():
                continue
            target = self._own / sub.name
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
                self._rows_recovered += rows
                self._spill_dirty = True
        with contextlib.suppress(OSError):
            (folder / ".lock").unlink()
        shutil.rmtree(folder, ignore_errors=True)
        if self._spill_dirty:
            log.info("keel: recovering prediction logs spilled by a dead process in %s", folder)

    def _clean_stale_tmp(self) -> None:
        if self._root.local is None:
            return
        staging = self._root.local / "tmp"
        with contextlib.suppress(OSError):
            for item in staging.glob("predlog-*.part"):
                with contextlib.suppress(OSError):
                    if time.time() - item.stat().st_mtime > _STALE_SECONDS:
                        item.unlink()

    def _remove_own_if_empty(self) -> None:
        """Remove this process's spill folder if nothing is left in it (at close)."""
        if self._own is None:
            return
        with contextlib.suppress(OSError):
            for sub in self._own.iterdir():
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()  # only if empty
            if all(p.name == ".lock" for p in self._own.iterdir()):
                with contextlib.suppress(FileNotFoundError):
                    (self._own / ".lock").unlink()
                self._own.rmdir()
            group = self._own.parent
            if [p.name for p in group.iterdir()] == ["root.txt"]:  # no other logger on this root
                (group / "root.txt").unlink()
                group.rmdir()  # fails, harmlessly, if another logger just started here

    def _write_spill(self, deployment: str, table: pa.Table) -> None:
        """Write rows to a local spill file, atomically. Raises StorageError if even that fails."""
        assert self._own is not None
        folder = self._own / f"deployment={deployment}"
        name = f"spill-{_now_ms()}-{os.getpid()}-{_uuid8()}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            for attempt in (1, 2):
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    _write_parquet_file(table, tmp)
                    break
                except FileNotFoundError:  # the empty folder was just removed by close()
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
        self._spill_dirty = True

    def _reject(self, deployment: str, entries: Sequence[_Entry], exc: BaseException) -> int:
        """Keep rows Arrow cannot take as JSON lines beside the spill files; never drop them."""
        assert self._own is not None
        rows = sum(e.n_rows for e in entries)
        folder = self._own / "rejected"
        path = folder / f"{deployment}-{_now_ms()}-{_uuid8()}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                for e in entries:
                    record = {"deployment": deployment, "n_rows": e.n_rows, "error": str(exc)}
                    record["columns"] = {k: _flatten([v]) for k, v in e.all_columns().items()}
                    fh.write(_json_text(record) + "\n")
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

    # -- logging ---------------------------------------------------------------------------

    def _entry(
        self, deployment: str, columns: Mapping[str, Any], n_rows: int, block: Block | None
    ) -> _Entry | None:
        if deployment not in self._known:
            self._known.add(check_deployment(deployment))
        if type(n_rows) is not int and (  # the common case first: this runs per request
            isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral)
        ):
            raise InvalidInput(f"n_rows must be a whole number >= 0, got {n_rows!r}")
        if n_rows < 0:
            raise InvalidInput(f"n_rows must be a whole number >= 0, got {n_rows!r}")
        n = int(n_rows)
        if n == 0:
            return None
        if not isinstance(columns, Mapping):
            raise InvalidInput(f"columns must be a mapping of name to values, got {type(columns)}")
        missing = [name for name in PREDICTION_COLUMNS if name not in columns]
        if missing:
            raise InvalidInput(
                f"prediction log columns must include {', '.join(PREDICTION_COLUMNS)}; "
                f"missing {', '.join(missing)}"
            )
        cols = dict(columns)
        if block is not None:
            self._check_block(block, n, cols)
        known = self._known_columns
        for name, values in cols.items():
            if name not in known:
                _check_column_name(name)
                if len(known) < 100_000:
                    known.add(name)
            try:
                length = -1 if isinstance(values, str | bytes) else len(values)
            except TypeError:
                length = -1
            if length != n:
                got = "a single value" if length < 0 else f"{length} values"
                raise InvalidInput(
                    f"column {name!r} must hold one value per row ({n}), got {got}; "
                    f"repeat a per-request value as [value] * n_rows"
                )
        times = cols["time"]
        if isinstance(times, np.ndarray):
            ok = times.dtype.kind in "iufM"
        else:
            first = next(iter(times))
            ok = (
                type(first) is int
                or first is None
                or (
                    not isinstance(first, bool)
                    and isinstance(first, numbers.Real | dt.datetime | np.datetime64)
                )
            )
        if not ok:
            raise InvalidInput(
                "column 'time' must hold epoch milliseconds (int) or datetimes, "
                f"got {type(times).__name__} of {type(next(iter(times))).__name__}"
            )
        return _Entry(deployment, cols, n, block)

    def _check_block(self, block: Block, n: int, columns: Mapping[str, Any]) -> None:
        values = block.values
        if (
            not isinstance(values, np.ndarray)
            or values.ndim != 2
            or values.shape != (n, len(block.names))
        ):
            got = getattr(values, "shape", type(values).__name__)
            raise InvalidInput(
                f"a block must be a 2-D array of {n} rows and {len(block.names)} columns "
                f"(one per name), got {got}"
            )
        if block.names not in self._known_blocks:  # names repeat request after request
            for name in block.names:
                _check_column_name(name)
            if len(set(block.names)) != len(block.names):
                raise InvalidInput(f"block column names must be unique, got {block.names}")
            self._known_blocks.add(block.names)
        clash = [name for name in block.names if name in columns]
        if clash:
            raise InvalidInput(f"column(s) {clash} are given both as columns and in the block")

    def log(
        self,
        deployment: str,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        n_rows: int,
        block: Block | None = None,
    ) -> None:
        """Queue one request's rows. O(1) and without I/O while the queue has room.

        The logger keeps references to the given sequences until they are written: do not
        change them after the call.

        Args:
            deployment: deployment name (it names the partition folder).
            columns: ``request_id``, ``time`` (epoch ms or datetime; naive means UTC),
                ``model``, ``version``, ``route``, ``latency_ms``, ``row`` and any
                ``input.<name>``/``output.<name>``; each holds one value per row (a 2-D
                array or a list per row becomes a list column).
            n_rows: rows in this request.
            block: more columns as one 2-D array (a request's inputs, say), stored like
                columns of those names.

        Raises:
            InvalidInput: a missing column, a column of the wrong length, a bad name.
            StorageError: the queue was full and the rows could not be spilled to disk either.
        """
        self._ensure_process()
        entry = self._entry(deployment, columns, n_rows, block)
        if entry is None:
            return
        if self._closed:
            self._spill_from_log(entry, "the logger is closed")
            return
        n = entry.n_rows
        deadline = 0.0
        while True:
            with self._count_lock:
                depth = self._rows_in - self._rows_out
                if depth <= 0 or depth + n <= self._max_rows:
                    self._rows_in += n
                    self._rows_logged += n
                    self._queue.append(entry)
                    break
            self._wake = True
            now = time.monotonic()
            if not deadline:
                deadline = now + self._put_timeout
            if self._overflowing or now >= deadline:
                # Still full: later calls spill at once until the writer drains the queue,
                # so a stuck writer costs one put_timeout, not one per request.
                self._overflowing = True
                self._spill_from_log(entry, "the queue is full")
                return
            time.sleep(min(0.002, max(deadline - now, 0.0)))
        if depth + n >= self._wake_rows:
            self._wake = True
        if self._closed:  # close() ran while we queued: its final flush may have missed us
            self._rescue_after_close()

    def _spill_from_log(self, entry: _Entry, why: str) -> None:
        tables, rejected = _build_all(entry.deployment, [entry])
        for table in tables:
            self._write_spill(entry.deployment, table)
        rejected_rows = sum(self._reject(d, es, exc) for d, es, exc in rejected)
        with self._count_lock:
            self._rows_logged += entry.n_rows
            self._spilled_by_log += entry.n_rows - rejected_rows
            self._rejected_by_log += rejected_rows
        if self._closed and not self._warned_closed:
            self._warned_closed = True
            log.warning(
                "keel: prediction rows logged after close() went to %s (%s); the next logger "
                "on this root moves them into the dataset",
                self._own,
                why,
            )

    def _rescue_after_close(self) -> None:
        with self._write_lock:
            entries = self._drain()
            for piece in self._prepare(entries):
                self._write_spill(piece.deployment, piece.table)
                self._spilled_by_writer += piece.table.num_rows

    # -- writing ------------------------------------------------------------------------------

    def _drain(self) -> list[_Entry]:
        entries: list[_Entry] = []
        queue = self._queue
        while True:
            try:
                entries.append(queue.popleft())
            except IndexError:
                break
        self._rows_out += sum(e.n_rows for e in entries)
        self._overflowing = False
        return entries

    def _prepare(self, entries: Sequence[_Entry]) -> list[_Piece]:
        """Queued requests → named pieces, grouped by deployment and hour, split by file size."""
        by_deployment: dict[str, list[_Entry]] = {}
        for e in entries:
            by_deployment.setdefault(e.deployment, []).append(e)
        pieces: list[_Piece] = []
        for deployment, group in by_deployment.items():
            try:
                tables, rejected = _build_all(deployment, group)
                hours = [split for table in tables for split in _split_hours(table)]
            except Exception as exc:  # a bug, not bad data: still keep the rows
                hours, rejected = [], [(deployment, group, exc)]
            for d, es, why in rejected:
                self._rejected_by_writer += self._reject(d, es, why)
            for hour, part in hours:
                for offset in range(0, part.num_rows, self._max_file_rows):
                    name = f"part-{_now_ms()}-{os.getpid()}-{_uuid8()}.parquet"
                    chunk = part.slice(offset, self._max_file_rows)
                    pieces.append(
                        _Piece(deployment, _file_rel(self._dataset, deployment, hour, name), chunk)
                    )
        return pieces

    def _cycle(self, *, final: bool = False) -> tuple[int, BaseException | None]:
        """Drain the queue and write it with what is pending; returns (rows written, failure)."""
        entries = self._drain()
        if entries:
            self._pending.extend(self._prepare(entries))
        written = 0
        failure: BaseException | None = None
        kept: list[_Piece] = []
        for piece in self._pending:
            if failure is None:
                try:
                    # A retry reuses the piece's name: a write that landed but reported an
                    # error is overwritten, not duplicated.
                    self._root.write_table(piece.rel, piece.table)
                except Exception as exc:
                    failure = exc
                else:
                    written += piece.table.num_rows
                    self._rows_written += piece.table.num_rows
                    self._files_written += 1
                    continue
            kept.append(piece)
        self._pending = kept
        self._pending_rows = sum(p.table.num_rows for p in kept)
        if failure is None and self._spill_dirty:
            try:
                written += self._import_spills()
            except Exception as exc:
                failure = exc
        if failure is None:
            if self._failures:
                log.warning("keel: prediction logs are being written to %s again", self._root.url)
            self._failures = 0
            return written, None
        self._failures += 1
        self._write_errors += 1
        spill = (
            final or self._failures >= _SPILL_AFTER_FAILURES or self._pending_rows > self._max_rows
        )
        if spill and self._pending:
            self._spill_pending()
        now = time.monotonic()
        if self._failures == 1 or now - self._warned_at >= 60:  # once a minute in an outage
            self._warned_at = now
            log.warning(
                "keel: cannot write prediction logs to %s (%s); %d rows kept in memory, %d in "
                "local spill files under %s; retrying every %.3g s",
                self._root.url,
                _fault(failure, self._root.url),
                self._pending_rows,
                self._spilled_rows_pending(),
                self._own,
                self._flush_interval,
            )
        return written, failure

    def _spill_pending(self) -> None:
        kept: list[_Piece] = []
        for piece in self._pending:
            try:
                self._write_spill(piece.deployment, piece.table)
            except StorageError as exc:
                log.error("keel: %s", exc)
                kept.append(piece)
            else:
                self._spilled_by_writer += piece.table.num_rows
        self._pending = kept
        self._pending_rows = sum(p.table.num_rows for p in kept)

    def _import_spills(self) -> int:
        """Move spill files (ours and adopted) into the dataset; exactly once, even across crashes.

        Files are moved into a batch folder first; the batch's output names are derived from
        its content, and the folder is renamed away only after every output is written. A
        crash anywhere in between makes the next import write the same names again.
        """
        assert self._own is not None
        written = 0
        self._spill_dirty = False  # a spill landing during this pass sets it again
        try:
            for sub in sorted(self._own.glob("deployment=*")):
                written += self._import_folder(sub)
        except BaseException:
            self._spill_dirty = True
            raise
        return written

    def _import_folder(self, sub: Path) -> int:
        """Import one ``deployment=<name>`` spill folder: unfinished batches, then loose files."""
        written = 0
        deployment = sub.name.split("=", 1)[1]
        for leftover in sub.glob(".done-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for batch in sorted(sub.glob("import-*")):
            written += self._import_batch(deployment, batch)
        loose = sorted(p for p in sub.glob("spill-*.parquet"))
        while loose:
            chunk: list[Path] = []
            rows = 0
            while loose and len(chunk) < 256:
                size = _spill_rows(loose[0])
                if chunk and rows + size > self._max_file_rows:
                    break
                chunk.append(loose.pop(0))
                rows += size
            batch = sub / f"import-{_uuid8()}"
            batch.mkdir()
            for path in chunk:
                os.replace(path, batch / path.name)
            written += self._import_batch(deployment, batch)
        return written

    def _import_batch(self, deployment: str, batch: Path) -> int:
        files = sorted(batch.glob("spill-*.parquet"))
        tables: list[pa.Table] = []
        for path in files:
            try:
                tables.append(pq.read_table(path))
            except (OSError, pa.ArrowException) as exc:
                assert self._own is not None
                target = self._own / "rejected"
                target.mkdir(exist_ok=True)
                os.replace(path, target / path.name)
                log.error("keel: spill file %s is unreadable (%s); moved to %s", path, exc, target)
        if not files:
            shutil.rmtree(batch, ignore_errors=True)
            return 0
        match = _SPILL_RE.match(files[0].name)
        stamp, pid = (match.group(1), match.group(2)) if match else (str(_now_ms()), "0")
        key = "\n".join(p.name for p in files)
        rows = 0
        for t_index, table in enumerate(_unify_tables(tables)):
            for hour, part in _split_hours(table):
                for offset in range(0, part.num_rows, self._max_file_rows):
                    digest = hashlib.sha256(f"{key}|{t_index}|{hour}|{offset}".encode()).hexdigest()
                    rel = _file_rel(
                        self._dataset, deployment, hour, f"part-{stamp}-{pid}-{digest[:8]}.parquet"
                    )
                    chunk = part.slice(offset, self._max_file_rows)
                    self._root.write_table(rel, chunk)
                    rows += chunk.num_rows
                    self._files_written += 1
        done = batch.parent / f".done-{batch.name}"
        os.replace(batch, done)
        shutil.rmtree(done, ignore_errors=True)
        self._rows_imported += rows
        self._rows_written += rows
        return rows

    def _spilled_rows_pending(self) -> int:
        spilled = self._spilled_by_log + self._spilled_by_writer + self._rows_recovered
        return max(0, spilled - self._rows_imported)

    def _run(self) -> None:
        next_at = time.monotonic() + self._flush_interval
        while not self._stop:
            time.sleep(self._tick)
            if self._stop:
                break
            due = (
                self._wake
                or time.monotonic() >= next_at
                or self._rows_in - self._rows_out >= self._wake_rows
            )
            if not due:
                continue
            self._wake = False
            try:
                with self._write_lock:
                    if not self._stop:
                        self._cycle()
            except Exception:  # the writer must outlive anything; rows stay queued or pending
                log.exception("keel: prediction log writer failed; retrying")
            next_at = time.monotonic() + self._flush_interval

    # -- public control ----------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued or pending now, and any spilled files; return rows written.

        Raises:
            StorageError, BackendUnavailable: the root cannot be written; the rows are kept
                (in memory, or spilled after repeated failures) and retried.
        """
        self._ensure_process()
        if self._closed:
            return 0
        with self._write_lock:
            written, failure = self._cycle()
        if failure is not None:
            raise _fault(failure, self._root.url) from failure
        return written

    def close(self) -> None:
        """Flush and stop the writer; idempotent. Rows that cannot be written are spilled.

        The spill folder is released, so the next logger on this root moves whatever is left
        in it into the dataset.

        Raises:
            StorageError: rows could be neither written nor spilled to local disk.
        """
        if self._closed or self._pid != os.getpid():
            self._closed = True
            return
        self._closed = True
        self._stop = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(60.0, self._flush_interval * 2))
        with self._write_lock:
            self._spill_dirty = True  # look at the spill folder one last time
            _, failure = self._cycle(final=True)
            left = self._pending_rows
        if failure is not None:
            log.warning(
                "keel: prediction logs not written to %s at close (%s); %d rows are in %s for "
                "the next logger on this root",
                self._root.url,
                failure,
                self._spilled_rows_pending(),
                self._own,
            )
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        self._remove_own_if_empty()
        _LIVE.discard(self)
        if left:
            raise StorageError(
                f"{left} prediction rows could be neither written to {self._root.url} nor spilled "
                f"to {self._own}; fix the spill folder's disk before the process exits"
            )

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters for monitoring this process's logger.

        Keys: ``queue_rows`` (rows queued now), ``rows_logged`` (accepted by :meth:`log`),
        ``rows_written`` (into the dataset, including imported spill files),
        ``files_written``, ``rows_spilled`` (to local spill files, ever),
        ``spilled_rows_pending`` (in spill files not yet imported), ``pending_rows`` (in
        memory after a failed write), ``rows_recovered`` (adopted from dead processes),
        ``rows_rejected`` (not convertible to Arrow; kept as JSON lines), ``write_errors``
        (failed write attempts). After a clean close: ``rows_written == rows_logged +
        rows_recovered - rows_rejected``.
        """
        return {
            "queue_rows": max(0, self._rows_in - self._rows_out),
            "rows_logged": self._rows_logged,
            "rows_written": self._rows_written,
            "files_written": self._files_written,
            "rows_spilled": self._spilled_by_log + self._spilled_by_writer,
            "spilled_rows_pending": self._spilled_rows_pending(),
            "pending_rows": self._pending_rows,
            "rows_recovered": self._rows_recovered,
            "rows_rejected": self._rejected_by_log + self._rejected_by_writer,
            "write_errors": self._write_errors,
        }

    # -- feedback -------------------------------------------------------------------------------

    def log_feedback(
        self,
        deployment: str,
        request_ids: Sequence[str],
        labels: Sequence[Any],
        rows: Sequence[int | None] | None = None,
    ) -> int:
        """Store labels that arrived after the predictions, joined later by request id (and row).

        Written synchronously, as one file under ``feedback/deployment=<name>/hour=<now>/``.

        Args:
            deployment: deployment the predictions came from.
            request_ids: the request id of each label.
            labels: any JSON-able values; stored as JSON text, and as a number when they are one.
            rows: the row within the request each label is for; ``None`` (or a None entry)
                means every row of that request.

        Returns:
            the number of labels written.

        Raises:
            InvalidInput: lengths differ, or an id or row is malformed.
            StorageError, BackendUnavailable: the root cannot be written.
        """
        self._ensure_process()
        check_deployment(deployment)
        ids = list(request_ids)
        values = list(labels)
        if len(values) != len(ids):
            raise InvalidInput(
                f"give one label per request id: {len(ids)} ids, {len(values)} labels"
            )
        row_list: list[int | None] = [None] * len(ids) if rows is None else list(rows)
        if len(row_list) != len(ids):
            raise InvalidInput(f"give one row per request id: {len(ids)} ids, {len(row_list)} rows")
        for i, request_id in enumerate(ids):
            if not isinstance(request_id, str) or not request_id:
                raise InvalidInput(
                    f"request id #{i} must be a non-empty string, got {request_id!r}"
                )
        for i, row in enumerate(row_list):
            if row is not None and (
                isinstance(row, bool) or not isinstance(row, numbers.Integral) or row < 0
            ):
                raise InvalidInput(f"row #{i} must be a whole number >= 0 or None, got {row!r}")
        if not ids:
            return 0
        texts: list[str] = []
        nums: list[float | None] = []
        for value in values:
            plain = value.item() if isinstance(value, np.generic) else value
            texts.append(_json_text(plain))
            nums.append(float(plain) if isinstance(plain, numbers.Real) else None)
        now = _now_ms()
        table = pa.Table.from_arrays(
            [
                pa.array(ids, pa.string()),
                pa.array([None if r is None else int(r) for r in row_list], pa.int64()),
                pa.array(texts, pa.string()),
                pa.array(nums, pa.float64()),
                pa.array([now] * len(ids), pa.int64()).cast(UTC_MS),
            ],
            schema=FEEDBACK_SCHEMA,
        )
        name = f"part-{now}-{os.getpid()}-{_uuid8()}.parquet"
        rel = f"{FEEDBACK}/deployment={deployment}/hour={_hour_label(now // HOUR_MS)}/{name}"
        self._root.write_table(rel, table)
        return len(ids)


def _build_all(
    deployment: str, entries: Sequence[_Entry]
) -> tuple[list[pa.Table], list[tuple[str, list[_Entry], BaseException]]]:
    """Tables for a deployment's requests, plus the requests that cannot be converted."""
    by_columns: dict[tuple[Any, ...], list[_Entry]] = {}
    for e in entries:
        key = (tuple(e.columns), None if e.block is None else e.block.names)
        by_columns.setdefault(key, []).append(e)
    tables: list[pa.Table] = []
    rejected: list[tuple[str, list[_Entry], BaseException]] = []
    for group in by_columns.values():
        try:
            tables.append(_build(group))
            continue
        except (pa.ArrowException, TypeError, ValueError, OverflowError, KeelError):
            pass
        for e in group:  # isolate the request(s) that cannot be converted
            try:
                tables.append(_build([e]))
            except (pa.ArrowException, TypeError, ValueError, OverflowError, KeelError) as exc:
                rejected.append((deployment, [e], exc))
    return _unify_tables(tables), rejected


def _spill_rows(path: Path) -> int:
    if path.is_dir():
        return sum(pq.read_metadata(p).num_rows for p in path.glob("spill-*.parquet"))
    return int(pq.read_metadata(path).num_rows)


# -- readers --------------------------------------------------------------------------------------


def _unify_schemas(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for all files: permissive promotion; irreconcilable columns become strings."""
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
        pass
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            seen = types.get(f.name)
            if seen is None:
                types[f.name] = f.type
            elif seen != f.type:
                try:
                    merged = pa.unify_schemas(
                        [pa.schema([(f.name, seen)]), pa.schema([f])], promote_options="permissive"
                    )
                    types[f.name] = merged.field(f.name).type
                except (pa.ArrowException, TypeError, ValueError):
                    types[f.name] = pa.string()
    return pa.schema(list(types.items()))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: missing columns null, others cast (JSON text if no cast exists)."""
    arrays = []
    for f in schema:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.type != f.type:
            try:
                column = column.cast(f.type)
            except (pa.ArrowException, TypeError, ValueError):
                column = pa.chunked_array(
                    [pa.array([_json_text(v) for v in column.to_pylist()], pa.string())]
                ).cast(f.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


class _Scan(NamedTuple):
    root: _Root
    files: list[str]
    schema: pa.Schema
    columns: list[str] | None
    filter: ds.Expression | None
    by_file: bool  # some file has a column Arrow cannot cast to the unified type while scanning


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    try:
        pa.array([], type=source).cast(target)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


def _prediction_scan(
    root_url: str,
    deployment: str,
    start: Any,
    end: Any,
    columns: Sequence[str] | None,
    s3_endpoint_url: str | None,
    dataset: str = PREDICTIONS,
) -> _Scan:
    check_deployment(deployment)
    if dataset not in DATASETS:
        raise InvalidInput(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise InvalidInput(f"end ({end!r}) is before start ({start!r})")
    root = _Root(root_url, s3_endpoint_url)
    base = f"{dataset}/deployment={deployment}"
    files: list[str] = []
    # Partition pruning: only the hour folders overlapping [start, end) are listed.
    for name, is_dir in sorted(root.listdir(base)):
        match = _HOUR_RE.match(name)
        if not is_dir or not match:
            continue
        hour_start = _hour_start_ms(match.group(1))
        if start_ms is not None and hour_start + HOUR_MS <= start_ms:
            continue
        if end_ms is not None and hour_start >= end_ms:
            continue
        files.extend(root.parquet_files(f"{base}/{name}"))
    by_file = False
    if files:
        schemas = [m.schema.to_arrow_schema() for m in root.footers(files)]
        schema = _unify_schemas(schemas)
        by_file = any(
            not _castable(f.type, schema.field(f.name).type)
            for s in schemas
            for f in s
            if f.type != schema.field(f.name).type
        )
    else:
        schema = pa.schema(list(PREDICTION_COLUMNS.items()))
    selected: list[str] | None = None
    if columns is not None:
        selected = list(columns)
        unknown = [c for c in selected if c not in schema.names]
        if unknown and files:
            raise InvalidInput(
                f"no column {', '.join(map(repr, unknown))} in the prediction logs of "
                f"{deployment!r}; columns: {', '.join(schema.names)}"
            )
    expr: ds.Expression | None = None
    if start_ms is not None:
        expr = ds.field("time") >= pa.scalar(start_ms, UTC_MS)
    if end_ms is not None:
        upper = ds.field("time") < pa.scalar(end_ms, UTC_MS)
        expr = upper if expr is None else expr & upper
    return _Scan(root, files, schema, selected, expr, by_file)


def _scan_batches(scan: _Scan, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if not scan.files:
        return
    root = scan.root
    if not scan.by_file:
        dataset = ds.dataset(
            [root.path(f) for f in scan.files],
            schema=scan.schema,
            format="parquet",
            filesystem=root.pa_fs,
        )
        try:
            yield from dataset.to_batches(
                columns=scan.columns, filter=scan.filter, batch_size=batch_rows
            )
        except Exception as exc:
            raise _fault(exc, root.describe(scan.files[0].split("/", 1)[0] + "/")) from exc
        return
    for rel in scan.files:  # slower: convert each file to the unified schema here
        with root.errors(rel):
            table = pq.read_table(root.path(rel), filesystem=root.pa_fs)
        table = _conform(table, scan.schema)
        if scan.filter is not None:
            table = table.filter(scan.filter)
        if scan.columns is not None:
            table = table.select(scan.columns)
        yield from table.to_batches(max_chunksize=batch_rows)


def read_predictions(
    root_url: str,
    deployment: str,
    *,
    start: Any = None,
    end: Any = None,
    columns: Sequence[str] | None = None,
    s3_endpoint_url: str | None = None,
    dataset: str = PREDICTIONS,
) -> pa.Table:
    """The prediction rows of ``deployment`` with ``start <= time < end``, oldest first.

    Only the hour folders overlapping the window are listed and read; rows inside them are
    filtered by ``time`` (using each file's statistics). Files with different columns are
    unified: missing columns read as null.

    Args:
        root_url: the artifact root the logger wrote to.
        deployment: deployment name.
        start: inclusive lower bound: datetime (naive = UTC), epoch ms or ISO-8601 text.
        end: exclusive upper bound, the same kinds.
        columns: the columns to return (default all).
        s3_endpoint_url: S3-compatible endpoint, if not AWS.
        dataset: ``predictions``, or ``errors`` for the requests a model version failed.

    Raises:
        InvalidInput: a malformed bound or deployment name, or an unknown column.
        StorageError: a file in the window is unreadable, or the bucket is missing.
        BackendUnavailable: the store cannot be reached.
    """
    scan = _prediction_scan(root_url, deployment, start, end, columns, s3_endpoint_url, dataset)
    schema = _projected(scan)
    batches = list(_scan_batches(scan, 1 << 20))
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    if "time" in table.column_names and table.num_rows:
        table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
    return table


def _projected(scan: _Scan) -> pa.Schema:
    """The schema of what the scan returns: the chosen columns (null-typed if never logged)."""
    if scan.columns is None:
        return scan.schema
    names = scan.schema.names
    return pa.schema(
        [scan.schema.field(c) if c in names else pa.field(c, pa.null()) for c in scan.columns]
    )


def iter_prediction_batches(
    root_url: str,
    deployment: str,
    *,
    start: Any = None,
    end: Any = None,
    columns: Sequence[str] | None = None,
    batch_rows: int = 65_536,
    s3_endpoint_url: str | None = None,
    dataset: str = PREDICTIONS,
) -> Iterator[pa.RecordBatch]:
    """Like :func:`read_predictions`, as record batches of at most ``batch_rows`` rows.

    Batches come file by file (hour by hour, then in the order the files were written),
    not sorted by time; memory stays at about one batch. Arguments are checked and the
    window's files listed when this is called, not at the first batch.
    """
    if (
        isinstance(batch_rows, bool)
        or not isinstance(batch_rows, numbers.Integral)
        or batch_rows < 1
    ):
        raise InvalidInput(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
    scan = _prediction_scan(root_url, deployment, start, end, columns, s3_endpoint_url, dataset)
    return (b for b in _scan_batches(scan, int(batch_rows)) if b.num_rows)


def read_feedback(
    root_url: str, deployment: str, *, s3_endpoint_url: str | None = None
) -> pa.Table:
    """Every label stored for ``deployment`` (:data:`FEEDBACK_SCHEMA`), oldest first."""
    check_deployment(deployment)
    root = _Root(root_url, s3_endpoint_url)
    files = root.parquet_tree(f"{FEEDBACK}/deployment={deployment}")
    if not files:
        return FEEDBACK_SCHEMA.empty_table()
    dataset = ds.dataset(
        [root.path(f) for f in files],
        schema=FEEDBACK_SCHEMA,
        format="parquet",
        filesystem=root.pa_fs,
    )
    try:
        table = dataset.to_table()
    except Exception as exc:
        raise _fault(exc, root.describe(f"{FEEDBACK}/deployment={deployment}")) from exc
    return table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))


def count_rows(
    root_url: str,
    deployment: str,
    *,
    s3_endpoint_url: str | None = None,
    dataset: str = PREDICTIONS,
) -> int:
    """Prediction rows stored for ``deployment``, from Parquet footers only."""
    check_deployment(deployment)
    root = _Root(root_url, s3_endpoint_url)
    files = root.parquet_tree(f"{dataset}/deployment={deployment}")
    return sum(int(m.num_rows) for m in root.footers(files))


def logged_deployments(
    root_url: str, *, s3_endpoint_url: str | None = None, dataset: str = PREDICTIONS
) -> list[str]:
    """The deployments with a folder of logs under the root (one listing, no file read)."""
    root = _Root(root_url, s3_endpoint_url)
    return sorted(
        name.removeprefix("deployment=")
        for name, is_dir in root.listdir(dataset)
        if is_dir and name.startswith("deployment=")
    )
