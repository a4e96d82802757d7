"""The Open Inference Protocol v2 over gRPC, beside HTTP in ``keel serve --grpc-port``.

``grpc_predict_v2.proto`` is KServe's published v2 interface (package ``inference``,
service ``GRPCInferenceService``: ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer), with its message names and field
numbers, so v2 clients such as tritonclient's gRPC client work unchanged.
:mod:`keel.serving.grpc.service` serves it over the HTTP app's runtime, loggers
and metrics; :mod:`keel.serving.grpc.tensors` turns its messages into the tensors
the HTTP route decodes.

``grpc_predict_v2_pb2.py``, ``grpc_predict_v2_pb2.pyi`` and
``grpc_predict_v2_pb2_grpc.py`` are generated and committed; do not edit them.
After changing the ``.proto``, regenerate them from the repository root with
grpcio-tools 1.72 (its protobuf 6.30 code runs on protobuf 6.30 and later, and on
grpcio 1.72.1 and later)::

    python -m pip install 'grpcio-tools==1.72.1'
    cd src && python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \\
        --grpc_python_out=. keel/serving/grpc/grpc_predict_v2.proto

The server registers its own handlers (it parses request bytes itself, so a bad
message is ``INVALID_ARGUMENT``); ``grpc_predict_v2_pb2_grpc`` holds the client
stub, ``GRPCInferenceServiceStub``, for Python clients without tritonclient.

The generated messages are registered in protobuf's default descriptor pool, as
tritonclient's and KServe's own copies of the protocol are: one process cannot
import two of them (``duplicate symbol 'inference.ServerLiveRequest'``). Nothing
here is imported until a gRPC server starts, so a client in another process, or
an app that only serves HTTP, is unaffected.
"""

from __future__ import annotations

from keel.serving.grpc.service import (
    STOP_GRACE_SECONDS,
    InferenceService,
    check_grpc_port,
    start_grpc_server,
)

__all__ = ["STOP_GRACE_SECONDS", "InferenceService", "check_grpc_port", "start_grpc_server"]
