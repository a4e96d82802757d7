"""The v2 gRPC service over a serving app: the same routes, checks, logs and metrics as HTTP.

Every call goes through the :class:`~keel.serving.app.ServingApp` that serves HTTP
in the same process: ``ModelInfer`` is :meth:`ServingApp.predict_v2` (canary and
shadow routing, the signature's checks, a prediction-log row per answer, the
request metrics with ``protocol="grpc"``), ``ModelMetadata`` is
:meth:`ServingApp.v2_metadata`. With ``keel serve --auth``, ``ModelInfer`` and
``ModelMetadata`` need a token with scope ``predict`` in the ``authorization``
metadata (``Bearer <token>``), as the HTTP routes do.

Errors are statuses, never a traceback: a Keel error maps to the status of its
HTTP code (:data:`STATUS_CODES`: a request that does not parse, or does not fit
the signature, is ``INVALID_ARGUMENT``; an unknown model ``NOT_FOUND``), and only
a model that fails on valid input, or a fault of the server, is ``INTERNAL``.
The handlers parse their own request bytes, so a message that is not protobuf at
all is ``INVALID_ARGUMENT`` too (grpc's own parsing would answer ``UNKNOWN``).
Each error is counted in ``keel_errors`` under its HTTP code.

The server is grpc's asyncio server on the event loop uvicorn runs: requests of
both protocols take turns on one loop, as HTTP requests do, so micro-batching,
features and the routing table need no locks and no model is ever asked to predict
from two threads at once. ``bench/serving_grpc.py --thread-pool`` measures it
against grpc's thread-pool server running the same app: on 2 cores the asyncio
server answered 1.11x the requests per second at 0.88x the CPU time per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, KeelError
from keel.serving.protocols import check_request_id

if TYPE_CHECKING:
    import grpc

    from keel.serving.app import ServingApp

__all__ = [
    "SERVICE",
    "STATUS_CODES",
    "STOP_GRACE_SECONDS",
    "InferenceService",
    "check_grpc_port",
    "start_grpc_server",
]

log = logging.getLogger("keel.serving")

#: The gRPC service name clients call (``/inference.GRPCInferenceService/ModelInfer``).
SERVICE = "inference.GRPCInferenceService"
#: The gRPC status for each HTTP status a Keel error carries; any other is INTERNAL.
STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
#: Seconds in-flight calls get to finish when the server stops.
STOP_GRACE_SECONDS = 5.0
_INSTALL = "pip install 'keel[grpc]'"

Handler = Callable[[Any, Any], Awaitable[Any]]


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise InvalidInput(
            f"--grpc-port needs grpcio, which is not installed: {_INSTALL}"
        ) from None
    return grpc


class InferenceService:
    """The six calls of ``inference.GRPCInferenceService`` over one serving app.

    Args:
        app: the app whose runtime, loggers, metrics and authenticator the calls share.
    """

    def __init__(self, app: ServingApp) -> None:
        self.app = app

    def handlers(self) -> dict[str, Any]:
        """The method handlers by method name, each parsing its own request bytes."""
        grpc = _grpc()
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        calls: list[tuple[str, Handler, Any, Any]] = [
            ("ServerLive", self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            ("ServerReady", self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            ("ModelReady", self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            (
                "ServerMetadata",
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            (
                "ModelMetadata",
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            ("ModelInfer", self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        ]
        return {
            name: grpc.unary_unary_rpc_method_handler(
                self._guard(call, request_type, grpc),
                response_serializer=response_type.SerializeToString,
            )
            for name, call, request_type, response_type in calls
        }

    def _guard(self, call: Handler, request_type: Any, grpc: Any) -> Callable[..., Awaitable[Any]]:
        """``call`` on the parsed request; any error becomes a status with a message."""
        from google.protobuf.message import DecodeError

        name = request_type.DESCRIPTOR.name
        metrics = self.app.metrics

        async def guarded(raw: bytes, context: Any) -> Any:
            try:
                try:
                    request = request_type.FromString(raw)
                except DecodeError:
                    raise InvalidInput(
                        f"the request is not a valid inference.{name} message of the v2 "
                        "gRPC protocol (KServe's grpc_predict_v2.proto)"
                    ) from None
                return await call(request, context)
            except KeelError as exc:
                status = exc.status_code
                code, message = STATUS_CODES.get(status, "INTERNAL"), str(exc)
            except Exception:
                log.exception("keel: unexpected error in gRPC %s", name.removesuffix("Request"))
                status, code = 500, "INTERNAL"
                message = "internal error while handling the request; see the server log"
            metrics.error(status)
            # outside the handlers above: abort raises, and grpc must see it
            await context.abort(getattr(grpc.StatusCode, code), message)

        return guarded

    # -- health and metadata ----------------------------------------------------------------

    async def server_live(self, request: Any, context: Any) -> Any:
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        try:
            self.app.runtime.table  # noqa: B018
        except KeelError as exc:
            log.warning("keel: not ready: %s", exc)
            return pb.ServerReadyResponse(ready=False)
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(self, request: Any, context: Any) -> Any:
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        self.app.handle_for(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        from keel import __version__
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        # HTTP's binary_tensor_data extension is built into gRPC (raw contents).
        return pb.ServerMetadataResponse(name="keel", version=__version__, extensions=[])

    async def model_metadata(self, request: Any, context: Any) -> Any:
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb

        await self._authorize(context)
        doc = self.app.v2_metadata(request.name, request.version or None)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]],
        )

    # -- inference ----------------------------------------------------------------------------

    async def model_infer(self, request: Any, context: Any) -> Any:
        from keel.serving.grpc import grpc_predict_v2_pb2 as pb
        from keel.serving.grpc.tensors import fill_response, v2_request

        started = time.perf_counter()
        await self._authorize(context)
        app = self.app
        table = app.runtime.table
        name, version = request.model_name, request.model_version or None
        pinned = None  # an unknown model or version is NOT_FOUND before a tensor is decoded
        if version is None:
            app.handle_for(name, None)
        else:
            pinned = app.handle_for(name, version)
        parsed = v2_request(request, app.max_elements)
        request_id = parsed.id or check_request_id(
            _metadata(context, "x-request-id") or uuid.uuid4().hex
        )
        handle, output, notes = await app.predict_v2(
            table, pinned, parsed, request_id, "grpc", started
        )
        response = pb.ModelInferResponse(
            model_name=name, model_version=str(handle.version), id=request_id
        )
        fill_response(response, output)
        if notes:  # what HTTP sends as headers (x-keel-ignored-inputs)
            context.set_trailing_metadata(tuple(notes.items()))
        return response

    async def _authorize(self, context: Any) -> None:
        """With ``--auth``: a token with scope ``predict`` in the ``authorization`` metadata."""
        auth = self.app.authenticator
        if auth is None:
            return
        from keel.governance.identity import token_from_header
        from keel.serving.auth import PREDICT_SCOPE

        secret = token_from_header(_metadata(context, "authorization"))
        principal = auth.cached(secret)
        if principal is None:  # a lookup in the store or the control plane: off the loop
            principal = await asyncio.to_thread(auth.principal, secret)
        auth.require(principal, PREDICT_SCOPE)


def _metadata(context: Any, key: str) -> str | None:
    """One value of the call's metadata (keys arrive lower-cased), or None."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else None
    return None


