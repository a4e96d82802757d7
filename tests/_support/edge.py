"""Registered models and a static file server for the tests of ``keel models export --edge``.

- ``register_cancer``: a HistGradientBoosting classifier on breast_cancer (all numeric
  columns: a ``matrix`` feed once compiled).
- ``register_sized``: a ColumnTransformer pipeline (one-hot of a string category beside
  numeric columns: a ``columns`` feed once compiled) on breast_cancer with a ``size``
  category made from ``mean area``.
- ``StaticSite``: Python's ``http.server`` serving one folder on a free loopback port.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path
from typing import Any

import keel
from _support.network import free_port

__all__ = [
    "StaticSite",
    "json_records",
    "register_cancer",
    "register_kind",
    "register_sized",
    "sized_frame",
]

#: The numeric columns the pipeline keeps beside its category, by their names in it
#: (plain identifiers: the ONNX converter names the graph's inputs after them).
SIZED_COLUMNS = {
    "mean texture": "texture",
    "mean smoothness": "smoothness",
    "worst concavity": "concavity",
    "worst symmetry": "symmetry",
}
SIZED_NUMERIC = list(SIZED_COLUMNS.values())


def register_cancer(x: Any, y: Any, name: str = "cancer") -> str:
    """Fit, log and register the classifier; ``champion`` points at it. Returns ``name``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(5))
    version = keel.register_model(info.uri, name)
    keel.Client().set_alias(name, "champion", version)
    return name


def sized_frame(x: Any) -> Any:
    """breast_cancer's numeric columns kept by the pipeline, and ``size``: small/medium/large."""
    import pandas as pd

    frame = x[list(SIZED_COLUMNS)].rename(columns=SIZED_COLUMNS)
    frame["size"] = pd.qcut(x["mean area"], 3, labels=["small", "medium", "large"]).astype(str)
    return frame


def register_sized(x: Any, y: Any, name: str = "sized") -> str:
    """Fit, log and register the pipeline on :func:`sized_frame`; ``champion`` → it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = sized_frame(x)
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("size", OneHotEncoder(handle_unknown="ignore"), ["size"]),
                        ("numbers", "passthrough", SIZED_NUMERIC),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=25, random_state=0)),
        ]
    ).fit(frame, y)
    with keel.start_run():
        info = keel.log_model(pipeline, "model", input_example=frame.head(5))
    version = keel.register_model(info.uri, name)
    keel.Client().set_alias(name, "champion", version)
    return name


def register_kind(kind: str, x: Any, y: Any) -> tuple[str, Any]:
    """The model the edge tests export for ``kind`` and the rows it takes: the breast_cancer
    HistGradientBoosting (``"hist_gradient_boosting"``, a matrix feed) or the pipeline with a
    text category (``"column_transformer"``, a feed by column)."""
    if kind == "hist_gradient_boosting":
        return register_cancer(x, y), x
    return register_sized(x, y), sized_frame(x)


def json_records(frame: Any) -> list[dict[str, Any]]:
    """The rows as JSON records (plain Python values, floats at full precision)."""
    return json.loads(json.dumps(frame.to_dict(orient="records")))


class StaticSite:
    """``http.server`` serving ``folder`` at ``url`` from a thread of this process."""

    def __init__(self, folder: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
