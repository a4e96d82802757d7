"""Batch scoring (``keel.scoring.predict_file`` and ``keel predict``) on real models and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import InvalidInput
from keel.scoring import predict_file

pytest.importorskip("skops", reason="model packages for scikit-learn need skops")

ROWS = 50_000


@dataclass
class Scored:
    settings: Any
    features: list[str]
    frame: pd.DataFrame  # an id column, then the features
    expected: np.ndarray  # the estimator's predictions on the whole frame
    parquet: Path  # the frame in five row groups
    csv: Path
    out: Path  # an empty folder for outputs


@dataclass
class Rows:
    frame: pd.DataFrame
    parquet: Path
    csv: Path


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """50,000 rows resampled from breast_cancer with an id, as Parquet (five row groups) and CSV."""
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer(as_frame=True).data
    frame = x.sample(n=ROWS, replace=True, random_state=0).reset_index(drop=True)
    frame.insert(0, "id", np.arange(ROWS, dtype=np.int64) + 1_000_000)
    folder = tmp_path_factory.mktemp("rows")
    frame.to_parquet(folder / "rows.parquet", index=False, row_group_size=10_000)
    frame.to_csv(folder / "rows.csv", index=False)
    return Rows(frame, folder / "rows.parquet", folder / "rows.csv")


@pytest.fixture
def scored(sqlite_env, rows: Rows, tmp_path: Path) -> Scored:
    """A HistGradientBoosting classifier on breast_cancer, registered as cancer@champion."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head())
    assert keel.register_model(info.uri, "cancer") == 1
    keel.Client().set_alias("cancer", "champion", 1)
    out = tmp_path / "out"
    out.mkdir()
    features = list(x.columns)
    expected = model.predict(rows.frame[features])
    return Scored(sqlite_env, features, rows.frame, expected, rows.parquet, rows.csv, out)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or part folders a scoring job left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- correctness -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "suffix"),
    [("parquet", ".parquet"), ("csv", ".csv"), ("parquet", ".csv"), ("csv", ".parquet")],
)
def test_output_equals_predict_on_the_whole_frame(scored: Scored, source: str, suffix: str):
    output = scored.out / f"scores{suffix}"
    stats = predict_file(
        "runs:/" + _run_of(scored),
        getattr(scored, source),
        output,
        chunk_rows=7_000,
        keep_columns=["id"],
    )
    assert stats["rows"] == ROWS and stats["chunks"] == 8  # ceil(50,000 / 7,000)
    assert stats["output"] == str(output.absolute()) and stats["rows_per_s"] > 0
    result = _read(output)
    assert list(result.columns) == ["id", "prediction"]
    np.testing.assert_array_equal(result["id"].to_numpy(), scored.frame["id"].to_numpy())
    np.testing.assert_array_equal(result["prediction"].to_numpy(), scored.expected)
    assert _leftovers(scored.out) == []


def _run_of(scored: Scored) -> str:
    version = keel.Client().get_model_version("cancer", 1)
    return f"{version.run_id}/model"


def test_a_registered_alias_works_and_only_predictions_are_written_by_default(scored: Scored):
    output = scored.out / "scores.parquet"
    stats = predict_file("models:/cancer@champion", scored.parquet, output)
    assert stats["rows"] == ROWS and stats["chunks"] == 1  # the default chunk holds them all
    result = pd.read_parquet(output)
    assert list(result.columns) == ["prediction"]
    np.testing.assert_array_equal(result["prediction"].to_numpy(), scored.expected)


