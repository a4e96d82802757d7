"""The prediction logger: a bounded in-memory queue and a writer thread that loses no row.

The serving process hands each request's rows to :meth:`PredictionLogger.log`,
which queues them in memory (bounded); a writer thread appends them as
Parquet files, one per deployment, hour and flush, through the root's artifact
backend (:mod:`keel.predictions.layout` names the files).

What is guaranteed:

- **Nothing is dropped silently.** :meth:`PredictionLogger.log` enqueues
  without I/O while the queue has room; when it is full it waits up to
  ``put_timeout`` for the writer, then writes the rows to a local *spill* file.
  When writing to the root fails (bucket missing, network down) the rows stay
  in memory and are retried every interval; after a few failures they are
  spilled too. Spill files are moved into the dataset once the root works,
  by this process or, if it died, by the next logger started on the same root
  and spill folder (:mod:`keel.predictions.spill`). Rows that cannot be
  converted to Arrow at all (a caller bug) are written as JSON lines under
  ``rejected/`` in the spill folder and logged as an error.
- **Files are whole or absent.** The backend writes each file atomically
  (a local file under ``tmp/`` in the root, flushed and renamed into place; an
  object store PUT). A process killed mid-write leaves no partial file under
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
import datetime as dt
import logging
import numbers
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from keel.artifacts.backends import Backend
from keel.errors import InvalidInput, StorageError
from keel.predictions.arrow import Block, Entry, build_tables, split_hours
from keel.predictions.feedback import write_labels
from keel.predictions.layout import (
    check_deployment,
    fault,
    file_key,
    now_ms,
    open_root,
    part_name,
    root_key,
    tag8,
)
from keel.predictions.schema import (
    PREDICTION_COLUMNS,
    PREDICTIONS,
    check_column_name,
    check_dataset,
)
from keel.predictions.spill import SpillFolder, default_spill_base

__all__ = ["PredictionLogger"]

# The logger name operators already configure: these messages came from serving before.
log = logging.getLogger("keel.serving")

_SPILL_AFTER_FAILURES = 3  # consecutive failed flushes before queued rows go to local disk


class _Piece(NamedTuple):
    """Rows ready to write: one deployment, one hour, at most ``max_file_rows``; named once."""

    deployment: str
    key: str
    table: pa.Table


# -- process bookkeeping: live loggers, exit and fork ---------------------------------------------

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


class PredictionLogger:
    """Append prediction rows to Parquet under ``root_url``, in the background, losing none.

    Args:
        root_url: the artifact root (``Settings.artifacts_url``): a folder or
            ``s3://bucket/prefix``, or an artifact backend to write through.
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
            failed (the same columns plus those of
            :data:`~keel.predictions.schema.ERROR_COLUMNS`).

    Raises:
        InvalidInput: a malformed argument.
        StorageError: the spill folder cannot be created.
    """

    def __init__(
        self,
        root_url: str | Backend,
        *,
        s3_endpoint_url: str | None = None,
        flush_interval: float = 1.0,
        max_rows: int = 200_000,
        max_file_rows: int = 100_000,
        spill_dir: str | os.PathLike[str] | None = None,
        put_timeout: float = 5.0,
        dataset: str = PREDICTIONS,
    ) -> None:
        self._dataset = check_dataset(dataset)
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
        self._root = open_root(root_url, s3_endpoint_url)
        self._flush_interval = float(flush_interval)
        self._tick = min(0.05, self._flush_interval)
        self._max_rows = int(max_rows)
        self._wake_rows = max(1, self._max_rows // 2)
        self._max_file_rows = int(max_file_rows)
        self._put_timeout = float(put_timeout)
        self._spill_base = (
            Path(spill_dir).expanduser().resolve() if spill_dir else default_spill_base()
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
        self._queue: deque[Entry] = deque()
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
        self._pending_rows = 0
        self._write_errors = 0
        self._failures = 0
        self._stop = False
        self._wake = False
        self._overflowing = False
        self._warned_closed = False
        self._warned_at = 0.0
        self._thread: threading.Thread | None = None
        # Each dataset spills apart, so a logger never imports another dataset's rows.
        key = root_key(self._root)
        group = key if self._dataset == PREDICTIONS else f"{key}-{self._dataset}"
        self._spill = SpillFolder(self._spill_base, group, self._root.url)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's queue, locks and writer are not ours."""
        self._spill.forget()
        self._reset_process_state()
        self._pid = -1  # set up again on first use in this process

    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        with self._setup_lock:
            if self._pid != os.getpid():
                if isinstance(self._root_url, str):  # fresh connections, not the parent's
                    self._root = open_root(self._root_url, self._s3_endpoint_url)
                self._start_in_this_process()

    def _start_in_this_process(self) -> None:
        self._pid = os.getpid()
        self._spill.open()
        self._spill.adopt_dead()
        if self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="keel-predlog-writer", daemon=True)
        self._thread.start()

    @property
    def spill_dir(self) -> Path:
        """This process's spill folder (files waiting to be moved into the dataset)."""
        self._ensure_process()
        assert self._spill.path is not None
        return self._spill.path

    # -- logging ---------------------------------------------------------------------------

    def _entry(
        self, deployment: str, columns: Mapping[str, Any], n_rows: int, block: Block | None
    ) -> Entry | None:
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
                check_column_name(name)
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
        return Entry(deployment, cols, n, block)

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
                check_column_name(name)
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

    def _spill_from_log(self, entry: Entry, why: str) -> None:
        tables, rejected = build_tables(entry.deployment, [entry])
        for table in tables:
            self._spill.write(entry.deployment, table)
        rejected_rows = sum(self._spill.reject(d, es, exc) for d, es, exc in rejected)
        with self._count_lock:
            self._rows_logged += entry.n_rows
            self._spilled_by_log += entry.n_rows - rejected_rows
            self._rejected_by_log += rejected_rows
        if self._closed and not self._warned_closed:
            self._warned_closed = True
            log.warning(
                "keel: prediction rows logged after close() went to %s (%s); the next logger "
                "on this root moves them into the dataset",
                self._spill.path,
                why,
            )

    def _rescue_after_close(self) -> None:
        with self._write_lock:
            entries = self._drain()
            for piece in self._prepare(entries):
                self._spill.write(piece.deployment, piece.table)
                self._spilled_by_writer += piece.table.num_rows

    # -- writing ------------------------------------------------------------------------------

    def _drain(self) -> list[Entry]:
        entries: list[Entry] = []
        queue = self._queue
        while True:
            try:
                entries.append(queue.popleft())
            except IndexError:
                break
        self._rows_out += sum(e.n_rows for e in entries)
        self._overflowing = False
        return entries

    def _prepare(self, entries: Sequence[Entry]) -> list[_Piece]:
        """Queued requests → named pieces, grouped by deployment and hour, split by file size."""
        by_deployment: dict[str, list[Entry]] = {}
        for e in entries:
            by_deployment.setdefault(e.deployment, []).append(e)
        pieces: list[_Piece] = []
        for deployment, group in by_deployment.items():
            try:
                tables, rejected = build_tables(deployment, group)
                hours = [split for table in tables for split in split_hours(table)]
            except Exception as exc:  # a bug, not bad data: still keep the rows
                hours, rejected = [], [(deployment, group, exc)]
            for d, es, why in rejected:
                self._rejected_by_writer += self._spill.reject(d, es, why)
            for hour, part in hours:
                for offset in range(0, part.num_rows, self._max_file_rows):
                    name = part_name(now_ms(), os.getpid(), tag8())
                    chunk = part.slice(offset, self._max_file_rows)
                    key = file_key(self._dataset, deployment, hour, name)
                    pieces.append(_Piece(deployment, key, chunk))
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
                    self._root.put_table(piece.key, piece.table)
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
        if failure is None and self._spill.dirty:
            try:
                written += self._spill.import_into(self._root, self._dataset, self._max_file_rows)
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
                fault(failure, self._root.url),
                self._pending_rows,
                self._spilled_rows_pending(),
                self._spill.path,
                self._flush_interval,
            )
        return written, failure

    def _spill_pending(self) -> None:
        kept: list[_Piece] = []
        for piece in self._pending:
            try:
                self._spill.write(piece.deployment, piece.table)
            except StorageError as exc:
                log.error("keel: %s", exc)
                kept.append(piece)
            else:
                self._spilled_by_writer += piece.table.num_rows
        self._pending = kept
        self._pending_rows = sum(p.table.num_rows for p in kept)

    def _spilled_rows_pending(self) -> int:
        spilled = self._spilled_by_log + self._spilled_by_writer + self._spill.rows_recovered
        return max(0, spilled - self._spill.rows_imported)

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
            raise fault(failure, self._root.url) from failure
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
            self._spill.dirty = True  # look at the spill folder one last time
            _, failure = self._cycle(final=True)
            left = self._pending_rows
        if failure is not None:
            log.warning(
                "keel: prediction logs not written to %s at close (%s); %d rows are in %s for "
                "the next logger on this root",
                self._root.url,
                failure,
                self._spilled_rows_pending(),
                self._spill.path,
            )
        self._spill.release()
        _LIVE.discard(self)
        if left:
            raise StorageError(
                f"{left} prediction rows could be neither written to {self._root.url} nor spilled "
                f"to {self._spill.path}; fix the spill folder's disk before the process exits"
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
        spill = self._spill
        return {
            "queue_rows": max(0, self._rows_in - self._rows_out),
            "rows_logged": self._rows_logged,
            "rows_written": self._rows_written + spill.rows_imported,
            "files_written": self._files_written + spill.files_written,
            "rows_spilled": self._spilled_by_log + self._spilled_by_writer,
            "spilled_rows_pending": self._spilled_rows_pending(),
            "pending_rows": self._pending_rows,
            "rows_recovered": spill.rows_recovered,
            "rows_rejected": self._rejected_by_log + self._rejected_by_writer,
            "write_errors": self._write_errors,
        }

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
        return write_labels(self._root, deployment, request_ids, labels, rows)
