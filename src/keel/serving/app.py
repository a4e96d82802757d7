"""The serving ASGI app: Open Inference Protocol v2, /invocations, KServe v1, metrics.

Every error answers ``{"error": "..."}`` with a 4xx/5xx status and never the
payload or a traceback: 400 for a body that does not parse or declares more
elements than ``max_request_elements``, 404 for an unknown model or version,
413 for a body over the size limit, 422 for input that parses but does not
fit the model's signature (a missing value where the signature allows none
included), 503 while models load. The server keeps serving after any bad
request, on the same connection. A client that goes away before its request
is read is neither an error nor a 500: it is counted in
``keel_client_disconnects_total`` and nothing is logged.

Only the inputs the answering version's signature names reach the model and
the prediction log; the others a request sends are dropped, counted in
``keel_ignored_inputs_total`` and in the response's ``x-keel-ignored-inputs``
header.

With an :class:`~keel.serving.auth.Authenticator` (``keel serve --auth``) the
inference routes and model metadata need a token with scope ``predict`` and
the feedback route one with scope ``feedback``, checked before the body is
read: 401 without a good token (nothing is read, logged or stored), 403
naming the missing scope. Health, readiness, server metadata, the OpenAPI
document and metrics stay open; ``metrics_port`` moves ``/metrics`` off the
serving port to a port of its own.

A deployment that declares features takes requests of join keys and request
data; the server reads the features from the online store and logs them with
the request (see :mod:`keel.serving.features`): a request lacking a join key
is a 400 naming it.

Each 2xx prediction is handed to the prediction logger *before* the
response is returned, so the rows logged equal the 2xx responses; the
logger's queue is flushed at shutdown.

The app is plain Starlette: every endpoint reads its raw body and parses it
with :mod:`keel.serving.protocols`, so a per-request validation framework
would only add latency; the OpenAPI document is written out in
:mod:`keel.serving.openapi`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from keel.asgi import read_body, tune_process
from keel.errors import InvalidInput, KeelError, NotFound, Unprocessable
from keel.governance.identity import token_from_header
from keel.models.reference import log_columns
from keel.predictions import INPUT_PREFIX, Block, error_row, request_columns
from keel.serving import protocols as p
from keel.serving.auth import FEEDBACK_SCOPE, PREDICT_SCOPE, Authenticator
from keel.serving.batching import MicroBatcher
from keel.serving.features import Assembled, MissingFeatures, v2_columns
from keel.serving.metrics import Metrics
from keel.serving.openapi import (
    FEEDBACK_BODY,
    PREDICTION_HEADERS,
    V1_BODY,
    V2_INFER_BODY,
    Operation,
    openapi_document,
)
from keel.serving.runtime import ModelHandle, RoutingTable, Runtime

__all__ = ["MAX_BODY_BYTES", "Unprocessable", "create_app", "logged_io"]

log = logging.getLogger("keel.serving")
_SHADOW_MAX_PENDING = 64
_JSON = "application/json"
#: Largest request body accepted (bytes); larger ones get 413 before they are read whole.
MAX_BODY_BYTES = 64 << 20
#: The response header counting the inputs a request sent that the signature does not name.
IGNORED_INPUTS_HEADER = "x-keel-ignored-inputs"
#: The status recorded for a client that left before its request was read (never sent).
_CLIENT_GONE = 499

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=_JSON,
        headers=headers,
    )


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class ServingApp:
    """The endpoints of one deployment's server, over its runtime and prediction logger."""

    def __init__(
        self,
        runtime: Runtime,
        logger: Any = None,
        *,
        error_logger: Any = None,
        own_process: bool = False,
        max_request_elements: int | None = None,
        authenticator: Authenticator | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        grpc_port: int | None = None,
        grpc_host: str = "127.0.0.1",
    ) -> None:
        from keel.config import get_settings

        self.runtime = runtime
        self.logger = logger
        self.error_logger = error_logger
        self.own_process = own_process
        self.authenticator = authenticator
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics_server: Any = None
        self.grpc_port = grpc_port
        self.grpc_host = grpc_host
        self._grpc_server: Any = None
        self.max_elements = (
            get_settings().max_request_elements
            if max_request_elements is None
            else max_request_elements
        )
        self.deployment = runtime.name
        self.metrics = Metrics(self.deployment, logger)
        self.missing_features = MissingFeatures(self.metrics.registry, self.deployment)
        self.batchers: dict[tuple[str, int], MicroBatcher] = {}
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-shadow")
        self._shadow_pending = 0
        self._shadow_lock = threading.Lock()

    # -- the Starlette app ---------------------------------------------------------------

    def scopes(self) -> dict[Endpoint, str]:
        """The token scope each protected endpoint needs (with an authenticator)."""
        return {
            self.infer: PREDICT_SCOPE,
            self.invocations: PREDICT_SCOPE,
            self.v1_predict: PREDICT_SCOPE,
            # a model's signature is for those who may call it
            self.model_metadata: PREDICT_SCOPE,
            self.feedback: FEEDBACK_SCOPE,
        }

    def operations(self) -> list[tuple[Operation, Endpoint]]:
        json_only = {_JSON: {"type": "object"}}
        return [
            (Operation("GET", "/v2", "Server metadata (v2)"), self.server_metadata),
            (Operation("GET", "/v2/health/live", "Liveness (v2)"), self.live),
            (Operation("GET", "/v2/health/ready", "Readiness (v2)"), self.ready),
            (Operation("GET", "/v2/models/{name}", "Model metadata (v2)"), self.model_metadata),
            (
                Operation("GET", "/v2/models/{name}/versions/{version}", "Version metadata (v2)"),
                self.model_metadata,
            ),
            (Operation("GET", "/v2/models/{name}/ready", "Model readiness (v2)"), self.model_ready),
            (
                Operation("GET", "/v2/models/{name}/versions/{version}/ready", "Version readiness"),
                self.model_ready,
            ),
            (
                Operation(
                    "POST",
                    "/v2/models/{name}/infer",
                    "Inference (v2)",
                    {_JSON: V2_INFER_BODY},
                    PREDICTION_HEADERS,
                ),
                self.infer,
            ),
            (
                Operation(
                    "POST",
                    "/v2/models/{name}/versions/{version}/infer",
                    "Inference on one version (v2)",
                    {_JSON: V2_INFER_BODY},
                    PREDICTION_HEADERS,
                ),
                self.infer,
            ),
            (
                Operation(
                    "POST",
                    "/v2/models/{name}/feedback",
                    "Labels for logged predictions",
                    {_JSON: FEEDBACK_BODY},
                ),
                self.feedback,
            ),
            (
                Operation(
                    "POST",
                    "/invocations",
                    "MLflow scoring",
                    {**json_only, "text/csv": {"type": "string"}},
                    PREDICTION_HEADERS,
                ),
                self.invocations,
            ),
            (
                Operation(
                    "POST",
                    "/v1/models/{name}:predict",
                    "KServe v1",
                    {_JSON: V1_BODY},
                    PREDICTION_HEADERS,
                ),
                self.v1_predict,
            ),
            (Operation("GET", "/v1/models", "Models served (KServe v1)"), self.v1_models),
            (Operation("GET", "/v1/models/{name}", "Model readiness (KServe v1)"), self.v1_model),
            (Operation("GET", "/metrics", "Prometheus metrics"), self.prometheus),
            (Operation("GET", "/ping", "Liveness"), self.ping),
            (Operation("GET", "/health", "Readiness"), self.ready),
        ]

    def build(self) -> Starlette:
        from keel import __version__

        operations = self.operations()
        document = orjson.dumps(
            openapi_document(
                f"Keel serving: {self.deployment}", __version__, [op for op, _ in operations]
            )
        )

        async def openapi(request: Request) -> Response:
            return Response(document, media_type=_JSON)

        if self.metrics_port is not None:  # served on its own port, not next to the models
            operations = [(op, fn) for op, fn in operations if fn != self.prometheus]
        scopes = self.scopes() if self.authenticator is not None else {}
        routes = [
            Route(op.path, self._guard(self._authorized(fn, scopes.get(fn))), methods=[op.method])
            for op, fn in operations
        ]
        routes.append(Route("/openapi.json", openapi, methods=["GET"]))
        app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
            lifespan=self._lifespan,
        )
        app.state.runtime = self.runtime
        app.state.logger = self.logger
        app.state.metrics = self.metrics
        app.state.batchers = self.batchers
        return app

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> Any:
        self.runtime.table  # noqa: B018 - load the models before accepting traffic
        if self.own_process:
            tune_process()
        if self.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_server, _ = start_http_server(
                self.metrics_port, addr=self.metrics_host, registry=self.metrics.registry
            )
        self.runtime.start()
        try:
            if self.grpc_port is not None:  # on this event loop, beside HTTP
                from keel.serving.grpc import start_grpc_server

                self._grpc_server = await start_grpc_server(self, self.grpc_host, self.grpc_port)
            yield
        finally:
            if self._grpc_server is not None:  # first: its calls in flight still log
                from keel.serving.grpc import STOP_GRACE_SECONDS

                await self._grpc_server.stop(STOP_GRACE_SECONDS)
            self.runtime.stop()
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
                self._metrics_server.server_close()
            if self.authenticator is not None:
                self.authenticator.close()
            self._shadow_pool.shutdown(wait=True)
            for logger in (self.logger, self.error_logger):
                if logger is not None:
                    logger.close()

    def _authorized(self, endpoint: Endpoint, scope: str | None) -> Endpoint:
        """``endpoint`` behind a token check for ``scope`` (unchanged when it needs none).

        A fresh cached answer is read on the event loop; only a lookup (the store or
        the control plane) goes to a thread.
        """
        auth = self.authenticator
        if auth is None or scope is None:
            return endpoint

        async def authorized(request: Request) -> Response:
            secret = token_from_header(request.headers.get("authorization"))
            principal = auth.cached(secret)
            if principal is None:
                principal = await run_in_threadpool(auth.principal, secret)
            auth.require(principal, scope)
            return await endpoint(request)

        return authorized

    def _guard(self, endpoint: Endpoint) -> Endpoint:
        """Errors become JSON answers here, so none escapes to the server (which would
        log it twice and drop the keep-alive connection)."""

        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ClientDisconnect:  # nobody is left to answer: not an error, not a 500
                self.metrics.disconnects.inc()
                return Response(status_code=_CLIENT_GONE)
            except KeelError as exc:
                self.metrics.error(exc.status_code)
                return _error(exc.status_code, str(exc))
            except Exception:
                log.exception("keel: unexpected error on %s", request.url.path)
                self.metrics.error(500)
                return _error(500, "internal error while handling the request; see the server log")

        return guarded

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        self.metrics.error(exc.status_code)
        if exc.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}; see /openapi.json")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        return _error(exc.status_code, str(exc.detail))

    # -- routing ------------------------------------------------------------------------------

    def handle_for(self, name: str, version: str | None) -> tuple[str, ModelHandle]:
        """The primary for ``name``, or the handle serving ``version`` (404 otherwise)."""
        table = self.runtime.table
        self._check_name(table, name)
        if version is None:
            return "primary", table.primary
        if not (version.isascii() and version.isdecimal()):
            raise NotFound(f"model version must be a number, got {version!r}")
        handle = table.version(int(version))
        if handle is None:
            routed = sorted({h.version for _, _, h in table.routes})
            raise NotFound(f"version {version} of {name!r} is not served here; served: {routed}")
        return "pinned", handle

    def _check_name(self, table: RoutingTable, name: str) -> None:
        if name != self.deployment and name != table.primary.model_name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.deployment!r}")

    def _choose(self, table: RoutingTable, name: str, request_id: str) -> tuple[str, ModelHandle]:
        """The route for an unversioned request (weighted, sticky per request id)."""
        self._check_name(table, name)
        return table.choose(request_id)

    # -- predicting, logging, shadowing -----------------------------------------------------------

    async def _predict(
        self,
        table: RoutingTable,
        route: str,
        handle: ModelHandle,
        request_id: str,
        data: Any,
        protocol: str,
        started: float,
    ) -> tuple[Any, dict[str, str]]:
        """The model's output for ``data``, and the headers that say what was left out."""
        if p.frame_rows(data) == 0:
            raise InvalidInput("the request has no rows; send at least one")
        elements = p.count_values(data)
        if elements > self.max_elements:
            raise InvalidInput(
                f"the request holds {elements} values, over the limit of {self.max_elements} "
                "per request (the max_request_elements setting); split it into smaller requests"
            )
        given = data
        if table.features is None:
            data, ignored = p.signature_inputs(handle.signature, given)
            logged = data
        else:  # keys in: read the features (sub-ms, on the loop); log all that was assembled
            given = table.features.assemble(data, handle.signature, self.missing_features)
            data, logged, ignored = (
                given.model_input(handle.signature),
                given.columns,
                given.ignored,
            )
        headers: dict[str, str] = {}
        if ignored:
            self.metrics.ignored.inc(ignored)
            headers[IGNORED_INPUTS_HEADER] = str(ignored)
        version = str(handle.version)
        try:
            output = await self._run_model(handle, data, table.batching)
        except InvalidInput as exc:  # it parsed, but does not fit the signature
            self.metrics.rejected(route, version, protocol, 422)
            self._record_error(handle, route, request_id, data, 422, str(exc), started)
            raise Unprocessable(str(exc)) from None
        except Exception as exc:  # the model failed: count it against its version, answer 500
            self.metrics.rejected(route, version, protocol, 500)
            self._record_error(
                handle, route, request_id, data, 500, f"{type(exc).__name__}: {exc}", started
            )
            raise
        self._record(handle, route, request_id, logged, output, started)
        if table.shadow is not None:  # all the request sent: its signature may name others
            self._shadow(table.shadow, request_id, given, _input_names(handle, given))
        self.metrics.answered(route, version, protocol, time.perf_counter() - started)
        return output, headers

    async def _run_model(self, handle: ModelHandle, data: Any, batching: Any) -> Any:
        if batching is None or not (
            hasattr(data, "columns") or (isinstance(data, np.ndarray) and data.ndim == 2)
        ):
            return handle.model.predict(data)
        key = (handle.model_name, handle.version)
        batcher = self.batchers.get(key)
        if batcher is None or batcher.model is not handle.model:
            batcher = self.batchers[key] = MicroBatcher(
                handle.model, batching.max_size, batching.max_latency_ms
            )
        return await batcher.predict(data)

    def _record(
        self,
        handle: ModelHandle,
        route: str,
        request_id: str,
        data: Any,
        output: Any,
        started: float,
    ) -> None:
        logger = self.logger
        if logger is None:
            return
        latency = (time.perf_counter() - started) * 1000
        n = p.frame_rows(data)
        columns = request_columns(
            request_id=request_id,
            time_ms=time.time_ns() // 1_000_000,
            model=handle.model_name,
            version=handle.version,
            route=route,
            latency_ms=latency,
            n=n,
        )
        block = logged_io(handle, data, output, n, columns)
        logger.log(self.deployment, columns, n, block)

    def _record_error(
        self,
        handle: ModelHandle,
        route: str,
        request_id: str,
        data: Any,
        status: int,
        message: str,
        started: float,
    ) -> None:
        """One row per failed request in the ``errors`` dataset: live error rates per version."""
        if self.error_logger is None:
            return
        columns = error_row(
            request_id=request_id,
            time_ms=time.time_ns() // 1_000_000,
            model=handle.model_name,
            version=handle.version,
            route=route,
            latency_ms=(time.perf_counter() - started) * 1000,
            rows=p.frame_rows(data),
            status=status,
            error=message,
        )
        try:
            self.error_logger.log(self.deployment, columns, 1)
        except Exception:  # never turn a failed request into a different failure
            log.exception("keel: could not log a failed request of %s", self.deployment)

    def _shadow(
        self,
        shadow: ModelHandle,
        request_id: str,
        data: Any,
        names: tuple[str, ...] | None,
    ) -> None:
        with self._shadow_lock:
            if self._shadow_pending >= _SHADOW_MAX_PENDING:
                self.metrics.shadow.labels(self.deployment, "skipped").inc()
                return
            self._shadow_pending += 1

        def run() -> None:
            started = time.perf_counter()
            try:
                given, logged = data, None
                if isinstance(data, Assembled):  # with features: log all, as the primary
                    given, logged = data.model_input(shadow.signature), data.columns
                elif names is not None:  # ordered for the primary: give the shadow its names
                    import pandas as pd

                    given = pd.DataFrame(data, columns=list(names))
                given, _ = p.signature_inputs(shadow.signature, given)
                output = shadow.model.predict(given)
                logged = given if logged is None else logged
                self._record(shadow, "shadow", request_id, logged, output, started)
                self.metrics.shadow.labels(self.deployment, "ok").inc()
            except Exception as exc:  # the shadow never affects the response
                self.metrics.shadow.labels(self.deployment, "failed").inc()
                log.warning("keel: shadow %s/%s failed: %s", shadow.model_name, shadow.version, exc)
            finally:
                with self._shadow_lock:
                    self._shadow_pending -= 1

        self._shadow_pool.submit(run)

    # -- Open Inference Protocol v2 ---------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        from keel import __version__

        return _json(
            200, {"name": "keel", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def live(self, request: Request) -> Response:
        return _json(200, {"live": True})

    async def ready(self, request: Request) -> Response:
        try:
            self.runtime.table  # noqa: B018
        except KeelError as exc:
            return _error(503, f"not ready: {exc}")
        return _json(200, {"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        return _json(200, self.v2_metadata(name, version))

    def v2_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """A model's v2 metadata, for HTTP and gRPC (NotFound for a model not served)."""
        _, handle = self.handle_for(name, version)
        versions = sorted({str(h.version) for _, _, h in self.runtime.table.routes})
        return {
            "name": self.deployment if name == self.deployment else name,
            "versions": versions,
            "platform": handle.platform,
            **_v2_tensors(handle.signature),
            # not in the v2 schema, whose clients ignore what they do not know
            "parameters": {
                "keel_runtime": handle.runtime,
                "keel_runtime_reason": handle.runtime_reason,
            },
        }

    async def model_ready(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        self.handle_for(name, version)
        doc = {"name": name, "ready": True}
        return _json(200, doc if version is None else {**doc, "version": version})

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        name, version = request.path_params["name"], request.path_params.get("version")
        table = self.runtime.table
        pinned = None
        if version is None:
            self._check_name(table, name)  # 404 before reading a byte of the body
        else:
            pinned = self.handle_for(name, version)
        body = await _read_body(request)
        parsed = p.parse_v2(
            body,
            request.headers.get("inference-header-content-length"),
            max_elements=self.max_elements,
        )
        request_id = parsed.id or _request_id(request)
        handle, output, notes = await self.predict_v2(
            table, pinned, parsed, request_id, "v2", started
        )
        payload, headers = p.encode_v2_response(
            name, str(handle.version), request_id, output, parsed.binary_output
        )
        headers["x-request-id"] = request_id
        headers.update(notes)
        binary = "Inference-Header-Content-Length" in headers
        return Response(
            payload, media_type="application/octet-stream" if binary else _JSON, headers=headers
        )

    async def predict_v2(
        self,
        table: RoutingTable,
        pinned: tuple[str, ModelHandle] | None,
        parsed: p.V2Request,
        request_id: str,
        protocol: str,
        started: float,
    ) -> tuple[ModelHandle, Any, dict[str, str]]:
        """Route a parsed v2 request, predict, log and shadow: HTTP's infer and gRPC's ModelInfer.

        Args:
            table: the routing table the request started with.
            pinned: ``(route, handle)`` when the request named a version; None routes it
                by weight (sticky per ``request_id``).
            parsed: the request's tensors.
            request_id: the id its prediction rows are logged under.
            protocol: the ``protocol`` label of its metrics (``v2``, ``grpc``).
            started: ``time.perf_counter()`` when it arrived.

        Returns:
            the handle that answered, its output, and the notes to send back (the
            ``x-keel-ignored-inputs`` count).
        """
        route, handle = pinned or table.choose(request_id)
        # Shaped for the version that answers: a canary may order its columns differently.
        if table.features is None:
            data = p.to_model_input(parsed, handle.signature)
        else:  # keys and request data, not the signature's columns
            data = v2_columns(parsed)
        output, notes = await self._predict(
            table, route, handle, request_id, data, protocol, started
        )
        return handle, output, notes

    async def feedback(self, request: Request) -> Response:
        self.handle_for(request.path_params["name"], None)
        ids, labels, rows = p.parse_feedback(await _read_body(request))
        if self.logger is None:
            raise InvalidInput(
                "this server was started without prediction logging; feedback has nowhere to go"
            )
        written = self.logger.log_feedback(self.deployment, ids, labels, rows)
        return _json(200, {"accepted": written})

    # -- MLflow scoring and KServe v1 ----------------------------------------------------------

    async def invocations(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request)
        table = self.runtime.table
        route, handle = self._choose(table, self.deployment, request_id)
        body = await _read_body(request)
        # Parsed for the version that answers: its signature orders the columns (with
        # features, the request holds keys, not the signature's columns).
        signature = handle.signature if table.features is None else None
        data = p.parse_invocations(body, request.headers.get("content-type"), signature)
        output, headers = await self._predict(
            table, route, handle, request_id, data, "mlflow", started
        )
        headers["x-request-id"] = request_id
        return _json(200, {"predictions": p.to_jsonable(output)}, headers)

    async def v1_predict(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request)
        table = self.runtime.table
        route, handle = self._choose(table, request.path_params["name"], request_id)
        data = p.parse_v1(await _read_body(request))
        output, headers = await self._predict(table, route, handle, request_id, data, "v1", started)
        headers["x-request-id"] = request_id
        return _json(200, {"predictions": p.to_jsonable(output)}, headers)

    async def v1_models(self, request: Request) -> Response:
        return _json(200, {"models": [self.deployment]})

    async def v1_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.handle_for(name, None)
        return _json(200, {"name": name, "ready": True})

    # -- operations -----------------------------------------------------------------------------

    async def prometheus(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def ping(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})


def create_app(
    runtime: Runtime,
    logger: Any = None,
    *,
    error_logger: Any = None,
    own_process: bool = False,
    max_request_elements: int | None = None,
    authenticator: Authenticator | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
) -> Starlette:
    """The app serving ``runtime``'s deployment.

    Args:
        runtime: the deployment's models and routing.
        logger: a ``PredictionLogger``, or None to log nothing.
        error_logger: a ``PredictionLogger`` on the ``errors`` dataset: one row per request a
            model version failed (422 or 500), or None.
        own_process: the app is the only thing this process runs (``keel serve``): once
            the models are loaded, tune the interpreter for latency (see ``keel.asgi.tune_process``).
        max_request_elements: the most values one request may hold (for v2: may declare);
            ``None`` takes the ``max_request_elements`` setting.
        authenticator: checks tokens and scopes on the inference and feedback routes
            (``keel serve --auth``); None leaves every route open.
        metrics_port: serve ``/metrics`` on this port (of ``metrics_host``) instead of
            next to the models.
        grpc_port: also serve the v2 protocol over gRPC on this port (of ``grpc_host``),
            in this process and on the same models, logs and metrics
            (see :mod:`keel.serving.grpc`).
    """
    return ServingApp(
        runtime,
        logger,
        error_logger=error_logger,
        own_process=own_process,
        max_request_elements=max_request_elements,
        authenticator=authenticator,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        grpc_port=grpc_port,
        grpc_host=grpc_host,
    ).build()


# -- helpers ------------------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    """The whole body, refusing one over :data:`MAX_BODY_BYTES` before reading it all."""
    return await read_body(request, MAX_BODY_BYTES)


def _request_id(request: Request) -> str:
    return p.check_request_id(request.headers.get("x-request-id") or uuid.uuid4().hex)


def logged_io(
    handle: ModelHandle, data: Any, output: Any, n: int, columns: dict[str, Any]
) -> Block | None:
    """Add the inputs and outputs of ``n`` answered rows to their prediction-log ``columns``.

    The one rule for what a prediction row holds of a request, shared by every path that
    serves a deployment (HTTP here, ``keel stream``): inputs that are a 2-D array in
    ``handle``'s signature order come back as a block (no copy per column), any other
    inputs and the outputs are added to ``columns``.

    Returns:
        the block to pass to ``PredictionLogger.log``, or None.
    """
    names = _input_names(handle, data)
    block = None
    if names is not None:
        block = Block(_prefixed(names), data)
    else:
        columns.update(log_columns("input", data, n))
    columns.update(log_columns("output", output, n))
    return block


def _input_names(handle: ModelHandle, data: Any) -> tuple[str, ...] | None:
    """The column names of a 2-D array input, from the signature it was ordered by."""
    if not (isinstance(data, np.ndarray) and data.ndim == 2):
        return None
    signature = handle.signature
    if signature is None or signature.inputs.is_tensor:
        return None
    names = signature.inputs.names
    return names if len(names) == data.shape[1] else None


_PREFIXED: dict[tuple[str, ...], tuple[str, ...]] = {}


def _prefixed(names: tuple[str, ...]) -> tuple[str, ...]:
    """``input.<name>`` for each name (memoized: the same names come with every request)."""
    hit = _PREFIXED.get(names)
    if hit is None:
        if len(_PREFIXED) > 256:
            _PREFIXED.clear()
        hit = _PREFIXED[names] = tuple(INPUT_PREFIX + n for n in names)
    return hit


def _v2_tensors(signature: Any) -> dict[str, list[dict[str, Any]]]:
    """v2 metadata ``inputs`` and ``outputs`` from a model signature."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    if signature is None:
        return {"inputs": inputs, "outputs": outputs}
    if signature.inputs.is_tensor:
        inputs = [
            {
                "name": t.name or "input-0",
                "datatype": p.v2_datatype(t.dtype),
                "shape": list(t.shape),
            }
            for t in signature.inputs.tensors
        ]
    else:
        inputs = [
            {"name": c.name, "datatype": p.v2_datatype(c.type), "shape": [-1]}
            for c in signature.inputs.columns
        ]
    if signature.outputs is not None:
        first = (signature.outputs.columns or signature.outputs.tensors)[0]
        kind = str(getattr(first, "type", None) or getattr(first, "dtype", "float64"))
        outputs = [{"name": "predict", "datatype": p.v2_datatype(kind), "shape": [-1]}]
    return {"inputs": inputs, "outputs": outputs}
