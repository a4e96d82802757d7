"""`keel models card` on a real, checked model, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from _support.models import CancerVersions, register_cancer_versions

pytest.importorskip("skops", reason="model packages for scikit-learn need skops")


@pytest.fixture
def registered(keel_env, tmp_path: Path) -> CancerVersions:
    return register_cancer_versions(keel_env, tmp_path)


def test_card_shows_lineage_check_and_intended_use(registered, tmp_path: Path, run_keel):
    settings, holdout, run_id = registered.settings, registered.holdout, registered.run_id
    keel.Client().update_model_version(
        "cancer",
        2,
        description="Tumour screening aid.\n## Intended use\nTriage support.\n## Limitations\nNot a diagnosis.",
    )
    assert (
        run_keel(
            "models",
            "check",
            "cancer",
            "2",
            "--data",
            str(holdout),
            "--target",
            "y",
            settings=settings,
        ).returncode
        == 0
    )
    card = json.loads(run_keel("models", "card", "cancer", "2", "--json", settings=settings).stdout)
    assert card["run"]["run_id"] == run_id and card["run"]["params"] == {
        "C": "1.0",
        "model": "logreg",
    }
    assert card["description"] == {
        "summary": "Tumour screening aid.",
        "intended_use": "Triage support.",
        "limitations": "Not a diagnosis.",
    }
    assert card["check"]["passed"] is True and card["check"]["n_rows"] == 171
    assert card["package"]["flavor"] == "sklearn"
    assert card["environment"]["python_version"]
    page = tmp_path / "card.html"
    assert (
        run_keel("models", "card", "cancer", "2", "--html", str(page), settings=settings).returncode
        == 0
    )
    text = page.read_text()
    assert "<h2>Intended use</h2>" in text and "Not a diagnosis." in text and "<script" not in text
