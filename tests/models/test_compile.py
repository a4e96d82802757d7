"""``keel.models.compile``: compiled forms of registered versions, checked for parity.

Every case compiles a real registered version (real converters, onnxruntime and
treelite's GTIL), then reads back what the registry recorded and loads the stored
package the way serving does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import Settings, load_settings
from keel.errors import InvalidInput, PermissionDenied
from keel.models import KeelWarning
from keel.models.compile import TOLERANCE, compile_version

pytest.importorskip("skl2onnx", reason="compiling to ONNX needs keel[compile]")
pytest.importorskip("onnxmltools", reason="compiling boosters to ONNX needs keel[compile]")
pytest.importorskip("treelite", reason="compiling to treelite needs keel[compile]")

from sklearn.base import BaseEstimator, TransformerMixin


class Doubler(BaseEstimator, TransformerMixin):
    """A transformer of the user's own, which no converter knows."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X, dtype=float) * 2.0


def _register(model: Any, X: Any, y: Any, name: str, **log: Any) -> int:
    with keel.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
        info = keel.log_model(model, "model", input_example=X.head(5), **log)
    return keel.register_model(info.uri, name)


def _ensemble(kind: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=30, random_state=0)
    if kind == "random_forest":
        return RandomForestClassifier(n_estimators=20, random_state=0)
    if kind == "xgboost":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)
    import lightgbm

    return lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, n_jobs=1)


def _stored_package(package_digest: str, folder: Path) -> keel.models.LoadedModel:
    """The compiled package as the artifact store holds it, loaded and verified."""
    keel.Client().artifacts.get_dir(package_digest, folder)
    return keel.load_model(str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "treelite"])
@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "random_forest", "xgboost", "lightgbm"])
def test_tree_ensembles_compile_and_answer_like_the_native_model(
    sqlite_env: Settings, breast_cancer: Any, tmp_path: Path, kind: str, target: str
) -> None:
    X, y = breast_cancer
    version = _register(_ensemble(kind), X, y, "cancer")

    result = compile_version("cancer", version, to=target, data=X)

    report = result.report
    assert result.passed and report["passed"] is True and report["reason"] is None
    assert (report["model"], report["version"], report["target"]) == ("cancer", 1, target)
    assert report["rows"] == 5 + len(X)
    assert report["data"] == ["input_example: 5 rows", f"data: {len(X)} rows"]
    assert report["class_agreement"] >= 0.999 and report["within_tolerance"] >= 0.999
    assert 0 <= report["max_abs_diff"] <= TOLERANCE
    assert report["size_bytes"] > 0 and report["compiled_ms_per_row"] > 0
    boosters = kind in ("xgboost", "lightgbm")
    converter = "treelite" if target == "treelite" else "onnxmltools" if boosters else "skl2onnx"
    assert report["converter"]["name"] == converter
    assert keel.Client().registry.compiled("cancer", 1, target) == result.compilation

    native = keel.load_model("models:/cancer/1")
    compiled = _stored_package(result.package_digest, tmp_path / "compiled")
    assert compiled.flavor == target
    assert compiled.metadata["signature"] == native.metadata["signature"]
    assert compiled.metadata["input_example"] == native.metadata["input_example"]
    expected = native.predict(X)
    got = compiled.predict(X)
    assert got.dtype == np.asarray(expected).dtype
    assert np.mean(got == expected) >= 0.999
    np.testing.assert_allclose(compiled.predict_proba(X), native.predict_proba(X), atol=TOLERANCE)
    assert list(compiled.classes_) == list(native.classes_)


def _churn_frame(n: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "pro", "team"], n),
            "region": rng.choice(["eu", "us"], n),
            "usage": rng.gamma(2.0, 3.0, n),
            "tenure": rng.integers(0, 60, n).astype(float),
        }
    )
    churn = ((frame["plan"] == "pro") & (frame["usage"] > 5)) | (frame["tenure"] < 6)
    return frame, np.where(churn, "churn", "stay")


@pytest.mark.slow
def test_a_column_transformer_with_one_hot_categories_compiles_to_a_graph_fed_by_column(
    sqlite_env: Settings, tmp_path: Path
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, labels = _churn_frame()
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
                        ("num", "passthrough", ["usage", "tenure"]),
                    ]
                ),
            ),
            ("clf", HistGradientBoostingClassifier(max_iter=30, random_state=0)),
        ]
    )
    _register(pipeline, frame, labels, "churn")

    result = compile_version("churn", 1, to="onnx", data=frame)

    assert result.passed and result.report["class_agreement"] == 1.0
    compiled = _stored_package(result.package_digest, tmp_path / "compiled")
    config = compiled.metadata["flavor_config"]
    assert config["feed"] == "columns"
    assert config["columns"] == ["plan", "region", "usage", "tenure"]
    assert config["column_types"] == {
        "plan": "string", "region": "string", "usage": "float32", "tenure": "float32"
    }  # fmt: skip
    assert config["classes"] == ["churn", "stay"] and config["task"] == "classification"
    native = keel.load_model("models:/churn/1")
    rows = frame.sample(50, random_state=1)
    assert list(compiled.predict(rows)) == list(native.predict(rows))
    assert set(compiled.predict(rows)) <= {"churn", "stay"}

    with pytest.raises(InvalidInput, match="a pipeline is not a tree ensemble: treelite compiles"):
        compile_version("churn", 1, to="treelite", data=frame)
    refused = keel.Client().registry.list_compilations("churn", 1)[-1]
    assert (refused.target, refused.passed, refused.package_digest) == ("treelite", False, None)


