"""``keel drift`` as users run it: two files in a fresh folder, no Keel home needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_pair(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 5_000
    reference = pd.DataFrame(
        {
            "age": rng.normal(40, 10, size=n),
            "tenure": rng.exponential(3, size=n),
            "plan": rng.choice(["free", "pro"], size=n, p=[0.7, 0.3]),
        }
    )
    current = reference.copy()
    current["age"] = rng.normal(48, 10, size=n)
    current["plan"] = rng.choice(["free", "pro"], size=n, p=[0.4, 0.6])
    reference.to_parquet(folder / "reference.parquet")
    current.to_csv(folder / "current.csv", index=False)
    return folder / "reference.parquet", folder / "current.csv"


def test_drift_json_has_the_documented_shape_and_the_right_verdicts(tmp_path: Path, run_keel):
    write_pair(tmp_path)
    out = run_keel("drift", "reference.parquet", "current.csv", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["dataset_drift"] is True and doc["share_drifted"] == 2 / 3
    assert set(doc["columns"]) == {"age", "tenure", "plan"}
    for column in doc["columns"].values():
        assert {"drifted", "method", "statistic", "threshold"} <= set(column)
        assert isinstance(column["statistic"], float) and isinstance(column["drifted"], bool)
    assert doc["columns"]["age"]["drifted"] and doc["columns"]["age"]["method"] == "ks"
    assert doc["columns"]["plan"]["method"] == "chisquare"
    assert not doc["columns"]["tenure"]["drifted"]
    assert not (tmp_path / ".keel").exists()  # a standalone comparison touches no home


def test_drift_writes_html_selects_columns_and_fails_on_drift_when_asked(tmp_path: Path, run_keel):
    write_pair(tmp_path)
    out = run_keel(
        "drift",
        "reference.parquet",
        "current.csv",
        "-c",
        "tenure",
        "--html",
        "r.html",
        "--override",
        "tenure=psi:0.2",
        "--fail-on-drift",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr  # tenure alone did not drift
    assert "tenure" in out.stdout and "psi" in out.stdout and "age" not in out.stdout
    assert (tmp_path / "r.html").stat().st_size > 1_000_000
    drifted = run_keel("drift", "reference.parquet", "current.csv", "--fail-on-drift", cwd=tmp_path)
    assert drifted.returncode == 1 and "DRIFT" in drifted.stdout


def test_drift_errors_are_one_line_and_exit_1(tmp_path: Path, run_keel):
    write_pair(tmp_path)
    missing = run_keel("drift", "nope.parquet", "current.csv", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == ["error: no such file or folder: nope.parquet"]
    bad = run_keel(
        "drift", "reference.parquet", "current.csv", "--override", "plan=ks", cwd=tmp_path
    )
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "column 'plan' is categorical" in bad.stderr
    unknown = run_keel("drift", "reference.parquet", "current.csv", "-c", "zip", cwd=tmp_path)
    assert unknown.returncode == 1 and "'zip' not in reference.parquet" in unknown.stderr
