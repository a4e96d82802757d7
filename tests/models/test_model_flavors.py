"""Each flavor round-trips through a run: the loaded model predicts exactly what the original did."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.errors import Conflict, InvalidInput
from keel.models import KeelWarning, LoadedModel, ModelInfo, load_model, log_model


def _log(model, **kwargs) -> ModelInfo:
    with keel.start_run():
        return log_model(model, **kwargs)


def assert_same_predictions(actual, expected) -> None:
    """Equal labels; floats equal up to the last bits (BLAS may sum in another order)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)
    else:
        np.testing.assert_array_equal(actual, expected)


def _double(x):
    return x * 2.0


# -- scikit-learn -------------------------------------------------------------------


def test_sklearn_pipeline_round_trips_with_identical_predictions(keel_env, breast_cancer):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = breast_cancer
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    info = _log(pipe, input_example=X.head(3))

    assert info.uri == f"runs:/{info.run_id}/model" and info.artifact_path == "model"
    assert info.flavor == "sklearn"
    listed = {e.path: e for e in keel.Client().list_artifacts(info.run_id, "model")}
    assert set(listed) == {"model/keel-model.json", "model/model.skops"}
    assert listed["model/keel-model.json"].digest == info.manifest_digest

    loaded = load_model(info.uri)
    assert isinstance(loaded, LoadedModel) and loaded.flavor == "sklearn"
    assert isinstance(loaded.unwrap(), Pipeline)
    assert_same_predictions(loaded.predict(X), pipe.predict(X))
    assert loaded.metadata["flavor_config"]["trusted_types"] == []
    assert (keel_env.home / "cache" / "models" / info.manifest_digest / "model.skops").is_file()


def test_sklearn_model_with_custom_function_records_and_trusts_exactly_its_types(
    sqlite_env, diabetes
):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = diabetes
    pipe = make_pipeline(FunctionTransformer(_double), Ridge()).fit(X, y)
    with pytest.warns(KeelWarning, match=r"holds test_model_flavors\._double"):
        info = _log(pipe)
    loaded = load_model(info.uri, trust=[f"{__name__}._double"])  # functions need the loader's word
    assert loaded.metadata["flavor_config"]["trusted_types"] == [f"{__name__}._double"]
    assert_same_predictions(loaded.predict(X), pipe.predict(X))


def test_keel_model_json_records_files_requirements_and_versions(sqlite_env, iris):
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    info = _log(DecisionTreeClassifier(random_state=0).fit(X, y), input_example=X.head(20))
    doc = load_model(info.uri).metadata
    assert doc["format"] == "keel.model/v1" and doc["flavor"] == "sklearn"
    assert set(doc["files"]) == {"model.skops"}
    assert set(doc["files"]["model.skops"]) == {"digest", "size"}
    versions = {name: metadata.version(name) for name in ("scikit-learn", "skops", "numpy")}
    for name, version in versions.items():
        assert f"{name}=={version}" in doc["requirements"]
    assert doc["keel_version"] == keel.__version__
    assert doc["python_version"].count(".") == 2 and doc["created_at"].endswith("+00:00")
    assert doc["input_example"]["type"] == "dataframe"
    assert len(doc["input_example"]["data"]) == 10  # examples are cut to their first 10 rows
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN, no numpy types


# -- XGBoost --------------------------------------------------------------------------


def test_xgboost_classifier_loads_back_as_the_same_class(sqlite_env, breast_cancer):
    import xgboost as xgb

    X, y = breast_cancer
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    info = _log(clf, input_example=X.head(5))
    loaded = load_model(info.uri)
    assert info.flavor == "xgboost" and type(loaded.unwrap()) is xgb.XGBClassifier
    assert loaded.metadata["flavor_config"]["class"] == "xgboost.sklearn.XGBClassifier"
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.unwrap().predict_proba(X), clf.predict_proba(X))
    assert any(r.startswith("xgboost==") for r in loaded.metadata["requirements"])


