"""Requests a model version fails are logged per version, apart from the predictions."""

from __future__ import annotations

import httpx
import numpy as np

import keel
from keel.predictions import ERRORS, PredictionReader, read_predictions
from keel.serving import Deployments, build_spec


class Picky:
    """Fails on any row whose first value is negative (saved without pickle)."""

    def predict(self, data):
        values = np.asarray(data, dtype=float)
        if (values[:, 0] < 0).any():
            raise ValueError("negative input")
        return values.sum(axis=1)

    def keel_save(self, path):
        (path / "marker").write_text("picky")

    @classmethod
    def keel_load(cls, path):
        return cls()


def _tensor(rows) -> dict:
    rows = np.asarray(rows, dtype=float)
    return {
        "name": "x",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.ravel().tolist(),
    }


def test_failed_requests_are_logged_with_their_version_and_status(sqlite_env, serve):
    with keel.start_run():
        info = keel.log_model(Picky(), "picky", input_example=np.ones((2, 3)))
    keel.register_model(info.uri, "picky")
    Deployments().create("picky-live", build_spec("picky/1"))
    server = serve("picky-live")
    with httpx.Client(base_url=server.url) as http:
        good = http.post("/v2/models/picky-live/infer", json={"inputs": [_tensor([[1, 2, 3]])]})
        assert good.status_code == 200
        for n in range(3):
            bad = http.post(
                "/v2/models/picky-live/infer",
                json={"id": f"bad-{n}", "inputs": [_tensor([[-1, 2, 3], [1, 1, 1]])]},
            )
            assert bad.status_code == 500 and "internal error" in bad.json()["error"]
        wrong = http.post(
            "/v2/models/picky-live/infer",
            json={"id": "wide", "inputs": [_tensor([[1, 2, 3, 4]])]},
        )
        assert wrong.status_code == 422
        assert 'status="500",version="1"' in http.get("/metrics").text
    server.__exit__()  # a clean shutdown flushes both logs
    root = str(sqlite_env.artifacts_url)
    errors = read_predictions(root, "picky-live", dataset=ERRORS)
    by_id = dict(
        zip(
            errors.column("request_id").to_pylist(),
            errors.column("status").to_pylist(),
            strict=True,
        )
    )
    assert by_id == {"bad-0": 500, "bad-1": 500, "bad-2": 500, "wide": 422}
    assert set(errors.column("version").to_pylist()) == {1}
    assert errors.column("rows").to_pylist().count(2) == 3
    assert "ValueError: negative input" in errors.column("error").to_pylist()[0]
    assert PredictionReader(root).count("picky-live") == 1  # predictions hold only the answered row
