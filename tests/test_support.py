"""The suite's own helpers: ``run_keel`` runs the installed command with only the variables named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel


def test_run_keel_hides_the_callers_keel_variables_and_passes_the_ones_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_keel
):
    developers = tmp_path / "developers-home"
    monkeypatch.setenv("KEEL_HOME", str(developers))  # as a developer's shell might have it
    plain = run_keel("init", "--json", cwd=tmp_path, check=True)
    assert Path(json.loads(plain.stdout)["home"]) == tmp_path / ".keel"
    named = run_keel("init", "--json", env={"KEEL_HOME": str(tmp_path / "named")}, check=True)
    assert Path(json.loads(named.stdout)["home"]) == tmp_path / "named"
    assert not developers.exists()


def test_run_keel_with_settings_opens_that_home_and_store(keel_env, run_keel):
    made = run_keel("experiments", "create", "from-a-child", settings=keel_env)
    assert made.returncode == 0, made.stderr
    assert keel.Client().get_experiment_by_name("from-a-child") is not None
