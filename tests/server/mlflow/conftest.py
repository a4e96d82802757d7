"""A real ``keel server`` and the unmodified mlflow client, for the MLflow API's tests.

The client runs from its own virtualenv (``_support.mlflow``) as a subprocess
talking HTTP to the server, exactly as a user's training script would. A
script prints one JSON line last; the ``run_mlflow`` fixture returns it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from _support.control_plane import ControlPlane, start_control_plane
from _support.mlflow import MLFLOW_PYTHON, NO_MLFLOW, mlflow_environ
from _support.mlflow import run_mlflow as run_script


def client_environ(server: ControlPlane, token: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a script using the mlflow client against ``server``."""
    return mlflow_environ(
        **{
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_TOKEN": server.admin_token if token is None else token,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # the client's default retries with backoff would turn a refused call into minutes
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            **extra,  # a test's own variables win
        }
    )


def _run_mlflow(
    server: ControlPlane,
    script: str,
    *args: str,
    cwd: Path,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    return run_script(script, *args, cwd=cwd, env=env or client_environ(server, token))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real server for the MLflow tests of this session (SQLite, local artifacts)."""
    if not MLFLOW_PYTHON.exists():
        pytest.skip(NO_MLFLOW)
    with start_control_plane(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


@pytest.fixture(scope="session")
def run_mlflow(mlflow_server: ControlPlane) -> Callable[..., Any]:
    """``run_mlflow(script, *args, cwd=, token=None, env=None)``: run ``script`` with the
    mlflow client pointed at the server; answer its last line of output, as JSON."""
    return functools.partial(_run_mlflow, mlflow_server)


@pytest.fixture(scope="session")
def mlflow_env(mlflow_server: ControlPlane) -> Callable[..., dict[str, str]]:
    """``mlflow_env(token=None, **extra)``: the environment of a client script."""
    return functools.partial(client_environ, mlflow_server)


@pytest.fixture
def mlflow_cwd(tmp_path: Path) -> Path:
    """Where a client script runs (mlflow may write local files there)."""
    folder = tmp_path / "client"
    folder.mkdir()
    return folder


@pytest.fixture
def keel_client(mlflow_server: ControlPlane, tmp_path: Path) -> keel.Client:
    """Keel's own client on the same server, as its admin."""
    mlflow_server.settings(tmp_path / ".keel")
    return keel.Client()


@pytest.fixture(scope="session")
def mlflow_http(mlflow_server: ControlPlane) -> Callable[..., httpx.Client]:
    """``mlflow_http(token=None)``: a raw HTTP client on the server's root ("" for no token)."""

    def make(token: str | None = None) -> httpx.Client:
        secret = mlflow_server.admin_token if token is None else token
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=mlflow_server.url, headers=headers, timeout=60)

    return make
