"""Prompts to register, and clients acting as other users."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel

SUPPORT = {
    "template": [
        {"role": "system", "content": "You answer questions about {{ product }}. Be brief."},
        {"role": "user", "content": "{{ question }}"},
    ],
    "model": "gpt-4o-mini",
    "parameters": {"temperature": 0.2, "max_tokens": 300},
}


@pytest.fixture
def support() -> dict[str, Any]:
    """The keyword arguments of a chat prompt with two variables (a fresh copy)."""
    return {
        "template": [dict(m) for m in SUPPORT["template"]],
        "model": SUPPORT["model"],
        "parameters": dict(SUPPORT["parameters"]),
    }


@pytest.fixture
def model_run(tmp_path: Path) -> Callable[[], str]:
    """``model_run()``: a run with a 'model' artifact folder; its runs:/ URI."""

    def make() -> str:
        folder = tmp_path / "model"
        folder.mkdir(exist_ok=True)
        (folder / "weights.bin").write_text("weights")
        with keel.start_run() as run:
            keel.log_artifacts(folder, artifact_path="model")
        return f"runs:/{run.id}/model"

    return make
