"""Real pieces for monitor tests: a registered model with a reference, prediction logs
written by the real logger, and an HTTP receiver on a loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import keel
from _support.monitoring import Logs, Model, Receiver, features


@pytest.fixture
def churn(keel_env) -> Model:
    """``churn`` version 1: a classifier logged with ``reference_data`` (its training features)."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = features(3_000, seed=0)
    target = (train["age"] + np.random.default_rng(1).normal(0, 5, size=len(train)) > 40).astype(
        int
    )
    model = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["age", "income"]),
            (OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ),
        LogisticRegression(),
    ).fit(train, target)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=train.head(3), reference_data=train)
    version = keel.register_model(info.uri, "churn")
    return Model("churn", version, train, model)


@pytest.fixture
def logs(keel_env, tmp_path: Path) -> Logs:
    return Logs(keel_env.artifacts_url, tmp_path / "spill")


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    started: list[Receiver] = []

    def start(statuses: list[int]) -> Receiver:
        r = Receiver(statuses)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()
