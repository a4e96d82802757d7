"""MLflow's REST API on ``keel server``, so the unmodified mlflow client logs to Keel.

``MLFLOW_TRACKING_URI=<keel server>`` and ``MLFLOW_TRACKING_TOKEN=<keel token>``
(or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` with the token as the password)
are all a script needs. What it logs is ordinary Keel data: an MLflow run is a
Keel run, an uploaded artifact is a Keel artifact of that run.

The API is a separate app mounted under MLflow's prefixes (:func:`mount`), so
its answers keep MLflow's error shape (:mod:`.errors`) while the rest of the
server keeps Keel's; it shares the server's state, tokens and roles.

- ``/api/2.0/mlflow`` and ``/ajax-api/2.0/mlflow``: tracking (:mod:`.tracking`),
  logged models (:mod:`.models`) and the model registry (:mod:`.registry`);
- ``/api/2.0/mlflow-artifacts``: the artifact proxy (:mod:`.artifacts`);
- ``/api/3.0/mlflow`` and ``/ajax-api/3.0/mlflow``: ``server-info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI

from keel.server.mlflow import artifacts, errors, models, registry, tracking

if TYPE_CHECKING:
    from keel.server.context import ServerState

__all__ = ["TRACKING_ROUTERS", "mount"]

#: The routers under ``/api/2.0/mlflow``, in the order their paths are matched.
TRACKING_ROUTERS: list[APIRouter] = [tracking.router, models.router, registry.router]


def _app(state: ServerState, routers: list[APIRouter]) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.keel = state  # the same tokens, stores and caches as the native API
    for router in routers:
        app.include_router(router)
    errors.install(app)
    return app


def mount(app: FastAPI) -> None:
    """Mount MLflow's API on the control-plane ``app`` (after its own routes)."""
    state: Any = app.state.keel
    api = _app(state, TRACKING_ROUTERS)
    info = _app(state, [tracking.v3_router])
    proxy = _app(state, [artifacts.router])
    for prefix, sub in (
        ("/api/2.0/mlflow", api),
        ("/ajax-api/2.0/mlflow", api),
        ("/api/2.0/mlflow-artifacts", proxy),
        ("/api/3.0/mlflow", info),
        ("/ajax-api/3.0/mlflow", info),
    ):
        app.mount(prefix, sub)
