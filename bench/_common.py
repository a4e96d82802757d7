"""What the benchmarks share: finding a peer's interpreter and a clean environment for it.

Peers (MLflow, Evidently, DVC) live in virtualenvs of their own beside the
repository (``make bench-venvs``), because their pins clash with Keel's.
The benchmarks run them as child processes with that interpreter.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "clean_env", "peer_python", "peer_unavailable"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``KEEL_*``/``MLFLOW_*`` overrides; peers quiet and offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        MLFLOW_LOGGING_LEVEL="WARNING",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def peer_python(venv: str, given: Path | None = None) -> Path | None:
    """The interpreter of ``<repo>/<venv>`` (or ``given``), as an absolute path; None if absent.

    Absolute, not resolved: a virtualenv's ``python`` is a symlink whose target
    would leave the virtualenv.
    """
    if given is not None:
        return given.absolute()
    for candidate in (REPO / venv / "bin" / "python", REPO / venv / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return None


def peer_unavailable(python: Path | None, venv: str, modules: str) -> str | None:
    """Why the peer cannot run (no interpreter, or ``import <modules>`` fails), or None."""
    if python is None:
        return f"no {venv} interpreter (run `make bench-venvs` or pass its python)"
    if not python.exists():
        return f"{python} does not exist"
    probe = subprocess.run(
        [str(python), "-c", f"import {modules}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"`import {modules}` failed under {python}: {last}"
    return None
