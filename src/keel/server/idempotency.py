"""Idempotent creates: a retried ``POST`` answers what its first attempt made.

Keel's http transport sends an ``Idempotency-Key`` header on every ``POST``
and keeps it across its retries. A connection that drops after the server
acted but before the client read the answer would otherwise make the object
twice (a second run, a second model version, every metric point doubled).

:class:`IdempotencyMiddleware` settles each key in the database, so it holds
across workers and hosts that share the store:

1. **Claim.** ``INSERT`` a placeholder row (empty ``response``) keyed by the
   digest of the caller's user and the key; the primary key decides which of
   two concurrent requests runs the route. The other one waits for the answer
   (up to :data:`WAIT_SECONDS`) and then gets 409.
2. **Run** the route, holding its answer back.
3. **Store** a 2xx answer (status, media type, body) in the row *before* the
   client sees it, so a client that saw an answer can always have it replayed.
   Any other answer, or an error, drops the placeholder: the retry runs anew.

A placeholder that no answer filled for :data:`LEASE_SECONDS` belongs to a
server that died mid-request; the next attempt takes it over (compare-and-set
on its time). Rows older than :data:`KEEP_SECONDS` are swept, at most once
an hour per process, inside a claim's transaction.

A ``POST`` without the header, and every other method, passes straight
through: one scan of the request's headers is all it costs.

A keyed ``POST`` costs two commits of its own, claim and store, and neither
can be folded away safely:

- The claim must be committed before the route runs: it is what makes a
  retry that arrives while the first attempt still runs (the client saw its
  connection drop) wait for that answer instead of running the route again.
  Taking it in the route's own transaction would need every library call to
  accept one from outside; the routes call the same client the local
  transport runs, which opens and commits its own.
- The store must be committed after the route's commits, since the answer
  only exists then, and before the answer is sent, or a client that saw the
  answer could retry into a placeholder and run the route again. Deferring it,
  or grouping several keys into one commit, breaks the second half or delays
  every answer. Failed requests pay one more commit (the delete) instead.

Reads that ``POST`` (searches) send no key and pay nothing.

A token create's answer holds the token's secret, which Keel keeps only as a
hash; its row keeps the answer without the secret, and a replay answers 409
naming the token that the first attempt made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import and_, delete, select, update
from starlette.concurrency import run_in_threadpool

from keel.errors import Conflict, InvalidInput, KeelError, Unauthenticated
from keel.governance.identity import token_from_header
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from keel.server.context import ServerState

__all__ = [
    "HEADER",
    "KEEP_SECONDS",
    "LEASE_SECONDS",
    "REPLAYED_HEADER",
    "WAIT_SECONDS",
    "IdempotencyMiddleware",
]

log = logging.getLogger("keel.server")

#: The request header that names a create (lower case, as ASGI carries headers).
HEADER = b"idempotency-key"
#: The answer header that marks a replayed answer.
REPLAYED_HEADER = "idempotent-replayed"
#: How long a second request with a key in progress waits for the first one's answer.
WAIT_SECONDS = 10.0
#: After this long, an unanswered placeholder is taken to belong to a dead server
#: (the client's own read timeout is 60 s, so it has given up on that attempt too).
LEASE_SECONDS = 60.0
#: Keys are kept this long; a retry later than that runs as a new request.
KEEP_SECONDS = 24 * 3600.0
_SWEEP_EVERY = 3600.0
_MAX_KEY = 128
_PENDING = ""
#: Routes whose answer holds a secret that must not be stored.
_SECRET_ROUTES = {"POST /api/v1/tokens": "token"}


@dataclass(frozen=True)
class _Stored:
    status: int
    media_type: str
    body: bytes
    withheld: str | None = None

    def encode(self) -> str:
        return json.dumps(
            {
                "status": self.status,
                "type": self.media_type,
                "body": self.body.decode(),
                "withheld": self.withheld,
            }
        )

    @classmethod
    def decode(cls, text: str) -> _Stored:
        value = json.loads(text)
        return cls(
            int(value["status"]), str(value["type"]), value["body"].encode(), value.get("withheld")
        )


@dataclass(frozen=True)
class _Claim:
    """What a claim found: ``owned`` (run the route), or an answer, or a row in progress."""

    owned: bool
    stored: _Stored | None = None
    other_route: str | None = None


def _row_key(user: str, key: str) -> str:
    # One user's key never meets another's: the row is named by both.
    return hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()


class IdempotencyMiddleware:
    """ASGI middleware that makes ``POST`` requests with an ``Idempotency-Key`` idempotent.

    Args:
        app: the ASGI app to wrap.
        state: the server's shared state (its store, and the token lookup that names
            the caller).
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self._swept_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = authorization = None
        for name, value in scope["headers"]:
            if name == HEADER:
                key = value
            elif name == b"authorization":
                authorization = value
        if key is None:
            await self.app(scope, receive, send)
            return
        await self._idempotent(scope, receive, send, key, authorization)

    async def _idempotent(
        self, scope: Scope, receive: Receive, send: Send, raw_key: bytes, auth: bytes | None
    ) -> None:
        route = f"POST {scope['path']}"[:256]
        try:
            key = _check_key(raw_key)
            secret = token_from_header(auth.decode("latin-1") if auth is not None else None)
        except KeelError as exc:
            await _answer_error(send, exc)
            return
        deadline = time.monotonic() + WAIT_SECONDS
        pause = 0.01
        while True:
            try:
                # one trip to a worker thread: the caller's user (cached) and the claim
                found = await run_in_threadpool(self._begin, secret, key, route)
            except KeelError as exc:
                await _answer_error(send, exc)
                return
            if found is None:  # not authenticated: the route answers that, creating nothing
                await self.app(scope, receive, send)
                return
            row, claim = found
            if claim.other_route is not None:
                await _answer_error(
                    send,
                    InvalidInput(
                        f"this idempotency key was used for {claim.other_route}, not {route}; "
                        "send a new key with every create"
                    ),
                )
                return
            if claim.owned:
                await self._run_and_store(scope, receive, send, row, route)
                return
            if claim.stored is not None:
                await _replay(send, route, claim.stored)
                return
            if time.monotonic() >= deadline:
                await _answer_error(
                    send,
                    Conflict(
                        "a request with this idempotency key is in progress; retry once it "
                        "has answered (its answer will be replayed)"
                    ),
                )
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _begin(self, secret: str | None, key: str, route: str) -> tuple[str, _Claim] | None:
        try:
            user = self.state.principal(secret).user
        except Unauthenticated:
            return None
        row = _row_key(user, key)
        return row, self._claim(row, user, route)

    def _claim(self, row: str, user: str, route: str) -> _Claim:
        table = s.idempotency_keys
        now = now_ms()
        with self.state.store.write() as conn:
            self._maybe_sweep(conn, now)
            # an INSERT's rowcount is not reliable across drivers (psycopg answers -1
            # here), so ask for the inserted key back instead
            inserted = conn.execute(
                insert_on_conflict(conn, table)
                .values(key=row, user_name=user, route=route, response=_PENDING, created_at=now)
                .on_conflict_do_nothing()
                .returning(table.c.key)
            ).first()
            if inserted is not None:
                return _Claim(owned=True)
            found = conn.execute(
                select(table.c.route, table.c.response, table.c.created_at).where(
                    table.c.key == row
                )
            ).one_or_none()
            if found is None:  # dropped between our insert and select: try again
                return _Claim(owned=False)
            if found.route != route:
                return _Claim(owned=False, other_route=found.route)
            if found.response != _PENDING:
                return _Claim(owned=False, stored=_Stored.decode(found.response))
            if found.created_at < now - int(LEASE_SECONDS * 1000):
                # compare-and-set on the time: of two takers, one wins
                taken = conn.execute(
                    update(table)
                    .where(
                        and_(
                            table.c.key == row,
                            table.c.response == _PENDING,
                            table.c.created_at == found.created_at,
                        )
                    )
                    .values(created_at=now)
                ).rowcount
                return _Claim(owned=bool(taken))
            return _Claim(owned=False)

    def _maybe_sweep(self, conn: Connection, now: int) -> None:
        moment = time.monotonic()
        if moment - self._swept_at < _SWEEP_EVERY:
            return
        self._swept_at = moment
        table = s.idempotency_keys
        conn.execute(delete(table).where(table.c.created_at < now - int(KEEP_SECONDS * 1000)))

    def _finish(self, row: str, stored: _Stored | None) -> None:
        table = s.idempotency_keys
        with self.state.store.write() as conn:
            if stored is None:
                conn.execute(delete(table).where(table.c.key == row))
            else:
                conn.execute(
                    update(table).where(table.c.key == row).values(response=stored.encode())
                )

    async def _run_and_store(
        self, scope: Scope, receive: Receive, send: Send, row: str, route: str
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold)
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled request still frees its key
                await run_in_threadpool(self._finish, row, None)
            raise
        body = b"".join(chunks)
        stored = _to_store(start, body, route)
        try:
            # stored before the client sees it: an answer seen is an answer replayable
            await run_in_threadpool(self._finish, row, stored)
        except KeelError as exc:
            log.warning("could not store the answer of an idempotent %s: %s", route, exc)
        if start is None:
            return
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _check_key(raw: bytes) -> str:
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        key = ""
    if not key or len(key) > _MAX_KEY or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {_MAX_KEY} printable ASCII characters "
            f"(a UUID is typical), got {len(raw)} bytes"
        )
    return key


