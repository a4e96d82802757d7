"""Settings precedence: argument > KEEL_* > config.toml > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import find_home, load_settings, make_home
from keel.errors import InvalidInput


def test_defaults_live_in_the_home(tmp_path: Path):
    settings = load_settings(tmp_path / ".keel")
    assert settings.store_url == f"sqlite:///{tmp_path / '.keel' / 'keel.db'}"
    assert settings.artifacts_url == str(tmp_path / ".keel" / "artifacts")
    assert settings.flush_interval == 1.0


def test_precedence_argument_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / ".keel"
    home.mkdir()
    (home / "config.toml").write_text('store_url = "sqlite:///file.db"\nflush_interval = 3\n')
    assert load_settings(home).store_url == "sqlite:///file.db"
    assert load_settings(home).flush_interval == 3.0
    monkeypatch.setenv("KEEL_STORE_URL", "sqlite:///env.db")
    assert load_settings(home).store_url == "sqlite:///env.db"
    assert load_settings(home, store_url="sqlite:///arg.db").store_url == "sqlite:///arg.db"


def test_keel_home_env_and_walking_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".keel").mkdir()
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    assert find_home(deep) == tmp_path / ".keel"
    monkeypatch.chdir(deep)
    assert load_settings().home == tmp_path / ".keel"
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "other"))
    assert load_settings().home == tmp_path / "other"


def test_bad_settings_are_rejected_with_the_valid_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(InvalidInput, match=r"unknown setting.*valid names are"):
        load_settings(tmp_path, store_uri="x")
    monkeypatch.setenv("KEEL_FLUSH_INTERVAL", "soon")
    with pytest.raises(
        InvalidInput, match="KEEL_FLUSH_INTERVAL must be a positive number, got 'soon'"
    ):
        load_settings(tmp_path)
    monkeypatch.delenv("KEEL_FLUSH_INTERVAL")
    (tmp_path / "config.toml").write_text("this is = not [toml")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_settings(tmp_path)


def test_make_home_creates_the_folder_with_a_gitignore_that_ignores_everything(tmp_path: Path):
    home = tmp_path / "project" / ".keel"
    assert make_home(home) is True
    assert (home / ".gitignore").read_text().splitlines()[-1] == "*"
    assert make_home(home) is False


def test_make_home_keeps_a_gitignore_someone_edited(tmp_path: Path):
    home = tmp_path / ".keel"
    home.mkdir()
    (home / ".gitignore").write_text("*\n!config.toml\n")
    assert make_home(home) is False
    assert (home / ".gitignore").read_text() == "*\n!config.toml\n"
