"""The unmodified mlflow client's model registry flows against a real ``keel server``.

mlflow pins versions that clash with Keel's development environment, so its
client runs in a virtualenv of its own (``make test`` builds ``.venv-mlflow``),
as a subprocess talking HTTP to a real server (``conftest.py``). Each flow then
checks Keel's side: an MLflow model version is a Keel version, an MLflow alias
a Keel alias (protected ones included).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from _support.control_plane import ControlPlane

MODEL = "registry-diabetes"
#: Alias policies hold for every model on the server, so this test's gated alias is its own.
GATED = "registry-gated"
API = "/api/2.0/mlflow"

# Two runs, two models: one logged as a 3.x logged model and registered through
# runs:/<run>/model, one saved with cloudpickle and logged as plain run artifacts.
TRAIN = r"""
import json, sys, tempfile
import mlflow
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

name = sys.argv[1]
X, y = load_diabetes(return_X_y=True)
mlflow.set_experiment("diabetes-registry")
with mlflow.start_run() as first:
    fitted = Ridge(alpha=0.5).fit(X, y)
    logged = mlflow.sklearn.log_model(fitted, name="model", input_example=X[:3])
    v1 = mlflow.register_model(f"runs:/{first.info.run_id}/model", name)
with mlflow.start_run() as second, tempfile.TemporaryDirectory() as folder:
    other = Ridge(alpha=5.0).fit(X, y)
    mlflow.sklearn.save_model(other, f"{folder}/m", serialization_format="cloudpickle")
    mlflow.log_artifacts(f"{folder}/m", "plain_model")
    v2 = mlflow.register_model(f"runs:/{second.info.run_id}/plain_model", name)
client = MlflowClient()
client.set_registered_model_alias(name, "champion", v1.version)
by_alias = client.get_model_version_by_alias(name, "champion")

def version(mv):
    return {"version": mv.version, "source": mv.source, "run_id": mv.run_id,
            "model_id": mv.model_id, "status": mv.status, "aliases": list(mv.aliases)}

print(json.dumps({
    "runs": [first.info.run_id, second.info.run_id],
    "experiment_id": first.info.experiment_id,
    "model_id": logged.model_id,
    "v1": version(v1), "v2": version(v2), "by_alias": version(by_alias),
    "rows": X[:20].tolist(), "predictions": fitted.predict(X[:20]).tolist(),
}))
"""

LOAD = r"""
import json, sys
import mlflow
import numpy as np

uri, rows = sys.argv[1], np.array(json.loads(sys.argv[2]))
model = mlflow.pyfunc.load_model(uri)
print(json.dumps({"predictions": np.asarray(model.predict(rows)).tolist()}))
"""

# Runs one MlflowClient call named on the command line; answers its result or its error.
CALL = r"""
import json, sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

method, args, kwargs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
try:
    result = getattr(MlflowClient(), method)(*args, **kwargs)
except MlflowException as error:
    print(json.dumps({"error_code": error.error_code, "message": error.message}))
    sys.exit(0)

def plain(value):
    if hasattr(value, "token") and isinstance(value, list):
        return {"items": [plain(v) for v in value], "token": value.token}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "version") and hasattr(value, "source"):
        return {"name": value.name, "version": value.version, "source": value.source,
                "run_id": value.run_id, "aliases": list(value.aliases)}
    if hasattr(value, "latest_versions"):
        return {"name": value.name, "aliases": dict(value.aliases),
                "latest": [v.version for v in value.latest_versions]}
    return value

print(json.dumps({"result": plain(result)}))
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's client scripts run (mlflow may write local files there)."""
    return tmp_path_factory.mktemp("mlflow-registry-client")


@pytest.fixture(scope="module")
def trained(run_mlflow: Callable[..., Any], work: Path) -> dict[str, Any]:
    """The two registrations, made once by the mlflow client."""
    return dict(run_mlflow(TRAIN, MODEL, cwd=work))


@pytest.fixture
def call(run_mlflow: Callable[..., Any], work: Path) -> Callable[..., Any]:
    """``call(method, *args, token=None, **kwargs)``: one ``MlflowClient`` method's answer,
    ``{"result": ...}`` or ``{"error_code": ..., "message": ...}``."""

    def one(method: str, *args: Any, token: str | None = None, **kwargs: Any) -> Any:
        return run_mlflow(CALL, method, json.dumps(args), json.dumps(kwargs), cwd=work, token=token)

    return one


