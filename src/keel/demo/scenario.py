"""The demo's story, on the Wisconsin breast-cancer data scikit-learn ships (no download).

A screening programme has so far seen mostly small tumours: its first
training data are the 70% of cases with the smallest *mean area*. Then a
referral clinic joins and sends larger, more advanced cases — a new
sub-population, not a change in biology: the features shift (sizes,
perimeters, concavity) and so does the share of malignant cases. A model
trained on the small tumours alone misreads many of the new ones (about 85%
accuracy on them, against 94% for a model that has seen some). Labelled
cases from the clinic arrive as a new version of the training data.

Later, the clinic's scanner sometimes leaves *worst concave points* blank. A
gradient-boosted model takes the gap in its stride; a logistic regression
without an imputer cannot predict at all.

Everything here is deterministic (one seed), so every run tells the same story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FLAKY_COLUMN", "TARGET", "Scenario", "load_scenario"]

TARGET = "malignant"
#: The measurement the clinic's scanner sometimes leaves out.
FLAKY_COLUMN = "worst concave points"


@dataclass(frozen=True)
class Scenario:
    """The data of the story, as pandas frames (features plus the ``malignant`` column)."""

    screening: Any  # the programme's first training cases (small tumours)
    screening_eval: Any  # held-out cases of the same population
    clinic_train: Any  # labelled referral cases that arrive with the shift
    clinic_more: Any  # a later batch of labelled referral cases
    clinic_eval: Any  # held-out referral cases
    features: list[str]

    def routine_traffic(self, n: int, seed: int) -> Any:
        """``n`` requests of the screening population (features only)."""
        rows = self.screening_eval.sample(n, replace=True, random_state=seed)
        return rows[self.features].reset_index(drop=True)

    def shifted_traffic(self, n: int, seed: int, clinic_share: float = 0.3) -> Any:
        """``n`` requests after the clinic joined: ``clinic_share`` of them its cases."""
        import pandas as pd

        rng = np.random.default_rng(seed)
        clinic = round(n * clinic_share)
        pool = pd.concat([self.clinic_train, self.clinic_more, self.clinic_eval])
        rows = pd.concat(
            [
                pool.sample(clinic, replace=True, random_state=int(rng.integers(1 << 31))),
                self.screening_eval.sample(
                    n - clinic, replace=True, random_state=int(rng.integers(1 << 31))
                ),
            ]
        )
        return rows.sample(frac=1.0, random_state=seed)[self.features].reset_index(drop=True)

    def glitchy_traffic(self, n: int, seed: int, missing_share: float = 0.25) -> Any:
        """Shifted traffic where the scanner left :data:`FLAKY_COLUMN` blank in some rows."""
        rows = self.shifted_traffic(n, seed)
        blank = np.random.default_rng(seed + 1).random(n) < missing_share
        rows.loc[blank, FLAKY_COLUMN] = np.nan
        return rows


def load_scenario(seed: int = 7) -> Scenario:
    """Split the data set into the story's populations and batches."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame[TARGET] = 1 - data.target  # scikit-learn codes benign as 1
    small = frame["mean area"] <= frame["mean area"].quantile(0.7)
    rng = np.random.default_rng(seed)
    screening = rng.permutation(np.flatnonzero(small.to_numpy()))
    clinic = rng.permutation(np.flatnonzero((~small).to_numpy()))
    return Scenario(
        screening=frame.iloc[screening[:280]].reset_index(drop=True),
        screening_eval=frame.iloc[screening[280:]].reset_index(drop=True),
        clinic_train=frame.iloc[clinic[:100]].reset_index(drop=True),
        clinic_more=frame.iloc[clinic[100:130]].reset_index(drop=True),
        clinic_eval=frame.iloc[clinic[130:]].reset_index(drop=True),
        features=list(data.feature_names),
    )
