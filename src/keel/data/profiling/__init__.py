"""Profiles: per-column, mergeable summaries of a table, built in bounded memory.

A dataset version's profile describes its columns; a model version's
reference profile is the profile of its training data (and of its
predictions on it); monitoring profiles live traffic on the reference's bin
edges and compares the two (:mod:`keel.monitoring`). The machinery lives
here, beside the data it describes, so every layer above can use it::

    from keel.data.profiling import profile

    reference = profile("train.parquet")              # two passes over chunks
    current = profile(today_df, bins_from=reference)  # one pass, the same bins
    merged = reference.merge(profile(more_rows, bins_from=reference))
"""

from __future__ import annotations

from keel.data.profiling.build import SAMPLE_ROWS, Profiler, ProgressCallback, column_kind, profile
from keel.data.profiling.profiles import (
    BINS,
    CATEGORICAL,
    MAX_CATEGORIES,
    NUMERIC,
    CategoricalColumn,
    ColumnProfile,
    NumericColumn,
    Profile,
)
from keel.data.profiling.sources import Source, open_source

__all__ = [
    "BINS",
    "CATEGORICAL",
    "MAX_CATEGORIES",
    "NUMERIC",
    "SAMPLE_ROWS",
    "CategoricalColumn",
    "ColumnProfile",
    "NumericColumn",
    "Profile",
    "Profiler",
    "ProgressCallback",
    "Source",
    "column_kind",
    "open_source",
    "profile",
]
