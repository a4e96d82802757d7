"""Redis Streams: a consumer group as the source, a stream as the sink.

Source URL: ``redis://[:password@]host:6379/0?stream=events`` (``rediss://`` for TLS).
Each entry holds one event's JSON in its field ``data`` (``?field=`` names
another): ``XADD events * data '{"mean radius": 17.9, ...}'``. Parameters:

- ``stream`` (required): the stream to read.
- ``field``: the entry field holding the event (default ``data``).
- ``start``: where a new consumer group starts: ``0`` (every entry in the stream,
  the default) or ``$`` (only entries added from now on).
- ``claim_idle``: seconds an entry must sit unacknowledged with another consumer
  before this one claims it (``XAUTOCLAIM``; default 60). Keep it well above the
  consumer's commit interval: a consumer stalled longer than this has its events
  handled twice.

The group (``keel-<deployment>`` unless ``--group``) is created at the first read.
A consumer first reads its own pending entries (those delivered to its name and
never acknowledged, left by a crash: give a restarted consumer the same
``--consumer`` to take them back at once), then claims entries other consumers
left idle, then reads new ones (``XREADGROUP ... >``). An event's id is its
entry id; acknowledging is one ``XACK`` per commit.

Sink URL: ``redis://host:6379/0?stream=predictions``. Each output is an entry
with fields ``request_id`` and ``data`` (the output's JSON). The output of an
event written again (after a redelivery) *replaces* the first one: a Lua script
keeps, for ``window`` seconds (default 600), a key
``keel:stream-output:<stream>:<request id>`` holding the entry id of the
event's output, deletes that entry and adds the new one, all in one step. So
a reader counting entries (``XLEN``, ``XRANGE``) sees exactly one output per
event, as long as the redelivery comes within the window (size it above
``claim_idle`` plus the time to restart a consumer; the keys cost about 100
bytes per event of the window). A reader tailing the stream may have read an
output before it was replaced: the output's ``request_id`` identifies the
event. ``maxlen`` trims the stream to about that many entries (``MAXLEN ~``).
Redis Cluster is not supported (the script's keys must share a node).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from keel.errors import BackendUnavailable, InvalidInput, StorageError
from keel.serving.streams.base import Event, Record, Sink, Source, parse_url, positive, printable

__all__ = ["RedisSink", "RedisSource", "default_consumer"]

INSTALL = "pip install 'keel[streams]'"
_SCHEMES = ("redis", "rediss")
SOURCE_OPTIONS = {"stream", "field", "start", "claim_idle"}
SINK_OPTIONS = {"stream", "window", "maxlen"}
#: Records per script call; a write sends its calls in one round trip.
RECORDS_PER_CALL = 1_000

# KEYS[1] is the stream; ARGV: window seconds, key prefix, maxlen (0: none), then pairs of
# (request id, output JSON).
_WRITE = """
local stream = KEYS[1]
local window = ARGV[1]
local prefix = ARGV[2]
local maxlen = tonumber(ARGV[3])
local replaced = 0
for i = 4, #ARGV, 2 do
  local id
  if maxlen > 0 then
    id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                    'request_id', ARGV[i], 'data', ARGV[i + 1])
  else
    id = redis.call('XADD', stream, '*', 'request_id', ARGV[i], 'data', ARGV[i + 1])
  end
  local old = redis.call('SET', prefix .. ARGV[i], id, 'EX', window, 'GET')
  if old then
    replaced = replaced + redis.call('XDEL', stream, old)
  end
end
return replaced
"""


def _redis() -> Any:
    try:
        import hiredis  # noqa: F401 - redis-py parses with it when present
        import redis
    except ImportError:
        raise InvalidInput(f"Redis streams need redis and hiredis: {INSTALL}") from None
    return redis


def default_consumer() -> str:
    """``<hostname>-<pid>``: unique per process; a restart gets a new name."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _client(address: str, safe: str, role: str) -> Any:
    redis = _redis()
    try:
        # The socket timeout bounds every call; a blocking read asks for at most a second.
        return redis.Redis.from_url(address, socket_timeout=30.0, socket_connect_timeout=5.0)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{role} {safe}: {exc}") from None


@contextmanager
def _errors(safe: str, doing: str) -> Iterator[None]:
    import redis.exceptions as rex

    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        raise BackendUnavailable(
            f"Redis at {safe} cannot be reached while {doing}: {exc}; check that it runs"
        ) from exc
    except rex.ResponseError as exc:
        raise StorageError(f"Redis at {safe} refused {doing}: {exc}") from exc
    except rex.RedisError as exc:
        raise StorageError(f"Redis at {safe} failed while {doing}: {exc}") from exc


