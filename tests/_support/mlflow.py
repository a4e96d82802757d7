"""The real mlflow client, run from its own virtualenv as a child process.

mlflow pins versions that clash with Keel's development environment, so its
client lives in ``.venv-mlflow`` (``make test`` builds it) and a test runs a
script there, as a user's own script would run. A script prints one JSON line
last; :func:`run_mlflow` answers it. A test that needs the client skips with
:data:`NO_MLFLOW` when the virtualenv is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: The interpreter of the mlflow client's virtualenv.
MLFLOW_PYTHON = (
    REPO / ".venv-mlflow" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
)
#: Why a test that needs the mlflow client skips.
NO_MLFLOW = (
    "the mlflow client lives in .venv-mlflow; `make test` (or `make .venv-mlflow/.installed`) "
    "builds it"
)
#: Seconds a script may take before the test fails with its output.
TIMEOUT = 600.0


def mlflow_environ(**extra: str) -> dict[str, str]:
    """This process's environment for a client script, plus ``extra``.

    Keel's and MLflow's variables are dropped, so neither a developer's settings nor
    this test process's reach the script, and so is ``VIRTUAL_ENV``, which names
    the test's virtualenv rather than the client's.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "MLFLOW_", "VIRTUAL_ENV"))
    }
    env.update(extra)
    return env


def run_mlflow(
    script: str, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Any:
    """Run ``script`` (Python source) with the mlflow client; answer its last line, as JSON.

    Args:
        script: the script; ``args`` are its ``sys.argv[1:]``.
        cwd: where it runs (mlflow may write local files there).
        env: its whole environment; :func:`mlflow_environ` by default.

    The script failing fails the test, with the end of its standard error.
    """
    done = subprocess.run(
        [str(MLFLOW_PYTHON), "-c", script, *args],
        env=dict(mlflow_environ() if env is None else env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
