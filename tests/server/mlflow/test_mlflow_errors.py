"""MLflow's error shape, auth and roles on the MLflow API of a real ``keel server``.

The mlflow client branches on ``error_code``; these tests pin the codes and
statuses it sees, that bad input never answers 5xx, and that the API takes
the same tokens and roles as Keel's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.control_plane import ControlPlane

API = "/api/2.0/mlflow"

# Runs the writes a training script makes; prints the error code mlflow raised at each.
WRITES = r"""
import json, sys
import mlflow
from mlflow.exceptions import MlflowException

codes = {}
def attempt(name, action):
    try:
        action()
        codes[name] = "OK"
    except MlflowException as error:
        codes[name] = error.error_code

run_id = sys.argv[1]
attempt("create_experiment", lambda: mlflow.create_experiment("a-viewer-experiment"))
attempt("log_metric", lambda: mlflow.MlflowClient().log_metric(run_id, "m", 1.0))
attempt("get_run", lambda: mlflow.MlflowClient().get_run(run_id))
attempt("missing_run", lambda: mlflow.MlflowClient().get_run("0" * 32))
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def a_run(mlflow_server: ControlPlane) -> str:
    with mlflow_server.http() as http:
        answer = http.put("/experiments", json={"name": "mlflow-errors"})
        assert answer.status_code == 200, answer.text
        created = http.post("/runs", json={"experiment_id": answer.json()["id"]})
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def _error(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["message"]
    return answer.status_code, body["error_code"]


def test_a_viewer_gets_permission_denied_for_writes_through_the_mlflow_client(
    mlflow_server: ControlPlane,
    run_mlflow: Callable[..., Any],
    a_run: str,
    mlflow_cwd: Path,
) -> None:
    viewer = mlflow_server.make_user("mlflow-viewer", "viewer")
    codes = run_mlflow(WRITES, a_run, cwd=mlflow_cwd, token=viewer)
    assert codes == {
        "create_experiment": "PERMISSION_DENIED",
        "log_metric": "PERMISSION_DENIED",
        "get_run": "OK",
        "missing_run": "RESOURCE_DOES_NOT_EXIST",
    }


def test_basic_credentials_with_the_token_as_password_authenticate(
    mlflow_server: ControlPlane,
    run_mlflow: Callable[..., Any],
    mlflow_env: Callable[..., dict[str, str]],
    a_run: str,
    mlflow_cwd: Path,
) -> None:
    env = mlflow_env(
        "", MLFLOW_TRACKING_USERNAME="anyone", MLFLOW_TRACKING_PASSWORD=mlflow_server.admin_token
    )
    del env["MLFLOW_TRACKING_TOKEN"]
    codes = run_mlflow(WRITES, a_run, cwd=mlflow_cwd, env=env)
    assert codes["log_metric"] == "OK" and codes["get_run"] == "OK"


def test_no_token_is_unauthenticated_with_401(mlflow_http: Callable[..., httpx.Client]) -> None:
    with mlflow_http("") as http:
        assert _error(http.post(f"{API}/experiments/search", json={})) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/no-such-thing"),
        ("POST", f"{API}/runs/delete-everything"),
        ("DELETE", f"{API}/runs/get"),
        ("GET", "/api/3.0/mlflow/traces/nothing"),
        ("GET", "/ajax-api/2.0/mlflow/experiments/nope"),
    ],
)
def test_unknown_endpoints_answer_endpoint_not_found(
    mlflow_http: Callable[..., httpx.Client], method: str, path: str
) -> None:
    with mlflow_http() as http:
        assert _error(http.request(method, path, json={})) == (404, "ENDPOINT_NOT_FOUND")


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("runs/create", b"{not json"),
        ("runs/create", b"[1, 2]"),
        ("runs/create", b""),
        ("runs/log-metric", b'{"run_id": "r", "key": "k", "value": "not a number"}'),
        ("runs/log-batch", b'{"run_id": "r", "metrics": "not a list"}'),
        (
            "runs/log-batch",
            b'{"run_id": "r", "metrics": [{"key": "k", "value": 1, "step": 1e400}]}',
        ),
        ("runs/search", b'{"max_results": -1}'),
        ("runs/search", b'{"filter": "metrics.acc >"}'),
        ("runs/search", b'{"filter": "datasets.name = \'iris\'"}'),
        ("experiments/create", b'{"name": 42}'),
        ("runs/log-parameter", b'{"key": "k", "value": "v"}'),
    ],
)
def test_malformed_bodies_answer_invalid_parameter_value(
    mlflow_http: Callable[..., httpx.Client], path: str, content: bytes
) -> None:
    with mlflow_http() as http:
        answer = http.post(
            f"{API}/{path}", content=content, headers={"content-type": "application/json"}
        )
    assert _error(answer) == (400, "INVALID_PARAMETER_VALUE")


