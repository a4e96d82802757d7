"""Helpers for the model-package tests: the packages in a home's load cache.

The real datasets (``iris``, ``breast_cancer``, ``diabetes``) and ``stored_object``
are shared by the registry's tests too, so they live in the root ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import Settings


def cached_packages(settings: Settings) -> list[Path]:
    """Package folders in the load cache (staging folders excluded)."""
    root = settings.home / "cache" / "models"
    return sorted(p for p in root.glob("*") if not p.name.startswith(".")) if root.is_dir() else []


@pytest.fixture
def cache_contents():
    """A function: the package folders in a home's load cache (staging folders excluded)."""
    return cached_packages
