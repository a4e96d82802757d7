"""A real model registry and a real uvicorn server on a free port, for serving and log tests.

Conftests import the fixtures (``registered``, ``serve``) from here, so the
serving tests and the prediction-log tests share one definition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import keel
from _support.network import free_port

__all__ = ["Registered", "Server", "registered", "serve"]


@dataclass
class Registered:
    settings: Any
    features: Any  # DataFrame of all feature rows
    models: dict[int, Any]  # version → the in-memory estimator


@pytest.fixture
def registered(sqlite_env) -> Registered:
    """breast_cancer classifiers registered as versions 1 and 2 of 'cancer'; champion → 1."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    models = {}
    for version, iterations in ((1, 5), (2, 50)):
        model = HistGradientBoostingClassifier(max_iter=iterations, random_state=0).fit(x, y)
        with keel.start_run():
            info = keel.log_model(model, "model", input_example=x.head(3))
        assert keel.register_model(info.uri, "cancer") == version
        models[version] = model
    keel.Client().set_alias("cancer", "champion", 1)
    return Registered(sqlite_env, x, models)


class Server:
    """uvicorn serving an app in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = app

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """``serve(target_or_app, **kwargs)`` starts a server; all stop at the end of the test."""
    from keel.serving.server import app_for_target

    started: list[Server] = []

    def start(target: Any, **kwargs: Any) -> Server:
        app = app_for_target(target, **kwargs) if isinstance(target, str) else target
        server = Server(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()
