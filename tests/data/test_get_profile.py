"""``keel.data.get_profile``: a version's stored profile, without reaching into the store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import keel
from keel.errors import NotFound


def test_a_table_version_has_its_profile(any_env):
    keel.log_dataset(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"]}), name="wine")
    profile = keel.data.get_profile("wine@1")
    assert profile is not None
    assert profile["columns"]["a"]["kind"] == "numeric"
    assert profile["columns"]["a"]["mean"] == pytest.approx(2.0)
    assert profile["columns"]["b"]["distinct"] == 2


def test_a_folder_version_has_no_profile(any_env, tmp_path: Path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "f.txt").write_text("x")
    version = keel.data.add(folder)
    assert keel.data.get_profile(f"{version.name}@{version.version}") is None


def test_the_profile_of_an_unknown_dataset_names_the_closest(any_env):
    keel.log_dataset(pd.DataFrame({"a": [1, 2]}), name="wine-train")
    with pytest.raises(
        NotFound, match=r"no dataset named 'wine-trian'; did you mean 'wine-train'\?"
    ):
        keel.data.get_profile("wine-trian@1")
