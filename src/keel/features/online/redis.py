"""The team online store: Redis, one string key per (view, entity).

URL: ``redis://[:password@]host:6379/0`` (``rediss://`` for TLS), with an optional
``prefix`` query parameter. Keys are ``keel:<prefix>:<view>:<entity>`` (``keel:<view>:
<entity>`` without one): give each Keel home sharing a Redis database its own prefix,
``redis://cache:6379/0?prefix=fraud``, or its own database number. Other query
parameters are redis-py's (``socket_timeout=…``).

A key's value is a 16-byte header, the event and created times as big-endian int64,
followed by the MessagePack map of feature values. A write sends batches of 1,000 keys
to one Lua script (loaded once, called by its SHA) that compares each stored header
with the written one and sets the key only when the written row is as new or newer, with
``PXAT event_ms + ttl`` when the view has a TTL, so Redis drops expired values itself.
Ten such calls go in one round trip, packed by hiredis. A read is one ``MGET`` per view, and it
still checks the TTL against the caller's clock, so a key that Redis has not dropped yet
is never served stale. Redis Cluster is not supported (a script's keys share one node).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import msgpack
import redis
import redis.exceptions

from keel.errors import BackendUnavailable, InvalidInput, StorageError
from keel.features.online.base import (
    OnlineStore,
    Row,
    encode_entity_keys,
    encode_values,
    entity_key,
)
from keel.validation import check_name

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["RedisOnlineStore"]

#: Every key Keel writes starts with this.
ROOT = "keel:"

#: Keys per script call, and script calls per pipeline round trip.
KEYS_PER_CALL = 1_000
CALLS_PER_PIPELINE = 10

# KEYS are n keys; ARGV holds their n records, then (with a TTL) their n expiry times
# in ms. Lua numbers are doubles: exact for ms timestamps (< 2^53), and compared as
# numbers, never as byte strings (Lua compares strings by the server's locale).
_WRITE = """
local written = 0
local n = #KEYS
for i = 1, n do
  local key = KEYS[i]
  local record = ARGV[i]
  local newer = true
  local old = redis.call('GETRANGE', key, 0, 15)
  if #old == 16 then
    local event, created = struct.unpack('>i8>i8', record)
    local old_event, old_created = struct.unpack('>i8>i8', old)
    newer = event > old_event or (event == old_event and created >= old_created)
  end
  if newer then
    local expire_at = ARGV[n + i]
    if expire_at then
      redis.call('SET', key, record, 'PXAT', expire_at)
    else
      redis.call('SET', key, record)
    end
    written = written + 1
  end
end
return written
"""

_HEADER = struct.Struct(">qq")

#: Socket timeouts unless the URL sets its own: a stuck Redis fails a request, not hangs it.
_DEFAULT_TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}


def _split_url(url: str) -> tuple[str, str, str]:
    """``(redis-py URL, key prefix, URL without password)`` of a store URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = ROOT
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "prefix":
            prefix = f"{ROOT}{check_name(value, 'the online store prefix')}:"
        else:
            rest.append((name, value))
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    safe = urlunsplit(parts._replace(netloc=netloc))
    return client_url, prefix, safe


