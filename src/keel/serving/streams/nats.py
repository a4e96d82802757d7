"""NATS JetStream: a durable pull consumer as the source, a stream's subject as the sink.

Source URL: ``nats://[user:password@]host:4222?stream=EVENTS&subject=events.>``.
Each message is one event's JSON. Parameters:

- ``subject`` (required): the subject (wildcards allowed) to consume.
- ``stream``: the JetStream stream holding it (default: the stream that captures
  ``subject``; it must exist).
- ``ack_wait``: seconds the server waits for an acknowledgement before
  redelivering a message (default 30). Keep it well above the consumer's commit
  interval (a second): a message redelivered while the consumer still holds it is
  recognised and skipped, but one held longer by a stalled consumer may be
  handled by another consumer too.
- ``max_ack_pending``: the most messages handed out and not yet acknowledged
  (default 20,000): the broker's own back-pressure.

The durable consumer is named after the group (``keel-<deployment>`` unless
``--group``); every ``keel stream`` with that group shares its messages, and a
restarted one continues where the group stands. An event's id is its stream
sequence number; a message delivered more than once is marked redelivered.

Sink URL: ``nats://host:4222?subject=predictions`` (``stream=`` names the stream,
created capturing ``subject`` if it does not exist). Every output is published
with the header ``Nats-Msg-Id`` set to its event's request id, and the stream
drops a message whose id it has seen within its duplicate window (JetStream's
``duplicate_window``, two minutes by default; ``window=`` seconds sets it for a
stream the sink creates). So a redelivered event adds no second output within
the window: the *first* output stands (unlike the Redis sink, which replaces
it; both carry the same prediction unless the deployment's routes changed in
between). Size the window above ``ack_wait`` plus the time to restart a
consumer.

nats-py is asynchronous; each source and sink runs its connection on an event
loop in a thread of its own and the consumer calls it synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from keel.errors import BackendUnavailable, InvalidInput, NotFound, StorageError
from keel.serving.streams.base import Event, Record, Sink, Source, parse_url, positive, printable

__all__ = ["NatsSink", "NatsSource"]

log = logging.getLogger("keel.serving")

INSTALL = "pip install 'keel[streams]'"
SOURCE_OPTIONS = {"subject", "stream", "ack_wait", "max_ack_pending"}
SINK_OPTIONS = {"subject", "stream", "window"}
#: Seconds any one call to the server may take before it is an outage.
_CALL_TIMEOUT = 30.0
#: Seconds to reach the server at start before saying it cannot be reached.
_CONNECT_TIMEOUT = 10.0

T = TypeVar("T")


def _nats() -> Any:
    try:
        import nats
    except ImportError:
        raise InvalidInput(f"NATS JetStream needs nats-py: {INSTALL}") from None
    return nats


class _Loop:
    """An event loop in a daemon thread, and a connection to the server on it."""

    def __init__(self, address: str, safe: str) -> None:
        self.address = address
        self.safe = safe
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="keel-nats", daemon=True)
        self.thread.start()
        self.nc: Any = None
        self.js: Any = None
        self._warned_at = -10.0

    def run(self, coro: Coroutine[Any, Any, T], doing: str, timeout: float = _CALL_TIMEOUT) -> T:
        """Run ``coro`` on the loop and wait for it; server failures become Keel errors."""
        nats = _nats()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BackendUnavailable(
                f"NATS at {self.safe} did not answer within {timeout:g} s while {doing}; check "
                "that it runs with JetStream enabled (nats-server -js)"
            ) from None
        except nats.js.errors.NotFoundError as exc:
            raise NotFound(f"NATS at {self.safe}: not found while {doing} ({exc})") from exc
        except (nats.errors.NoServersError, nats.errors.ConnectionClosedError, OSError) as exc:
            raise BackendUnavailable(
                f"NATS at {self.safe} cannot be reached while {doing}: {exc}; check that it "
                "runs with JetStream enabled (nats-server -js)"
            ) from exc
        except nats.errors.Error as exc:
            raise StorageError(f"NATS at {self.safe} failed while {doing}: {exc}") from exc

    def connect(self) -> None:
        """Connect, or fail within :data:`_CONNECT_TIMEOUT` seconds; later drops reconnect."""
        if self.nc is None:
            nats = _nats()

            async def connect() -> Any:
                return await nats.connect(
                    servers=[self.address],
                    connect_timeout=5,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=self._error,
                )

            self.nc = self.run(connect(), "connecting", timeout=_CONNECT_TIMEOUT)
            self.js = self.nc.jetstream()

    async def _error(self, exc: Exception) -> None:
        """nats-py's errors (a lost connection, each reconnect attempt): one line each, at most
        every ten seconds, instead of the library's traceback per attempt."""
        if self.nc is None:  # still connecting: connect() says it once, if it gives up
            return
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("keel: NATS at %s: %s", self.safe, exc or type(exc).__name__)

    def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            try:
                self.run(self.nc.drain(), "closing", timeout=10)
            except Exception:  # closing: the server may be gone already; nothing is lost
                pass

        async def cancel_the_rest() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(cancel_the_rest(), self.loop).result(5)
        except Exception:  # closing regardless
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class NatsSource(Source):
    """Events from a JetStream stream, through a durable pull consumer.

    Args:
        url: ``nats://host:port?subject=<subject>`` and the parameters in the module docstring.
        group: the durable consumer's name.
    """

    def __init__(self, url: str, *, group: str) -> None:
        parts = parse_url(url, "--source", {"nats": SOURCE_OPTIONS, "tls": SOURCE_OPTIONS})
        options, self.url = parts.options, parts.safe
        if "subject" not in options:
            raise InvalidInput(f"--source {self.url} names no subject; add ?subject=<subject>")
        self.subject = printable(options["subject"], "subject", "--source", self.url)
        self.stream = options.get("stream")
        if self.stream is not None:
            printable(self.stream, "stream", "--source", self.url)
        self.ack_wait = positive(options.get("ack_wait"), "ack_wait", 30.0, "--source", self.url)
        self.max_ack_pending = int(
            positive(
                options.get("max_ack_pending"), "max_ack_pending", 20_000, "--source", self.url
            )
        )
        # A durable name is one subject token: no dots, wildcards or spaces.
        if not all(c.isalnum() or c in "-_" for c in group) or not group:
            raise InvalidInput(
                f"--group {group!r}: a JetStream consumer name takes letters, digits, - and _"
            )
        self.group = group
        self.name = self.stream or ""
        self._address = parts.address
        self._io: _Loop | None = None
        self._sub: Any = None

    def _open(self) -> _Loop:
        if self._io is None:
            io = _Loop(self._address, self.url)
            try:
                io.connect()
                io.run(self._subscribe(io), f"subscribing to {self.subject!r}")
            except BaseException:
                io.close()
                raise
            self._io = io
        return self._io

    async def _subscribe(self, io: _Loop) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = io.js
        if self.stream is None:
            self.stream = await js.find_stream_name_by_subject(self.subject)
        else:
            await js.stream_info(self.stream)
        self.name = str(self.stream)
        config = ConsumerConfig(
            durable_name=self.group,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.subject,
        )
        self._sub = await js.pull_subscribe(
            self.subject, durable=self.group, stream=self.stream, config=config
        )

    def connect(self) -> None:
        self._open()

    def read(self, max_events: int, timeout: float) -> list[Event]:
        io = self._open()
        messages = io.run(self._fetch(max_events, timeout), f"reading {self.subject!r}")
        prefix = self.name + ":"
        events = []
        for msg in messages:
            meta = msg.metadata
            eid = str(meta.sequence.stream)
            stamp = meta.timestamp
            enqueued = None if stamp is None else int(stamp.timestamp() * 1000)
            events.append(Event(eid, prefix + eid, msg.data, meta.num_delivered > 1, enqueued, msg))
        return events

    async def _fetch(self, max_events: int, timeout: float) -> list[Any]:
        import nats.errors

        try:
            return list(await self._sub.fetch(batch=max_events, timeout=max(timeout, 0.05)))
        except nats.errors.TimeoutError:
            return []

    def ack(self, events: Sequence[Event]) -> None:
        if not events:
            return
        io = self._open()

        async def ack() -> None:
            for event in events:
                await event.token.ack()
            await io.nc.flush()  # the acks have reached the server

        io.run(ack(), f"acknowledging {len(events)} events")

    def lag(self) -> int | None:
        io = self._open()
        info = io.run(self._sub.consumer_info(), "reading the consumer's lag")
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def close(self) -> None:
        if self._io is not None:
            self._io.close()
            self._io = None


