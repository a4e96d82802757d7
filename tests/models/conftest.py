"""Shared data and helpers for the model-package tests: real datasets, the stored bytes of a package."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.artifacts import ArtifactStore
from keel.config import Settings


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def diabetes():
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True, as_frame=True)


@pytest.fixture
def stored_object():
    """A function: the file in the local artifact store holding one of a run's artifacts."""

    def find(settings: Settings, run_id: str, artifact: str) -> Path:
        entries = keel.Client().list_artifacts(run_id, artifact)
        [entry] = [e for e in entries if e.path == artifact]
        return Path(settings.artifacts_url) / ArtifactStore.key(entry.digest)

    return find


def cached_packages(settings: Settings) -> list[Path]:
    """Package folders in the load cache (staging folders excluded)."""
    root = settings.home / "cache" / "models"
    return sorted(p for p in root.glob("*") if not p.name.startswith(".")) if root.is_dir() else []


@pytest.fixture
def cache_contents():
    """A function: the package folders in a home's load cache (staging folders excluded)."""
    return cached_packages
