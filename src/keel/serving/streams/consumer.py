"""The micro-batch loop: read, validate, route, predict, write, log durably, then acknowledge.

One turn of :meth:`StreamConsumer.step` reads at most ``batch_size`` events,
answers them with one ``predict`` per routed model version, writes their
outputs to the sink (and poison events to the dead-letter sink) and queues
their prediction-log rows; it reads nothing more until the sink has taken
the writes, so a slow sink slows the reading (back-pressure). Every
``commit_interval`` seconds, or when half of ``max_unacked`` events wait,
or when the source runs dry, a commit flushes the prediction log (a Parquet
file written and synced) and only then acknowledges the events answered
before it began. So an acknowledged event has its output in the sink and its
rows in the log; one file per commit, not per batch. A commit runs in a
thread of its own while the next batches are answered (one commit at a
time; at most ``max_unacked`` events are held), so writing the file costs
the loop little.

Events are answered exactly as HTTP answers requests, through the same
functions: the deployment's :class:`~keel.serving.runtime.RoutingTable`
chooses each event's route by its request id (canary weights and the shadow
included), :func:`keel.serving.protocols.signature_inputs` keeps the inputs
the version's signature names, the loaded model checks its signature while
predicting, and :func:`keel.serving.app.logged_io` decides what a prediction
row holds. An event is one request of one row: its request id is the
source's ``<name>:<event id>``, its row number 0. The shadow answers each
batch's answered events in the same turn (one more ``predict``) and only
its log rows keep what it said.

**Exactly one output and one log row per event, across crashes.** A crash
(``SIGKILL``) between the sink write and the acknowledgement makes the broker
hand the events out again, marked as redelivered. Their outputs are written
again under the same key, which the sinks turn into one output (see
:mod:`~keel.serving.streams.redis`, :mod:`~keel.serving.streams.nats`). For
their log rows the consumer asks the log itself: before logging a batch that
holds redelivered events, it reads the request ids logged since the oldest of
them was enqueued (through :class:`~keel.predictions.PredictionReader`; log
files are whole or absent) and logs only the rows that are not there. Files a
killed consumer had spilled are moved into the log when the next consumer's
logger starts, before that check. Events delivered again while this consumer
still holds them (a broker's redelivery timer ran out) are recognised by
their request id and not answered twice.

**Poison events** (not JSON, not an object, or refused by the version's
signature or model) go to the dead-letter sink with the error and the
original payload, and are acknowledged with the rest. A batch the model
refuses is split in halves until the events it refuses are alone, so one bad
event never fails the others. Events a version refuses are also logged to the
``errors`` dataset (status 422 for a signature, 500 for a model failure), as
HTTP logs them.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from keel.errors import InvalidInput, SystemFault
from keel.predictions import (
    ERRORS,
    PREDICTIONS,
    PredictionLogger,
    PredictionReader,
    error_row,
    request_columns,
)
from keel.serving import protocols as p
from keel.serving.app import logged_io
from keel.serving.runtime import ModelHandle, RoutingTable, Runtime
from keel.serving.streams.base import Event, Record, Sink, Source
from keel.serving.streams.metrics import StreamMetrics

__all__ = ["StreamConsumer", "StreamStats"]

log = logging.getLogger("keel.serving")

#: Log rows of a redelivered event are looked for from this long before it was enqueued
#: (the broker's clock and this machine's may differ).
_CLOCK_MARGIN_MS = 10 * 60 * 1000
#: Longest wait between retries of a sink write, a log flush or an acknowledgement.
_MAX_BACKOFF = 10.0


@dataclass
class StreamStats:
    """What a consumer has done since it started.

    Attributes:
        read: events read (redeliveries included).
        answered: events with an output written.
        dead_lettered: events sent to the dead-letter sink.
        redelivered: events the source marked as possibly handled before.
        already_logged: rows not logged again because the log had them.
        duplicates: deliveries of events this consumer still held, skipped.
        batches: batches read; commits: log flushes followed by acknowledgements.
    """

    read: int = 0
    answered: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    already_logged: int = 0
    duplicates: int = 0
    batches: int = 0
    commits: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Answer:
    """A version's answer to some rows: the positions it answered and those it refused."""

    ok: list[int]
    data: Any = None  # the model's input for the ok rows
    logged: Any = None  # what the log records of those rows (features included)
    output: Any = None
    ignored: int = 0
    refused: dict[int, tuple[int, str]] = field(default_factory=dict)  # position → status, why


