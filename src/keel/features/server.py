"""``keel features serve``: a small HTTP server of online feature values.

The same reads as :func:`keel.features.get_online_features`, over HTTP, from the
process's Keel home (or the server ``KEEL_SERVER_URL`` names) and its online store:

``POST /features/online`` (Keel's shape)::

    {"entity_rows": [{"driver_id": 1001}, {"driver_id": 1002}],
     "features": ["driver_stats:conv_rate", "driver_stats:acc_rate"],
     "full_feature_names": false}

``entities`` (``{"driver_id": [1001, 1002]}``, column-wise) may replace ``entity_rows``.
The answer::

    {"features": {"driver_id": [1001, 1002], "conv_rate": [0.5, null], "acc_rate": [...]},
     "event_ms": {"driver_stats": [1718000000000, null]},
     "feature_columns": ["conv_rate", "acc_rate"],
     "timestamp_columns": []}

``features`` holds the join keys as sent, then one column per feature in the order
asked for; ``null`` where the store has no value or it is past the view's TTL.
``event_ms`` is each view's event time per row; ``timestamp_columns`` names the columns
whose values are ISO 8601 times.

``POST /get-online-features`` takes Feast's request (``{"features": [...], "entities":
{"driver_id": [1001, 1002]}, "full_feature_names": false}``) and answers in Feast's
shape (``{"metadata": {"feature_names": [...]}, "results": [{"values", "statuses",
"event_timestamps"}, ...]}``, statuses ``PRESENT`` or ``NOT_FOUND``), so a client written
for Feast's feature server reads from Keel unchanged.

``GET /health`` answers ``{"status": "ok"}``; ``GET /metrics`` has Prometheus counters
of requests and their latency. A bad request answers 4xx ``{"error": ...}`` (400 for a
missing join key or an unknown feature, 404 for an unknown view, 413 for a body over
the limit) and the server goes on serving. The server checks no tokens: it binds
loopback unless told otherwise, like ``keel serve`` without ``--auth``.

Views are resolved once per feature list and kept for
:data:`~keel.features.serving_read.READER_REFRESH_S` seconds (:class:`OnlineReaders`),
so a request costs one store read per view; a newly applied version is seen within
that time. The control-plane route (:mod:`keel.server.routes.features`) reads through
the same :class:`OnlineReaders`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.asgi import read_body
from keel.errors import InvalidInput, KeelError
from keel.features.definitions import parse_feature_refs
from keel.features.serving_read import READER_REFRESH_S, OnlineFeatures, OnlineReader

if TYPE_CHECKING:
    import pandas as pd
    from starlette.applications import Starlette

    from keel.client import Client
    from keel.features.online import OnlineStore

__all__ = [
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_ROWS",
    "OnlineReaders",
    "create_app",
    "entity_rows_of",
    "feast_answer",
    "json_bytes",
    "online_answer",
    "serve",
]

log = logging.getLogger("keel.features.server")

#: Feast's feature server port, so a client configured for Feast finds this one.
DEFAULT_PORT = 6566
#: Largest request body the standalone server reads.
MAX_BODY_BYTES = 16 << 20
#: Most entity rows one request may ask for.
MAX_ROWS = 10_000
#: Feature lists whose readers are kept at once (a server asked for more starts over).
_MAX_READERS = 256
_JSON = "application/json"
_EPOCH = "1970-01-01T00:00:00Z"


class OnlineReaders:
    """An :class:`OnlineReader` per feature list, over one shared online store.

    A reader resolves its views when made; it is reused for ``refresh_s`` seconds, then
    made again, so a view applied at a new version is read within that time. Safe to use
    from several threads.

    Args:
        store: the opened online store every reader reads (not closed by the readers).
        refresh_s: how long a reader is reused.
    """

    def __init__(self, store: OnlineStore, *, refresh_s: float = READER_REFRESH_S) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._readers: dict[tuple[tuple[str, ...], bool], tuple[OnlineReader, float]] = {}
        self._lock = threading.Lock()

    def reader(
        self, client: Client, features: Sequence[str], *, full_feature_names: bool = False
    ) -> OnlineReader:
        """The reader of ``features``, resolved through ``client`` when not fresh.

        Raises:
            NotFound: an unknown view.
            InvalidInput: a malformed reference or a feature its view lacks.
        """
        key = (tuple(features), bool(full_feature_names))
        now = time.monotonic()
        cached = self._readers.get(key)
        if cached is not None and now - cached[1] < self.refresh_s:
            return cached[0]
        reader = OnlineReader(
            client, list(features), self.store, full_feature_names=full_feature_names
        )
        with self._lock:
            if len(self._readers) >= _MAX_READERS:
                self._readers.clear()
            self._readers[key] = (reader, now)
        return reader

    def read(
        self,
        client: Client,
        entity_rows: list[dict[str, Any]] | pd.DataFrame,
        features: Sequence[str],
        *,
        full_feature_names: bool = False,
    ) -> OnlineFeatures:
        """The current values of ``features`` for ``entity_rows``."""
        reader = self.reader(client, features, full_feature_names=full_feature_names)
        return reader.read(entity_rows)

    def close(self) -> None:
        """Close the shared store."""
        with self._lock:
            self._readers.clear()
        self.store.close()


# -- the request and answer shapes (shared with the control-plane route) -----------------------


def entity_rows_of(
    entity_rows: Any, entities: Any, *, max_rows: int = MAX_ROWS
) -> list[dict[str, Any]] | pd.DataFrame:
    """The entity rows of a request: ``entity_rows`` (a list of objects) or ``entities``
    (``{column: [values]}``), exactly one of them.

    Raises:
        InvalidInput: neither or both given, the wrong shapes, columns of different
            lengths, or more than ``max_rows`` rows.
    """
    if (entity_rows is None) == (entities is None):
        raise InvalidInput(
            'send the entities as "entity_rows": [{"driver_id": 1001}, ...] or as '
            '"entities": {"driver_id": [1001, ...]}, one of the two'
        )
    if entity_rows is not None:
        if not isinstance(entity_rows, list) or not all(isinstance(r, dict) for r in entity_rows):
            raise InvalidInput('entity_rows must be a list of objects such as {"driver_id": 1001}')
        _check_rows(len(entity_rows), max_rows)
        return entity_rows
    if not isinstance(entities, dict) or not all(isinstance(v, list) for v in entities.values()):
        raise InvalidInput('entities must be an object of columns such as {"driver_id": [1001]}')
    lengths = {len(v) for v in entities.values()}
    if len(lengths) > 1:
        sizes = {k: len(v) for k, v in entities.items()}
        raise InvalidInput(f"the entities' columns must have one length, got {sizes}")
    count = lengths.pop() if lengths else 0
    _check_rows(count, max_rows)
    import pandas as pd

    # column-wise: no dict per row; object columns keep ints, text and None as sent
    return pd.DataFrame({str(k): pd.Series(v, dtype=object) for k, v in entities.items()})


def _check_rows(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise InvalidInput(
            f"a request may ask for at most {max_rows} entity rows, got {count}; "
            "split it into smaller requests"
        )


def _features_of(features: Any) -> list[str]:
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidInput('features must be a list such as ["driver_stats:conv_rate"]')
    parse_feature_refs(features)  # a malformed reference fails before any lookup
    return features


def _timestamp_columns(columns: Mapping[str, list[Any]]) -> list[str]:
    """The columns whose values are times (judged by their first value that is not None)."""
    found = []
    for name, values in columns.items():
        first = next((v for v in values if v is not None), None)
        if isinstance(first, datetime):
            found.append(name)
    return found


def online_answer(result: OnlineFeatures) -> dict[str, Any]:
    """Keel's answer to an online read (see the module docstring); times stay datetimes."""
    return {
        "features": result.columns,
        "event_ms": result.event_ms,
        "feature_columns": result.feature_columns,
        "timestamp_columns": _timestamp_columns(result.columns),
    }