class NatsSink(Sink):
    """Outputs published to a JetStream subject, deduplicated by the event's request id.

    Args:
        url: ``nats://host:port?subject=<subject>``, optionally ``stream`` and ``window``.
        role: the option it came from (``--sink``, ``--dead-letter``), for messages.
    """

    def __init__(self, url: str, role: str = "--sink") -> None:
        parts = parse_url(url, role, {"nats": SINK_OPTIONS, "tls": SINK_OPTIONS})
        options, self.url, self.role = parts.options, parts.safe, role
        if "subject" not in options:
            raise InvalidInput(f"{role} {self.url} names no subject; add ?subject=<subject>")
        self.subject = printable(options["subject"], "subject", role, self.url)
        if any(c in self.subject for c in "*>"):
            raise InvalidInput(f"{role} {self.url}: a subject to publish to has no wildcards")
        self.stream = options.get("stream")
        if self.stream is not None:
            printable(self.stream, "stream", role, self.url)
        window = options.get("window")
        self.window = None if window is None else positive(window, "window", 120, role, self.url)
        self._address = parts.address
        self._io: _Loop | None = None

    def _open(self) -> _Loop:
        if self._io is None:
            io = _Loop(self._address, self.url)
            try:
                io.connect()
                io.run(self._ensure_stream(io), f"finding the stream of {self.subject!r}")
            except BaseException:
                io.close()
                raise
            self._io = io
        return self._io

    async def _ensure_stream(self, io: _Loop) -> None:
        import nats.js.errors
        from nats.js.api import StreamConfig

        js = io.js
        if self.stream is None:
            try:
                self.stream = await js.find_stream_name_by_subject(self.subject)
            except nats.js.errors.NotFoundError:
                raise InvalidInput(
                    f"{self.role} {self.url}: no JetStream stream captures {self.subject!r}; "
                    "add &stream=<NAME> to create one"
                ) from None
            return
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(name=self.stream, subjects=[self.subject])
            if self.window is not None:
                config.duplicate_window = self.window
            await js.add_stream(config)

    def connect(self) -> None:
        self._open()

    def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        io = self._open()

        async def publish() -> None:
            futures = [
                await io.js.publish_async(
                    self.subject, payload, stream=self.stream, headers={"Nats-Msg-Id": key}
                )
                for key, payload in records
            ]
            await asyncio.gather(*futures)  # every output is stored (or a known duplicate)

        io.run(publish(), f"publishing {len(records)} outputs to {self.subject!r}")

    def close(self) -> None:
        if self._io is not None:
            self._io.close()
            self._io = None
