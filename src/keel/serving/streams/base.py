"""The two small interfaces a stream consumer works through, and their in-memory forms.

A :class:`Source` hands out events and takes acknowledgements; a
:class:`Sink` takes outputs keyed by the event they answer. Redis Streams
(:mod:`keel.serving.streams.redis`) and NATS JetStream
(:mod:`keel.serving.streams.nats`) implement both; :class:`MemorySource` and
:class:`MemorySink` are real implementations in this process, for tests and
for measuring the consumer without a broker.

What the consumer relies on:

- An event's :attr:`Event.id` is the transport's own id (a Redis entry id, a
  JetStream sequence), the same on every delivery, so a redelivered event is
  recognised; :attr:`Event.request_id` prefixes it with the source's name and
  is what the prediction log and the sink are keyed by.
- :meth:`Source.read` marks events that may have been delivered before
  (:attr:`Event.redelivered`); the consumer checks those against the log.
- :meth:`Sink.write` is idempotent per key: writing a key again does not add
  a second output (each sink says how: Redis replaces, JetStream drops the
  duplicate within its window).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from keel.errors import InvalidInput

__all__ = [
    "Event",
    "MemorySink",
    "MemorySource",
    "Record",
    "Sink",
    "Source",
    "UrlParts",
    "parse_url",
    "positive",
    "printable",
]

#: An output for the sink: (the event's request id, the bytes to write).
Record = tuple[str, bytes]


class Event(NamedTuple):
    """One event read from a source (a tuple: a batch makes hundreds of them).

    Attributes:
        id: the transport's id of the event, the same on every delivery.
        request_id: ``<source name>:<id>``: the prediction log's request id and the sink's key.
        payload: the event's bytes (JSON).
        redelivered: the event may have been handed out before (after a crash, or a
            consumer that stalled); the consumer checks the log before logging it again.
        enqueued_ms: when the transport stored the event (epoch ms), if it says.
        token: what the source needs to acknowledge the event.
    """

    id: str
    request_id: str
    payload: bytes
    redelivered: bool = False
    enqueued_ms: int | None = None
    token: Any = None


class Source(ABC):
    """Where events come from. One thread reads; acknowledgements may come from another.

    Attributes:
        url: the source's URL, without a password (for messages and ``--json``).
        name: what prefixes event ids into request ids (a stream's name).
    """

    url: str
    name: str

    @abstractmethod
    def read(self, max_events: int, timeout: float) -> list[Event]:
        """Up to ``max_events`` events: those pending redelivery first, then new ones.

        Waits at most ``timeout`` seconds when there are none; returns ``[]`` then.

        Raises:
            BackendUnavailable: the broker cannot be reached.
        """

    @abstractmethod
    def ack(self, events: Sequence[Event]) -> None:
        """Acknowledge ``events``: they are handled and will not be delivered again.

        Raises:
            BackendUnavailable: the broker cannot be reached (the events stay pending).
        """

    @abstractmethod
    def lag(self) -> int | None:
        """Events not yet acknowledged by this consumer group: pending plus undelivered.

        ``None`` when the broker does not say.
        """

    def connect(self) -> None:  # noqa: B027 - a source without a connection has nothing to do
        """Connect now, so that a wrong URL or a broker that is down fails at start.

        Raises:
            BackendUnavailable: the broker cannot be reached.
        """

    def close(self) -> None:  # noqa: B027 - most sources have a connection to close; not all
        """Release the connection."""


class Sink(ABC):
    """Where outputs (or dead letters) go.

    Attributes:
        url: the sink's URL, without a password.
    """

    url: str

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Write ``records`` durably before returning; a key written again adds no output.

        Raises:
            BackendUnavailable: the broker cannot be reached (nothing may be assumed written).
            StorageError: the broker refused the write.
        """

    def connect(self) -> None:  # noqa: B027 - a sink without a connection has nothing to do
        """Connect now, so that a wrong URL or a broker that is down fails at start.

        Raises:
            BackendUnavailable: the broker cannot be reached.
        """

    def close(self) -> None:  # noqa: B027 - most sinks have a connection to close; not all
        """Release the connection."""


# -- in memory -----------------------------------------------------------------------------------


class MemorySource(Source):
    """Events held in this process: a real source, not a stand-in for one.

    Unacknowledged events are handed out again after :meth:`redeliver`, marked
    ``redelivered``, as a broker does after a consumer dies.

    Args:
        payloads: the events' bytes, in order; their ids are ``0``, ``1``, …
        name: the source's name (the request ids' prefix).
    """

    def __init__(self, payloads: Iterable[bytes] = (), name: str = "memory") -> None:
        self.name = name
        self.url = f"memory://{name}"
        self._lock = threading.Lock()
        self._events: list[bytes] = []
        self._next = 0
        self._pending: dict[str, Event] = {}
        self._redeliver: list[Event] = []
        self.acked: set[str] = set()
        self.add(payloads)

    def add(self, payloads: Iterable[bytes]) -> None:
        """Append events."""
        with self._lock:
            self._events.extend(payloads)

    def read(self, max_events: int, timeout: float) -> list[Event]:
        with self._lock:
            out = self._redeliver[:max_events]
            del self._redeliver[: len(out)]
            end = min(len(self._events), self._next + max_events - len(out))
            for n in range(self._next, end):
                event_id = str(n)
                out.append(Event(event_id, f"{self.name}:{event_id}", self._events[n]))
            self._next = end
            for event in out:
                self._pending[event.id] = event
        return out

    def ack(self, events: Sequence[Event]) -> None:
        with self._lock:
            for event in events:
                self._pending.pop(event.id, None)
                self.acked.add(event.id)

    def redeliver(self) -> None:
        """Hand every unacknowledged event out again, as after a consumer's crash."""
        with self._lock:
            self._redeliver = [
                Event(e.id, e.request_id, e.payload, redelivered=True)
                for e in sorted(self._pending.values(), key=lambda e: int(e.id))
            ]

    def lag(self) -> int | None:
        with self._lock:
            return len(self._events) - self._next + len(self._pending)


@dataclass
class MemorySink(Sink):
    """Outputs kept in this process by key; a key written again replaces its output."""

    url: str = "memory://sink"
    outputs: dict[str, bytes] = field(default_factory=dict)
    writes: int = 0

    def write(self, records: Sequence[Record]) -> None:
        for key, payload in records:
            self.outputs[key] = payload
        self.writes += 1


# -- URLs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlParts:
    """A source or sink URL split into what a transport needs.

    Attributes:
        scheme: ``redis``, ``rediss`` or ``nats``.
        address: the URL without its query (for the client library).
        safe: the whole URL with any password masked (for messages).
        options: the query parameters.
    """

    scheme: str
    address: str
    safe: str
    options: dict[str, str]


def parse_url(url: str, role: str, allowed: dict[str, set[str]]) -> UrlParts:
    """Split ``url`` and check its scheme and query parameters.

    Args:
        url: what the user gave (``redis://127.0.0.1:6379/0?stream=events``).
        role: ``--source``, ``--sink`` or ``--dead-letter``: named in errors.
        allowed: scheme → the query parameters it takes.

    Raises:
        InvalidInput: an unknown scheme, an unknown or repeated parameter.
    """
    from keel.store import redact_url

    if not isinstance(url, str) or "://" not in url:
        raise InvalidInput(
            f"{role} must be a URL such as redis://127.0.0.1:6379/0?stream=events or "
            f"nats://127.0.0.1:4222?subject=events, got {url!r}"
        )
    safe = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in allowed:
        raise InvalidInput(
            f"{role} {safe}: scheme {scheme!r} is not supported; use one of "
            f"{', '.join(s + '://' for s in allowed)}"
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed[scheme]:
            raise InvalidInput(
                f"{role} {safe}: unknown parameter {name!r}; {scheme}:// takes "
                f"{', '.join(sorted(allowed[scheme]))}"
            )
        if name in options:
            raise InvalidInput(f"{role} {safe}: parameter {name!r} is given twice")
        options[name] = value
    address = parts._replace(query="", fragment="").geturl()
    return UrlParts(scheme, address, safe, options)


def positive(value: str | None, name: str, default: float, role: str, safe: str) -> float:
    """A URL parameter that must be a number > 0 (``default`` when absent)."""
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise InvalidInput(f"{role} {safe}: {name} must be a number > 0, got {value!r}")
    return number


def printable(value: str | None, name: str, role: str, safe: str) -> str:
    """A name from a URL parameter: 1 to 200 printable ASCII characters, no spaces."""
    if not value or len(value) > 200 or not all("!" <= c <= "~" for c in value):
        raise InvalidInput(
            f"{role} {safe}: {name} must be 1 to 200 printable ASCII characters without "
            f"spaces, got {value!r}"
        )
    return value
