"""The demo's training pipeline: load a dataset version, split, train, register.

The automation policy runs it to retrain (``keel.demo.pipeline:screening``);
it is also an ordinary Keel pipeline: ``keel pipeline run
keel.demo.pipeline:screening -p data=datasets:/screening@2``.
"""

from __future__ import annotations

from typing import Any

import keel
from keel.demo.scenario import TARGET

MODEL = "screening"


@keel.step
def load(data: str) -> Any:
    """The training table (a dataset version; recorded as the run's input)."""
    return keel.load_dataset(data)


@keel.step(outputs=["train", "valid"])
def split(frame: Any, seed: int = 0) -> tuple[Any, Any]:
    """A stratified 80/20 split."""
    from sklearn.model_selection import train_test_split

    train, valid = train_test_split(frame, test_size=0.2, random_state=seed, stratify=frame[TARGET])
    return train, valid


@keel.step(cache=False)  # it registers a model version: a side effect to repeat every time
def train(train: Any, valid: Any, algorithm: str = "hgb", seed: int = 0) -> dict[str, Any]:
    """Fit, measure on the validation rows, log the model with its drift reference, register."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = [c for c in train.columns if c != TARGET]
    if algorithm == "hgb":
        model: Any = HistGradientBoostingClassifier(max_iter=150, random_state=seed)
    elif algorithm == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:
        raise ValueError(f"algorithm must be hgb or logreg, got {algorithm!r}")
    model.fit(train[features], train[TARGET])
    auc = float(roc_auc_score(valid[TARGET], model.predict_proba(valid[features])[:, 1]))
    keel.log_params({"algorithm": algorithm, "rows": len(train)})
    keel.log_metric("val_roc_auc", auc)
    info = keel.log_model(
        model, "model", input_example=train[features].head(5), reference_data=train[features]
    )
    version = keel.register_model(info.uri, MODEL)
    return {"model": f"models:/{MODEL}/{version}", "val_roc_auc": auc}


@keel.pipeline
def screening(data: str = "datasets:/screening", algorithm: str = "hgb", seed: int = 0) -> Any:
    """Train the screening model on a version of the ``screening`` dataset."""
    train_rows, valid_rows = split(load(data), seed=seed)
    result = train(train_rows, valid_rows, algorithm=algorithm, seed=seed)
    return {"model": result["model"], "val_roc_auc": result["val_roc_auc"]}