def _to_store(start: Message | None, body: bytes, route: str) -> _Stored | None:
    if start is None or not 200 <= int(start["status"]) < 300:
        return None
    media_type = "application/json"
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            media_type = value.decode("latin-1")
    field = _SECRET_ROUTES.get(route)
    try:
        if field is None:
            body.decode()
            return _Stored(int(start["status"]), media_type, body)
        value = json.loads(body)
        value.pop(field, None)
        return _Stored(int(start["status"]), media_type, json.dumps(value).encode(), field)
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None  # not a text answer: nothing to replay, the retry runs anew


async def _replay(send: Send, route: str, stored: _Stored) -> None:
    if stored.withheld is not None:
        made = json.loads(stored.body)
        await _answer_error(
            send,
            Conflict(
                f"the first attempt of this {route} made token {made.get('id')!r}, whose secret "
                "is shown only once: revoke it (keel tokens revoke ID) and create a new one"
            ),
        )
        return
    await send(
        {
            "type": "http.response.start",
            "status": stored.status,
            "headers": [
                (b"content-type", stored.media_type.encode("latin-1")),
                (b"content-length", str(len(stored.body)).encode()),
                (REPLAYED_HEADER.encode(), b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


async def _answer_error(send: Send, exc: KeelError) -> None:
    body = json.dumps({"error": str(exc)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
