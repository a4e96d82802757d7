"""The serving ASGI app: Open Inference Protocol v2, /invocations, KServe v1, metrics.

Every error answers ``{"error": "..."}`` with a 4xx/5xx status and never the
payload or a traceback: 400 for a body that does not parse, 404 for an
unknown model or version, 422 for input that parses but does not fit the
model's signature, 503 while models load. The server keeps serving after
any bad request.

Each 2xx prediction is handed to the prediction logger *before* the
response is returned, so the rows logged equal the 2xx responses; the
logger's queue is flushed at shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.errors import InvalidInput, KeelError, NotFound
from keel.serving import protocols as p
from keel.serving.batching import MicroBatcher
from keel.serving.runtime import ModelHandle, Runtime

__all__ = ["Unprocessable", "create_app"]

log = logging.getLogger("keel.serving")
_SHADOW_MAX_PENDING = 64
_JSON = "application/json"


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=_JSON,
        headers=headers,
    )


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class _Metrics:
    """Prometheus metrics in a registry of this app's own."""

    def __init__(self, deployment: str, logger: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keel_requests",
            "Requests answered, by route, model version, protocol and HTTP status.",
            ["deployment", "route", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_request_latency_seconds",
            "Time from request received to response ready, by route and version.",
            ["deployment", "route", "version"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.errors = Counter(
            "keel_errors",
            "Error responses by HTTP status.",
            ["deployment", "status"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "keel_shadow_predictions",
            "Shadow predictions by outcome (ok, failed, skipped when the shadow lags).",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        queue = Gauge(
            "keel_prediction_log_queue_rows",
            "Rows waiting in the prediction-log queue.",
            registry=self.registry,
        )
        written = Gauge(
            "keel_prediction_log_rows_written",
            "Prediction rows written to Parquet.",
            registry=self.registry,
        )
        spilled = Gauge(
            "keel_prediction_log_rows_spilled",
            "Prediction rows spilled to local disk.",
            registry=self.registry,
        )
        if logger is not None:
            queue.set_function(lambda: logger.stats().get("queue_rows", 0))
            written.set_function(lambda: logger.stats().get("rows_written", 0))
            spilled.set_function(lambda: logger.stats().get("rows_spilled", 0))
        self.deployment = deployment


def create_app(runtime: Runtime, logger: Any = None) -> FastAPI:
    """The app serving ``runtime``'s deployment; ``logger`` is a ``PredictionLogger`` or None."""
    deployment = runtime.name
    metrics = _Metrics(deployment, logger)
    shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-shadow")
    shadow_pending = [0]
    shadow_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        runtime.table  # noqa: B018 - load the models before accepting traffic
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()
            shadow_pool.shutdown(wait=True)
            if logger is not None:
                logger.close()

    app = FastAPI(
        title=f"Keel serving: {deployment}",
        version=_keel_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    # -- errors --------------------------------------------------------------------

    @app.exception_handler(KeelError)
    async def _keel_error(request: Request, exc: KeelError) -> Response:
        metrics.errors.labels(deployment, str(exc.status_code)).inc()
        return _error(exc.status_code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        metrics.errors.labels(deployment, "400").inc()
        where = ", ".join(".".join(str(x) for x in e.get("loc", ())) for e in exc.errors()[:3])
        return _error(400, f"malformed request: check {where or 'the request'}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        metrics.errors.labels(deployment, str(exc.status_code)).inc()
        if exc.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}; see /openapi.json")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("keel: unexpected error on %s", request.url.path)
        metrics.errors.labels(deployment, "500").inc()
        return _error(500, "internal error while handling the request; see the server log")

    # -- helpers ----------------------------------------------------------------------

    def handle_for(name: str, version: str | None) -> tuple[str, ModelHandle, str]:
        table = runtime.table
        served = {deployment, table.primary.model_name}
        if name not in served:
            raise NotFound(f"unknown model {name!r}; this server serves {deployment!r}")
        if version is None:
            return "primary", table.primary, ""
        if not (version.isascii() and version.isdecimal()):
            raise NotFound(f"model version must be a number, got {version!r}")
        handle = table.version(int(version))
        if handle is None:
            routed = sorted({h.version for _, _, h in table.routes})
            raise NotFound(f"version {version} of {name!r} is not served here; served: {routed}")
        return "pinned", handle, version

    def record(
        handle: ModelHandle, route: str, request_id: str, data: Any, output: Any, started: float
    ) -> None:
        latency = (time.perf_counter() - started) * 1000
        if logger is None:
            return
        n = p.frame_rows(data)
        columns: dict[str, Any] = {
            "request_id": [request_id] * n,
            "time": [int(time.time() * 1000)] * n,
            "model": [handle.model_name] * n,
            "version": [handle.version] * n,
            "route": [route] * n,
            "latency_ms": [latency] * n,
            "row": list(range(n)),
        }
        if hasattr(data, "columns"):
            for column in data.columns:
                columns[f"input.{column}"] = data[column].to_numpy()
        elif isinstance(data, np.ndarray) and data.ndim == 2:
            for j in range(data.shape[1]):
                columns[f"input.{j}"] = data[:, j]
        out = np.asarray(output)
        if out.ndim == 1 and len(out) == n:
            columns["output.prediction"] = out
        elif out.ndim == 2 and out.shape[0] == n:
            for j in range(out.shape[1]):
                columns[f"output.{j}"] = out[:, j]
        logger.log(deployment, columns, n)

    def shadow(table_shadow: ModelHandle | None, request_id: str, data: Any) -> None:
        if table_shadow is None:
            return
        with shadow_lock:
            if shadow_pending[0] >= _SHADOW_MAX_PENDING:
                metrics.shadow.labels(deployment, "skipped").inc()
                return
            shadow_pending[0] += 1

        def run() -> None:
            started = time.perf_counter()
            try:
                output = table_shadow.model.predict(data)
                record(table_shadow, "shadow", request_id, data, output, started)
                metrics.shadow.labels(deployment, "ok").inc()
            except Exception as exc:  # the shadow never affects the response
                metrics.shadow.labels(deployment, "failed").inc()
                log.warning(
                    "keel: shadow %s/%s failed: %s",
                    table_shadow.model_name,
                    table_shadow.version,
                    exc,
                )
            finally:
                with shadow_lock:
                    shadow_pending[0] -= 1

        shadow_pool.submit(run)

    batchers: dict[tuple[str, int], MicroBatcher] = {}

    async def run_model(handle: ModelHandle, data: Any, batching: Any) -> Any:
        if batching is None or not hasattr(data, "columns"):
            return handle.model.predict(data)
        key = (handle.model_name, handle.version)
        batcher = batchers.get(key)
        if batcher is None or batcher.model is not handle.model:
            batcher = batchers[key] = MicroBatcher(
                handle.model, batching.max_size, batching.max_latency_ms
            )
        return await batcher.predict(data)

    async def serve(
        name: str, version: str | None, request_id: str, data: Any, protocol: str, started: float
    ) -> tuple[ModelHandle, Any]:
        table = runtime.table
        if version is None:
            if name not in {deployment, table.primary.model_name}:
                raise NotFound(f"unknown model {name!r}; this server serves {deployment!r}")
            route, handle = table.choose(request_id)
        else:
            route, handle, _ = handle_for(name, version)
        if p.frame_rows(data) == 0:
            raise InvalidInput("the request has no rows; send at least one")
        try:
            output = await run_model(handle, data, table.batching)
        except InvalidInput as exc:  # it parsed, but does not fit the signature
            metrics.requests.labels(deployment, route, str(handle.version), protocol, "422").inc()
            raise Unprocessable(str(exc)) from None
        record(handle, route, request_id, data, output, started)
        shadow(table.shadow, request_id, data)
        elapsed = time.perf_counter() - started
        metrics.requests.labels(deployment, route, str(handle.version), protocol, "200").inc()
        metrics.latency.labels(deployment, route, str(handle.version)).observe(elapsed)
        return handle, output

    # -- Open Inference Protocol v2 ---------------------------------------------------------

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(
            200, {"name": "keel", "version": _keel_version(), "extensions": ["binary_tensor_data"]}
        )

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json(200, {"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        try:
            runtime.table  # noqa: B018
        except KeelError as exc:
            return _error(503, f"not ready: {exc}")
        return _json(200, {"ready": True})

    def metadata(name: str, version: str | None) -> Response:
        _, handle, _ = handle_for(name, version)
        versions = sorted({str(h.version) for _, _, h in runtime.table.routes})
        signature = handle.signature
        inputs: list[dict[str, Any]] = []
        outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        if signature is not None:
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
                specs = signature.outputs.columns or signature.outputs.tensors
                first = specs[0]
                kind = str(getattr(first, "type", None) or getattr(first, "dtype", "float64"))
                outputs = [{"name": "predict", "datatype": p.v2_datatype(kind), "shape": [-1]}]
        return _json(
            200,
            {
                "name": deployment if name == deployment else name,
                "versions": versions,
                "platform": f"keel-{handle.model.flavor}",
                "inputs": inputs,
                "outputs": outputs,
            },
        )

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        return metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> Response:
        return metadata(name, version)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        handle_for(name, None)
        return _json(200, {"name": name, "ready": True})

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> Response:
        handle_for(name, version)
        return _json(200, {"name": name, "version": version, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        started = time.perf_counter()
        _, target, _ = handle_for(name, version)  # 404 before reading a byte of the body
        body = await request.body()
        parsed = p.parse_v2(body, request.headers.get("inference-header-content-length"))
        request_id = parsed.id or p.check_request_id(
            request.headers.get("x-request-id") or uuid.uuid4().hex
        )
        data = p.to_model_input(parsed.inputs, target.signature)
        handle, output = await serve(name, version, request_id, data, "v2", started)
        payload, headers = p.encode_v2_response(
            name, str(handle.version), request_id, output, parsed.binary_output
        )
        headers["x-request-id"] = request_id
        return Response(
            payload,
            media_type=_JSON
            if not headers.get("Inference-Header-Content-Length")
            else "application/octet-stream",
            headers=headers,
        )

    infer_body = {
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "id": {"type": "string"},
                            "inputs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name", "shape", "datatype", "data"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "shape": {"type": "array", "items": {"type": "integer"}},
                                        "datatype": {
                                            "type": "string",
                                            "enum": list(p.V2_DATATYPES),
                                        },
                                        "data": {"type": "array"},
                                    },
                                },
                            },
                        },
                    }
                }
            },
        }
    }

    @app.post("/v2/models/{name}/infer", openapi_extra=infer_body)
    async def infer_latest(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=infer_body)
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    @app.post(
        "/v2/models/{name}/feedback",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["ids", "labels"],
                            "properties": {
                                "ids": {"type": "array", "items": {"type": "string"}},
                                "labels": {"type": "array"},
                                "rows": {"type": "array", "items": {"type": "integer"}},
                            },
                        }
                    }
                },
            }
        },
    )
    async def feedback(request: Request, name: str) -> Response:
        handle_for(name, None)
        doc = p._loads(await request.body())
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("ids"), list)
            or not isinstance(doc.get("labels"), list)
        ):
            raise InvalidInput(
                'feedback must be {"ids": [request ids], "labels": [labels], "rows": [optional row indexes]}'
            )
        ids, labels, rows = doc["ids"], doc["labels"], doc.get("rows")
        if len(ids) != len(labels) or not ids:
            raise InvalidInput(
                f"feedback needs as many labels as ids (and at least one); got {len(ids)} ids, {len(labels)} labels"
            )
        if rows is not None and (
            not isinstance(rows, list)
            or len(rows) != len(ids)
            or not all(isinstance(r, int) for r in rows)
        ):
            raise InvalidInput("feedback rows must be a list of integers, one per id")
        if logger is None:
            raise InvalidInput(
                "this server was started without prediction logging; feedback has nowhere to go"
            )
        written = logger.log_feedback(deployment, [str(i) for i in ids], labels, rows)
        return _json(200, {"accepted": written})

    # -- MLflow scoring and KServe v1 ----------------------------------------------------------

    @app.post(
        "/invocations",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": {"type": "object"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        data = p.parse_invocations(await request.body(), request.headers.get("content-type"))
        request_id = p.check_request_id(request.headers.get("x-request-id") or uuid.uuid4().hex)
        _, output = await serve(deployment, None, request_id, data, "mlflow", started)
        return _json(200, {"predictions": p.to_jsonable(output)}, {"x-request-id": request_id})

    @app.post(
        "/v1/models/{name}:predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {"instances": {"type": "array"}},
                        }
                    }
                },
            }
        },
    )
    async def v1_predict(request: Request, name: str) -> Response:
        started = time.perf_counter()
        data = p.parse_v1(await request.body())
        request_id = p.check_request_id(request.headers.get("x-request-id") or uuid.uuid4().hex)
        _, output = await serve(name, None, request_id, data, "v1", started)
        return _json(200, {"predictions": p.to_jsonable(output)}, {"x-request-id": request_id})

    # -- operations -----------------------------------------------------------------------------

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ping")
    async def ping() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/health")
    async def health() -> Response:
        return await ready()

    app.state.runtime = runtime
    app.state.logger = logger
    app.state.metrics = metrics
    app.state.batchers = batchers
    return app


class Unprocessable(InvalidInput):
    """Input that parsed but does not fit the model's signature."""

    status_code = 422


def _keel_version() -> str:
    from keel import __version__

    return __version__
