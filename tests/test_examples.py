"""The examples the README points at run as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_tracking_quickstart_runs_and_records_three_runs(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "tracking_quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "rf-depth-8" in done.stdout and "rf-depth-2" not in done.stdout
    keel.init(home=tmp_path / ".keel")
    frame = keel.search_runs(experiment_names=["wine-quickstart"])
    assert sorted(frame["params.max_depth"]) == ["2", "4", "8"]
    run_id = frame["run_id"].iloc[0]
    assert [m.step for m in keel.Client().get_metric_history(run_id, "fold_accuracy")] == [
        0,
        1,
        2,
        3,
        4,
    ]
