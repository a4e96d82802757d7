"""Nothing is deserialized unless every file matches keel-model.json; pickles need explicit consent."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.artifacts import hash_file
from keel.errors import IntegrityError, InvalidInput, PermissionDenied
from keel.models import KeelWarning, load_model, log_model


class Echo:
    """A harmless model that can only be stored as a pickle."""

    def predict(self, data):
        return np.zeros(len(data))


class TouchOnUnpickle:
    """A model whose pickle creates ``target`` when it is unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def predict(self, data):
        return np.zeros(len(data))

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _log(model, **kwargs):
    with keel.start_run():
        return log_model(model, **kwargs)


@pytest.fixture
def skops_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every call to skops.io.load (and still makes it)."""
    import skops.io

    calls: list[object] = []
    real = skops.io.load

    def spy(file, trusted=None):
        calls.append(file)
        return real(file, trusted=trusted)

    monkeypatch.setattr(skops.io, "load", spy)
    return calls


def test_changed_byte_in_a_stored_sklearn_file_is_reported_by_name_and_never_loaded(
    keel_env, iris, stored_object, skops_loads, cache_contents
):
    from sklearn.linear_model import LogisticRegression

    info = _log(LogisticRegression(max_iter=500).fit(*iris))
    obj = stored_object(keel_env, info.run_id, "model/model.skops")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=r"model file 'model\.skops' is corrupt"):
        load_model(info.uri)
    assert skops_loads == []
    assert cache_contents(keel_env) == []


def test_rewritten_pickle_bytes_in_the_store_are_refused_before_unpickling(
    keel_env, tmp_path: Path, stored_object
):
    target = tmp_path / "pwned"
    info = _log(Echo(), allow_pickle=True)
    stored_object(keel_env, info.run_id, "model/model.pkl").write_bytes(
        pickle.dumps(TouchOnUnpickle(target))
    )
    with pytest.raises(IntegrityError, match=r"model file 'model\.pkl'"):
        load_model(info.uri, allow_pickle=True)
    assert not target.exists()


def test_pickled_package_needs_allow_pickle_and_is_not_even_downloaded_without_it(
    keel_env, tmp_path: Path, cache_contents
):
    target = tmp_path / "pwned"
    info = _log(TouchOnUnpickle(target), allow_pickle=True)
    assert not target.exists()  # pickling runs nothing
    with pytest.raises(PermissionDenied, match=r"is a pickle of .*allow_pickle=True"):
        load_model(info.uri)
    assert not target.exists()
    assert cache_contents(keel_env) == []
    # The payload is real: with consent it runs (and is then refused for not being a model).
    with pytest.raises(IntegrityError, match=r"unpickled object is a NoneType"):
        load_model(info.uri, allow_pickle=True)
    assert target.exists()


def test_objects_without_keel_save_need_allow_pickle_to_be_logged(sqlite_env):
    with (
        keel.start_run() as run,
        pytest.raises(InvalidInput, match=r"give the class keel_save.*pass allow_pickle=True"),
    ):
        log_model(Echo())
    assert keel.Client().list_artifacts(run.id) == []
    info = _log(Echo(), allow_pickle=True)
    assert load_model(info.uri, allow_pickle=True).predict([1, 2, 3]).tolist() == [0, 0, 0]


def test_a_file_replaced_through_the_run_is_reported_before_download(
    keel_env, iris, tmp_path: Path, skops_loads, cache_contents
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    info = _log(LogisticRegression(max_iter=500).fit(*iris))
    other = tmp_path / "other"
    other.mkdir()
    import skops.io

    skops.io.dump(DecisionTreeClassifier().fit(*iris), other / "model.skops")
    keel.Client().log_artifact(info.run_id, other / "model.skops", "model")
    with pytest.raises(IntegrityError, match=r"model file 'model\.skops' was replaced after"):
        load_model(info.uri)
    assert skops_loads == [] and cache_contents(keel_env) == []


def test_a_file_added_to_the_package_is_reported_by_name(sqlite_env, iris, tmp_path: Path):
    from sklearn.linear_model import LogisticRegression

    info = _log(LogisticRegression(max_iter=500).fit(*iris))
    extra = tmp_path / "extra.py"
    extra.write_text("print('hi')\n")
    keel.Client().log_artifact(info.run_id, extra, "model")
    with pytest.raises(IntegrityError, match=r"holds file\(s\) 'extra\.py' .* does not list"):
        load_model(info.uri)


def test_skops_file_needing_untrusted_types_beyond_the_recorded_ones_is_refused(
    sqlite_env, diabetes, tmp_path: Path, skops_loads
):
    """Someone rewrote the file and its digest in keel-model.json, but not the trusted list."""
    import skops.io
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = diabetes
    info = _log(Ridge().fit(X, y))
    package = tmp_path / "package"
    keel.Client().download_artifacts(info.run_id, "model", package)
    skops.io.dump(
        make_pipeline(FunctionTransformer(_negate), Ridge()).fit(X, y), package / "model.skops"
    )
    doc = json.loads((package / "keel-model.json").read_text())
    doc["files"]["model.skops"] = {
        "digest": hash_file(package / "model.skops"),
        "size": (package / "model.skops").stat().st_size,
    }
    (package / "keel-model.json").write_text(json.dumps(doc))
    keel.Client().log_artifacts(info.run_id, package, "model")

    with pytest.raises(
        IntegrityError, match=rf"needs types that were not trusted .*{__name__}\._negate"
    ):
        load_model(info.uri)
    assert skops_loads == []


def _negate(x):
    return -x


def test_a_tampered_cache_is_discarded_and_fetched_again(sqlite_env, iris, cache_contents):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    info = _log(clf)
    load_model(info.uri)
    [cached] = cache_contents(sqlite_env)
    (cached / "model.skops").write_bytes(b"not the model")
    with pytest.warns(KeelWarning, match=r"cached copy .* failed verification .*'model\.skops'"):
        loaded = load_model(info.uri)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert cache_contents(sqlite_env) == [cached]


def test_dst_folder_and_local_package_folders_are_verified(sqlite_env, iris, tmp_path: Path):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    info = _log(clf)
    dst = tmp_path / "pkg"
    loaded = load_model(info.uri, dst=dst)
    assert loaded.path == dst and sorted(p.name for p in dst.iterdir()) == [
        "keel-model.json",
        "model.skops",
    ]
    with pytest.raises(InvalidInput, match=r"dst must be a new or empty folder"):
        load_model(info.uri, dst=dst)
    np.testing.assert_array_equal(load_model(dst).predict(X), clf.predict(X))

    (dst / "model.skops").write_bytes((dst / "model.skops").read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"model file 'model\.skops' does not match"):
        load_model(dst)
    (dst / "model.skops").unlink()
    with pytest.raises(
        IntegrityError, match=r"'model\.skops' listed in keel-model\.json are missing"
    ):
        load_model(dst)
