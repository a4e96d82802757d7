"""`keel models check` on real models, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _support.models import CancerVersions, register_cancer_versions

pytest.importorskip("skops", reason="model packages for scikit-learn need skops")


@pytest.fixture
def registered(keel_env, tmp_path: Path) -> CancerVersions:
    return register_cancer_versions(keel_env, tmp_path)


def test_check_passes_a_better_challenger_and_fails_a_worse_one(registered, run_keel):
    settings, holdout, rules = registered.settings, registered.holdout, registered.rules
    args = ("--data", str(holdout), "--target", "y", "--rules", str(rules), "--json")
    good = run_keel(
        "models", "check", "cancer", "2", *args, "--against", "champion", settings=settings
    )
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["passed"] is True and report["against"] == {"ref": "champion", "version": 1}
    assert report["metrics"]["roc_auc"] > 0.95 and report["baseline_metrics"][
        "roc_auc"
    ] == pytest.approx(0.5)
    bad = run_keel("models", "check", "cancer", "1", *args, "--against", "2", settings=settings)
    assert bad.returncode == 1
    failed = {g["name"] for g in json.loads(bad.stdout)["gates"] if not g["passed"]}
    assert failed == {"accuracy min", "roc_auc min", "roc_auc vs baseline"}
    human = run_keel(
        "models",
        "check",
        "cancer",
        "1",
        "--data",
        str(holdout),
        "--target",
        "y",
        "--rules",
        str(rules),
        settings=settings,
    )
    assert human.returncode == 1 and "FAILED" in human.stdout and "roc_auc" in human.stdout


def test_check_reports_a_holdout_that_breaks_the_signature(registered, tmp_path: Path, run_keel):
    import pandas as pd

    broken = pd.read_parquet(registered.holdout).drop(columns=["mean radius"])
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    result = run_keel(
        "models",
        "check",
        "cancer",
        "2",
        "--data",
        str(path),
        "--target",
        "y",
        "--json",
        settings=registered.settings,
    )
    assert result.returncode == 1
    problems = json.loads(result.stdout)["data_problems"]
    assert any("mean radius" in p for p in problems), problems
