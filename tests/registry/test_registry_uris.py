"""``models:/`` URIs load the files a registered version pinned, verified like ``runs:/`` URIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import keel
from keel.errors import IntegrityError, NotFound
from keel.models import load_model, log_model

registry = pytest.importorskip("keel.registry")


def test_registered_version_and_alias_load_the_logged_model(any_env, iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    with keel.start_run():
        info = log_model(clf, input_example=X.head())
    assert registry.register_model(info.uri, "iris") == 1
    keel.Client().set_alias("iris", "champion", 1)
    for uri in ("models:/iris/1", "models:/iris@champion", "models:/iris/latest"):
        loaded = load_model(uri)
        assert loaded.uri == uri
        np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    with pytest.raises(NotFound):
        load_model("models:/iris/2")


def test_a_registered_version_keeps_loading_its_pinned_files_after_the_run_is_relogged(
    any_env, iris, tmp_path: Path
):
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    with keel.start_run() as run:
        info = log_model(clf)
        other = log_model(DummyClassifier(strategy="constant", constant=2).fit(X, y), "other")
    registry.register_model(info.uri, "iris")
    # Overwrite the run's package with another, self-consistent one.
    replacement = tmp_path / "replacement"
    keel.Client().download_artifacts(run.id, other.artifact_path, replacement)
    keel.Client().log_artifacts(run.id, replacement, "model")

    assert (load_model(info.uri).predict(X) == 2).all()  # the run now holds the dummy
    np.testing.assert_array_equal(load_model("models:/iris/1").predict(X), clf.predict(X))


def test_pinned_files_that_went_corrupt_are_reported_by_name(sqlite_env, iris, stored_object):
    from sklearn.linear_model import LogisticRegression

    with keel.start_run():
        info = log_model(LogisticRegression(max_iter=500).fit(*iris))
    registry.register_model(info.uri, "iris")
    stored_object(sqlite_env, info.run_id, "model/model.skops").write_bytes(b"garbage")
    with pytest.raises(
        IntegrityError, match=r"models:/iris/1 \(runs:/.*\): model file 'model\.skops'"
    ):
        load_model("models:/iris/1")
