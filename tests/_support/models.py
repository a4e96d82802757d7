"""Registered models for the tests of ``keel models check`` and ``keel models card``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keel
from keel.config import Settings


@dataclass
class CancerVersions:
    """'cancer' versions 1 (a prior-only dummy, champion) and 2 (a scaled logistic regression)."""

    settings: Settings
    holdout: Path  # a stratified 30% of breast_cancer, target column ``y``, never trained on
    rules: Path  # gates that version 2 passes and version 1 fails
    run_id: str  # the run that logged version 2


def register_cancer_versions(settings: Settings, folder: Path) -> CancerVersions:
    """Fit, log and register both versions in experiment 'cancer'; write the holdout and rules.

    Args:
        settings: The initialised Keel the versions are registered in.
        folder: Where ``holdout.parquet`` and ``gates.yaml`` are written.
    """
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
    holdout = folder / "holdout.parquet"
    test.to_parquet(holdout)
    rules = folder / "gates.yaml"
    rules.write_text(
        "metrics: {accuracy: {min: 0.9}, roc_auc: {min: 0.95}}\n"
        "against: {roc_auc: {min_delta: 0.0}}\n"
        "data: {max_missing_share: 0.0}\n"
    )
    return CancerVersions(settings, holdout, rules, run.id)
