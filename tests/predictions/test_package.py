"""keel.predictions is a foundation: its public names, its imports, one row schema, one root."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import keel.predictions
from keel.artifacts import FsspecBackend, LocalBackend
from keel.errors import InvalidInput
from keel.predictions import (
    ERROR_COLUMNS,
    ERRORS,
    PREDICTION_COLUMNS,
    PredictionLogger,
    PredictionReader,
    error_row,
    request_columns,
)

T0 = 1_767_607_200_000  # 2026-01-05T10:00Z, an hour boundary
#: What keel.predictions may import of Keel: the foundations below it, and itself.
FOUNDATIONS = (
    "keel.errors",
    "keel.config",
    "keel.uris",
    "keel.validation",
    "keel.store",
    "keel.artifacts",
    "keel.predictions",
    "keel.lazy",  # loaded by ``keel`` itself for its lazy names; imports nothing of Keel
)


def _is_foundation(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FOUNDATIONS)


def test_predictions_imports_nothing_of_keel_above_the_foundations():
    code = (
        "import sys, keel.predictions\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('keel.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    assert "keel.predictions.writer" in loaded and "keel.predictions.reader" in loaded
    assert [m for m in loaded if not _is_foundation(m)] == []  # no serving, models, tracking …


def test_predictions_all_is_exactly_the_public_api():
    assert sorted(keel.predictions.__all__) == sorted(
        [
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
    )
    for name in keel.predictions.__all__:
        assert not isinstance(getattr(keel.predictions, name), types.ModuleType), name


def test_the_logger_and_reader_write_and_read_through_an_artifact_backend_passed_in(
    tmp_path: Path,
):
    # fsspec's in-memory filesystem: a real backend that no URL of this machine names.
    backend = FsspecBackend(f"memory://keel-{uuid.uuid4().hex}")
    columns = request_columns(
        request_id="r0", time_ms=T0, model="churn", version=1, route="primary", latency_ms=1.5, n=2
    )
    columns["input.age"] = np.array([30.0, 40.0])
    with PredictionLogger(backend, spill_dir=tmp_path / "spill") as logger:
        logger.log("churn", columns, 2)
        assert logger.log_feedback("churn", ["r0"], [1], rows=[1]) == 1
    assert [name for name, _ in backend.list_dir("predictions")] == ["deployment=churn"]

    reader = PredictionReader(backend)
    table = reader.read("churn")
    assert table.column_names == [*PREDICTION_COLUMNS, "input.age"]
    assert table.column("row").to_pylist() == [0, 1]
    assert table.column("input.age").to_pylist() == [30.0, 40.0]
    assert reader.count("churn") == 2
    assert reader.deployments() == ["churn"]
    assert reader.feedback("churn").select(["request_id", "row"]).to_pylist() == [
        {"request_id": "r0", "row": 1}
    ]
    with pytest.raises(InvalidInput, match="root_url must be a folder, s3://bucket/prefix or"):
        PredictionReader(42).count("churn")  # type: ignore[arg-type]


def test_error_rows_hold_the_prediction_columns_then_the_error_columns(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    row = error_row(
        request_id="bad-0",
        time_ms=T0,
        model="churn",
        version=3,
        route="canary",
        latency_ms=2.0,
        rows=4,
        status=500,
        error="ValueError: " + "x" * 1000,
    )
    with PredictionLogger(root, spill_dir=tmp_path / "spill", dataset=ERRORS) as logger:
        logger.log("churn", row, 1)
    table = PredictionReader(root).read("churn", dataset=ERRORS)
    expected = {**PREDICTION_COLUMNS, **ERROR_COLUMNS}
    assert table.schema == pa.schema(list(expected.items()))
    logged = table.to_pylist()[0]
    assert (logged["version"], logged["route"], logged["rows"], logged["status"]) == (
        3,
        "canary",
        4,
        500,
    )
    assert logged["error"] == ("ValueError: " + "x" * 1000)[:500]  # a message, never a dump


def test_a_temporary_table_left_by_a_killed_writer_is_swept_once_it_is_an_hour_old(
    tmp_path: Path,
):
    root = tmp_path / "artifacts"
    staging = root / "tmp"
    staging.mkdir(parents=True)
    dead, fresh = staging / "table-dead.part", staging / "table-fresh.part"
    for part in (dead, fresh):
        part.write_bytes(b"half a parquet file")
    two_hours_ago = time.time() - 7200
    os.utime(dead, (two_hours_ago, two_hours_ago))
    columns = request_columns(
        request_id="r0", time_ms=T0, model="churn", version=1, route="primary", latency_ms=1.0, n=1
    )
    with PredictionLogger(LocalBackend(root), spill_dir=tmp_path / "spill") as logger:
        logger.log("churn", columns, 1)
    assert PredictionReader(str(root)).count("churn") == 1
    assert sorted(p.name for p in staging.iterdir()) == ["table-fresh.part"]  # may still be live