# -- registering ------------------------------------------------------------------------------


def test_register_model_from_a_logged_model_makes_a_keel_version_of_its_files(
    trained: dict[str, Any], mlflow_http: Callable[..., httpx.Client], keel_client: keel.Client
) -> None:
    first_run, model_id = trained["runs"][0], trained["model_id"]
    assert trained["v1"] == {
        "version": "1",
        "source": f"models:/{model_id}",
        "run_id": first_run,
        "model_id": None,  # the client does not read it back; the raw answer has it
        "status": "READY",
        "aliases": [],
    }
    with mlflow_http() as http:
        answer = http.get(f"{API}/model-versions/get", params={"name": MODEL, "version": "1"})
    assert answer.json()["model_version"]["model_id"] == model_id
    version = keel_client.registry.get_model_version(MODEL, 1)
    assert version.source == f"runs:/{first_run}/models/{model_id}"
    assert version.run_id == first_run
    # the version pins the logged model's files, stored as MLflow wrote them
    files = {e.path for e in keel_client.tracking.list_artifacts(first_run, f"models/{model_id}")}
    assert f"models/{model_id}/MLmodel" in files
    assert version.manifest_digest is not None


def test_register_model_from_plain_run_artifacts_makes_the_next_keel_version(
    trained: dict[str, Any], keel_client: keel.Client
) -> None:
    second_run = trained["runs"][1]
    assert trained["v2"]["version"] == "2"
    assert trained["v2"]["run_id"] == second_run
    version = keel_client.registry.get_model_version(MODEL, 2)
    assert version.source == f"runs:/{second_run}/plain_model"
    files = {e.path for e in keel_client.tracking.list_artifacts(second_run, "plain_model")}
    assert {"plain_model/MLmodel", "plain_model/model.pkl"} <= files
    assert keel_client.registry.get_registered_model(MODEL).latest_version == 2


def test_copy_model_version_registers_the_same_files_under_another_model(
    trained: dict[str, Any], call: Callable[..., Any], keel_client: keel.Client
) -> None:
    copied = call("copy_model_version", f"models:/{MODEL}/1", "copied-diabetes")["result"]
    assert (copied["name"], copied["version"]) == ("copied-diabetes", "1")
    original = keel_client.registry.get_model_version(MODEL, 1)
    copy = keel_client.registry.get_model_version("copied-diabetes", 1)
    assert (copy.source, copy.manifest_digest) == (original.source, original.manifest_digest)


def test_latest_versions_are_in_stage_none_as_keel_has_no_stages(
    trained: dict[str, Any], mlflow_http: Callable[..., httpx.Client]
) -> None:
    with mlflow_http() as http:
        every = http.post(f"{API}/registered-models/get-latest-versions", json={"name": MODEL})
        staged = http.post(
            f"{API}/registered-models/get-latest-versions",
            json={"name": MODEL, "stages": ["Production"]},
        )
    assert [(v["version"], v["current_stage"]) for v in every.json()["model_versions"]] == [
        ("2", "None")
    ]
    assert staged.json()["model_versions"] == []


