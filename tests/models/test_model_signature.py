"""Signatures: inferred from examples, stored with the package, enforced column by column at predict."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import InvalidInput
from keel.models import (
    ColSpec,
    KeelWarning,
    Schema,
    Signature,
    TensorSpec,
    infer_signature,
    load_model,
    log_model,
)


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),  # int64
            "income": rng.normal(50_000, 10_000, n),  # float64
            "active": rng.random(n) > 0.5,  # bool
            "plan": pd.Series(rng.choice(["basic", "pro"], n), dtype=object),  # object strings
        }
    )


# -- inference ---------------------------------------------------------------------------


def test_dataframe_columns_are_inferred_with_names_and_types():
    frame = _frame(5).assign(
        signup=pd.date_range("2024-01-01", periods=5),
        city=pd.Series(["a", "b", "c", "d", None], dtype="string"),
        small=np.arange(5, dtype=np.int32),
    )
    sig = infer_signature(frame)
    assert sig.inputs.columns == (
        ColSpec("age", "int64"),
        ColSpec("income", "float64"),
        ColSpec("active", "bool"),
        ColSpec("plan", "string"),
        ColSpec("signup", "datetime"),
        ColSpec("city", "string", allow_missing=True),  # the example has a None in it
        ColSpec("small", "int32"),
    )
    assert sig.outputs is None


def test_arrays_are_tensors_with_a_free_batch_dimension():
    sig = infer_signature(np.zeros((8, 3, 2), np.float32), np.array([1, 2, 3]))
    assert sig.inputs.tensors == (TensorSpec("float32", (-1, 3, 2)),)
    assert sig.outputs is not None and sig.outputs.tensors == (TensorSpec("int64", (-1,)),)
    named = infer_signature({"image": np.zeros((2, 4, 4), np.uint8), "mask": np.ones((2, 4))})
    assert named.inputs.tensors == (
        TensorSpec("uint8", (-1, 4, 4), "image"),
        TensorSpec("float64", (-1, 4), "mask"),
    )
    assert infer_signature(np.array(["a", "b"])).inputs.tensors[0].dtype == "str"


def test_records_and_dicts_of_lists_are_columns():
    expected = (ColSpec("x", "int64"), ColSpec("y", "string"))
    assert infer_signature([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]).inputs.columns == expected
    assert infer_signature({"x": [1, 2], "y": ["a", "b"]}).inputs.columns == expected


def test_columns_a_signature_cannot_describe_are_refused_by_name():
    frame = pd.DataFrame({"ok": [1.0, 2.0], "tier": pd.Categorical(["a", "b"])})
    with pytest.raises(InvalidInput, match=r"column 'tier' is category.*convert it"):
        infer_signature(frame)
    mixed = pd.DataFrame({"m": pd.Series([1, "x"], dtype=object)})
    with pytest.raises(InvalidInput, match=r"column 'm' is object holding mixed-integer values"):
        infer_signature(mixed)


def test_signature_round_trips_through_its_dict_and_rejects_malformed_ones():
    sig = Signature(
        Schema(columns=(ColSpec("a", "float64"), ColSpec("b", "string"))),
        Schema(tensors=(TensorSpec("int64", (-1,)),)),
    )
    assert Signature.from_dict(sig.to_dict()) == sig
    with pytest.raises(InvalidInput, match=r"type must be one of bool, int8.*got 'float'"):
        Signature.from_dict({"inputs": {"columns": [{"name": "a", "type": "float"}]}})
    with pytest.raises(InvalidInput, match=r"either columns or tensors"):
        Schema()
    with pytest.raises(InvalidInput, match=r"must name every one"):
        Schema(tensors=(TensorSpec("float32", (-1,)), TensorSpec("float32", (-1,))))


# -- enforcement at predict time ----------------------------------------------------------


@pytest.fixture(scope="module")
def churn_model():
    """A real pipeline over int, float, bool and string columns."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame(200)
    y = (frame["income"] > 50_000).astype(int)
    pipe = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(), ["plan"]),
            (StandardScaler(), ["age", "income"]),
            ("passthrough", ["active"]),
        ),
        LogisticRegression(max_iter=1000),
    )
    return pipe.fit(frame, y), frame


@pytest.fixture
def churn(sqlite_env, churn_model):
    pipe, frame = churn_model
    with keel.start_run():
        info = log_model(pipe, input_example=frame.head(5))
    return load_model(info.uri), pipe, frame


def test_logged_signature_names_every_column_and_the_output(churn):
    loaded, _, _ = churn
    assert loaded.signature.to_dict() == {
        "inputs": {
            "columns": [
                {"name": "age", "type": "int64"},
                {"name": "income", "type": "float64"},
                {"name": "active", "type": "bool"},
                {"name": "plan", "type": "string"},
            ]
        },
        "outputs": {"tensors": [{"dtype": "int64", "shape": [-1]}]},
    }
    pd.testing.assert_frame_equal(loaded.input_example, churn[2].head(5))