def _iso_ms(ms: int | None) -> str:
    if ms is None:
        return _EPOCH
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def feast_answer(result: OnlineFeatures, features: Sequence[str]) -> dict[str, Any]:
    """Feast's ``/get-online-features`` answer for ``result``, read for ``features``."""
    refs = parse_feature_refs(features)
    view_of = dict(zip(result.feature_columns, (r.view for r in refs), strict=True))
    results = []
    for name, values in result.columns.items():
        view = view_of.get(name)
        if view is None:  # a join key, as sent
            statuses = ["PRESENT"] * len(values)
            stamps = [_EPOCH] * len(values)
        elif view in result.event_ms:
            times = result.event_ms[view]
            statuses = ["NOT_FOUND" if t is None else "PRESENT" for t in times]
            stamps = [_iso_ms(t) for t in times]
        else:  # an on-demand feature: computed now, present when it has a value
            statuses = ["NOT_FOUND" if v is None else "PRESENT" for v in values]
            stamps = [_EPOCH] * len(values)
        results.append({"values": values, "statuses": statuses, "event_timestamps": stamps})
    return {"metadata": {"feature_names": list(result.columns)}, "results": results}


# -- the standalone app -----------------------------------------------------------------------


def json_bytes(doc: Any) -> bytes:
    """``doc`` as JSON: NaN and infinities as null, datetimes ISO 8601, numpy values plain."""
    import orjson

    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC)