def test_xgboost_booster_round_trips(sqlite_env, diabetes):
    import xgboost as xgb

    X, y = diabetes
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(X, label=y), num_boost_round=20)
    info = _log(booster, input_example=X.head())
    loaded = load_model(info.uri)
    assert isinstance(loaded.unwrap(), xgb.Booster)
    assert_same_predictions(loaded.predict(X), booster.predict(xgb.DMatrix(X)))
    assert loaded.signature.outputs.tensors[0].dtype == "float32"


# -- LightGBM -----------------------------------------------------------------------------


def test_lightgbm_classifier_predicts_the_original_string_labels(sqlite_env, iris):
    import lightgbm as lgb

    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, labels)
    info = _log(clf, input_example=X.head())
    loaded = load_model(info.uri)
    assert info.flavor == "lightgbm" and isinstance(loaded.unwrap(), lgb.Booster)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.signature.outputs.tensors[0].dtype == "str"


def test_lightgbm_binary_classifier_and_regressor_match_their_originals(
    sqlite_env, breast_cancer, diabetes
):
    import lightgbm as lgb

    X, y = breast_cancer
    clf = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    np.testing.assert_array_equal(load_model(_log(clf).uri).predict(X), clf.predict(X))

    Xr, yr = diabetes
    reg = lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(Xr, yr)
    booster = lgb.train({"verbose": -1}, lgb.Dataset(Xr, yr), num_boost_round=10)
    assert_same_predictions(load_model(_log(reg).uri).predict(Xr), reg.predict(Xr))
    assert_same_predictions(load_model(_log(booster).uri).predict(Xr), booster.predict(Xr))


# -- ONNX -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_onnx(iris):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    X32 = X.to_numpy(np.float32)
    clf = LogisticRegression(max_iter=1000).fit(X32, y)
    return clf, to_onnx(clf, X32[:1], options={"zipmap": False}), X32


def test_onnx_model_takes_its_signature_from_the_graph_and_matches_sklearn(sqlite_env, iris_onnx):
    import onnxruntime as ort

    clf, proto, X32 = iris_onnx
    info = _log(proto)
    assert info.flavor == "onnx"
    assert info.signature.to_dict() == {
        "inputs": {"tensors": [{"name": "X", "dtype": "float32", "shape": [-1, 4]}]},
        "outputs": {
            "tensors": [
                {"name": "label", "dtype": "int64", "shape": [-1]},
                {"name": "probabilities", "dtype": "float32", "shape": [-1, 3]},
            ]
        },
    }
    loaded = load_model(info.uri)
    assert isinstance(loaded.unwrap(), ort.InferenceSession)
    out = loaded.predict(X32)
    np.testing.assert_array_equal(out["label"], clf.predict(X32))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X32), rtol=1e-5)
    with pytest.raises(InvalidInput, match=r"expected dtype float32, got float64"):
        loaded.predict(X32.astype(np.float64))


def test_onnx_file_path_and_bytes_are_accepted(sqlite_env, iris_onnx, tmp_path: Path):
    clf, proto, X32 = iris_onnx
    path = tmp_path / "iris.onnx"
    path.write_bytes(proto.SerializeToString())
    with keel.start_run():
        from_path = log_model(path, name="from-path")
        from_bytes = log_model(path.read_bytes(), name="from-bytes")
    for info in (from_path, from_bytes):
        np.testing.assert_array_equal(load_model(info.uri).predict(X32)["label"], clf.predict(X32))
    with keel.start_run(), pytest.raises(InvalidInput, match="expected a valid ONNX model"):
        log_model(b"not an onnx model", flavor="onnx")


# -- detection, arguments -----------------------------------------------------------------------


