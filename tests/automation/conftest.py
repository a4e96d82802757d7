"""A registered model and a deployment for policies to name."""

from __future__ import annotations

import numpy as np
import pytest

import keel
from keel.serving import Deployments, build_spec


class Doubler:
    """A tiny model saved without pickle."""

    def predict(self, data):
        return np.asarray(data, dtype=float).sum(axis=1) * 2

    def keel_save(self, path):
        (path / "marker").write_text("doubler")

    @classmethod
    def keel_load(cls, path):
        return cls()


@pytest.fixture
def served(keel_env):
    """'doubler' versions 1 and 2 (champion → 1), deployment 'doubler-api' following champion."""
    for _ in range(2):
        with keel.start_run():
            info = keel.log_model(Doubler(), "model", input_example=np.ones((3, 2)))
        keel.register_model(info.uri, "doubler")
    keel.Client().set_alias("doubler", "champion", 1)
    Deployments().create("doubler-api", build_spec("doubler@champion"))
    return keel_env


@pytest.fixture
def minimal_policy():
    """``minimal_policy(**fields)``: the smallest valid policy document for 'doubler'."""
    return _minimal_policy


def _minimal_policy(**extra):
    doc = {
        "name": "doubler-loop",
        "model": "doubler",
        "deployment": "doubler-api",
        "retrain": {"pipeline": "keel.demo.pipeline:screening"},  # every name must resolve
    }
    doc.update(extra)
    return doc
