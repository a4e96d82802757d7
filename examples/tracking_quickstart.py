"""Track a small hyper-parameter sweep on the wine data set scikit-learn ships.

python examples/tracking_quickstart.py        # then: keel runs list
"""

from __future__ import annotations

from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score

import keel

X, y = load_wine(return_X_y=True)
keel.set_experiment("wine-quickstart")
for depth in (2, 4, 8):
    with keel.start_run(name=f"rf-depth-{depth}"):
        keel.seed_everything(0)
        keel.log_params({"model": "random-forest", "max_depth": depth})
        scores = cross_val_score(
            RandomForestClassifier(max_depth=depth, random_state=0), X, y, cv=5
        )
        for fold, score in enumerate(scores):
            keel.log_metric("fold_accuracy", score, step=fold)
        keel.log_metric("accuracy", scores.mean())

best = keel.search_runs("params.max_depth >= 4", order_by=["metrics.accuracy DESC"])
print(best[["name", "params.max_depth", "metrics.accuracy"]].to_string(index=False))