class StreamConsumer:
    """Answers a deployment's events from ``source`` into ``sink``.

    Args:
        runtime: the deployment's models and routing (started and stopped by the caller).
        source: where events come from.
        sink: where outputs go.
        dead_letter: where poison events go, with the error.
        logger: the prediction logger, or None to log nothing (outputs are then
            acknowledged once written).
        reader: reads the prediction log back to find rows a redelivered event already
            has; None logs redelivered events again.
        error_logger: a logger on the ``errors`` dataset for events a version refused.
        metrics: Prometheus metrics to update, or None.
        batch_size: the most events read and predicted at once.
        commit_interval: seconds between log flushes (each followed by acknowledgements).
        max_unacked: the most events read and not yet acknowledged; reaching it commits.
        read_timeout: seconds a read waits for events when none are there.
    """

    def __init__(
        self,
        runtime: Runtime,
        source: Source,
        sink: Sink,
        dead_letter: Sink,
        *,
        logger: PredictionLogger | None = None,
        reader: PredictionReader | None = None,
        error_logger: PredictionLogger | None = None,
        metrics: StreamMetrics | None = None,
        batch_size: int = 500,
        commit_interval: float = 1.0,
        max_unacked: int | None = None,
        read_timeout: float = 1.0,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_unacked", max_unacked)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInput(f"{name} must be a whole number >= 1, got {value!r}")
        if not commit_interval > 0:
            raise InvalidInput(f"commit_interval must be > 0 seconds, got {commit_interval!r}")
        self.runtime = runtime
        self.deployment = runtime.name
        self.source = source
        self.sink = sink
        self.dead_letter = dead_letter
        self.logger = logger
        self.reader = reader
        self.error_logger = error_logger
        self.metrics = metrics
        self.batch_size = batch_size
        self.commit_interval = float(commit_interval)
        self.max_unacked = max_unacked if max_unacked is not None else max(10 * batch_size, 5000)
        self.read_timeout = read_timeout
        self.stats = StreamStats()
        self._unacked: list[Event] = []  # answered, waiting for the next commit
        self._committing: list[Event] = []  # in the commit under way
        self._commit: Future[bool] | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._held: set[str] = set()  # request ids read and not yet acknowledged
        self._committed_at = time.monotonic()
        self._lag_at = 0.0
        self._stop: threading.Event | None = None

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> StreamStats:
        """Answer events until ``stop`` is set; then finish the batch in hand and commit.

        Raises:
            KeelError: a failure that retrying cannot fix (a wrong URL, a refused write).
        """
        self._stop = stop
        if self.logger is not None:  # rows a killed consumer spilled join the log first
            self._retry(self.logger.flush, "writing the prediction log")
        try:
            while not stop.is_set():
                self.step()
            self.commit()
        finally:
            self.close()
        return self.stats

    def step(self) -> int:
        """Read one batch and answer it; start a commit when due. Returns the events read."""
        self._reap(wait=False)
        room = self.max_unacked - len(self._unacked) - len(self._committing)
        if room <= 0:  # as many events held as allowed: they must be acknowledged first
            self._reap(wait=True)
            self._start_commit()
            self._reap(wait=True)
            room = self.max_unacked
        events = self._retry(
            lambda: self.source.read(min(self.batch_size, room), self.read_timeout),
            "reading events",
        )
        self._update_lag()
        if events is None:  # stopped while the source was down
            return 0
        if events:
            self._answer_batch(events)
        if (
            self._unacked
            and self._commit is None
            and (
                not events
                or len(self._unacked) >= self.max_unacked // 2
                or time.monotonic() - self._committed_at >= self.commit_interval
            )
        ):
            self._start_commit()
        return len(events)

    def commit(self) -> bool:
        """Flush the logs, then acknowledge every event answered so far (waits for it).

        Returns:
            False when stopped while the log or the broker was unreachable: those events
            were not acknowledged, and the broker hands them out again.
        """
        ok = self._reap(wait=True)
        self._start_commit()
        return self._reap(wait=True) and ok

    def close(self) -> None:
        """Wait for a commit under way and stop the committing thread."""
        self._reap(wait=True)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None

    def _start_commit(self) -> None:
        """Commit the events answered so far in the committing thread (one commit at a time).

        The log's Parquet file is written and synced while the next batches are answered;
        the events are acknowledged once it is.
        """
        self._committed_at = time.monotonic()
        if self._commit is not None or not self._unacked:
            return
        self._committing, self._unacked = self._unacked, []
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="keel-stream-commit")
        self._commit = self._committer.submit(self._flush_and_ack, self._committing)

    def _flush_and_ack(self, events: list[Event]) -> bool:
        # Every row of these events was queued before this flush began: it writes them.
        for logger, what in ((self.logger, "prediction"), (self.error_logger, "error")):
            if logger is not None and self._retry(logger.flush, f"writing the {what} log") is None:
                return False
        return self._retry(lambda: self.source.ack(events), "acknowledging events") is not None

    def _reap(self, *, wait: bool) -> bool:
        """Collect the commit under way, if it is done (or once done, with ``wait``).

        Returns:
            False if it ended without acknowledging (stopped during an outage).
        """
        future = self._commit
        if future is None or (not wait and not future.done()):
            return True
        self._commit = None
        events, self._committing = self._committing, []
        ok = future.result()  # a caller's mistake raised in the thread is raised here
        # Not acknowledged (stopped during an outage): the broker hands them out again.
        self._held.difference_update(e.request_id for e in events)
        if ok:
            self.stats.commits += 1
        if self.metrics is not None:
            self.metrics.unacked.set(len(self._unacked))
        return bool(ok)

    def _retry(self, call: Callable[[], Any], doing: str) -> Any:
        """``call()``, retried with backoff while the world fails; None if stopped meanwhile.

        A caller's mistake (:class:`~keel.errors.UserError`) is raised at once.
        """
        delay = 0.2
        while True:
            try:
                result = call()
                return True if result is None else result
            except SystemFault as exc:
                if self._stop is not None and self._stop.is_set():
                    log.warning("keel: stopping while %s fails: %s", doing, exc)
                    return None
                log.warning("keel: %s failed (%s); retrying in %.1f s", doing, exc, delay)
                if self._stop is not None:
                    self._stop.wait(delay)
                else:
                    time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    def _update_lag(self) -> None:
        if self.metrics is None or time.monotonic() < self._lag_at:
            return
        self._lag_at = time.monotonic() + 1.0
        try:
            self.metrics.lag.set(self.source.lag() or 0)
        except Exception as exc:  # a metric is not worth stopping for
            log.debug("keel: could not read the consumer lag: %s", exc)

    # -- one batch ---------------------------------------------------------------------------

    def _answer_batch(self, events: list[Event]) -> None:
        started = time.perf_counter()
        stats = self.stats
        stats.batches += 1
        stats.read += len(events)
        fresh: list[Event] = []
        for event in events:
            if event.redelivered:
                stats.redelivered += 1
            if event.request_id in self._held:  # still ours: answered, waiting for the commit
                stats.duplicates += 1
            else:
                self._held.add(event.request_id)
                fresh.append(event)
        outputs, dead = self.answer(fresh, started)
        # The sink takes the outputs before anything more is read: a slow sink slows reading.
        if self._retry(lambda: self.sink.write(outputs), "writing outputs") is None:
            return
        if self._retry(lambda: self.dead_letter.write(dead), "writing dead letters") is None:
            return
        self._unacked.extend(events)
        stats.answered += len(outputs)
        stats.dead_lettered += len(dead)
        if self.metrics is not None:
            self.metrics.batch(len(outputs), len(dead), time.perf_counter() - started)
            self.metrics.unacked.set(len(self._unacked) + len(self._committing))

    def answer(self, events: Sequence[Event], started: float) -> tuple[list[Record], list[Record]]:
        """Answer ``events``: their outputs and dead letters; their log rows are queued.

        Args:
            events: the events to answer (none of them held already).
            started: ``time.perf_counter()`` when they were read (their latency starts there).
        """
        table = self.runtime.table
        dead: list[Record] = []
        rows: list[dict[str, Any]] = []
        ids: list[Any] = []
        good: list[Event] = []
        for event in events:
            try:
                inputs, given_id = _decode(event.payload)
            except InvalidInput as exc:
                dead.append(_dead_letter(event, str(exc)))
                continue
            rows.append(inputs)
            ids.append(given_id)
            good.append(event)
        logged = self._already_logged(good)
        outputs: list[Record] = []
        answered: list[int] = []
        refused: list[tuple[ModelHandle, str, Event, int, str]] = []
        for role, handle, members in _routes(table, good):
            answer = self._answer_rows(table, handle, [rows[i] for i in members])
            for j, (status, why) in answer.refused.items():
                event = good[members[j]]
                dead.append(_dead_letter(event, why))
                refused.append((handle, role, event, status, why))
            if self.metrics is not None:
                self.metrics.answered(role, handle.version, len(answer.ok), answer.ignored)
                for status, _ in answer.refused.values():
                    self.metrics.rejected(role, str(handle.version), "stream", status)
            if not answer.ok:
                continue
            done = [good[members[j]] for j in answer.ok]
            answered.extend(members[j] for j in answer.ok)
            self._log(handle, role, done, answer, logged, False, started)
            values = p.to_jsonable(answer.output)
            for event, value, j in zip(done, values, answer.ok, strict=True):
                doc: dict[str, Any] = {
                    "event_id": event.id,
                    "request_id": event.request_id,
                    "model": handle.model_name,
                    "version": handle.version,
                    "route": role,
                    "prediction": value,
                }
                given_id = ids[members[j]]
                if given_id is not None:
                    doc["id"] = given_id
                outputs.append(
                    (event.request_id, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
                )
        if refused:
            self._log_errors(refused, started)
        if table.shadow is not None and answered:
            self._shadow(
                table,
                table.shadow,
                [good[i] for i in answered],
                [rows[i] for i in answered],
                logged,
                started,
            )
        return outputs, dead

    def _shadow(
        self,
        table: RoutingTable,
        shadow: ModelHandle,
        events: list[Event],
        rows: list[dict[str, Any]],
        logged: set[tuple[str, bool]],
        started: float,
    ) -> None:
        """The shadow's answers, logged only; it never changes an output."""
        try:
            answer = self._answer_rows(table, shadow, rows)
            if answer.ok:
                self._log(
                    shadow, "shadow", [events[j] for j in answer.ok], answer, logged, True, started
                )
        except Exception as exc:  # the shadow never affects the outputs
            log.warning("keel: shadow %s/%s failed: %s", shadow.model_name, shadow.version, exc)
            if self.metrics is not None:
                self.metrics.shadow("failed", len(rows))
            return
        if self.metrics is not None:
            self.metrics.shadow("ok", len(answer.ok))
            self.metrics.shadow("failed", len(answer.refused))

    # -- predicting -----------------------------------------------------------------------------

    def _answer_rows(
        self, table: RoutingTable, handle: ModelHandle, rows: list[dict[str, Any]]
    ) -> _Answer:
        """One predict for all ``rows``; when it fails, halves until the refused rows are alone."""
        positions = list(range(len(rows)))
        refused: dict[int, tuple[int, str]] = {}
        try:
            return self._predict(table, handle, rows, positions)
        except _Lacking as lacking:  # each event is a request: it must hold every column
            for i in lacking.positions:
                refused[i] = _refusal_alone(handle, rows[i])
            positions = [i for i in positions if i not in refused]
            retry = True
        except Exception as exc:
            if len(rows) == 1:
                return _Answer([], refused={0: _refusal(handle, exc)})
            retry = False
        if not positions:
            return _Answer([], refused=refused)
        if retry:
            try:
                answer = self._predict(table, handle, [rows[i] for i in positions], positions)
            except Exception:
                pass
            else:
                answer.refused = refused
                return answer
        self._isolate(table, handle, rows, positions, refused)
        ok = [i for i in positions if i not in refused]
        if ok:
            try:
                answer = self._predict(table, handle, [rows[i] for i in ok], ok)
            except Exception as exc:  # refused together what it took alone: refuse them all
                refused.update(dict.fromkeys(ok, _refusal(handle, exc)))
                return _Answer([], refused=refused)
            answer.refused = refused
            return answer
        return _Answer([], refused=refused)

    def _isolate(
        self,
        table: RoutingTable,
        handle: ModelHandle,
        rows: list[dict[str, Any]],
        positions: list[int],
        refused: dict[int, tuple[int, str]],
    ) -> None:
        mid = len(positions) // 2
        for half in (positions[:mid], positions[mid:]):
            if not half:
                continue
            try:
                self._predict(table, handle, [rows[i] for i in half], half)
            except Exception as exc:
                if len(half) == 1:
                    refused[half[0]] = _refusal(handle, exc)
                else:
                    self._isolate(table, handle, rows, half, refused)

    def _predict(
        self, table: RoutingTable, handle: ModelHandle, rows: list[dict[str, Any]], ok: list[int]
    ) -> _Answer:
        data, logged, ignored = self._model_input(table, handle, rows)
        output = handle.model.predict(data)
        return _Answer(ok, data, logged, output, ignored)

    def _model_input(
        self, table: RoutingTable, handle: ModelHandle, rows: list[dict[str, Any]]
    ) -> tuple[Any, Any, int]:
        """What ``handle``'s model takes for ``rows``, what the log records, inputs ignored."""
        import pandas as pd

        signature = handle.signature
        if signature is not None and signature.inputs.is_tensor:
            raise InvalidInput(
                f"{handle.model_name}/{handle.version} takes tensors; keel stream answers "
                "models whose signature has columns (one value per column in each event)"
            )
        if table.features is not None:  # keys in: completed from the online store, all logged
            missing = None if self.metrics is None else self.metrics.missing_features
            assembled = table.features.assemble(pd.DataFrame.from_records(rows), signature, missing)
            return assembled.model_input(signature), assembled.columns, assembled.ignored
        if signature is not None and signature.inputs.is_numeric:
            matrix = _matrix(rows, signature)
            if matrix is not None:
                return matrix
        if signature is not None:
            # A DataFrame of rows fills a row's missing column with NaN; alone, as a request,
            # the event would be refused for lacking it: refuse it so here too.
            names = set(signature.inputs.names)
            lacking = [i for i, row in enumerate(rows) if not names <= row.keys()]
            if lacking:
                raise _Lacking(lacking)
        data, ignored = p.signature_inputs(signature, pd.DataFrame.from_records(rows))
        return data, data, ignored

    # -- logging -----------------------------------------------------------------------------------

    def _already_logged(
        self, events: list[Event], dataset: str = PREDICTIONS
    ) -> set[tuple[str, bool]]:
        """(request id, is shadow) of the rows ``dataset`` (the prediction log, or its
        errors) already holds for redelivered ``events``."""
        logger = self.logger if dataset == PREDICTIONS else self.error_logger
        again = [e for e in events if e.redelivered]
        if not again or self.reader is None or logger is None:
            return set()
        import pyarrow as pa
        import pyarrow.compute as pc

        stamps = [e.enqueued_ms for e in again if e.enqueued_ms is not None]
        start = min(stamps) - _CLOCK_MARGIN_MS if len(stamps) == len(again) else None
        reader = self.reader
        table = self._retry(
            lambda: reader.read(
                self.deployment, start=start, columns=["request_id", "route"], dataset=dataset
            ),
            f"reading the {dataset} log",
        )
        if table is None or table is True or table.num_rows == 0:
            return set()
        hits = table.filter(
            pc.is_in(table["request_id"], value_set=pa.array([e.request_id for e in again]))
        )
        return {
            (rid, route == "shadow")
            for rid, route in zip(
                hits["request_id"].to_pylist(), hits["route"].to_pylist(), strict=True
            )
        }

    def _log(
        self,
        handle: ModelHandle,
        role: str,
        events: list[Event],
        answer: _Answer,
        logged: set[tuple[str, bool]],
        shadow: bool,
        started: float,
    ) -> None:
        if self.logger is None:
            return
        data, output = answer.logged, answer.output
        if logged:
            keep = [j for j, e in enumerate(events) if (e.request_id, shadow) not in logged]
            self.stats.already_logged += len(events) - len(keep)
            if len(keep) < len(events):
                if not keep:
                    return
                events = [events[j] for j in keep]
                data, output = _take(data, keep), _take(output, keep)
        n = len(events)
        columns = request_columns(
            request_id="",
            time_ms=time.time_ns() // 1_000_000,
            model=handle.model_name,
            version=handle.version,
            route=role,
            latency_ms=(time.perf_counter() - started) * 1000,
            n=n,
        )
        # Each event is a request of one row.
        columns["request_id"] = [e.request_id for e in events]
        columns["row"] = [0] * n
        block = logged_io(handle, data, output, n, columns)
        self.logger.log(self.deployment, columns, n, block)

    def _log_errors(
        self, refused: list[tuple[ModelHandle, str, Event, int, str]], started: float
    ) -> None:
        """Log the events a version refused, but not again those a redelivery brought back
        whose row the errors log already holds."""
        if self.error_logger is None:
            return
        logged = self._already_logged([event for _, _, event, _, _ in refused], ERRORS)
        for handle, role, event, status, why in refused:
            if (event.request_id, role == "shadow") in logged:
                self.stats.already_logged += 1
                continue
            self._log_error(handle, role, event, status, why, started)

    def _log_error(
        self, handle: ModelHandle, role: str, event: Event, status: int, why: str, started: float
    ) -> None:
        if self.error_logger is None:
            return
        columns = error_row(
            request_id=event.request_id,
            time_ms=time.time_ns() // 1_000_000,
            model=handle.model_name,
            version=handle.version,
            route=role,
            latency_ms=(time.perf_counter() - started) * 1000,
            rows=1,
            status=status,
            error=why,
        )
        self.error_logger.log(self.deployment, columns, 1)


# -- helpers --------------------------------------------------------------------------------------


def _decode(payload: bytes) -> tuple[dict[str, Any], Any]:
    """An event's inputs and its own id: ``{"id": …, "inputs": {…}}`` or just ``{…}``."""
    if not payload:
        raise InvalidInput(
            "the event is empty (or its Redis entry lacks the field the source URL names, "
            "data by default); expected a JSON object of the inputs"
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the event is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if type(doc) is not dict:
        raise InvalidInput(
            "an event must be a JSON object of the inputs ({column: value}) or "
            '{"id": ..., "inputs": {column: value}}'
        )
    inputs = doc.get("inputs")
    if type(inputs) is dict and len(doc) <= 2 and (len(doc) == 1 or "id" in doc):
        return inputs, doc.get("id")
    return doc, None


def _matrix(
    rows: list[dict[str, Any]], signature: Any
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Rows of numbers as one 2-D array in signature order (the HTTP fast path's form), or None.

    None when a row lacks a column or a value is not a number: the DataFrame path then
    types each column and the signature check says what is wrong.
    """
    from keel.models.signature import matrix_fits

    names = signature.inputs.names
    pick = _pickers.get(names)
    if pick is None:
        if len(_pickers) > 64:
            _pickers.clear()
        pick = _pickers[names] = operator.itemgetter(*names) if len(names) > 1 else _one(names[0])
    try:
        values = list(map(pick, rows))
    except KeyError:
        return None
    try:  # NumPy finds the type, as for HTTP (a dtype given would parse "1.5" as a number)
        array = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if (
        array.ndim != 2
        or array.dtype.kind not in "iuf"
        or not matrix_fits(signature.inputs, array.dtype)
    ):
        return None
    ignored = sum(map(len, rows)) - len(rows) * len(names)
    return array, array, ignored


_pickers: dict[tuple[str, ...], Callable[[dict[str, Any]], Any]] = {}


def _one(name: str) -> Callable[[dict[str, Any]], tuple[Any]]:
    def pick(row: dict[str, Any]) -> tuple[Any]:
        return (row[name],)

    return pick


def _routes(table: RoutingTable, events: list[Event]) -> list[tuple[str, ModelHandle, list[int]]]:
    """The events' positions by the route that answers them (chosen by request id, as HTTP)."""
    if not events:
        return []
    if len(table.routes) == 1:
        role, _, handle = table.routes[0]
        return [(role, handle, list(range(len(events))))]
    groups: dict[tuple[str, int], tuple[str, ModelHandle, list[int]]] = {}
    for i, event in enumerate(events):
        role, handle = table.choose(event.request_id)
        key = (role, id(handle))
        group = groups.get(key)
        if group is None:
            group = groups[key] = (role, handle, [])
        group[2].append(i)
    return list(groups.values())


class _Lacking(Exception):
    """Rows (by position) without every column the signature names."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"{len(positions)} rows lack columns")
        self.positions = positions


def _refusal_alone(handle: ModelHandle, row: dict[str, Any]) -> tuple[int, str]:
    """Why ``handle`` refuses ``row`` as a request of its own (a row lacking a column)."""
    import pandas as pd

    try:
        data, _ = p.signature_inputs(handle.signature, pd.DataFrame.from_records([row]))
        handle.model.predict(data)
    except Exception as exc:
        return _refusal(handle, exc)
    missing = sorted(set(handle.signature.inputs.names) - row.keys())
    return (
        422,
        f"the event lacks inputs the signature of {handle.model_name}/{handle.version} names: {missing}",
    )


def _refusal(handle: ModelHandle, exc: Exception) -> tuple[int, str]:
    label = f"{handle.model_name}/{handle.version}"
    if isinstance(exc, InvalidInput):
        return 422, f"the event does not fit the signature of {label}: {exc}"
    return 500, f"{label} failed on the event: {type(exc).__name__}: {exc}"


def _dead_letter(event: Event, error: str) -> Record:
    doc = {
        "event_id": event.id,
        "request_id": event.request_id,
        "error": error,
        "payload": event.payload.decode("utf-8", errors="replace"),
    }
    return event.request_id, orjson.dumps(doc)


def _take(values: Any, keep: list[int]) -> Any:
    """Rows ``keep`` of an array, a DataFrame or a dict of columns."""
    if hasattr(values, "iloc"):
        return values.iloc[keep].reset_index(drop=True)
    if isinstance(values, dict):
        return {k: np.asarray(v)[keep] for k, v in values.items()}
    return np.asarray(values)[keep]