def check_grpc_port(
    host: str, grpc_port: int, *, port: int, metrics_port: int | None = None, workers: int = 1
) -> None:
    """Refuse a ``--grpc-port`` that ``keel serve`` cannot use, before any model loads.

    Raises:
        InvalidInput: grpcio is missing, there is more than one worker (each would need
            its own port), the port is another of the server's or out of range, or
            something already listens on it.
    """
    _grpc()
    if workers > 1:
        raise InvalidInput(
            "--grpc-port serves from one process, beside its HTTP server; "
            f"it needs --workers 1, got {workers}"
        )
    taken = {port: "--port", metrics_port: "--metrics-port"}
    if grpc_port in taken or not 0 < grpc_port < 65536:
        raise InvalidInput(
            f"--grpc-port must be a port from 1 to 65535 other than --port {port}"
            + (f" and --metrics-port {metrics_port}" if metrics_port is not None else "")
            + f", got {grpc_port}"
        )
    try:
        family = socket.getaddrinfo(host, grpc_port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, grpc_port))
    except OSError as exc:
        raise InvalidInput(
            f"--grpc-port {grpc_port}: cannot listen on {host} ({exc.strerror or exc}); "
            "choose another port"
        ) from None


async def start_grpc_server(app: ServingApp, host: str, port: int) -> grpc.aio.Server:
    """Serve ``app``'s deployment over v2 gRPC on ``host:port`` (on the running event loop).

    Messages may be as large as an HTTP body (``MAX_BODY_BYTES``); the elements a request
    declares are capped as over HTTP.

    Returns:
        the started server; ``await server.stop(STOP_GRACE_SECONDS)`` stops it.

    Raises:
        InvalidInput: grpcio is not installed, or the port cannot be bound.
    """
    grpc = _grpc()
    from keel.serving.app import MAX_BODY_BYTES

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_BODY_BYTES),
            ("grpc.max_send_message_length", MAX_BODY_BYTES),
            # a port another process serves is an error, not a port shared with it
            ("grpc.so_reuseport", 0),
        ]
    )
    handlers = InferenceService(app).handlers()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # registered methods are matched by grpc's core, not by a lookup in Python per call
    server.add_registered_method_handlers(SERVICE, handlers)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise InvalidInput(
            f"cannot serve gRPC on {address}: the port is in use or not ours to bind; "
            "choose another --grpc-port"
        )
    await server.start()
    return server
