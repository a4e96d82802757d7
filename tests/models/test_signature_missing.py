"""Missing values in signatures: recorded at log time, refused by name where not allowed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import InvalidInput
from keel.models.signature import ColSpec, Schema, Signature, TensorSpec, enforce, infer_signature


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return x, y


def test_allow_missing_round_trips_and_is_written_only_when_set():
    sig = Signature(
        Schema(columns=(ColSpec("a", "float64", allow_missing=True), ColSpec("b", "string"))),
        Schema(tensors=(TensorSpec("float64", (-1,), allow_missing=True),)),
    )
    doc = sig.to_dict()
    assert doc["inputs"]["columns"] == [
        {"name": "a", "type": "float64", "allow_missing": True},
        {"name": "b", "type": "string"},
    ]
    assert doc["outputs"]["tensors"] == [{"dtype": "float64", "shape": [-1], "allow_missing": True}]
    assert Signature.from_dict(doc) == sig
    with pytest.raises(InvalidInput, match=r"column 'a': allow_missing must be True or False"):
        Signature.from_dict(
            {"inputs": {"columns": [{"name": "a", "type": "float64", "allow_missing": "yes"}]}}
        )


def test_inference_allows_missing_values_only_where_the_example_has_them():
    frame = pd.DataFrame(
        {
            "clean": [1.0, 2.0],
            "nan": [1.0, np.nan],
            "inf": [np.inf, 2.0],
            "none": ["a", None],
            "count": [1, 2],
        }
    )
    flags = {c.name: c.allow_missing for c in infer_signature(frame).inputs.columns}
    assert flags == {"clean": False, "nan": True, "inf": True, "none": True, "count": False}
    assert not infer_signature(np.ones((2, 3))).inputs.tensors[0].allow_missing
    assert infer_signature(np.array([[1.0, np.nan]])).inputs.tensors[0].allow_missing


def test_a_missing_value_where_the_signature_allows_none_is_refused_by_column_and_row():
    schema = Schema(columns=(ColSpec("a", "float64"), ColSpec("b", "float64", allow_missing=True)))
    holey = pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": [np.nan, 1.0, 2.0]})
    message = r"column 'a' has 1 missing value\(s\) \(null, NaN or infinite\), the first at row 2"
    with pytest.raises(InvalidInput, match=message):
        enforce(schema, holey)
    with pytest.raises(InvalidInput, match=message):
        enforce(schema, holey.to_numpy(), as_matrix=True)  # the array fast path checks too
    with pytest.raises(InvalidInput, match=r"column 'a' has 1 missing value\(s\).*row 0"):
        enforce(schema, pd.DataFrame({"a": [-np.inf], "b": [1.0]}))
    allowed = enforce(schema, holey.fillna({"a": 0.0}))
    assert allowed["b"].isna().sum() == 1
    assert enforce(schema, holey, check_missing=False)["a"].isna().sum() == 1


def test_a_null_is_reported_as_null_and_never_turned_into_a_value():
    strict = Schema(columns=(ColSpec("x", "float64"),))
    records = pd.DataFrame.from_records([{"x": None}])
    with pytest.raises(InvalidInput, match=r"column 'x' has 1 missing value\(s\) \(null"):
        enforce(strict, records)
    lenient = Schema(columns=(ColSpec("x", "float64", allow_missing=True),))
    assert np.isnan(enforce(lenient, records)["x"].to_numpy()).all()
    for kind in ("int64", "bool"):
        schema = Schema(columns=(ColSpec("x", kind, allow_missing=True),))
        with pytest.raises(InvalidInput, match=rf"column 'x': expected {kind}, got null"):
            enforce(schema, records)
    flags = Schema(columns=(ColSpec("x", "bool", allow_missing=True),))
    with pytest.raises(InvalidInput, match=r"with missing values, which bool cannot hold"):
        enforce(flags, pd.DataFrame({"x": [True, None]}))  # not a silent False


def test_a_tensor_names_the_index_of_its_first_missing_value():
    schema = Schema(tensors=(TensorSpec("float64", (-1, 3)),))
    values = np.ones((2, 3))
    values[1, 2] = np.nan
    with pytest.raises(
        InvalidInput, match=r"tensor input has 1 missing value\(s\).*index \(1, 2\)"
    ):
        enforce(schema, values)


def test_a_loaded_model_refuses_nan_by_name_instead_of_failing_inside(sqlite_env, cancer):
    from sklearn.linear_model import LogisticRegression

    x, y = cancer
    with keel.start_run():
        info = keel.log_model(LogisticRegression(max_iter=5000).fit(x, y), input_example=x.head(3))
    model = keel.load_model(info.uri)
    holey = x.head(2).copy()
    holey.loc[holey.index[1], "worst area"] = np.nan
    with pytest.raises(InvalidInput, match=r"column 'worst area' has 1 missing value\(s\)"):
        model.predict(holey)


def test_reference_data_with_missing_values_lets_those_columns_take_them(sqlite_env, cancer):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = cancer
    train = x.copy()
    train.loc[train.index[::5], "mean area"] = np.nan
    # scikit-learn's tags say this pipeline does not take NaN: the training data decides.
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(train, y)
    with keel.start_run():  # the example has no gap; the training data does
        info = keel.log_model(model, input_example=x.head(3), reference_data=train)
    assert info.signature is not None
    allowed = [c.name for c in info.signature.inputs.columns if c.allow_missing]
    assert allowed == ["mean area"]
    loaded = keel.load_model(info.uri)
    np.testing.assert_array_equal(loaded.predict(train.head(10)), model.predict(train.head(10)))
    other = x.head(1).assign(**{"mean texture": np.nan})
    with pytest.raises(InvalidInput, match=r"column 'mean texture' has 1 missing value"):
        loaded.predict(other)


def test_a_model_that_handles_missing_values_itself_takes_them_in_every_column(sqlite_env, cancer):
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = cancer  # complete training data: the model's own allow_nan tag decides
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, input_example=x.head(3))
    assert info.signature is not None
    assert all(c.allow_missing for c in info.signature.inputs.columns)
    holey = x.head(4).assign(**{"worst area": np.nan})
    loaded = keel.load_model(info.uri)
    np.testing.assert_array_equal(loaded.predict(holey), model.predict(holey))


def test_a_given_signature_is_kept_as_given_even_for_a_model_that_takes_missing_values(
    sqlite_env, cancer
):
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = cancer
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    from keel.models import infer_signature

    signature = infer_signature(x.head(3), model.predict(x.head(3)))
    with keel.start_run():
        info = keel.log_model(model, input_example=x.head(3), signature=signature)
    assert info.signature is not None
    assert not any(c.allow_missing for c in info.signature.inputs.columns)