def test_an_existing_experiment_name_is_resource_already_exists(
    mlflow_http: Callable[..., httpx.Client], a_run: str
) -> None:
    with mlflow_http() as http:
        answer = http.post(f"{API}/experiments/create", json={"name": "mlflow-errors"})
    assert _error(answer) == (400, "RESOURCE_ALREADY_EXISTS")


def test_an_absent_experiment_name_is_resource_does_not_exist(
    mlflow_http: Callable[..., httpx.Client],
) -> None:
    with mlflow_http() as http:
        answer = http.get(f"{API}/experiments/get-by-name", params={"experiment_name": "absent"})
    assert _error(answer) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_changing_a_param_is_invalid_parameter_value(
    mlflow_http: Callable[..., httpx.Client], a_run: str
) -> None:
    with mlflow_http() as http:
        first = http.post(
            f"{API}/runs/log-parameter", json={"run_id": a_run, "key": "p", "value": "1"}
        )
        assert first.status_code == 200, first.text
        again = http.post(
            f"{API}/runs/log-parameter", json={"run_id": a_run, "key": "p", "value": "2"}
        )
    assert _error(again) == (400, "INVALID_PARAMETER_VALUE")
    assert "write-once" in again.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "{exp}/{run}/artifacts/../../../etc/passwd",
        "{exp}/{run}/artifacts/a//b",
        "{exp}/{run}/nothing/a.txt",
        "{exp}/models/not-a-model-id/artifacts/a.txt",
    ],
)
def test_artifact_paths_that_escape_or_do_not_fit_are_refused(
    mlflow_http: Callable[..., httpx.Client], mlflow_server: ControlPlane, a_run: str, path: str
) -> None:
    with mlflow_server.http() as native:
        experiment = native.get(f"/runs/{a_run}/info").json()["experiment_id"]
    url = f"/api/2.0/mlflow-artifacts/artifacts/{path.format(exp=experiment, run=a_run)}"
    with mlflow_http() as http:
        # a raw path: httpx would otherwise resolve the dots before sending
        request = http.build_request("PUT", url, content=b"x")
        request.url = request.url.copy_with(raw_path=url.encode())
        answer = http.send(request)
    assert _error(answer) == (400, "INVALID_PARAMETER_VALUE")
    with mlflow_server.http() as native:
        assert native.get(f"/runs/{a_run}/artifacts").json() == []


def test_an_artifact_path_naming_another_experiment_is_not_found(
    mlflow_http: Callable[..., httpx.Client], a_run: str
) -> None:
    with mlflow_http() as http:
        answer = http.put(
            f"/api/2.0/mlflow-artifacts/artifacts/999/{a_run}/artifacts/a.txt", content=b"x"
        )
    assert _error(answer) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_server_info_says_no_multipart_and_needs_no_token(
    mlflow_http: Callable[..., httpx.Client],
) -> None:
    with mlflow_http("") as http:
        answer = http.get("/api/3.0/mlflow/server-info")
    assert answer.status_code == 200
    assert answer.json()["multipart_uploads_enabled"] is False


def test_native_api_keeps_keel_error_shape(mlflow_server: ControlPlane) -> None:
    with mlflow_server.http() as http:
        answer = http.get("/runs/" + "0" * 32)
    assert answer.status_code == 404
    assert list(answer.json()) == ["error"]
