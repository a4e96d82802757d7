"""``keel models compile``: the parity table, JSON, one-line refusals, and ``keel models show``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.config import Settings

pytest.importorskip("skl2onnx", reason="compiling to ONNX needs keel[compile]")
pytest.importorskip("treelite", reason="compiling to treelite needs keel[compile]")


def _register(model: Any, X: Any, y: Any, name: str) -> None:
    with keel.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = keel.log_model(model.fit(X, y), "model", input_example=X.head(5))
    keel.register_model(info.uri, name)


@pytest.mark.slow
def test_compile_prints_parity_refuses_in_one_line_and_show_lists_every_compilation(
    sqlite_env: Settings, breast_cancer: Any, tmp_path: Path, run_keel
) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = breast_cancer
    _register(RandomForestClassifier(n_estimators=10, random_state=0), X, y, "cancer")
    _register(make_pipeline(StandardScaler(), LogisticRegression()), X, y, "cancer")
    keel.Client().set_alias("cancer", "champion", 1)
    holdout = tmp_path / "holdout.csv"
    X.assign(target=y).to_csv(holdout, index=False)

    as_json = run_keel("models", "compile", "cancer", "1", "--json", settings=sqlite_env)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert (doc["name"], doc["version"], doc["target"], doc["passed"]) == (
        "cancer",
        1,
        "onnx",
        True,
    )
    assert doc["report"]["class_agreement"] == 1.0 and doc["report"]["rows"] == 5

    table = run_keel(
        "models", "compile", "cancer@champion", "--to", "treelite", "--data", str(holdout),
        settings=sqlite_env,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "cancer version 1 → treelite: passed parity" in table.stdout
    assert f"Rows from input_example: 5 rows; {holdout}: {len(X)} rows" in table.stdout
    assert f"│ rows                     │ {5 + len(X)} " in table.stdout
    assert "100.00%" in table.stdout and "ms/row native → compiled" in table.stdout

    refused = run_keel("models", "compile", "cancer", "2", "--to", "treelite", settings=sqlite_env)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "models:/cancer/2 cannot be compiled to treelite: a pipeline is not a tree ensemble" in (
        refused.stderr
    )

    shown = run_keel("models", "show", "cancer", "1", settings=sqlite_env)
    assert shown.returncode == 0, shown.stderr
    assert "compiled onnx: passed parity" in shown.stdout
    assert "compiled treelite: passed parity" in shown.stdout
    shown = run_keel("models", "show", "cancer", "2", "--json", settings=sqlite_env)
    [compilation] = json.loads(shown.stdout)["compilations"]
    assert (compilation["target"], compilation["passed"]) == ("treelite", False)
    assert compilation["package_digest"] is None
