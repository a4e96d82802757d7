"""Prediction, error and feedback logs: Parquet files in the artifact root, not database rows.

The serving process hands each request's rows to a :class:`PredictionLogger`,
which appends them in the background, one file per deployment, hour and
flush, losing none (:mod:`keel.predictions.writer`, :mod:`keel.predictions.spill`)::

    predictions/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<unix ms>-<pid>-<tag>.parquet
    errors/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-…parquet
    feedback/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-…parquet

The folders are Hive-style, so ``pyarrow.dataset.dataset(root, partitioning="hive")``
reads them too. What a row holds is defined once, in :mod:`keel.predictions.schema`;
a :class:`PredictionReader` reads windows of rows back, unifying the files'
schemas. Files go through the artifact backends (:mod:`keel.artifacts.backends`),
so a log root is any artifact root: a folder or ``s3://bucket/prefix``.

This package is a foundation: it imports nothing of Keel but ``errors`` and
``artifacts``, so serving, monitoring and automation all build on it.
"""

from __future__ import annotations

from keel.predictions.arrow import Block
from keel.predictions.layout import check_deployment, to_ms
from keel.predictions.reader import PredictionReader, read_predictions
from keel.predictions.schema import (
    DATASETS,
    ERROR_COLUMNS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    TRACE_COLUMNS,
    TRACES,
    error_row,
    request_columns,
    trace_row,
)
from keel.predictions.writer import PredictionLogger

__all__ = [
    "DATASETS",
    "ERRORS",
    "ERROR_COLUMNS",
    "FEEDBACK",
    "FEEDBACK_SCHEMA",
    "INPUT_PREFIX",
    "OUTPUT_PREFIX",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "TRACES",
    "TRACE_COLUMNS",
    "Block",
    "PredictionLogger",
    "PredictionReader",
    "check_deployment",
    "error_row",
    "read_predictions",
    "request_columns",
    "to_ms",
    "trace_row",
]
