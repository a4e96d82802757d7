"""The serving app over real HTTP: protocols, clients, errors, routing, alias moves, rollback."""

from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import keel
from keel.serving import Deployments, build_spec


def _v2_columns(frame) -> dict:
    return {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }


def test_v2_metadata_health_and_infer_match_the_model(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.iloc[:7]
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2").json()["extensions"] == ["binary_tensor_data"]
        meta = http.get("/v2/models/cancer").json()
        assert meta["versions"] == ["1"] and meta["platform"] == "keel-sklearn"
        assert [i["name"] for i in meta["inputs"]] == list(registered.features.columns)
        assert meta["inputs"][0]["datatype"] == "FP64"
        answer = http.post("/v2/models/cancer/infer", json={"id": "r-1", **_v2_columns(rows)})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["id"] == "r-1" and body["model_version"] == "1"
        assert body["outputs"][0]["data"] == registered.models[1].predict(rows).tolist()
        # One [N, 30] tensor, mapped to the columns by position, and a pinned version.
        matrix = {
            "inputs": [
                {
                    "name": "x",
                    "shape": [7, 30],
                    "datatype": "FP64",
                    "data": rows.to_numpy().ravel().tolist(),
                }
            ]
        }
        pinned = http.post("/v2/models/cancer/versions/1/infer", json=matrix).json()
        assert pinned["outputs"][0]["data"] == registered.models[1].predict(rows).tolist()
        assert http.get("/v2/models/cancer/versions/1/ready").json()["ready"] is True


def test_tritonclient_http_client_with_binary_tensors(registered, serve):
    tritonclient = pytest.importorskip("tritonclient.http")
    server = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.iloc[:5].to_numpy()
    client = tritonclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready("cancer")
    metadata = client.get_model_metadata("cancer")
    assert metadata["platform"] == "keel-sklearn"
    for binary in (True, False):
        tensor = tritonclient.InferInput("x", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = tritonclient.InferRequestedOutput("predict", binary_data=binary)
        result = client.infer("cancer", [tensor], outputs=[wanted], request_id="t-1")
        np.testing.assert_array_equal(
            result.as_numpy("predict"), registered.models[1].predict(registered.features.iloc[:5])
        )
    client.close()


def test_mlflow_invocations_formats_and_kserve_v1(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.iloc[:4]
    expected = registered.models[1].predict(rows).tolist()
    split = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    records = {"dataframe_records": rows.to_dict(orient="records")}
    instances = {"instances": rows.to_dict(orient="records")}
    inputs = {"inputs": rows.to_numpy().tolist()}
    with httpx.Client(base_url=server.url) as http:
        for body in (split, records, instances, inputs):
            answer = http.post("/invocations", json=body)
            assert answer.status_code == 200, (list(body), answer.text)
            assert answer.json() == {"predictions": expected}
        csv = http.post(
            "/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv"}
        )
        assert csv.json() == {"predictions": expected}
        v1 = http.post("/v1/models/cancer:predict", json=instances)
        assert v1.status_code == 200 and v1.json() == {"predictions": expected}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        ("post", "/v2/models/cancer/infer", {"content": b"{not json"}, 400, "not valid JSON"),
        ("post", "/v2/models/cancer/infer", {"json": {"inputs": []}}, 400, "non-empty list"),
        (
            "post",
            "/v2/models/cancer/infer",
            {
                "json": {
                    "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2, 3]}]
                }
            },
            400,
            "holds 2 values but data has 3",
        ),
        (
            "post",
            "/v2/models/cancer/infer",
            {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}},
            400,
            "datatype 'FLOAT'",
        ),
        (
            "post",
            "/v2/models/cancer/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]}
                    ]
                }
            },
            422,
            "missing",
        ),
        (
            "post",
            "/v2/models/cancer/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
                    ]
                }
            },
            400,
            "[N, 30]",
        ),
        (
            "post",
            "/v2/models/other/infer",
            {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}},
            404,
            "unknown model 'other'",
        ),
        (
            "post",
            "/v2/models/cancer/versions/9/infer",
            {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}},
            404,
            "version 9",
        ),
        (
            "post",
            "/invocations",
            {"json": {"dataframe_split": {"columns": ["a"], "data": [["x"]]}}},
            422,
            "missing",
        ),
        ("post", "/invocations", {"json": {"nothing": 1}}, 400, "exactly one of"),
        (
            "post",
            "/invocations",
            {"content": b"a,b\n1", "headers": {"content-type": "application/xml"}},
            400,
            "not supported",
        ),
        ("post", "/v1/models/cancer:predict", {"json": {"rows": []}}, 400, "instances"),
        ("get", "/v2/models/cancer/nowhere", {}, 404, "no route"),
        ("delete", "/invocations", {}, 405, "not allowed"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(
    registered, serve, method, path, kwargs, status, message
):
    server = serve("models:/cancer@champion", log_predictions=False)
    with httpx.Client(base_url=server.url) as http:
        answer = getattr(http, method)(path, **kwargs)
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert list(body) == ["error"] and message in body["error"]
        assert "Traceback" not in body["error"] and "{not json" not in body["error"]
        rows = registered.features.iloc[:1]
        assert http.post("/v2/models/cancer/infer", json=_v2_columns(rows)).status_code == 200


def test_canary_split_is_weighted_and_sticky_per_request_id(registered, serve):
    Deployments().create("cancer-live", build_spec("cancer@champion", canary=["cancer/2:30"]))
    server = serve("cancer-live", log_predictions=False)
    rows = registered.features.iloc[:1]
    with httpx.Client(base_url=server.url) as http:

        def version_for(request_id: str) -> str:
            answer = http.post(
                "/v2/models/cancer-live/infer", json={"id": request_id, **_v2_columns(rows)}
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["model_version"]

        seen = collections.Counter(version_for(f"user-{n}") for n in range(300))
        assert set(seen) == {"1", "2"}
        assert 0.18 < seen["2"] / 300 < 0.42  # 30% ± sampling noise
        assert {version_for("user-7") for _ in range(10)} == {version_for("user-7")}
        metrics = http.get("/metrics").text
        assert (
            'keel_requests_total{deployment="cancer-live",protocol="v2",route="canary",status="200",version="2"}'
            in metrics
        )


def test_moving_the_alias_moves_traffic_without_restart_or_dropped_requests(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False, refresh_interval=0.2)
    rows = registered.features.iloc[:2]
    statuses: list[int] = []
    versions: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.url) as http:
            deadline = time.time() + 6
            while time.time() < deadline:
                answer = http.post("/v2/models/cancer/infer", json=_v2_columns(rows))
                statuses.append(answer.status_code)
                versions.append(answer.json().get("model_version", "?"))
                if versions[-1] == "2" and len(versions) > 20:
                    break

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        time.sleep(0.5)
        keel.Client().set_alias("cancer", "champion", 2)
        for future in futures:
            future.result()
    assert set(statuses) == {200}
    assert versions[0] == "1" and versions[-1] == "2"
    first_two = versions.index("2")
    assert "1" not in versions[first_two + 40 :]  # once switched, it stays switched


def test_rollback_restores_the_previous_revision(registered, serve):
    deployments = Deployments()
    deployments.create("cancer-prod", build_spec("cancer/1"))
    deployments.update("cancer-prod", model="cancer/2", comment="ship v2")
    undo = deployments.rollback("cancer-prod")
    assert (
        undo.spec.primary.ref == "1"
        and undo.revision == 3
        and undo.comment == "rollback to revision 1"
    )
    with pytest.raises(keel.errors.InvalidInput, match="no earlier spec"):
        deployments.rollback("cancer-prod")  # an undo stack: revision 1 had nothing before it
    history = [(d.revision, d.spec.primary.label) for d in deployments.history("cancer-prod")]
    assert history == [(1, "cancer/1"), (2, "cancer/2"), (3, "cancer/1")]
    server = serve("cancer-prod", log_predictions=False)
    with httpx.Client(base_url=server.url) as http:
        answer = http.post(
            "/v2/models/cancer-prod/infer", json=_v2_columns(registered.features.iloc[:1])
        )
        assert answer.json()["model_version"] == "1"


def test_deployment_specs_are_validated(registered):
    deployments = Deployments()
    with pytest.raises(keel.errors.InvalidInput, match="churn/5:10"):
        build_spec("cancer@champion", canary=["cancer/2"])
    with pytest.raises(keel.errors.InvalidInput, match="no traffic for the primary"):
        build_spec("cancer@champion", canary=["cancer/2:60", "cancer/1:40"])
    with pytest.raises(keel.errors.NotFound, match="no alias 'gold'"):
        deployments.create("d", build_spec("cancer@gold"))
    deployments.create("d", build_spec("cancer@champion", batching="max_size=8,max_latency_ms=2"))
    with pytest.raises(keel.errors.Conflict, match="exists"):
        deployments.create("d", build_spec("cancer@champion"))
    with pytest.raises(keel.errors.InvalidInput, match="nothing to change"):
        deployments.update("d", model="cancer@champion")
    status = deployments.status("d")
    assert status["routes"][0]["version"] == 1 and status["spec"]["batching"] == {
        "max_size": 8,
        "max_latency_ms": 2.0,
    }


class Broken:
    """A model whose every prediction fails (saved without pickle)."""

    def predict(self, data):
        raise RuntimeError("shadow exploded")

    def keel_save(self, path):
        (path / "marker").write_text("x")

    @classmethod
    def keel_load(cls, path):
        return cls()


def test_failing_shadow_never_changes_the_answer(registered, serve):
    with keel.start_run():
        info = keel.log_model(Broken(), "broken")
    keel.register_model(info.uri, "broken")
    Deployments().create("with-shadow", build_spec("cancer@champion", shadow="broken/1"))
    server = serve("with-shadow", log_predictions=False)
    rows = registered.features.iloc[:3]
    with httpx.Client(base_url=server.url) as http:
        for _ in range(5):
            answer = http.post("/v2/models/with-shadow/infer", json=_v2_columns(rows))
            assert answer.status_code == 200
            assert (
                answer.json()["outputs"][0]["data"] == registered.models[1].predict(rows).tolist()
            )
        time.sleep(0.3)
        metrics = http.get("/metrics").text
    assert 'keel_shadow_predictions_total{deployment="with-shadow",outcome="failed"}' in metrics


def test_micro_batching_answers_each_request_with_its_own_rows(registered, serve):
    Deployments().create(
        "batched", build_spec("cancer/2", batching="max_size=16,max_latency_ms=20")
    )
    server = serve("batched", log_predictions=False)
    frames = [registered.features.iloc[n : n + 1 + n % 3] for n in range(40)]

    def ask(frame):
        with httpx.Client(base_url=server.url) as http:
            answer = http.post("/v2/models/batched/infer", json=_v2_columns(frame))
            assert answer.status_code == 200, answer.text
            return answer.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, frames))
    for frame, answer in zip(frames, answers, strict=True):
        assert answer == registered.models[2].predict(frame).tolist()
    # A request that breaks the signature fails alone.
    with httpx.Client(base_url=server.url) as http:
        bad = http.post(
            "/v2/models/batched/infer",
            json={
                "inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]}]
            },
        )
        assert bad.status_code == 422
    batcher = next(iter(server.app.state.batchers.values()))
    assert batcher.batches < 40  # requests were actually grouped
