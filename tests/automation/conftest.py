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


def _serve(settings):
    for _ in range(2):
        with keel.start_run():
            info = keel.log_model(Doubler(), "model", input_example=np.ones((3, 2)))
        keel.register_model(info.uri, "doubler")
    keel.Client().set_alias("doubler", "champion", 1)
    Deployments().create("doubler-api", build_spec("doubler@champion"))
    return settings


@pytest.fixture
def served(keel_env):
    """'doubler' versions 1 and 2 (champion → 1), deployment 'doubler-api' following champion."""
    return _serve(keel_env)


@pytest.fixture
def served_anywhere(any_env, request):
    """As :func:`served`, on SQLite, PostgreSQL and through a real ``keel server``.

    Through the server, the model and deployment are arranged on the server's own
    store and artifacts (``keel.start_run`` logs locally), then this process goes
    back to being the server's client: what the tests exercise goes through it.
    """
    if not any_env.server_url:
        return _serve(any_env)
    server = request.getfixturevalue("control_plane")
    keel.init(
        home=any_env.home.parent / ".seed",
        store_url=server.store_url,
        artifacts_url=server.artifacts_url,
        s3_endpoint_url=request.getfixturevalue("s3_server"),
    )
    _serve(None)
    return keel.init(home=any_env.home, server_url=any_env.server_url, token=any_env.token)


@pytest.fixture
def audit_actions():
    """``audit_actions(settings, prefix)``: the audited actions starting with ``prefix``."""
    return _audit_actions


def _audit_actions(settings, prefix: str) -> list[str]:
    """The actions of the audit entries starting with ``prefix``, oldest first, in any mode."""
    if settings.server_url:
        import httpx

        answer = httpx.get(
            f"{settings.server_url.rstrip('/')}/api/v1/audit",
            params={"limit": 10_000},
            headers={"Authorization": f"Bearer {settings.token}"},
        )
        answer.raise_for_status()
        actions = [e["action"] for e in reversed(answer.json())]
    else:
        from keel.governance import audit
        from keel.store import get_store

        actions = [e.action for e in audit.list_entries(get_store(settings), newest_first=False)]
    return [a for a in actions if a.startswith(prefix)]


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