def test_create_registered_model_twice_answers_resource_already_exists(
    trained: dict[str, Any], call: Callable[..., Any]
) -> None:
    answer = call("create_registered_model", MODEL)
    assert answer["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert MODEL in answer["message"]


# -- aliases ---------------------------------------------------------------------------------


def test_alias_set_by_mlflow_is_the_keel_alias_and_moves_made_in_keel_show_in_mlflow(
    trained: dict[str, Any], call: Callable[..., Any], keel_client: keel.Client
) -> None:
    assert trained["by_alias"]["version"] == "1"
    assert trained["by_alias"]["aliases"] == ["champion"]
    assert keel_client.registry.get_model_version_by_alias(MODEL, "champion").version == 1

    keel_client.registry.set_alias(MODEL, "challenger", 2)
    assert call("get_model_version_by_alias", MODEL, "challenger")["result"]["version"] == "2"
    model = call("get_registered_model", MODEL)["result"]
    assert model["aliases"].items() >= {"challenger": "2", "champion": "1"}.items()
    assert model["latest"] == ["2"]

    assert "result" in call("delete_registered_model_alias", MODEL, "challenger")
    assert keel_client.registry.get_alias(MODEL, "challenger") is None
    gone = call("get_model_version_by_alias", MODEL, "challenger")
    assert gone["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_protected_alias_moves_through_mlflow_only_with_its_approvals(
    trained: dict[str, Any],
    mlflow_server: ControlPlane,
    call: Callable[..., Any],
    keel_client: keel.Client,
) -> None:
    keel_client.registry.set_alias_policy(GATED, approvals=1, role="approver")
    refused = call("set_registered_model_alias", MODEL, GATED, "2")
    assert refused["error_code"] == "PERMISSION_DENIED"
    assert f"keel models approve {MODEL} 2 --for {GATED}" in refused["message"]
    assert keel_client.registry.get_alias(MODEL, GATED) is None

    approver = mlflow_server.make_user("registry-approver", "approver")
    with mlflow_server.http(approver) as http:
        answer = http.post(f"/models/{MODEL}/versions/2/approvals", json={"alias": GATED})
        assert answer.status_code == 201, answer.text
    moved = call("set_registered_model_alias", MODEL, GATED, "2")
    assert "result" in moved, moved
    assert keel_client.registry.get_alias(MODEL, GATED) == 2
    history = keel_client.registry.alias_history(MODEL, GATED)
    assert [(h.to_version, h.actor) for h in history] == [(2, "admin")]


# -- finding ---------------------------------------------------------------------------------


def test_search_finds_versions_by_run_and_models_by_name_a_page_at_a_time(
    trained: dict[str, Any], call: Callable[..., Any], keel_client: keel.Client
) -> None:
    keel_client.registry.create_registered_model(f"{MODEL}-shadow")
    keel_client.registry.create_registered_model("registry-unrelated")
    by_run = call("search_model_versions", f"run_id = '{trained['runs'][1]}'")["result"]
    assert [(v["name"], v["version"]) for v in by_run["items"]] == [(MODEL, "2")]

    like = f"name LIKE '{MODEL}%'"
    by_name = call("search_registered_models", like)["result"]
    assert [m["name"] for m in by_name["items"]] == [MODEL, f"{MODEL}-shadow"]

    first = call("search_registered_models", like, max_results=1)["result"]
    assert [m["name"] for m in first["items"]] == [MODEL]
    second = call("search_registered_models", like, max_results=1, page_token=first["token"])
    assert [m["name"] for m in second["result"]["items"]] == [f"{MODEL}-shadow"]
    assert not second["result"]["token"]


def test_search_compares_version_tags_and_finds_no_prompts(
    trained: dict[str, Any], call: Callable[..., Any], mlflow_http: Callable[..., httpx.Client]
) -> None:
    tagged = call("set_model_version_tag", MODEL, "2", "team", "risk")
    assert "result" in tagged, tagged
    with mlflow_http() as http:
        by_tag = http.get(
            f"{API}/model-versions/search",
            params={"filter": f"name = '{MODEL}' AND tags.team = 'risk'"},
        )
        prompts = http.get(
            f"{API}/registered-models/search",
            params={"filter": "tags.`mlflow.prompt.is_prompt` = 'true'"},
        )
    assert [(v["name"], v["version"]) for v in by_tag.json()["model_versions"]] == [(MODEL, "2")]
    assert by_tag.json()["model_versions"][0]["tags"] == [{"key": "team", "value": "risk"}]
    assert prompts.status_code == 200
    assert prompts.json()["registered_models"] == []


def test_download_uri_points_at_the_mlflow_artifacts_of_the_version_files(
    trained: dict[str, Any], call: Callable[..., Any]
) -> None:
    experiment, (_, second_run) = trained["experiment_id"], trained["runs"]
    first = call("get_model_version_download_uri", MODEL, "1")["result"]
    assert first == f"mlflow-artifacts:/{experiment}/models/{trained['model_id']}/artifacts"
    second = call("get_model_version_download_uri", MODEL, "2")["result"]
    assert second == f"mlflow-artifacts:/{experiment}/{second_run}/artifacts/plain_model"


def test_pyfunc_load_model_by_alias_predicts_as_the_fitted_model(
    trained: dict[str, Any], run_mlflow: Callable[..., Any], work: Path
) -> None:
    rows = json.dumps(trained["rows"])
    loaded = run_mlflow(LOAD, f"models:/{MODEL}@champion", rows, cwd=work)
    assert loaded["predictions"] == pytest.approx(trained["predictions"], rel=1e-12)


# -- permissions and bad input ----------------------------------------------------------------


def test_viewer_reads_the_registry_but_cannot_register_or_move_aliases(
    trained: dict[str, Any],
    mlflow_server: ControlPlane,
    call: Callable[..., Any],
    mlflow_http: Callable[..., httpx.Client],
) -> None:
    viewer = mlflow_server.make_user("registry-viewer", "viewer")
    seen = call("get_model_version", MODEL, "1", token=viewer)
    assert seen["result"]["version"] == "1"
    created = call("create_registered_model", "registry-viewers-model", token=viewer)
    assert created["error_code"] == "PERMISSION_DENIED"
    moved = call("set_registered_model_alias", MODEL, "champion", "2", token=viewer)
    assert moved["error_code"] == "PERMISSION_DENIED"
    with mlflow_http(viewer) as http:
        registered = http.post(
            f"{API}/model-versions/create",
            json={"name": MODEL, "source": f"models:/{trained['model_id']}"},
        )
        described = http.patch(
            f"{API}/model-versions/update",
            json={"name": MODEL, "version": "1", "description": "x"},
        )
    for refused in (registered, described):
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
        assert "lacks permission 'write'" in refused.json()["message"]


@pytest.mark.parametrize(
    ("source", "code", "says"),
    [
        ("/home/me/model", "INVALID_PARAMETER_VALUE", "model version source must be one of"),
        ("s3://bucket/model", "INVALID_PARAMETER_VALUE", "model version source must be one of"),
        ("models:/m-0123456789abcdef0123456789abcdef", "RESOURCE_DOES_NOT_EXIST", "no logged"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "RESOURCE_DOES_NOT_EXIST", "run"),
    ],
)
def test_version_source_keel_cannot_read_is_refused_with_what_it_accepts(
    trained: dict[str, Any],
    mlflow_http: Callable[..., httpx.Client],
    source: str,
    code: str,
    says: str,
) -> None:
    with mlflow_http() as http:
        answer = http.post(f"{API}/model-versions/create", json={"name": MODEL, "source": source})
    assert answer.status_code == (404 if code == "RESOURCE_DOES_NOT_EXIST" else 400)
    assert answer.json()["error_code"] == code
    assert says in answer.json()["message"]


def test_run_id_that_is_not_the_source_run_is_refused(
    trained: dict[str, Any], mlflow_http: Callable[..., httpx.Client]
) -> None:
    with mlflow_http() as http:
        answer = http.post(
            f"{API}/model-versions/create",
            json={
                "name": MODEL,
                "source": f"models:/{trained['model_id']}",
                "run_id": trained["runs"][1],
            },
        )
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "is not the run of source" in answer.json()["message"]


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/model-versions/get", {"name": MODEL, "version": "one"}, "positive integer"),
        ("/model-versions/search", {"filter": "name = 'x' OR name = 'y'"}, "use AND"),
        ("/model-versions/search", {"filter": "params.alpha = '1'"}, "Keel filters model"),
        ("/registered-models/search", {"page_token": "not-a-token"}, "page token"),
        ("/registered-models/search", {"max_results": "0"}, "max_results"),
        ("/model-versions/search", {"order_by": "size DESC"}, "order_by"),
    ],
)
def test_malformed_registry_query_answers_invalid_parameter_value(
    trained: dict[str, Any],
    mlflow_http: Callable[..., httpx.Client],
    path: str,
    params: dict[str, str],
    says: str,
) -> None:
    with mlflow_http() as http:
        answer = http.get(API + path, params=params)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert says in answer.json()["message"]


def test_registry_answers_under_the_ajax_prefix_too(
    trained: dict[str, Any], mlflow_http: Callable[..., httpx.Client]
) -> None:
    with mlflow_http() as http:
        answer = http.get("/ajax-api/2.0/mlflow/registered-models/get", params={"name": MODEL})
    assert answer.status_code == 200, answer.text
    assert answer.json()["registered_model"]["latest_versions"][0]["version"] == "2"
