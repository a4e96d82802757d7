"""Starting a server: ``keel serve NAME`` or ``keel serve models:/churn@champion``.

``auth=True`` (``keel serve --auth``) puts the inference and feedback routes
behind tokens (see :mod:`keel.serving.auth`); with ``--workers N`` every
worker builds its own app, and its own token cache, from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from keel.serving.deployments import DeploymentSpec, parse_route
from keel.serving.runtime import Runtime
from keel.uris import MODELS, scheme_of

__all__ = ["app_for_target", "app_from_env", "runtime_for_target", "serve"]

_TARGET_ENV = "KEEL_SERVE_TARGET"
_LOGGING_ENV = "KEEL_SERVE_LOG_PREDICTIONS"
_TRUST_ENV = "KEEL_SERVE_TRUST"
_PICKLE_ENV = "KEEL_SERVE_ALLOW_PICKLE"
_AUTH_ENV = "KEEL_SERVE_AUTH"
_RUNTIME_ENV = "KEEL_SERVE_RUNTIME"


def runtime_for_target(
    target: str,
    refresh_interval: float = 1.0,
    trust: Sequence[str] = (),
    allow_pickle: bool = False,
    runtime: str = "auto",
) -> Runtime:
    """A stored deployment by name, or an implicit one for a model URI (named after the model).

    ``trust``: names the model loader trusts beyond its built-in list (``--trust``).
    ``allow_pickle``: load models stored as pickles (``--allow-pickle``).
    ``runtime``: ``auto``, ``native``, ``onnx`` or ``treelite`` (``--runtime``; see
    :mod:`keel.models.runtimes`).
    """
    if scheme_of(target) == MODELS:
        route = parse_route(target)
        return Runtime(
            route.model,
            DeploymentSpec(routes=(route,)),
            refresh_interval=refresh_interval,
            trust=trust,
            allow_pickle=allow_pickle,
            runtime=runtime,
        )
    from keel.serving.deployments import Deployments

    Deployments().get(target)  # NotFound now, not at the first request
    return Runtime(
        target,
        refresh_interval=refresh_interval,
        trust=trust,
        allow_pickle=allow_pickle,
        runtime=runtime,
    )


def app_for_target(
    target: str,
    *,
    log_predictions: bool = True,
    refresh_interval: float = 1.0,
    own_process: bool = False,
    trust: Sequence[str] = (),
    auth: bool = False,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    allow_pickle: bool = False,
    runtime: str = "auto",
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
) -> Any:
    """The ASGI app for ``target`` with prediction logging to the artifact root.

    ``own_process``: the process serves nothing else (see :func:`keel.serving.app.create_app`).
    ``trust``: names the model loader trusts beyond its built-in list (``--trust``);
    ``allow_pickle``: load models stored as pickles (``--allow-pickle``).
    ``auth``: inference needs a token with scope ``predict`` and feedback one with
    ``feedback``, checked by the control plane when the settings name a server and
    in the local store otherwise. ``metrics_port``: serve ``/metrics`` there instead.
    ``grpc_port``: serve the v2 protocol over gRPC there too, on ``grpc_host``, from
    the app's own models, logs and metrics while the app runs (see :mod:`keel.serving.grpc`).
    ``runtime``: what runs each version (``--runtime``; default: a compiled form that
    passed parity, else the native package).
    """
    from keel.config import get_settings
    from keel.serving.app import create_app

    settings = get_settings()
    served = runtime_for_target(target, refresh_interval, trust, allow_pickle, runtime)
    authenticator = None
    if auth:
        from keel.serving.auth import authenticator_for

        authenticator = authenticator_for(settings, lambda: served.client.store)
    logger = errors = None
    if log_predictions:
        from keel.predictions import ERRORS, PredictionLogger

        logger = PredictionLogger(settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
        errors = PredictionLogger(
            settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url, dataset=ERRORS
        )
    return create_app(
        served,
        logger,
        error_logger=errors,
        own_process=own_process,
        authenticator=authenticator,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        grpc_port=grpc_port,
        grpc_host=grpc_host,
    )


def app_from_env() -> Any:
    """uvicorn factory for ``--workers N``: every worker builds its own app from the environment."""
    target = os.environ.get(_TARGET_ENV)
    if not target:
        from keel.errors import InvalidInput

        raise InvalidInput(f"{_TARGET_ENV} is not set; start servers with `keel serve`")
    trust = [name for name in os.environ.get(_TRUST_ENV, "").split(",") if name]
    return app_for_target(
        target,
        log_predictions=os.environ.get(_LOGGING_ENV, "1") != "0",
        own_process=True,
        trust=trust,
        auth=os.environ.get(_AUTH_ENV, "0") == "1",
        allow_pickle=os.environ.get(_PICKLE_ENV, "0") == "1",
        runtime=os.environ.get(_RUNTIME_ENV, "auto"),
    )


def serve(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    log_predictions: bool = True,
    access_log: bool = False,
    trust: Sequence[str] = (),
    auth: bool = False,
    metrics_port: int | None = None,
    allow_pickle: bool = False,
    runtime: str = "auto",
    announce: Callable[[Runtime], None] | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve ``target`` with uvicorn until interrupted (SIGINT/SIGTERM flush the logs).

    The models are loaded before the server starts, so a model that cannot be
    loaded (one needing a type nothing trusts, say) fails here with its error,
    not in the server's startup log. ``trust`` names what the model loader
    trusts beyond its built-in list and the ``trusted_types`` setting;
    ``allow_pickle`` lets it unpickle models stored as pickles (MLflow's
    ``cloudpickle`` format), still resolving only trusted names.

    Unless ``OMP_NUM_THREADS`` is set, each worker runs its models with one OpenMP
    thread: a request of a few rows gains nothing from threads and loses to their
    spinning against the event loop; scale out with ``workers`` instead.

    ``auth`` puts inference and feedback behind tokens (see :mod:`keel.serving.auth`);
    ``metrics_port`` serves ``/metrics`` on that port of ``host`` instead of ``port``
    (one process only: workers would each need their own port).
    ``grpc_port`` also serves the v2 protocol over gRPC on that port of ``host``, in
    the same process and event loop, from the same models, logs and metrics (one
    worker only, for the same reason; see :mod:`keel.serving.grpc`).

    ``runtime`` picks what runs each version: ``auto`` (the default) a compiled form
    whose compilation passed parity, else the native package; ``native``, ``onnx``
    or ``treelite`` ask for one (see :mod:`keel.models.runtimes`). ``announce`` is
    called with the loaded :class:`Runtime` once the models are loaded, before the
    server accepts requests (``keel serve`` prints which runtime serves each version).
    """
    from keel.asgi import run_uvicorn
    from keel.errors import InvalidInput

    if metrics_port is not None:
        if workers > 1:
            raise InvalidInput(
                f"--metrics-port serves one process's metrics; it needs --workers 1, got {workers}"
            )
        if metrics_port == port or not 0 < metrics_port < 65536:
            raise InvalidInput(
                f"--metrics-port must be a port other than --port {port}, got {metrics_port}"
            )

    if grpc_port is not None:
        from keel.serving.grpc import check_grpc_port

        check_grpc_port(host, grpc_port, port=port, metrics_port=metrics_port, workers=workers)

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any model library starts OpenMP

    if workers > 1:
        # Fail fast on a bad target or a model this loader refuses, before forking workers.
        loaded = runtime_for_target(target, trust=trust, allow_pickle=allow_pickle, runtime=runtime)
        loaded.table  # noqa: B018
        if announce is not None:
            announce(loaded)

    def build() -> Any:
        app = app_for_target(
            target,
            log_predictions=log_predictions,
            own_process=True,
            trust=trust,
            auth=auth,
            metrics_port=metrics_port,
            metrics_host=host,
            allow_pickle=allow_pickle,
            runtime=runtime,
            grpc_port=grpc_port,
            grpc_host=host,
        )
        app.state.runtime.table  # noqa: B018 - load now: a refusal is one line, not a traceback
        if announce is not None:
            announce(app.state.runtime)
        return app

    run_uvicorn(
        build,
        "keel.serving.server:app_from_env",
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        environ={
            _TARGET_ENV: target,
            _LOGGING_ENV: "1" if log_predictions else "0",
            _TRUST_ENV: ",".join(trust),
            _AUTH_ENV: "1" if auth else "0",
            _PICKLE_ENV: "1" if allow_pickle else "0",
            _RUNTIME_ENV: runtime,
        },
    )