class RedisOnlineStore(OnlineStore):
    """Online features in Redis.

    Args:
        url: ``redis://host:port/db`` or ``rediss://…``, optionally ``?prefix=<name>``.
    """

    def __init__(self, url: str) -> None:
        client_url, self.prefix, self.url = _split_url(url)
        given = {name for name, _ in parse_qsl(urlsplit(url).query)}
        options = {k: v for k, v in _DEFAULT_TIMEOUTS.items() if k not in given}
        try:
            self._client = redis.Redis.from_url(client_url, **options)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"cannot use the online store URL {self.url}: {exc}") from None
        self._sha: str | None = None

    def _key_prefix(self, view: str) -> str:
        return f"{self.prefix}{view}:"

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(
                f"the online store {self.url} cannot be reached while {doing}: {exc}; check "
                "that Redis runs there (KEEL_ONLINE_STORE names it)"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise StorageError(f"the online store {self.url} failed while {doing}: {exc}") from exc

    def close(self) -> None:
        """Disconnect the connection pool."""
        self._client.close()

    # -- writes --------------------------------------------------------------------------

    def write(
        self,
        view: str,
        keys: pa.Table,
        event_ms: np.ndarray,
        created_ms: np.ndarray,
        values: pa.Table,
        ttl_seconds: int | None,
    ) -> int:
        """Set each entity's key unless Redis holds a newer row; pipelined, 10,000 per trip."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if keys.num_rows == 0:
            return 0
        entities = encode_entity_keys(keys)
        names = pc.binary_join_element_wise(
            pa.scalar(self._key_prefix(view)), entities, pa.scalar("")
        ).to_pylist()
        header = [(">i8", event_ms), (">i8", created_ms)]
        records = encode_values(values, header).to_pylist()
        expiry: list[str] = []
        if ttl_seconds is not None:
            expire_at = pa.array(event_ms.astype("int64") + ttl_seconds * 1000)
            expiry = pc.cast(expire_at, pa.string()).to_pylist()
        written = 0
        step = KEYS_PER_CALL * CALLS_PER_PIPELINE
        with self._errors(f"writing view {view!r}"):
            for start in range(0, len(names), step):
                written += self._send(names, records, expiry, start, min(start + step, len(names)))
        return written

    def _send(
        self, names: list[str], records: list[bytes], expiry: list[str], start: int, stop: int
    ) -> int:
        """One round trip of script calls for rows ``start:stop``; returns rows written.

        The commands are packed by hiredis in C and sent on one pooled connection, then
        the replies read: redis-py's pipeline would encode each of the 20,000 arguments
        in Python, which cost as much as Redis's own work. A script Redis has lost (a
        restart, ``SCRIPT FLUSH``) is loaded again and the trip repeated: the script's
        compare makes a repeat harmless.
        """
        for attempt in (1, 2):
            if self._sha is None:
                self._sha = str(self._client.script_load(_WRITE))
            commands = []
            for at in range(start, stop, KEYS_PER_CALL):
                end = min(at + KEYS_PER_CALL, stop)
                args = (
                    "EVALSHA",
                    self._sha,
                    end - at,
                    *names[at:end],
                    *records[at:end],
                    *expiry[at:end],
                )
                # hiredis's stub types the argument as a 1-tuple; it takes any length
                commands.append(hiredis.pack_command(args))  # type: ignore[arg-type]
            pool = self._client.connection_pool
            conn = pool.get_connection()
            written, lost = 0, False
            try:
                conn.send_packed_command(commands)
                for _ in commands:
                    try:
                        written += int(conn.read_response())
                    except redis.exceptions.NoScriptError:
                        lost = True
            except BaseException:
                conn.disconnect()  # replies may be left unread: never reuse it
                raise
            finally:
                pool.release(conn)
            if not lost:
                return written
            self._sha = None
            if attempt == 2:
                raise StorageError(f"the online store {self.url} keeps losing its write script")
        return 0  # pragma: no cover - the loop returns or raises

    def delete_view(self, view: str) -> int:
        """Unlink every key of ``view`` (a ``SCAN`` over its prefix)."""
        deleted = 0
        with self._errors(f"deleting view {view!r}"):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=f"{self._key_prefix(view)}*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    deleted += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(self._client.unlink(*batch))
        return deleted

    # -- reads ---------------------------------------------------------------------------

    def read(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        features: Sequence[str],
        ttl_seconds: int | None,
        now_ms: int,
    ) -> list[Row]:
        """One ``MGET`` for all ``keys``; expired rows read as ``None``."""
        if not keys:
            return []
        prefix = self._key_prefix(view)
        names = [prefix + entity_key(key) for key in keys]
        with self._errors(f"reading view {view!r}"):
            blobs: list[bytes | None] = self._client.mget(names)  # type: ignore[assignment]
        oldest = None if ttl_seconds is None else now_ms - ttl_seconds * 1000
        unpack = msgpack.unpackb
        header = _HEADER.unpack_from
        out: list[Row] = []
        for blob in blobs:
            if blob is None:
                out.append(None)
                continue
            event = header(blob)[0]
            if oldest is not None and event < oldest:
                out.append(None)
                continue
            stored = unpack(memoryview(blob)[16:], timestamp=3)
            out.append((event, {f: stored.get(f) for f in features}))
        return out
