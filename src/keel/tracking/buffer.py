"""Buffered metric logging: cheap per point, flushed in bulk, never far behind.

``keel.log_metric`` appends to an in-memory list; a daemon thread writes
the list in one transaction every ``flush_interval`` seconds (default 1),
and ``end_run``, ``keel.flush()`` and interpreter exit flush at once.

The promise: a process killed with SIGKILL loses at most the points logged
in its last interval plus the flush under way. Two rules keep it when
logging outruns the store (a busy machine, a slow database):

- Fixed schedule: a flush starts at most ``interval`` after the previous
  one *started* (not after it ended), and at once when the buffer is full.
- Back-pressure: the buffer holds at most what the store can write in half
  an interval, measured on the previous flush (points written / seconds
  the write took). While it is that full, ``add`` waits; the wait ends as
  soon as the next flush takes the points. So no batch takes much longer
  than half an interval to write, the backlog cannot grow, and logging
  slows to the store's pace instead.

Half rather than a whole interval because the measure is the previous
flush's: the next may run slower (the machine got busier, the logging
thread holds the GIL more), and the margin absorbs a twofold slowdown. A
flush that wrote few points measures a low rate (its fixed cost dominates),
which only makes the next batch smaller; a burst grows the capacity back
within a flush or two.

If writing fails (the database is unreachable), the points stay buffered
and the next flush retries. Back-pressure pauses until a flush succeeds
again, since waiting on a writer that cannot write would hang the caller;
the buffer stays bounded by ``max_points``, past which the logging call
itself flushes, so a persistent failure surfaces to the caller as an
exception instead of growing memory without end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from keel.tracking.client import MetricRow

__all__ = ["MetricBuffer"]

log = logging.getLogger("keel.tracking")

_buffers: weakref.WeakSet[MetricBuffer] = weakref.WeakSet()

#: Capacity before any flush has measured the store: a batch any store writes fast.
_FIRST_CAPACITY = 10_000
#: Capacity floor, so that one slow flush (a lock wait) cannot throttle logging to a crawl.
_MIN_CAPACITY = 100


class MetricBuffer:
    """Collects metric points and writes them with ``sink`` in batches.

    Args:
        sink: writes a batch of rows in one transaction; raises on failure.
        interval: seconds between background flushes; also the loss bound.
        max_points: buffered points beyond which ``add`` flushes synchronously
            (reached only while flushes fail: back-pressure holds far fewer).
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
        self._init_state()
        _buffers.add(self)

    def _init_state(self) -> None:
        self._points: list[MetricRow] = []
        # Guards the points and the fields below. Producers wait on the condition
        # for room, the flusher for its next tick or a full buffer; the hot path
        # takes the bare lock, which is cheaper to enter than the condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._flush_lock = threading.Lock()  # one flush at a time, in order
        self._closed = False
        self._thread: threading.Thread | None = None
        self._capacity = min(self.max_points, _FIRST_CAPACITY)
        self._healthy = True  # the last flush succeeded (or none ran yet)
        self._last_start = time.monotonic()
        self._pid = os.getpid()

    @property
    def capacity(self) -> int:
        """Points the buffer takes before ``add`` waits for a flush."""
        return self._capacity

    def add(self, row: MetricRow) -> None:
        """Buffer one point, waiting first while the buffer is full (see the module doc)."""
        if self._thread is None:
            self._start()
        with self._lock:
            if len(self._points) >= self._capacity:
                self._wait_for_room()
            self._points.append(row)
            size = len(self._points)
        if size >= self.max_points:
            self.flush()

    def extend(self, rows: Sequence[MetricRow]) -> None:
        """Buffer several points, waiting first while the buffer is full."""
        if self._thread is None:
            self._start()
        with self._lock:
            if len(self._points) >= self._capacity:
                self._wait_for_room()
            self._points.extend(rows)
            size = len(self._points)
        if size >= self.max_points:
            self.flush()

    def __len__(self) -> int:
        return len(self._points)

    def _wait_for_room(self) -> None:
        # Called holding the lock. Wake the flusher so it flushes now, not at
        # its next tick, then wait until a flush takes the points. Waiting needs a
        # writer that can make room: not while flushes fail, not after close.
        self._cond.notify_all()
        while (
            len(self._points) >= self._capacity
            and self._healthy
            and not self._closed
            and self._thread is not None
            and self._thread.is_alive()
        ):
            # The timeout only re-checks that the flusher is still alive.
            self._cond.wait(self.interval)

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="keel-metric-flusher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    due = self._last_start + self.interval - time.monotonic()
                    full = self._healthy and len(self._points) >= self._capacity
                    if due <= 0 or full:
                        break
                    self._cond.wait(due)
                if self._closed:
                    return
            try:
                self.flush()
            except Exception as exc:  # keep the points; the next tick retries
                log.warning("keel: could not write buffered metrics, will retry: %s", exc)

    def flush(self) -> int:
        """Write every buffered point now; return how many were written.

        On failure the points are put back, in order, and the error propagates.
        """
        with self._flush_lock:
            with self._cond:
                points, self._points = self._points, []
                self._last_start = time.monotonic()
                self._cond.notify_all()  # room again for producers waiting on a full buffer
            if not points:
                return 0
            began = time.perf_counter()
            try:
                self.sink(points)
            except BaseException:
                with self._cond:
                    self._points[:0] = points
                    self._healthy = False
                    self._cond.notify_all()
                raise
            took = time.perf_counter() - began
            with self._cond:
                self._healthy = True
                rate = len(points) / max(took, 1e-6)
                self._capacity = max(
                    _MIN_CAPACITY, min(self.max_points, int(rate * self.interval / 2))
                )
                self._cond.notify_all()
            return len(points)

    def close(self) -> None:
        """Flush and stop the background thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, self.interval * 2))
        self.flush()

    def _after_fork(self) -> None:
        # A forked child inherits the points (the parent will write them) but
        # not the thread; start clean.
        self._init_state()


def _reset_after_fork() -> None:
    for buffer in list(_buffers):
        buffer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