@pytest.mark.slow
def test_columns_that_are_not_identifiers_feed_the_inputs_the_converter_named(
    sqlite_env: Settings, tmp_path: Path
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, labels = _churn_frame()
    frame = frame.rename(columns={"plan": "plan name", "usage": "mean usage"})
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan name", "region"]),
                        ("num", "passthrough", ["mean usage", "tenure"]),
                    ]
                ),
            ),
            ("clf", HistGradientBoostingClassifier(max_iter=30, random_state=0)),
        ]
    )
    _register(pipeline, frame, labels, "spaced")

    result = compile_version("spaced", 1, to="onnx", data=frame)

    assert result.passed
    compiled = _stored_package(result.package_digest, tmp_path / "compiled")
    config = compiled.metadata["flavor_config"]
    assert config["columns"] == ["plan name", "region", "mean usage", "tenure"]
    renamed = config["input_names"]
    assert renamed["region"] == "region" and renamed["plan name"] != "plan name"
    rows = frame.sample(50, random_state=1)
    native = keel.load_model("models:/spaced/1")
    assert list(compiled.predict(rows)) == list(native.predict(rows))


def test_a_custom_transformer_is_refused_naming_the_step_and_the_refusal_is_recorded(
    sqlite_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, y = breast_cancer
    pipeline = Pipeline([("doubler", Doubler()), ("clf", LogisticRegression(max_iter=200))])
    _register(pipeline, X, y, "custom")
    registry = keel.Client().registry

    # loading it at all needs the caller's trust: refused before anything is recorded
    with pytest.raises(PermissionDenied, match=r"models:/custom/1: .*--trust"):
        compile_version("custom", 1, data=X)
    assert registry.list_compilations("custom", 1) == []

    trusted = [f"{Doubler.__module__}.Doubler"]
    with pytest.raises(
        InvalidInput,
        match=r"models:/custom/1 cannot be compiled to onnx: step 'doubler' "
        r"\(.*Doubler\) has no ONNX converter",
    ):
        compile_version("custom", 1, data=X, trust=trusted)
    [failed] = registry.list_compilations("custom", 1)
    assert (failed.target, failed.passed, failed.package_digest) == ("onnx", False, None)
    report = registry.artifacts.get_json(failed.report_digest)
    assert "step 'doubler'" in report["reason"] and report["passed"] is False
    assert registry.compiled("custom", 1, "onnx") is None


def _float64_model() -> tuple[Any, pd.DataFrame, np.ndarray]:
    """A model whose splits fall between values float32 cannot tell apart (1e8 + k)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    k = rng.integers(0, 40, 2000)
    frame = pd.DataFrame({"x": 1e8 + k.astype(float), "noise": rng.normal(size=2000)})
    return HistGradientBoostingClassifier(max_iter=10), frame, (k >= 21).astype(int)


def test_a_parity_failure_is_refused_with_its_figures_and_never_served(
    sqlite_env: Settings,
) -> None:
    model, frame, labels = _float64_model()
    _register(model, frame, labels, "precise")

    with pytest.raises(
        InvalidInput,
        match=r"models:/precise/1 compiled to onnx, but parity failed: classes agree on "
        r"\d+\.\d% of 2005 rows \(need 99\.9%\).*max \|Δ\| ",
    ):
        compile_version("precise", 1, data=frame)

    registry = keel.Client().registry
    [failed] = registry.list_compilations("precise", 1)
    assert failed.passed is False and failed.package_digest is not None  # kept to inspect
    report = registry.artifacts.get_json(failed.report_digest)
    assert report["rows"] == 2005 and report["class_agreement"] < 0.999
    assert report["disagreeing_rows"]
    assert registry.compiled("precise", 1, "onnx") is None
    served = keel.load_model("models:/precise/1", runtime="auto")
    assert served.runtime == "native" and "failed parity" in served.runtime_reason


def test_a_regressor_compiles_when_its_values_agree_within_the_relative_tolerance(
    sqlite_env: Settings, diabetes: Any, tmp_path: Path
) -> None:
    import lightgbm

    X, y = diabetes
    _register(lightgbm.LGBMRegressor(n_estimators=20, verbose=-1, n_jobs=1), X, y, "sugar")

    for target in ("onnx", "treelite"):
        result = compile_version("sugar", 1, to=target, data=X)
        assert result.passed and result.report["class_agreement"] is None
        assert result.report["task"] == "regression"
    compiled = _stored_package(result.package_digest, tmp_path / "compiled")
    native = keel.load_model("models:/sugar/1")
    got, expected = compiled.predict(X), native.predict(X)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_a_compiled_package_is_lineage_of_its_version_and_is_audited(
    sqlite_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from keel.governance import audit
    from keel.store import get_store

    X, y = breast_cancer
    _register(RandomForestClassifier(n_estimators=5, random_state=0), X, y, "cancer")
    result = compile_version("cancer", 1, to="treelite")

    graph = keel.Client().lineage.downstream("models:/cancer/1")
    assert f"artifacts:/{result.package_digest}" in graph.uris()
    assert any(
        e.relation == "compiled" and e.dst == f"artifacts:/{result.package_digest}"
        for e in graph.edges
    )
    [entry] = audit.list_entries(get_store(sqlite_env), action="model_version.compile")
    assert entry.object_id == "cancer/1" and entry.after["passed"] is True
    assert entry.after["package_digest"] == result.package_digest


def test_without_data_parity_uses_the_example_and_the_training_dataset(
    sqlite_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X, y = breast_cancer
    with keel.start_run():
        keel.log_dataset(X.assign(target=y), name="cancer-train")
        model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
        info = keel.log_model(model, "model", input_example=X.head(3))
    keel.register_model(info.uri, "cancer")

    report = compile_version("cancer", 1).report

    assert report["rows"] == 3 + len(X)
    assert report["data"] == [
        "input_example: 3 rows",
        f"datasets:/cancer-train@1 (reference): {len(X)} rows",
    ]


def test_no_rows_to_check_is_refused_and_nothing_is_recorded(
    sqlite_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from keel.models.signature import infer_signature

    X, y = breast_cancer
    with keel.start_run():
        model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
        info = keel.log_model(model, "model", signature=infer_signature(X.head()))
    keel.register_model(info.uri, "cancer")

    with pytest.raises(InvalidInput, match=r"no rows to check .* pass rows it takes with --data"):
        compile_version("cancer", 1)
    with pytest.raises(InvalidInput, match="target must be one of onnx, treelite, got 'tvm'"):
        compile_version("cancer", 1, to="tvm", data=X)
    with pytest.raises(InvalidInput, match="lacks the model's input column"):
        compile_version("cancer", 1, data=X.drop(columns=["mean radius"]))
    assert keel.Client().registry.list_compilations("cancer", 1) == []


def test_rows_with_missing_values_the_model_refuses_are_left_out_and_counted(
    sqlite_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = breast_cancer
    # it was trained on complete data and does not take NaN: its signature refuses them
    _register(GradientBoostingClassifier(n_estimators=5, random_state=0), X, y, "cancer")
    holes = X.copy()
    holes.iloc[:10, 0] = np.nan

    report = compile_version("cancer", 1, to="treelite", data=holes).report

    assert report["excluded_rows"] == 10 and report["rows"] == 5 + len(X) - 10


def test_compile_on_register_compiles_new_versions_and_a_failure_only_warns(
    tmp_path: Path, breast_cancer: Any
) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    keel.init(home=tmp_path / ".keel", compile_on_register="treelite")
    X, y = breast_cancer
    _register(RandomForestClassifier(n_estimators=3, random_state=0), X, y, "cancer")
    [compiled] = keel.Client().registry.list_compilations("cancer", 1)
    assert (compiled.target, compiled.passed) == ("treelite", True)

    with pytest.warns(KeelWarning, match=r"models:/cancer/2 is registered, but compiling it"):
        _register(Pipeline([("clf", LogisticRegression(max_iter=50))]), X, y, "cancer")
    assert keel.Client().get_model_version("cancer", 2).version == 2
    [refused] = keel.Client().registry.list_compilations("cancer", 2)
    assert refused.passed is False


def test_compile_on_register_takes_only_a_known_target(tmp_path: Path) -> None:
    assert load_settings(tmp_path).compile_on_register is None
    with pytest.raises(
        InvalidInput, match="setting 'compile_on_register' must be one of onnx, treelite, got 'tvm'"
    ):
        load_settings(tmp_path, compile_on_register="tvm")


def test_a_booster_with_text_labels_answers_labels_not_class_indices(
    sqlite_env: Settings, iris: Any
) -> None:
    import lightgbm

    X, y = iris
    names = np.array(["a", "versicolor", "virginica-longest"])[y]
    _register(lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1), X, names, "iris")

    for target in ("onnx", "treelite"):
        assert compile_version("iris", 1, to=target, data=X).passed
        compiled = keel.load_model("models:/iris/1", runtime=target)
        assert list(compiled.predict(X)) == list(keel.load_model("models:/iris/1").predict(X))
        assert set(compiled.predict(X)) == {"a", "versicolor", "virginica-longest"}
