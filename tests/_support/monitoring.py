"""Helpers for the monitor tests: data, a prediction-log writer, an HTTP receiver."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HOUR = 3_600_000
T0 = int(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC).timestamp() * 1000)  # an hour boundary


def features(n: int, seed: int, shift: float = 0.0, plans: tuple[float, ...] = (0.6, 0.3, 0.1)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, size=n) + shift * 10,
            "income": rng.lognormal(10, 0.5, size=n),
            "plan": rng.choice(["free", "pro", "team"], size=n, p=list(plans)),
        }
    )


@dataclass
class Model:
    name: str
    version: int
    train: pd.DataFrame
    estimator: Any


@dataclass
class Logs:
    """Writes prediction rows the way the server does, with the real PredictionLogger."""

    root: str
    spill: Path
    counter: list[int] = field(default_factory=lambda: [0])
    endpoint: str | None = None

    def write(
        self,
        deployment: str,
        frame: pd.DataFrame,
        start_ms: int,
        *,
        model: str = "churn",
        version: int = 1,
        predictions: np.ndarray | None = None,
        span_ms: int = HOUR - 1,
        per_request: int = 1,
    ) -> list[str]:
        from keel.predictions import PredictionLogger

        n = len(frame)
        ids = [f"r{self.counter[0] + i // per_request}" for i in range(n)]
        self.counter[0] += n // per_request + 1
        times = start_ms + np.linspace(0, span_ms, n, dtype=np.int64)
        outputs = np.zeros(n, dtype=np.int64) if predictions is None else predictions
        columns: dict[str, Any] = {
            "request_id": ids,
            "time": times.tolist(),
            "model": [model] * n,
            "version": [version] * n,
            "route": ["primary"] * n,
            "latency_ms": [1.0] * n,
            "row": [i % per_request for i in range(n)],
            "output.prediction": outputs,
        }
        for column in frame.columns:
            columns[f"input.{column}"] = frame[column].to_numpy()
        with PredictionLogger(
            self.root, s3_endpoint_url=self.endpoint, spill_dir=self.spill, flush_interval=0.05
        ) as logger:
            logger.log(deployment, columns, n)
        return ids

    def label(
        self, deployment: str, ids: list[str], labels: list[Any], rows: list[Any] | None = None
    ) -> None:
        from keel.predictions import PredictionLogger

        with PredictionLogger(
            self.root, s3_endpoint_url=self.endpoint, spill_dir=self.spill
        ) as logger:
            logger.log_feedback(deployment, ids, labels, rows)


class Receiver:
    """An HTTP server on a loopback port that records POSTs and answers a scripted status list."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