def _raw(response: Any, **options: Any) -> Any:
    return response


def _entries(reply: Any) -> list[Any]:
    """The entries of an ``XREADGROUP`` reply on one stream (RESP2: a list; RESP3: a map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSource(Source):
    """Events from a Redis stream, through a consumer group.

    Args:
        url: ``redis://host:port/db?stream=<name>`` and the parameters in the module docstring.
        group: the consumer group.
        consumer: this consumer's name in the group (see :func:`default_consumer`).
    """

    def __init__(self, url: str, *, group: str, consumer: str) -> None:
        parts = parse_url(url, "--source", dict.fromkeys(_SCHEMES, SOURCE_OPTIONS))
        options, self.url = parts.options, parts.safe
        if "stream" not in options:
            raise InvalidInput(f"--source {self.url} names no stream; add ?stream=<name>")
        self.name = printable(options["stream"], "stream", "--source", self.url)
        self.field = options.get("field", "data").encode()
        self.start = options.get("start", "0")
        if self.start not in ("0", "$"):
            raise InvalidInput(
                f"--source {self.url}: start must be 0 (the whole stream) or $ (new entries), "
                f"got {self.start!r}"
            )
        self.claim_idle = positive(
            options.get("claim_idle"), "claim_idle", 60.0, "--source", self.url
        )
        self.group = printable(group, "the consumer group", "--group", group)
        self.consumer = printable(consumer, "the consumer name", "--consumer", consumer)
        self._address = parts.address
        self._client_: Any = None
        self._own_cursor: str | None = "0"  # own pending entries left to read, from here
        self._claim_cursor = "0-0"
        self._claim_at = 0.0

    @property
    def _client(self) -> Any:
        if self._client_ is None:
            client = _client(self._address, self.url, "--source")
            # Replies as hiredis parsed them: redis-py would build a dict per entry.
            for command in ("XREADGROUP", "XAUTOCLAIM"):
                client.set_response_callback(command, _raw)
            with _errors(self.url, f"creating consumer group {self.group!r}"):
                try:
                    client.xgroup_create(self.name, self.group, id=self.start, mkstream=True)
                except Exception as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._client_ = client
        return self._client_

    def connect(self) -> None:
        self._client  # noqa: B018 - connects and creates the group

    def read(self, max_events: int, timeout: float) -> list[Event]:
        client = self._client
        group = ("GROUP", self.group, self.consumer, "COUNT", max_events)
        with _errors(self.url, f"reading stream {self.name!r}"):
            while self._own_cursor is not None:  # after a restart: what this name held
                reply = client.execute_command(
                    "XREADGROUP", *group, "STREAMS", self.name, self._own_cursor
                )
                entries = _entries(reply)
                if not entries:
                    self._own_cursor = None
                    break
                self._own_cursor = _text(entries[-1][0])
                events = self._events(entries, redelivered=True)
                if events:
                    return events
            if time.monotonic() >= self._claim_at:
                events = self._claim(max_events)
                if events:
                    return events
            block = max(1, int(timeout * 1000))
            reply = client.execute_command(
                "XREADGROUP", *group, "BLOCK", block, "STREAMS", self.name, ">"
            )
            return self._events(_entries(reply), redelivered=False)

    def _claim(self, max_events: int) -> list[Event]:
        """Entries other consumers left unacknowledged for ``claim_idle`` seconds."""
        reply = self._client.execute_command(
            "XAUTOCLAIM",
            self.name,
            self.group,
            self.consumer,
            int(self.claim_idle * 1000),
            self._claim_cursor,
            "COUNT",
            max_events,
        )
        cursor, entries = _text(reply[0]), reply[1]
        if cursor == "0-0":  # scanned the whole pending list: look again in a while
            self._claim_at = time.monotonic() + min(self.claim_idle / 2, 5.0)
        self._claim_cursor = cursor
        return self._events(entries, redelivered=True)

    def _events(self, entries: Sequence[Any], *, redelivered: bool) -> list[Event]:
        """Raw ``[id, [field, value, ...]]`` entries as events."""
        events: list[Event] = []
        gone: list[Any] = []
        prefix = self.name + ":"
        field = self.field
        for entry_id, fields in entries:
            if not fields:  # deleted (trimmed) while pending: nothing to answer
                gone.append(entry_id)
                continue
            if fields[0] == field:  # the usual entry: one field
                payload = fields[1]
            else:  # a missing field leaves it empty: the consumer dead-letters it, saying why
                pairs = dict(zip(fields[::2], fields[1::2], strict=True))
                payload = pairs.get(field, b"")
            eid = entry_id.decode()
            # The entry id starts with the ms Redis stored it; only a redelivery needs it.
            enqueued = int(eid.partition("-")[0]) if redelivered else None
            events.append(Event(eid, prefix + eid, payload, redelivered, enqueued, entry_id))
        if gone:
            self._client.xack(self.name, self.group, *gone)
        return events

    def ack(self, events: Sequence[Event]) -> None:
        if not events:
            return
        with _errors(self.url, f"acknowledging {len(events)} events"):
            self._client.xack(self.name, self.group, *[e.token for e in events])

    def lag(self) -> int | None:
        with _errors(self.url, "reading the group's lag"):
            for info in self._client.xinfo_groups(self.name):
                if _text(info.get("name")) == self.group:
                    pending, lag = info.get("pending"), info.get("lag")
                    if lag is None:
                        return None
                    return int(pending or 0) + int(lag)
        return None

    def close(self) -> None:
        if self._client_ is not None:
            self._client_.close()


class RedisSink(Sink):
    """Outputs as entries of a Redis stream; an event's output written again replaces it.

    Args:
        url: ``redis://host:port/db?stream=<name>``, optionally ``window`` and ``maxlen``.
        role: the option it came from (``--sink``, ``--dead-letter``), for messages.
    """

    def __init__(self, url: str, role: str = "--sink") -> None:
        parts = parse_url(url, role, dict.fromkeys(_SCHEMES, SINK_OPTIONS))
        options, self.url, self.role = parts.options, parts.safe, role
        if "stream" not in options:
            raise InvalidInput(f"{role} {self.url} names no stream; add ?stream=<name>")
        self.stream = printable(options["stream"], "stream", role, self.url)
        self.window = int(positive(options.get("window"), "window", 600, role, self.url))
        maxlen = options.get("maxlen")
        self.maxlen = 0 if maxlen is None else int(positive(maxlen, "maxlen", 0, role, self.url))
        self.prefix = f"keel:stream-output:{self.stream}:"
        self._address = parts.address
        self._client_: Any = None
        self._sha: str | None = None

    @property
    def _client(self) -> Any:
        if self._client_ is None:
            self._client_ = _client(self._address, self.url, self.role)
        return self._client_

    def connect(self) -> None:
        with _errors(self.url, "connecting"):
            self._client.ping()

    def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        with _errors(self.url, f"writing {len(records)} outputs to stream {self.stream!r}"):
            self._send(records)

    def _send(self, records: Sequence[Record]) -> None:
        """Script calls of :data:`RECORDS_PER_CALL` records each, in one round trip.

        hiredis packs the commands in C (redis-py would encode every argument in Python).
        A script Redis has lost (a restart) is loaded again and the trip repeated: the
        script replaces what the first try wrote, so a repeat adds nothing.
        """
        import hiredis
        import redis.exceptions as rex

        client = self._client
        for _ in range(2):
            if self._sha is None:
                self._sha = str(client.script_load(_WRITE))
            head = ("EVALSHA", self._sha, 1, self.stream, self.window, self.prefix, self.maxlen)
            commands = []
            for at in range(0, len(records), RECORDS_PER_CALL):
                args: list[Any] = list(head)
                for key, payload in records[at : at + RECORDS_PER_CALL]:
                    args.append(key)
                    args.append(payload)
                commands.append(hiredis.pack_command(tuple(args)))
            pool = client.connection_pool
            conn = pool.get_connection()
            lost = False
            failure: Exception | None = None
            try:
                conn.send_packed_command(commands)
                for _ in commands:
                    try:
                        conn.read_response()
                    except rex.NoScriptError:
                        lost = True
                    except rex.ResponseError as exc:  # read the other replies first
                        failure = exc
            except BaseException:
                conn.disconnect()  # replies may be left unread: never reuse it
                raise
            finally:
                pool.release(conn)
            if failure is not None:
                raise failure
            if not lost:
                return
            self._sha = None
        raise StorageError(f"Redis at {self.url} keeps losing the output script")

    def close(self) -> None:
        if self._client_ is not None:
            self._client_.close()
