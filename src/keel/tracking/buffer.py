"""Buffered metric logging: cheap per point, flushed in bulk.

``keel.log_metric`` appends to an in-memory list; a daemon thread writes
the list in one transaction every ``flush_interval`` seconds (default 1),
and ``end_run``, ``keel.flush()`` and interpreter exit flush at once. A
process killed with SIGKILL loses at most the points of its last interval.

If writing fails (the database is unreachable), the points stay buffered
and the next flush retries. The buffer is bounded: past ``max_points`` the
logging call itself flushes, so a persistent failure surfaces to the caller
as an exception instead of growing memory without end.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence

from keel.tracking.client import MetricRow

__all__ = ["MetricBuffer"]

log = logging.getLogger("keel.tracking")

_buffers: weakref.WeakSet[MetricBuffer] = weakref.WeakSet()


class MetricBuffer:
    """Collects metric points and writes them with ``sink`` in batches.

    Args:
        sink: writes a batch of rows in one transaction; raises on failure.
        interval: seconds between background flushes.
        max_points: buffered points beyond which ``add`` flushes synchronously.
    """

    def __init__(
        self,
        sink: Callable[[Sequence[MetricRow]], None],
        interval: float = 1.0,
        max_points: int = 200_000,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.max_points = max_points
        self._points: list[MetricRow] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _buffers.add(self)

    def add(self, row: MetricRow) -> None:
        """Buffer one point; starts the flusher thread on first use."""
        with self._lock:
            self._points.append(row)
            size = len(self._points)
        if self._thread is None:
            self._start()
        if size >= self.max_points:
            self.flush()

    def extend(self, rows: Sequence[MetricRow]) -> None:
        with self._lock:
            self._points.extend(rows)
            size = len(self._points)
        if self._thread is None:
            self._start()
        if size >= self.max_points:
            self.flush()

    def __len__(self) -> int:
        return len(self._points)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="keel-metric-flusher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # keep the points; the next tick retries
                log.warning("keel: could not write buffered metrics, will retry: %s", exc)

    def flush(self) -> int:
        """Write every buffered point now; return how many were written.

        On failure the points are put back, in order, and the error propagates.
        """
        with self._flush_lock:
            with self._lock:
                points, self._points = self._points, []
            if not points:
                return 0
            try:
                self.sink(points)
            except BaseException:
                with self._lock:
                    self._points[:0] = points
                raise
            return len(points)

    def close(self) -> None:
        """Flush and stop the background thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, self.interval * 2))
        self.flush()

    def _after_fork(self) -> None:
        # A forked child inherits the points (the parent will write them) but
        # not the thread; start clean.
        self._points = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._pid = os.getpid()


def _reset_after_fork() -> None:
    for buffer in list(_buffers):
        buffer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
