"""The one-matrix request path: column order, per-version shaping, fallbacks, logs, limits."""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from keel.predictions import read_predictions
from keel.serving import Deployments, build_spec


def _v2(frame: pd.DataFrame, request_id: str | None = None) -> dict:
    doc: dict = {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }
    if request_id is not None:
        doc["id"] = request_id
    return doc


@pytest.fixture
def regressors(registered):
    """'reg' v1 fitted on the columns in order, v2 on the same columns reversed.

    Regressors answer with continuous values, so a row fed to a model in the
    wrong column order shows up as a different number.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = registered.features
    target = x["mean radius"] * 3 + x["mean texture"]
    reverse = list(reversed(x.columns))
    models = {}
    for version, columns in ((1, list(x.columns)), (2, reverse)):
        model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x[columns], target)
        with keel.start_run():
            info = keel.log_model(model, "model", input_example=x[columns].head(3))
        assert keel.register_model(info.uri, "reg") == version
        models[version] = (model, columns)
    return models


def test_each_route_gets_the_columns_in_its_own_order(registered, regressors, serve):
    Deployments().create("reg-live", build_spec("reg/1", canary=["reg/2:50"]))
    server = serve("reg-live", log_predictions=False)
    rows = registered.features.iloc[10:13]
    seen = set()
    with httpx.Client(base_url=server.url) as http:
        for n in range(40):
            shuffled = rows[list(np.random.default_rng(n).permutation(rows.columns))]
            answer = http.post("/v2/models/reg-live/infer", json=_v2(shuffled, f"req-{n}"))
            assert answer.status_code == 200, answer.text
            version = int(answer.json()["model_version"])
            model, columns = regressors[version]
            expected = model.predict(rows[columns])
            np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], expected)
            split = {
                "dataframe_split": {
                    "columns": list(shuffled.columns),
                    "data": shuffled.to_numpy().tolist(),
                }
            }
            mlflow = http.post("/invocations", json=split, headers={"x-request-id": f"inv-{n}"})
            assert mlflow.status_code == 200, mlflow.text
            seen.add(version)
    assert seen == {1, 2}


def test_logged_inputs_of_a_matrix_request_are_named_by_column(registered, serve, sqlite_env):
    server = serve("models:/cancer@champion")
    rows = registered.features.iloc[:4]
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v2/models/cancer/infer", json=_v2(rows, "logged-1"))
        assert answer.status_code == 200
    server.__exit__()  # a clean shutdown flushes the log
    table = read_predictions(str(sqlite_env.artifacts_url), "cancer")
    assert table.num_rows == 4
    for column in rows.columns:
        np.testing.assert_array_equal(table.column(f"input.{column}").to_numpy(), rows[column])
    assert table.column("request_id").to_pylist() == ["logged-1"] * 4
    assert table.column("row").to_pylist() == [0, 1, 2, 3]


def test_integer_columns_keep_working_when_a_request_mixes_ints_and_floats(sqlite_env, serve):
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame(
        {"age": np.arange(20, 60, dtype=np.int64), "income": np.linspace(1.0, 9.0, 40)}
    )
    model = LinearRegression().fit(frame, frame["age"] * 2.0 + frame["income"])
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=frame.head(3))
    keel.register_model(info.uri, "ages")
    server = serve("models:/ages/1", log_predictions=False)
    rows = frame.iloc[:3]
    expected = model.predict(rows).tolist()
    pairs = [[int(a), float(i)] for a, i in zip(rows["age"], rows["income"], strict=True)]
    split = {"dataframe_split": {"columns": ["age", "income"], "data": pairs}}
    ints = [{"name": "age", "shape": [3], "datatype": "INT64", "data": rows["age"].tolist()}]
    floats = [{"name": "income", "shape": [3], "datatype": "FP64", "data": rows["income"].tolist()}]
    with httpx.Client(base_url=server.url) as http:
        # One array of rows mixes ints and floats: each column is still typed on its own.
        answer = http.post("/invocations", json=split)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], expected)
        # Two datatypes cannot share one matrix: the general parser takes the request.
        v2 = http.post("/v2/models/ages/infer", json={"inputs": ints + floats})
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], expected)
        # A float where the signature says int64 is refused, not truncated.
        bad = [{"name": "age", "shape": [3], "datatype": "FP64", "data": [20.5, 21.0, 22.0]}]
        refused = http.post("/v2/models/ages/infer", json={"inputs": bad + floats})
        assert refused.status_code == 422 and "'age': expected int64" in refused.json()["error"]


def test_a_pipeline_selecting_columns_by_name_keeps_its_dataframe(registered, serve):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = registered.features, (registered.features["mean radius"] > 14).astype(int)
    pick = ColumnTransformer([("scaled", StandardScaler(), ["mean radius", "mean texture"])])
    pipe = make_pipeline(pick, LogisticRegression()).fit(x, y)
    with keel.start_run():
        info = keel.log_model(pipe, "model", input_example=x.head(5))
    keel.register_model(info.uri, "picker")
    loaded = keel.load_model("models:/picker/1")
    assert isinstance(loaded.check_input(x.head(2)), pd.DataFrame)
    server = serve("models:/picker/1", log_predictions=False)
    rows = x.iloc[:6]
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v2/models/picker/infer", json=_v2(rows))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == pipe.predict(rows).tolist()


def test_an_all_numeric_model_takes_one_array_without_feature_name_warnings(registered):
    loaded = keel.load_model("models:/cancer/1")
    rows = registered.features.iloc[:5]
    checked = loaded.check_input(rows)
    assert isinstance(checked, np.ndarray) and checked.shape == (5, 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = loaded.predict(rows.to_numpy())
    assert [str(w.message) for w in caught if "feature names" in str(w.message)] == []
    np.testing.assert_array_equal(got, registered.models[1].predict(rows))
    with pytest.raises(keel.errors.InvalidInput, match="expected float64, got str"):
        loaded.predict(rows.astype(str))


def test_a_body_over_the_limit_is_refused_with_413(registered, serve, monkeypatch):
    import keel.serving.app as app_module

    monkeypatch.setattr(app_module, "MAX_BODY_BYTES", 5_000)
    server = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.iloc[:50]
    with httpx.Client(base_url=server.url) as http:
        big = http.post("/v2/models/cancer/infer", json=_v2(rows))
        assert big.status_code == 413 and "limit is 5000" in big.json()["error"]

        def chunks():  # no content-length: the limit holds while streaming too
            yield b'{"inputs": ['
            for _ in range(100):  # 10 kB
                yield b" " * 100
            yield b"]}"

        streamed = http.post("/v2/models/cancer/infer", content=chunks())
        assert streamed.status_code == 413
        small = http.post("/v2/models/cancer/infer", json=_v2(rows.iloc[:1]))
        assert small.status_code == 200


class Cube:
    """A model answering a [2, 2] block per row and named outputs (saved without pickle)."""

    def predict(self, data):
        sums = np.asarray(data).sum(axis=1)
        return sums[:, None, None] * np.arange(4.0).reshape(1, 2, 2)

    def keel_save(self, path):
        (path / "marker").write_text("cube")

    @classmethod
    def keel_load(cls, path):
        return cls()


def test_outputs_of_more_than_two_dimensions_are_logged_per_row(sqlite_env, serve):
    inputs = np.arange(12.0).reshape(4, 3)
    with keel.start_run():
        info = keel.log_model(Cube(), "cube", input_example=inputs)
    keel.register_model(info.uri, "cube")
    server = serve("models:/cube/1")
    tensor = {"name": "x", "shape": [4, 3], "datatype": "FP64", "data": inputs.ravel().tolist()}
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v2/models/cube/infer", json={"id": "c-1", "inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["shape"] == [4, 2, 2]
    server.__exit__()
    table = read_predictions(str(sqlite_env.artifacts_url), "cube")
    assert table.num_rows == 4
    logged = table.column("output.prediction").to_pylist()
    assert logged == Cube().predict(inputs).reshape(4, -1).tolist()
    assert table.column("input.0").to_pylist() == inputs[:, 0].tolist()
