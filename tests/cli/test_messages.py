"""Typos and mistakes get answers that help: the closest names, a Keel message, one warning.

The command-line cases run the installed ``keel`` command; the library cases
raise from the registry and the data catalog themselves.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound


def _package(tmp_path: Path, name: str = "pkg") -> str:
    """A run holding a small package at ``model``; returns its ``runs:/`` URI."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights of " + name.encode())
    with keel.start_run() as run:
        keel.log_artifacts(folder, artifact_path="model")
    return f"runs:/{run.id}/model"


# -- help pages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("--help",), ("runs", "search", "--help"), ("models", "check", "--help")],
    ids=["root", "runs-search", "models-check"],
)
def test_help_pages_show_no_value_type_after_flags(args, tmp_path: Path, run_keel):
    result = run_keel(*args, env={"KEEL_HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout


# -- names that do not exist ------------------------------------------------------------


def test_a_misspelled_alias_names_the_aliases_that_exist(keel_env, tmp_path: Path):
    client = keel.Client()
    client.create_model_version("wine", _package(tmp_path))
    with pytest.raises(NotFound, match=r"there are no aliases of 'wine' yet; point one at"):
        client.get_model_version_by_alias("wine", "champion")
    client.set_alias("wine", "champion", 1)
    client.set_alias("wine", "challenger", 1)

    with pytest.raises(NotFound, match=r"has no alias 'champoin'; did you mean 'champion'\?$"):
        client.get_model_version_by_alias("wine", "champoin")
    with pytest.raises(NotFound, match=r"did you mean 'champion'\?$"):
        keel.load_model("models:/wine@champoin")
    with pytest.raises(NotFound, match=r"did you mean 'champion'\?$"):
        client.delete_alias("wine", "champoin")
    with pytest.raises(NotFound, match=r"the aliases of 'wine' are: challenger, champion$"):
        client.alias_history("wine", "production")


def test_a_misspelled_alias_on_the_command_line_names_the_existing_one(
    sqlite_env, tmp_path, run_keel
):
    client = keel.Client()
    client.create_model_version("wine", _package(tmp_path))
    client.set_alias("wine", "champion", 1)

    for args in (
        ("models", "alias", "unset", "wine", "champoin"),
        ("models", "alias", "history", "wine", "champoin"),
        ("models", "show", "wine@champoin"),
        ("lineage", "show", "models:/wine@champoin"),
    ):
        result = run_keel(*args, settings=sqlite_env)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.strip() == (
            "error: model 'wine' has no alias 'champoin'; did you mean 'champion'?"
        ), args


def test_an_unknown_model_name_gives_the_closest_names(keel_env, tmp_path: Path):
    client = keel.Client()
    with pytest.raises(NotFound, match=r"there are no registered models yet; register one"):
        client.get_registered_model("wine")
    client.create_model_version("wine", _package(tmp_path))
    client.create_registered_model("iris")
    with pytest.raises(NotFound, match=r"no registered model named 'wien'; did you mean 'wine'\?"):
        client.get_registered_model("wien")
    with pytest.raises(NotFound, match=r"did you mean 'wine'\?"):
        client.get_model_version("Wine", 1)
    with pytest.raises(NotFound, match=r"the registered models are: iris, wine$"):
        client.list_model_versions("churn")
    with pytest.raises(NotFound, match=r"model 'wine' has no version 7 \(its latest is 1\)"):
        client.get_model_version("wine", 7)


def test_an_unknown_experiment_or_dataset_on_the_command_line_gives_the_closest(
    sqlite_env, tmp_path: Path, run_keel
):
    import pandas as pd

    keel.set_experiment("wine-quality")
    with keel.start_run():
        keel.log_metric("acc", 0.9)
    keel.log_dataset(pd.DataFrame({"a": [1, 2]}), name="wine-train")

    runs = run_keel("runs", "search", "metrics.acc > 0", "-e", "wine-qualty", settings=sqlite_env)
    assert runs.returncode == 1
    assert runs.stderr.strip() == (
        "error: no experiment named 'wine-qualty'; did you mean 'wine-quality'?"
    )
    data = run_keel("data", "show", "wine-trian@1", settings=sqlite_env)
    assert data.returncode == 1
    assert data.stderr.strip() == "error: no dataset named 'wine-trian'; did you mean 'wine-train'?"
    with pytest.raises(NotFound, match=r"the datasets are: wine-train$"):
        keel.data.list_versions("churn")


# -- versions named on the command line -------------------------------------------------


@pytest.fixture
def champion(sqlite_env, tmp_path: Path) -> Path:
    """A scikit-learn model ``wine`` version 1 as ``champion``, and a holdout with one extra column."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 5, "b": [1.0, 0.0, 1.0, 0.0] * 5})
    frame["y"] = [0, 0, 1, 1] * 5
    features = frame[["a", "b"]]
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(features, frame["y"]), "model", features)
    keel.register_model(info.uri, "wine")
    keel.Client().set_alias("wine", "champion", 1)
    frame.to_parquet(tmp_path / "holdout.parquet")
    frame.assign(extra=1.0).to_parquet(tmp_path / "holdout-extra.parquet")
    return tmp_path


def test_models_check_with_a_bare_word_says_how_to_name_the_alias(
    champion: Path, sqlite_env, run_keel
):
    data = str(champion / "holdout.parquet")
    result = run_keel(
        "models", "check", "wine", "champion", "--data", data, "--target", "y", settings=sqlite_env
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: expected a version number or @alias after model 'wine', got 'champion'; "
        "for the alias write wine @champion or wine@champion"
    )
    for ref in (("wine@champion",), ("wine", "@champion"), ("wine", "1")):
        passed = run_keel(
            "models", "check", *ref, "--data", data, "--target", "y", settings=sqlite_env
        )
        assert passed.returncode == 0, (ref, passed.stderr)
        assert "wine version 1" in passed.stdout


def test_a_repeated_warning_is_printed_once_without_a_source_path(
    champion: Path, sqlite_env, run_keel
):
    result = run_keel(
        "models",
        "check",
        "wine",
        "1",
        "--data",
        str(champion / "holdout-extra.parquet"),
        "--target",
        "y",
        "--against",
        "champion",
        settings=sqlite_env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: dropping column(s) the model's signature does not name: extra"
    ]


def test_find_model_version_reads_numbers_and_aliases_as_people_write_them(
    keel_env, tmp_path: Path
):
    client = keel.Client()
    client.create_model_version("wine", _package(tmp_path))
    client.set_alias("wine", "champion", 1)
    for name, ref in (("wine", 1), ("wine", "1"), ("wine", "@champion"), ("wine@champion", None)):
        assert client.find_model_version(name, ref).version == 1, (name, ref)
    assert client.find_model_version("wine/1").version == 1
    with pytest.raises(InvalidInput, match=r"for the alias write wine @champion or wine@champion"):
        client.find_model_version("wine", "champion")
    with pytest.raises(InvalidInput, match=r"expected a version of model 'wine': write wine 3"):
        client.find_model_version("wine")


# -- registering the same model twice ---------------------------------------------------


def test_registering_the_same_package_again_returns_its_version(keel_env, tmp_path: Path):
    uri = _package(tmp_path)
    first = keel.register_model(uri, "wine", description="baseline")
    assert keel.register_model(uri, "wine") == first == 1
    assert keel.register_model(uri, "wine", description="baseline") == 1
    client = keel.Client()
    assert [v.version for v in client.list_model_versions("wine")] == [1]

    with pytest.raises(Conflict, match=r"wine version 1 already holds this model .* description"):
        keel.register_model(uri, "wine", description="something else")
    assert keel.register_model(_package(tmp_path, "retrained"), "wine") == 2
    assert keel.register_model(uri, "wine-copy") == 1  # another model's versions are its own


def test_concurrent_registrations_of_one_package_make_one_version(keel_env, tmp_path: Path):
    uri = _package(tmp_path)
    versions: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            versions.append(keel.Client().create_model_version("wine", uri).version)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert versions == [1, 1, 1, 1]
    assert [v.version for v in keel.Client().list_model_versions("wine")] == [1]


def test_registering_twice_on_the_command_line_says_nothing_was_registered(
    sqlite_env, tmp_path: Path, run_keel
):
    uri = _package(tmp_path)
    first = run_keel("models", "register", uri, "wine", settings=sqlite_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Registered wine version 1")
    again = run_keel("models", "register", uri, "wine", settings=sqlite_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"wine version 1 already holds {uri}; nothing registered"