def test_log_model_outside_a_run_says_to_start_one(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(InvalidInput, match=r"needs an active run.*keel\.start_run"):
        log_model(LogisticRegression())


def test_flavor_override_must_accept_the_model_and_names_must_be_known(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(*iris)
    with keel.start_run():
        with pytest.raises(InvalidInput, match=r"flavor 'xgboost' stores an xgboost.Booster"):
            log_model(model, flavor="xgboost")
        with pytest.raises(
            InvalidInput, match=r"flavor must be one of xgboost, .*python, got 'tf'"
        ):
            log_model(model, flavor="tf")
        with pytest.raises(InvalidInput, match=r"cannot tell how to store a object: expected"):
            log_model(object())
        info = log_model(model, flavor="python", allow_pickle=True)
    assert info.flavor == "python"
    np.testing.assert_array_equal(
        load_model(info.uri, allow_pickle=True).predict(iris[0]), model.predict(iris[0])
    )


def test_logging_twice_under_one_name_is_a_conflict(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(*iris)
    with keel.start_run() as run:
        log_model(model, name="clf")
        with pytest.raises(Conflict, match=r"already has artifacts under 'clf'.*another name"):
            log_model(model, name="clf")
        log_model(model, name="c_f")  # '_' is not a wildcard here
        with pytest.raises(InvalidInput, match=r"relative path without '\.' or '\.\.'"):
            log_model(model, name="../escape")
    paths = {e.path for e in keel.Client().list_artifacts(run.id)}
    assert paths == {
        "clf/keel-model.json",
        "clf/model.skops",
        "c_f/keel-model.json",
        "c_f/model.skops",
    }


def test_explicit_requirements_are_recorded_and_a_version_mismatch_warns(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(*iris)
    info = _log(model, requirements=["scikit-learn==0.0.1", "somepkg>=2"])
    with pytest.warns(KeelWarning, match=r"saved with scikit-learn 0\.0\.1 \(installed: ") as rec:
        loaded = load_model(info.uri)
    assert rec[0].filename == __file__
    assert "scikit-learn==0.0.1" in loaded.metadata["requirements"]
    assert "somepkg>=2" in loaded.metadata["requirements"]
    assert not any(r.startswith("scikit-learn==1") for r in loaded.metadata["requirements"])
    np.testing.assert_array_equal(loaded.predict(iris[0]), model.predict(iris[0]))

    with keel.start_run(), pytest.raises(InvalidInput, match=r"wrap it in a list"):
        log_model(model, name="m2", requirements="numpy==1.0")


def test_load_model_rejects_malformed_uris_and_missing_packages(sqlite_env):
    with keel.start_run() as run:
        keel.log_dict({"a": 1}, "notes/x.json")
    with pytest.raises(InvalidInput, match=r"expected a model URI like runs:/<run_id>/<path>"):
        load_model("s3://bucket/model")
    with pytest.raises(InvalidInput, match=r"expected runs:/<run_id>/<path>"):
        load_model(f"runs:/{run.id}")
    with pytest.raises(keel.errors.NotFound, match=r"no model package at .*keel\.log_model"):
        load_model(f"runs:/{run.id}/notes")


@pytest.mark.s3
def test_sklearn_round_trip_with_artifacts_on_s3(
    tmp_path: Path, s3_bucket: str, s3_server: str, diabetes
):
    from sklearn.linear_model import Ridge

    keel.init(home=tmp_path / ".keel", artifacts_url=f"{s3_bucket}/keel", s3_endpoint_url=s3_server)
    X, y = diabetes
    model = Ridge().fit(X, y)
    info = _log(model, input_example=X.head())
    loaded = load_model(info.uri)
    np.testing.assert_array_equal(loaded.unwrap().coef_, model.coef_)
    assert_same_predictions(loaded.predict(X), model.predict(X))


def test_import_keel_models_loads_no_heavy_module():
    code = (
        "import sys, keel.models; "
        "print(','.join(m for m in ('pandas', 'numpy', 'sklearn', 'skops', 'xgboost', "
        "'lightgbm', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
