"""The python flavor: any object with predict, stored through keel_save/keel_load or (by consent) pickle."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import InvalidInput
from keel.models import KeelWarning, load_model, log_model

MODULE = """
import json
from pathlib import Path


class Threshold:
    def __init__(self, column, cut):
        self.column, self.cut = column, cut

    def predict(self, data):
        return (data[self.column] > self.cut).to_numpy()

    def keel_save(self, path):
        (Path(path) / "params.json").write_text(json.dumps({"column": self.column, "cut": self.cut}))

    @classmethod
    def keel_load(cls, path):
        return cls(**json.loads((Path(path) / "params.json").read_text()))
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real module on sys.path defining a model class with keel_save/keel_load."""
    name = f"keel_user_model_{tmp_path.name.replace('-', '_')}"
    source = tmp_path / "code" / f"{name}.py"
    source.parent.mkdir()
    source.write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(source.parent))
    module = importlib.import_module(name)
    yield module, source
    sys.modules.pop(name, None)


def test_keel_save_round_trip_stores_no_pickle(keel_env, user_module, iris):
    module, _ = user_module
    X, _ = iris
    model = module.Threshold("petal length (cm)", 2.5)
    with keel.start_run():
        info = log_model(model, input_example=X.head())
    loaded = load_model(info.uri)
    config = loaded.metadata["flavor_config"]
    assert info.flavor == "python" and config["serialization"] == "keel_save"
    assert config["module"] == module.__name__ and config["qualname"] == "Threshold"
    assert set(loaded.metadata["files"]) == {"data/params.json"}
    assert isinstance(loaded.unwrap(), module.Threshold)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.signature.outputs.tensors[0].dtype == "bool"


def test_changed_model_source_warns_at_load(sqlite_env, user_module):
    module, source = user_module
    with keel.start_run():
        info = log_model(module.Threshold("x", 0.0))
    source.write_text(source.read_text() + "\n# a later edit\n")
    with pytest.warns(KeelWarning, match=rf"source of {module.__name__} .* changed since"):
        loaded = load_model(info.uri)
    assert loaded.predict(pd.DataFrame({"x": [-1.0, 1.0]})).tolist() == [False, True]


def test_unimportable_class_is_reported_with_what_to_do(sqlite_env, user_module):
    module, _ = user_module
    with keel.start_run():
        info = log_model(module.Threshold("x", 0.0))
    sys.modules.pop(module.__name__)
    sys.path.remove(str(Path(module.__file__).parent))
    with pytest.raises(InvalidInput, match=rf"cannot import {module.__name__}\.Threshold.*install"):
        load_model(info.uri)
