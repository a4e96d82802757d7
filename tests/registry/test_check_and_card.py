"""`keel models check` and `keel models card` on real models, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel

pytest.importorskip("skops", reason="model packages for scikit-learn need skops")


def _cli(
    home: Path, store_url: str, *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_HOME=str(home), KEEL_STORE_URL=store_url)
    if user:
        env["KEEL_USER"] = user
    return subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture
def registered(keel_env, tmp_path: Path):
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "y"})
    train, test = train_test_split(frame, test_size=0.3, random_state=1, stratify=frame["y"])
    x_train = train.drop(columns=["y"])
    keel.set_experiment("cancer")
    for params, estimator in (
        ({"model": "prior"}, DummyClassifier(strategy="prior")),
        (
            {"model": "logreg", "C": 1.0},
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        ),
    ):
        with keel.start_run() as run:
            keel.log_params(params)
            estimator.fit(x_train, train["y"])
            info = keel.models.log_model(estimator, "model", input_example=x_train.head(5))
        keel.register_model(info.uri, "cancer")
    keel.Client().set_alias("cancer", "champion", 1)
    holdout = tmp_path / "holdout.parquet"
    test.to_parquet(holdout)
    rules = tmp_path / "gates.yaml"
    rules.write_text(
        "metrics: {accuracy: {min: 0.9}, roc_auc: {min: 0.95}}\n"
        "against: {roc_auc: {min_delta: 0.0}}\n"
        "data: {max_missing_share: 0.0}\n"
    )
    return keel_env, holdout, rules, run.id


def test_check_passes_a_better_challenger_and_fails_a_worse_one(registered):
    settings, holdout, rules, _ = registered
    args = ("--data", str(holdout), "--target", "y", "--rules", str(rules), "--json")
    good = _cli(
        settings.home,
        settings.store_url,
        "models",
        "check",
        "cancer",
        "2",
        *args,
        "--against",
        "champion",
    )
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["passed"] is True and report["against"] == {"ref": "champion", "version": 1}
    assert report["metrics"]["roc_auc"] > 0.95 and report["baseline_metrics"][
        "roc_auc"
    ] == pytest.approx(0.5)
    bad = _cli(
        settings.home, settings.store_url, "models", "check", "cancer", "1", *args, "--against", "2"
    )
    assert bad.returncode == 1
    failed = {g["name"] for g in json.loads(bad.stdout)["gates"] if not g["passed"]}
    assert failed == {"accuracy min", "roc_auc min", "roc_auc vs baseline"}
    human = _cli(
        settings.home,
        settings.store_url,
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
    )
    assert human.returncode == 1 and "FAILED" in human.stdout and "roc_auc" in human.stdout


def test_check_reports_a_holdout_that_breaks_the_signature(registered, tmp_path: Path):
    import pandas as pd

    settings, holdout, _rules, _ = registered
    broken = pd.read_parquet(holdout).drop(columns=["mean radius"])
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    result = _cli(
        settings.home,
        settings.store_url,
        "models",
        "check",
        "cancer",
        "2",
        "--data",
        str(path),
        "--target",
        "y",
        "--json",
    )
    assert result.returncode == 1
    problems = json.loads(result.stdout)["data_problems"]
    assert any("mean radius" in p for p in problems), problems


def test_card_shows_lineage_check_and_intended_use(registered, tmp_path: Path):
    settings, holdout, _rules, run_id = registered
    keel.Client().update_model_version(
        "cancer",
        2,
        description="Tumour screening aid.\n## Intended use\nTriage support.\n## Limitations\nNot a diagnosis.",
    )
    assert (
        _cli(
            settings.home,
            settings.store_url,
            "models",
            "check",
            "cancer",
            "2",
            "--data",
            str(holdout),
            "--target",
            "y",
        ).returncode
        == 0
    )
    card = json.loads(
        _cli(settings.home, settings.store_url, "models", "card", "cancer", "2", "--json").stdout
    )
    assert card["run"]["run_id"] == run_id and card["run"]["params"] == {
        "C": "1.0",
        "model": "logreg",
    }
    assert card["description"] == {
        "summary": "Tumour screening aid.",
        "intended_use": "Triage support.",
        "limitations": "Not a diagnosis.",
    }
    assert card["check"]["passed"] is True and card["check"]["n_rows"] == 171
    assert card["package"]["flavor"] == "sklearn"
    assert card["environment"]["python_version"]
    page = tmp_path / "card.html"
    assert (
        _cli(
            settings.home, settings.store_url, "models", "card", "cancer", "2", "--html", str(page)
        ).returncode
        == 0
    )
    text = page.read_text()
    assert "<h2>Intended use</h2>" in text and "Not a diagnosis." in text and "<script" not in text
