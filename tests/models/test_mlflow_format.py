"""Models in MLflow's format (``MLmodel`` + a pickle): stored as is, loaded only when trusted.

The packages are written by the real mlflow client, from its own virtualenv.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keel
from _support.mlflow import MLFLOW_PYTHON, NO_MLFLOW, run_mlflow
from _support.serving import Server
from keel.config import Settings
from keel.errors import IntegrityError, PermissionDenied
from keel.models.flavors.mlflow import pickle_globals

_SAVE = textwrap.dedent(
    """
    import json, sys
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    mlflow.sklearn.save_model(model, sys.argv[1] + "/skops", input_example=X.head(5))
    mlflow.sklearn.save_model(
        model, sys.argv[1] + "/pickled", input_example=X.head(5), serialization_format="cloudpickle"
    )
    print(json.dumps(model.predict(X).tolist()))
    """
)


@pytest.fixture(scope="module")
def mlflow_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A scikit-learn model saved by mlflow.sklearn (cloudpickle), and its predictions there.

    The same model saved in MLflow's default format (skops) is beside it, in ``../skops``.
    """
    if not MLFLOW_PYTHON.exists():
        pytest.skip(NO_MLFLOW)
    root = tmp_path_factory.mktemp("mlflow")
    return root / "pickled", run_mlflow(_SAVE, str(root))


def _iris():  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True, as_frame=True)[0]


def test_mlflow_default_skops_format_loads_with_no_flag_and_keeps_its_signature(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    folder, expected = mlflow_folder
    model = keel.load_model(folder.parent / "skops")
    assert model.flavor == "mlflow"
    assert model.predict(_iris()).tolist() == expected
    assert model.signature is not None
    assert model.signature.inputs.names == tuple(_iris().columns)
    assert model.signature.outputs is not None
    assert model.signature.outputs.columns[0].type == "int64"


def test_a_pickled_mlflow_folder_is_refused_without_allow_pickle(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    folder, _ = mlflow_folder
    with pytest.raises(PermissionDenied, match=r"allow_pickle=True.*keel models convert"):
        keel.load_model(folder)


def test_a_pickled_mlflow_folder_loads_with_allow_pickle_and_predicts_as_mlflow_did(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    folder, expected = mlflow_folder
    model = keel.load_model(folder, allow_pickle=True)
    assert model.flavor == "mlflow"
    assert model.predict(_iris()).tolist() == expected


def test_a_registered_mlflow_version_loads_only_with_allow_pickle(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    folder, expected = mlflow_folder
    with keel.start_run() as run:
        keel.log_artifacts(folder, "model")
    version = keel.Client().registry.create_model_version("iris", f"runs:/{run.id}/model")
    uri = f"models:/iris/{version.version}"
    with pytest.raises(PermissionDenied, match="MLflow's format"):
        keel.load_model(uri)
    assert keel.load_model(uri, allow_pickle=True).predict(_iris()).tolist() == expected


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned",))


def test_a_pickle_naming_os_system_is_refused_even_with_allow_pickle_and_never_runs(
    sqlite_env: object,
    mlflow_folder: tuple[Path, list[int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crafted = tmp_path / "crafted"
    shutil.copytree(mlflow_folder[0], crafted)
    (crafted / "model.pkl").write_bytes(pickle.dumps(_Boom()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PermissionDenied, match=r"(posix|os)\.system.*trust="):
        keel.load_model(crafted, allow_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_a_trusted_name_is_still_checked_when_the_unpickler_resolves_it(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]], tmp_path: Path
) -> None:
    # the scan and the unpickler agree: a name trusted by the load passes both
    crafted = tmp_path / "crafted"
    shutil.copytree(mlflow_folder[0], crafted)
    (crafted / "model.pkl").write_bytes(pickle.dumps(np.float64))
    loaded = keel.load_model(crafted, allow_pickle=True, trust=["numpy.float64"])
    assert loaded._native is np.float64


def test_a_damaged_pickle_is_an_integrity_error(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]], tmp_path: Path
) -> None:
    crafted = tmp_path / "crafted"
    shutil.copytree(mlflow_folder[0], crafted)
    (crafted / "model.pkl").write_bytes(b"\x80\x05not a pickle")
    with pytest.raises(IntegrityError, match="pickle"):
        keel.load_model(crafted, allow_pickle=True)


def test_pickle_globals_reads_names_from_memo_without_running_anything() -> None:
    data = pickle.dumps([os.system, os.system, np.float64], protocol=5)
    assert {"posix.system", "numpy.float64"} <= pickle_globals(data) or {
        "nt.system",
        "numpy.float64",
    } <= pickle_globals(data)


def _register_pickled(folder: Path) -> str:
    with keel.start_run() as run:
        keel.log_artifacts(folder, "model")
    return keel.Client().registry.create_model_version("iris", f"runs:/{run.id}/model").uri


def test_convert_resaves_a_pickled_version_as_skops_that_loads_with_no_flag(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    from keel.registry.convert import CONVERTED_FROM, convert_version

    folder, expected = mlflow_folder
    source = _register_pickled(folder)
    done = convert_version("iris", 1)
    assert (done.source.uri, done.version.uri) == (source, "models:/iris/2")
    assert done.rows_checked == 5  # the input example MLflow stored
    assert done.version.tags[CONVERTED_FROM] == source
    converted = keel.load_model("models:/iris/2")  # no allow_pickle: it is skops now
    assert converted.flavor == "sklearn"
    assert converted.predict(_iris()).tolist() == expected
    assert converted.signature is not None


def test_convert_refuses_a_version_that_is_already_a_keel_package(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    from keel.errors import InvalidInput
    from keel.registry.convert import convert_version

    _register_pickled(mlflow_folder[0])
    convert_version("iris", 1)
    with pytest.raises(InvalidInput, match="already a Keel package"):
        convert_version("iris", 2)
    assert [v.version for v in keel.Client().registry.list_model_versions("iris")] == [1, 2]


def test_keel_models_convert_prints_the_new_version_as_json(
    sqlite_env: Settings, mlflow_folder: tuple[Path, list[int]], run_keel
) -> None:
    _register_pickled(mlflow_folder[0])
    done = run_keel("models", "convert", "iris/1", "--json", settings=sqlite_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "models:/iris/2"
    refused = run_keel("models", "convert", "iris/2", settings=sqlite_env)
    assert refused.returncode != 0
    assert "already a Keel package" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_serving_a_pickled_mlflow_version_needs_allow_pickle_and_then_answers_v2(
    sqlite_env: object, mlflow_folder: tuple[Path, list[int]]
) -> None:
    import httpx

    from keel.serving.server import app_for_target, runtime_for_target

    folder, expected = mlflow_folder
    _register_pickled(folder)
    with pytest.raises(PermissionDenied, match="--allow-pickle"):
        runtime_for_target("models:/iris/1").table  # noqa: B018
    app = app_for_target("models:/iris/1", allow_pickle=True, log_predictions=False)
    rows = _iris().head(3)
    body = {
        "inputs": [
            {"name": c, "shape": [3], "datatype": "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
    }
    with Server(app) as server:
        answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == expected[:3]