def create_app(
    client: Client,
    *,
    store: str | OnlineStore | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rows: int = MAX_ROWS,
) -> Starlette:
    """The feature server app: online reads through ``client``'s registry from ``store``.

    Args:
        client: resolves the views (its metadata store, or the server it talks to).
        store: the online store: a URL, an opened store (left open at shutdown), or
            ``None`` for ``client``'s ``online_store`` setting.
        max_body_bytes: the largest request body read (413 above it).
        max_rows: the most entity rows one request may ask for (400 above it).
    """
    import orjson
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
    )
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from keel.features.online import OnlineStore

    owned = not isinstance(store, OnlineStore)
    opened = store if isinstance(store, OnlineStore) else client.features.online_store(store)
    readers = OnlineReaders(opened)
    registry = CollectorRegistry()
    requests = Counter(
        "keel_feature_requests", "Feature server requests", ["route", "status"], registry=registry
    )
    latency = Histogram(
        "keel_feature_request_seconds",
        "Time to answer an online read",
        ["route"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )

    def respond(status: int, doc: Any) -> Response:
        return Response(json_bytes(doc), status_code=status, media_type=_JSON)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await read_body(request, max_body_bytes, "; ask for fewer rows per request")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the request body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidInput(f"the request body must be a JSON object, got {type(doc).__name__}")
        return doc

    def read(doc: dict[str, Any], rows_key: str | None) -> tuple[OnlineFeatures, list[str]]:
        features = _features_of(doc.get("features"))
        rows = entity_rows_of(
            doc.get(rows_key) if rows_key else None, doc.get("entities"), max_rows=max_rows
        )
        full = doc.get("full_feature_names", False)
        if not isinstance(full, bool):
            raise InvalidInput(f"full_feature_names must be true or false, got {full!r}")
        return readers.read(client, rows, features, full_feature_names=full), features

    def endpoint(
        route: str, answer: Callable[[OnlineFeatures, list[str]], Any], rows_key: str | None
    ) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                doc = await body_of(request)
                result, features = await run_in_threadpool(read, doc, rows_key)
                response = respond(200, answer(result, features))
            except KeelError as exc:
                response = respond(exc.status_code, {"error": str(exc)})
            except Exception:
                log.exception("keel: unexpected error on %s", route)
                response = respond(500, {"error": "internal error; see the feature server's log"})
            requests.labels(route, str(response.status_code)).inc()
            latency.labels(route).observe(time.perf_counter() - started)
            return response

        return handle

    async def health(request: Request) -> Response:
        return respond(200, {"status": "ok", "online_store": opened.url})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = (
                f"no route {request.method} {request.url.path}; the feature server answers "
                "POST /features/online, POST /get-online-features, GET /health and GET /metrics"
            )
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(getattr(exc, "detail", "error"))
        return respond(status, {"error": message})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            if owned:
                readers.close()

    routes = [
        Route(
            "/features/online",
            endpoint("/features/online", lambda r, f: online_answer(r), "entity_rows"),
            methods=["POST"],
        ),
        Route(
            "/get-online-features",
            endpoint("/get-online-features", feast_answer, None),
            methods=["POST"],
        ),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan
    )
    app.state.readers = readers
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    store: str | None = None,
    client: Client | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve online features over HTTP until interrupted.

    The port is bound before the app starts, so ``port=0`` takes a free one, and
    ``announce`` is called with the server's URL once it is bound.

    Args:
        host: the interface to bind.
        port: the port to bind (0: any free port).
        store: the online store URL (default: the ``online_store`` setting).
        client: resolves the views (default: ``keel.Client()`` on the process's settings).
        announce: called with ``http://host:port`` once the port is bound.

    Raises:
        InvalidInput: the port cannot be bound, or the store URL is not one.
    """
    import uvicorn

    from keel.asgi import LOG_LEVEL, tune_process

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidInput(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, "
                "or 0 for any free one"
            ) from None
        if client is None:
            from keel.client import Client

            client = Client()
        app = create_app(client, store=store)
        sock.listen(2048)
        bound = sock.getsockname()[1]
        if announce is not None:
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            announce(f"http://{shown}:{bound}")
        tune_process()
        uvicorn.Server(uvicorn.Config(app, log_level=LOG_LEVEL, access_log=False)).run(
            sockets=[sock]
        )
    finally:
        sock.close()