def test_columns_are_reordered_and_extra_ones_dropped_with_a_warning(churn):
    loaded, pipe, frame = churn
    shuffled = frame[["plan", "income", "active", "age"]].assign(notes="x")
    with pytest.warns(KeelWarning, match=r"dropping column\(s\) .*: notes") as record:
        out = loaded.predict(shuffled)
    assert record[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(out, pipe.predict(frame))


def test_missing_columns_are_named(churn):
    loaded, _, frame = churn
    with pytest.raises(InvalidInput, match=r"missing column\(s\) 'age', 'plan'"):
        loaded.predict(frame.drop(columns=["age", "plan"]))


def test_safe_widening_is_applied(churn):
    loaded, pipe, frame = churn
    narrow = frame.astype({"age": "int32", "income": "float32"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "feature names" or dropped-column warnings
        out = loaded.predict(narrow)
    np.testing.assert_array_equal(
        out, pipe.predict(narrow.astype({"age": "int64", "income": "float64"}))
    )
    # An int column where the signature says float widens too.
    loaded.predict(frame.assign(income=frame["income"].round().astype("int64")))


@pytest.mark.parametrize(
    ("column", "value", "received"),
    [
        ("age", 30.5, "float64"),  # float → int would truncate
        ("income", "50000", "string"),  # string → number is a parse, not a cast
        ("active", 1, "int64"),  # bool stays bool
        ("plan", 3, "int64"),  # number → string is refused as well
    ],
)
def test_unsafe_conversions_name_the_column_and_both_types(churn, column, value, received):
    loaded, _, frame = churn
    expected = loaded.signature.inputs.columns[
        [c.name for c in loaded.signature.inputs.columns].index(column)
    ].type
    bad = frame.assign(**{column: value})
    with pytest.raises(
        InvalidInput, match=rf"column '{column}': expected {expected}, got {received}; only safe"
    ):
        loaded.predict(bad)


def test_arrays_dicts_and_records_are_accepted_for_columnar_signatures(churn):
    loaded, pipe, frame = churn
    expected = pipe.predict(frame.head(3))
    rows = frame.head(3)
    np.testing.assert_array_equal(loaded.predict(rows.to_dict(orient="list")), expected)
    np.testing.assert_array_equal(loaded.predict(rows.to_dict(orient="records")), expected)
    # An object array maps to the columns by position and its values keep their types.
    np.testing.assert_array_equal(loaded.predict(rows.to_numpy(dtype=object)), expected)
    with pytest.raises(InvalidInput, match=r"2-D array with 4 columns in that order"):
        loaded.predict(np.zeros((3, 5)))
    with pytest.raises(InvalidInput, match=r"expected a pandas DataFrame, .*got int"):
        loaded.predict(7)


def test_tensor_signatures_check_dtype_and_trailing_shape(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    X32 = X.to_numpy(np.float32)
    clf = LogisticRegression(max_iter=1000).fit(X32, y)
    with keel.start_run():
        info = log_model(clf, input_example=X32[:5])
    loaded = load_model(info.uri)
    assert loaded.signature.inputs.tensors == (TensorSpec("float32", (-1, 4)),)
    np.testing.assert_array_equal(loaded.predict(X32), clf.predict(X32))
    np.testing.assert_array_equal(loaded.predict(X32.astype(np.float16)), clf.predict(X32))
    loaded.predict(X.to_numpy(np.int16))  # int16 → float32 is exact
    with pytest.raises(InvalidInput, match=r"expected dtype float32, got float64.*astype"):
        loaded.predict(X.to_numpy())
    with pytest.raises(
        InvalidInput, match=r"expected shape \(-1, 4\) \(-1 = any size\), got \(5, 3\)"
    ):
        loaded.predict(X32[:5, :3])
    with pytest.raises(InvalidInput, match=r"expected dtype float32, got bool"):
        loaded.predict(X32 > 1)


def test_explicit_signature_is_stored_and_checked_against_the_example(sqlite_env, iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    sig = infer_signature(X, clf.predict(X))
    with keel.start_run():
        info = log_model(clf, signature=sig.to_dict())
        with pytest.raises(InvalidInput, match=r"input_example does not match the signature"):
            log_model(clf, name="other", signature=sig, input_example=X.drop(columns=X.columns[0]))
    assert info.signature == sig and load_model(info.uri).signature == sig


def test_model_without_signature_passes_data_through(sqlite_env, diabetes):
    from sklearn.linear_model import Ridge

    X, y = diabetes
    model = Ridge().fit(X.to_numpy(), y)
    with keel.start_run():
        info = log_model(model)
    loaded = load_model(info.uri)
    assert info.signature is None and loaded.signature is None and loaded.input_example is None
    np.testing.assert_allclose(
        loaded.predict(X.to_numpy()), model.predict(X.to_numpy()), rtol=1e-12
    )
