"""Model packages to register, clients acting as other users, and processes that race."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import keel
from keel.config import Settings


@pytest.fixture
def model_run(tmp_path: Path) -> Callable[..., str]:
    """``model_run(payload="weights")``: a run with a 'model' artifact folder; its runs:/ URI."""

    def make(payload: str = "weights") -> str:
        folder = tmp_path / f"model-{payload}"
        folder.mkdir(exist_ok=True)
        (folder / "weights.bin").write_text(payload)
        (folder / "keel-model.json").write_text('{"flavor": "test"}')
        with keel.start_run() as run:
            keel.log_artifacts(folder, artifact_path="model")
        return f"runs:/{run.id}/model"

    return make


@pytest.fixture
def run_together() -> Callable[[str, Settings, list[str], Path], list[str]]:
    """``run_together(script, settings, args, go)``: one process per argument, started together.

    Each process prints ``ready`` once it has read what it needs, then waits for the file
    ``go``; the fixture creates it when all are ready and returns their outputs in order.
    """

    def run(script: str, settings: Settings, args: list[str], go: Path) -> list[str]:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    script,
                    str(settings.home),
                    settings.store_url,
                    arg,
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for arg in args
        ]
        for proc in procs:  # every process has read what it needs and is polling for the signal
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", (
                proc.stderr.read() if proc.stderr else ""
            )
        go.touch()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out.strip())
        return outputs

    return run