def test_a_folder_of_parquet_files_is_scored_in_name_order(scored: Scored, tmp_path: Path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, start in enumerate(range(0, ROWS, 12_500)):
        scored.frame.iloc[start : start + 12_500].to_parquet(folder / f"part-{i}.parquet")
    (folder / "_SUCCESS").write_text("")
    output = scored.out / "scores.csv"
    stats = predict_file("models:/cancer/1", folder, output, chunk_rows=20_000, keep_columns=["id"])
    assert stats["rows"] == ROWS and stats["chunks"] == 3  # chunks run across files
    result = pd.read_csv(output)
    np.testing.assert_array_equal(result["id"].to_numpy(), scored.frame["id"].to_numpy())
    np.testing.assert_array_equal(result["prediction"].to_numpy(), scored.expected)


class TwoValues:
    """A python-flavor model returning two values per row."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.column_stack([frame["mean radius"] * 2.0, frame["mean texture"] - 1.0])

    def keel_save(self, path: Path) -> None:
        (path / "state.json").write_text("{}")

    @classmethod
    def keel_load(cls, path: Path) -> TwoValues:
        return cls()


def test_several_values_per_row_become_numbered_columns(scored: Scored):
    with keel.start_run():
        info = keel.log_model(TwoValues(), "two", input_example=scored.frame[scored.features][:5])
    output = scored.out / "two.parquet"
    predict_file(info.uri, scored.parquet, output, chunk_rows=9_999)
    result = pd.read_parquet(output)
    assert list(result.columns) == ["prediction_0", "prediction_1"]
    np.testing.assert_array_equal(
        result.to_numpy(), TwoValues().predict(scored.frame[scored.features])
    )


def test_a_model_that_takes_an_array_gets_the_other_columns_in_file_order(scored: Scored):
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = load_breast_cancer()
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(data.data, data.target)
    with keel.start_run():
        info = keel.log_model(model, "array-model", input_example=data.data[:5])
    assert info.signature is not None and info.signature.inputs.is_tensor
    output = scored.out / "scores.parquet"
    predict_file(info.uri, scored.csv, output, keep_columns=["id"])
    result = pd.read_parquet(output)
    np.testing.assert_array_equal(result["id"].to_numpy(), scored.frame["id"].to_numpy())
    np.testing.assert_array_equal(
        result["prediction"].to_numpy(), model.predict(scored.frame[scored.features].to_numpy())
    )


def test_an_empty_input_gives_an_empty_output_with_the_right_columns(scored: Scored):
    empty = scored.out.parent / "empty.parquet"
    scored.frame.iloc[:0].to_parquet(empty)
    output = scored.out / "scores.parquet"
    stats = predict_file("models:/cancer/1", empty, output, keep_columns=["id"])
    assert (stats["rows"], stats["chunks"]) == (0, 0)
    result = pd.read_parquet(output)
    assert len(result) == 0 and list(result.columns) == ["id", "prediction"]
    assert str(result["prediction"].dtype) == "int64"  # from the signature's outputs


# -- failures leave nothing behind ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_missing_feature_fails_naming_it_and_leaves_no_output(scored: Scored, suffix: str):
    broken = scored.out.parent / f"broken{suffix}"
    frame = scored.frame.drop(columns=["mean radius"])
    frame.to_parquet(broken) if suffix == ".parquet" else frame.to_csv(broken, index=False)
    output = scored.out / f"scores{suffix}"
    with pytest.raises(InvalidInput, match="'mean radius'"):
        predict_file("models:/cancer@champion", broken, output, chunk_rows=5_000)
    assert list(scored.out.iterdir()) == []


def test_a_failure_after_chunks_were_written_leaves_no_output_and_keeps_the_old_one(
    scored: Scored, tmp_path: Path
):
    folder = tmp_path / "parts"
    folder.mkdir()
    scored.frame.iloc[:30_000].to_parquet(folder / "a.parquet")
    scored.frame.iloc[30_000:].drop(columns=["worst area"]).to_parquet(folder / "b.parquet")
    output = scored.out / "scores.parquet"
    output.write_bytes(b"the previous run's output")
    with pytest.raises(InvalidInput, match=r"b.parquet is missing column\(s\) 'worst area'"):
        predict_file("models:/cancer/1", folder, output, chunk_rows=5_000)
    assert output.read_bytes() == b"the previous run's output"
    assert _leftovers(scored.out) == []


def test_a_bad_value_deep_in_a_csv_is_named_by_column(scored: Scored):
    frame = scored.frame.astype({"mean area": object})
    frame.loc[ROWS - 3, "mean area"] = "n/a?"
    broken = scored.out.parent / "bad.csv"
    frame.to_csv(broken, index=False)
    output = scored.out / "scores.csv"
    with pytest.raises(InvalidInput, match=r"column 'mean area' must be float64"):
        predict_file("models:/cancer/1", broken, output, chunk_rows=5_000)
    assert list(scored.out.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output": "scores.json"}, "must end in .parquet, .pq or .csv"),
        ({"output": "missing/scores.csv"}, "does not exist; create it first"),
        ({"chunk_rows": 0}, "chunk_rows must be a positive integer"),
        ({"executor": "spark"}, "executor must be one of local, ray"),
        ({"keep_columns": ["id", "region"]}, "no column\\(s\\) 'region'"),
        ({"columns": ["mean radius", "nope"]}, "no column\\(s\\) 'nope'"),
        ({"input": "nothing.parquet"}, "does not exist"),
        ({"input": "rows.csv", "executor": "ray"}, "Convert it to Parquet"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    scored: Scored, kwargs: dict[str, Any], message: str
):
    base = scored.out.parent
    (base / "rows.csv").symlink_to(scored.csv)
    args = {
        "input": str(scored.parquet),
        "output": "out/scores.csv",
        "chunk_rows": 1_000,
        "executor": "local",
        "keep_columns": None,
        "columns": None,
    }
    args.update(kwargs)
    with pytest.raises(InvalidInput, match=message):
        predict_file(
            "models:/cancer/1",
            base / args["input"],
            base / args["output"],
            chunk_rows=args["chunk_rows"],
            executor=args["executor"],
            keep_columns=args["keep_columns"],
            columns=args["columns"],
        )
    assert list(scored.out.iterdir()) == []


def test_ray_missing_says_what_to_install(scored: Scored, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(InvalidInput, match=r"pip install 'keel\[ray\]'"):
        predict_file("models:/cancer/1", scored.parquet, scored.out / "s.parquet", executor="ray")


# -- bounded memory ------------------------------------------------------------------


class RowRecorder:
    """A python-flavor model that records how many rows each predict call saw."""

    calls: ClassVar[list[int]] = []

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        RowRecorder.calls.append(len(frame))
        return (frame["mean radius"].to_numpy() > self.threshold).astype(np.int64)

    def keel_save(self, path: Path) -> None:
        (path / "threshold.json").write_text(json.dumps(self.threshold))

    @classmethod
    def keel_load(cls, path: Path) -> RowRecorder:
        return cls(json.loads((path / "threshold.json").read_text()))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_no_predict_call_sees_more_than_chunk_rows(
    sqlite_env, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
):
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer(as_frame=True).data
    with keel.start_run():
        info = keel.log_model(RowRecorder(14.0), "recorder", input_example=x.head())
    rows = 200_000
    frame = x.sample(n=rows, replace=True, random_state=1).reset_index(drop=True)
    source = tmp_path / f"big{suffix}"
    # One row group of 200,000 rows: chunking must not follow the file's layout.
    if suffix == ".parquet":
        frame.to_parquet(source, row_group_size=rows)
    else:
        frame.to_csv(source, index=False)
    monkeypatch.setattr(RowRecorder, "calls", [])
    output = tmp_path / "scores.parquet"
    stats = predict_file(info.uri, source, output, chunk_rows=10_000)
    assert RowRecorder.calls == [10_000] * 20 and stats["chunks"] == 20
    np.testing.assert_array_equal(
        pd.read_parquet(output)["prediction"].to_numpy(),
        (frame["mean radius"].to_numpy() > 14.0).astype(np.int64),
    )


# -- progress and the command line ------------------------------------------------------


@pytest.mark.parametrize("source", ["parquet", "csv"])
def test_progress_gets_rising_row_counts_that_end_at_the_total(scored: Scored, source: str):
    calls: list[tuple[int, int | None]] = []
    predict_file(
        "models:/cancer/1",
        getattr(scored, source),
        scored.out / "scores.parquet",
        chunk_rows=7_000,
        progress=lambda done, total: calls.append((done, total)),
    )
    done = [d for d, _ in calls]
    assert done[0] == 0 and done == sorted(done) and calls[-1] == (ROWS, ROWS)
    assert sorted(set(done)) == [*range(0, ROWS, 7_000), ROWS]  # once per chunk
    # Parquet knows its rows from the metadata; a CSV's count is known once it is read.
    totals = {t for _, t in calls[:-1]}
    assert totals == ({ROWS} if source == "parquet" else {None})


def test_an_empty_input_reports_zero_of_zero_rows(scored: Scored):
    empty = scored.out.parent / "empty.parquet"
    scored.frame.iloc[:0].to_parquet(empty)
    calls: list[tuple[int, int | None]] = []
    predict_file(
        "models:/cancer/1",
        empty,
        scored.out / "scores.parquet",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 0)]


def test_progress_that_is_not_a_callable_is_refused(scored: Scored):
    with pytest.raises(InvalidInput, match=r"progress must be a callable.*got True"):
        predict_file("models:/cancer/1", scored.parquet, scored.out / "a.parquet", progress=True)
    assert list(scored.out.iterdir()) == []


def test_progress_is_drawn_on_stderr_only_when_asked_or_on_a_terminal(
    scored: Scored, capsys: pytest.CaptureFixture[str]
):
    from keel.cli.progress import progress_bar

    with progress_bar("scoring rows.parquet", "rows") as bar:
        predict_file("models:/cancer/1", scored.parquet, scored.out / "a.parquet", progress=bar)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    with progress_bar("scoring rows.csv", "rows", enabled=True) as bar:
        predict_file("models:/cancer/1", scored.csv, scored.out / "b.parquet", progress=bar)
    err = capsys.readouterr().err
    assert "scoring rows.csv" in err and f"{ROWS:,} rows" in err


def test_scoring_imports_nothing_of_serving():
    """Batch scoring sits beside serving, not inside it: no import of it, lazy or not."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("keel.scoring")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert "keel.data.profiling.sources" in imported  # the shared tabular source
    assert [n for n in imported if n == "keel.serving" or n.startswith("keel.serving.")] == []
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keel.scoring; print([m for m in sys.modules if m.startswith('keel.serving')])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_scores_a_file_and_prints_a_summary_or_json(scored: Scored):
    home = scored.settings.home
    output = scored.out / "scores.csv"
    done = _cli(
        home,
        "predict",
        "models:/cancer@champion",
        str(scored.parquet),
        "-o",
        str(output),
        "--chunk-rows",
        "6000",
        "--keep",
        "id",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["rows"] == ROWS and stats["chunks"] == 9 and stats["output"] == str(output)
    result = pd.read_csv(output)
    np.testing.assert_array_equal(result["id"].to_numpy(), scored.frame["id"].to_numpy())
    np.testing.assert_array_equal(result["prediction"].to_numpy(), scored.expected)

    human = _cli(home, "predict", "models:/cancer/1", str(scored.csv), "-o", str(output))
    assert human.returncode == 0, human.stderr
    line = human.stdout.strip()
    assert line.startswith(f"Scored {ROWS:,} rows in ") and "rows/s" in line
    assert "scores.csv" in line and human.stderr == ""  # no bar: stderr is a pipe

    drawn = _cli(
        home, "predict", "models:/cancer/1", str(scored.csv), "-o", str(output), "--progress"
    )
    assert drawn.returncode == 0, drawn.stderr
    assert "scoring rows.csv" in drawn.stderr and f"{ROWS:,} rows" in drawn.stderr
    assert drawn.stdout.strip().startswith(f"Scored {ROWS:,} rows in ")


def test_cli_reports_a_missing_column_in_one_line_and_exits_1(scored: Scored):
    broken = scored.out.parent / "broken.csv"
    scored.frame.drop(columns=["mean radius"]).to_csv(broken, index=False)
    output = scored.out / "scores.csv"
    done = _cli(scored.settings.home, "predict", "models:/cancer/1", str(broken), "-o", str(output))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "'mean radius'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert list(scored.out.iterdir()) == []


# -- Ray ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    """Ray, started by the first ray-executor call (two local CPUs) and stopped after this module."""
    ray = pytest.importorskip("ray", reason="the ray executor needs Ray: pip install 'keel[ray]'")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_ray_executor_equals_local(scored: Scored, ray_session, tmp_path: Path):
    local = scored.out / "local.parquet"
    predict_file(
        "models:/cancer@champion",
        scored.parquet,
        local,
        chunk_rows=4_000,
        keep_columns=["id"],
    )
    distributed = scored.out / "ray.parquet"
    calls: list[tuple[int, int | None]] = []
    stats = predict_file(
        "models:/cancer@champion",
        scored.parquet,
        distributed,
        chunk_rows=4_000,
        executor="ray",
        keep_columns=["id"],
        progress=lambda done, total: calls.append((done, total)),
    )
    # Five row groups of 10,000 rows: five tasks of three chunks (4,000 + 4,000 + 2,000).
    assert stats["rows"] == ROWS and stats["chunks"] == 15
    # One report per finished task, whichever finishes first.
    assert calls == [(i * 10_000, ROWS) for i in range(6)]
    pd.testing.assert_frame_equal(pd.read_parquet(distributed), pd.read_parquet(local))
    np.testing.assert_array_equal(pd.read_parquet(local)["prediction"].to_numpy(), scored.expected)

    folder = tmp_path / "parts"
    folder.mkdir()
    for i, start in enumerate(range(0, ROWS, 20_000)):
        scored.frame.iloc[start : start + 20_000].to_parquet(folder / f"part-{i:02d}.parquet")
    as_csv = scored.out / "ray.csv"
    stats = predict_file("models:/cancer/1", folder, as_csv, executor="ray", keep_columns=["id"])
    assert stats["rows"] == ROWS and stats["chunks"] == 3  # one task per file
    pd.testing.assert_frame_equal(pd.read_csv(as_csv), pd.read_parquet(local))
    assert _leftovers(scored.out) == []


@pytest.mark.slow
def test_ray_task_failure_names_the_column_and_leaves_nothing(scored: Scored, ray_session):
    broken = scored.out.parent / "broken.parquet"
    scored.frame.drop(columns=["mean radius"]).to_parquet(broken, row_group_size=10_000)
    output = scored.out / "scores.parquet"
    with pytest.raises(InvalidInput, match="'mean radius'"):
        predict_file("models:/cancer/1", broken, output, executor="ray")
    assert list(scored.out.iterdir()) == []
