"""The command line's one progress bar, and the rule that only the command line draws."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.cli.progress import progress_bar

PACKAGE = Path(keel.__file__).parent


def _rich_importers() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "rich" or n.startswith("rich.") for n in names):
                found.append(path.relative_to(PACKAGE).as_posix())
                break
    return found


def test_rich_is_imported_only_by_the_command_line_and_the_demo():
    importers = _rich_importers()
    assert "cli/progress.py" in importers  # the check sees lazy imports too
    assert [p for p in importers if not p.startswith(("cli/", "demo/"))] == []


def test_the_bar_is_silent_when_stderr_is_not_a_terminal_or_it_is_disabled(
    capsys: pytest.CaptureFixture[str],
):
    with progress_bar("adding", "files") as bar:
        bar(3, 10)
        bar.stage("binning x", 5, None)
    with progress_bar("adding", "files", enabled=False) as bar:
        bar(3, 10)
    assert capsys.readouterr().err == ""


def test_a_forced_bar_draws_each_stage_with_its_count(capsys: pytest.CaptureFixture[str]):
    with progress_bar("adding", "files", enabled=True) as bar:
        bar(0, None)
        bar(1_500, 3_000)
        bar.stage("binning x", 5, None)
    err = capsys.readouterr().err
    assert "adding" in err and "1,500/3,000 files" in err
    assert "binning x" in err and "5 files" in err
    assert capsys.readouterr().out == ""  # the bar never touches stdout


def test_keel_drift_draws_a_row_per_profiled_file_only_when_asked(tmp_path: Path, run_keel):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 10, size=5_000)})
    frame.to_parquet(tmp_path / "reference.parquet")
    frame.to_csv(tmp_path / "current.csv", index=False)
    quiet = run_keel("drift", "reference.parquet", "current.csv", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # stderr is a pipe: no bar
    drawn = run_keel("drift", "reference.parquet", "current.csv", "--progress", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "profiling reference.parquet" in drawn.stderr and "5,000/5,000 rows" in drawn.stderr
    assert "profiling current.csv" in drawn.stderr
    assert drawn.stdout == quiet.stdout  # the report is the same, bar or not
