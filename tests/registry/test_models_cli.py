"""The registry from the command line, with identities from KEEL_USER."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import keel


@pytest.fixture
def cli(keel_env, run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args, user="bob")``: ``keel *args`` on the test's home, as ``user`` (``KEEL_USER``)."""

    def run(*args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
        return run_keel(*args, settings=keel_env, env={"KEEL_USER": user})

    return run


def test_register_protect_approve_promote_and_trace(keel_env, tmp_path: Path, cli):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "w.bin").write_text("w")
    with keel.start_run() as run:
        keel.log_artifacts(folder, artifact_path="model")
    uri = f"runs:/{run.id}/model"

    registered = cli("models", "register", uri, "fraud", "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["version"] == 1
    assert cli("roles", "grant", "alice", "approver", user="ann").returncode == 0
    assert cli("policy", "protect", "production", "--approvals", "1", user="ann").returncode == 0

    refused = cli("models", "alias", "set", "fraud", "production", "1")
    assert refused.returncode == 1
    assert "needs 1 approval(s) from role 'approver'" in refused.stderr
    assert "keel models approve fraud 1 --for production" in refused.stderr
    self_approval = cli("models", "approve", "fraud", "1", "--for", "production")
    assert self_approval.returncode == 1 and "needs role 'approver'" in self_approval.stderr
    approved = cli(
        "models", "approve", "fraud", "1", "--for", "production", "--comment", "ok", user="alice"
    )
    assert approved.returncode == 0, approved.stderr
    moved = cli("models", "alias", "set", "fraud", "production", "1", "--comment", "go live")
    assert moved.returncode == 0, moved.stderr

    models = json.loads(cli("models", "list", "--json").stdout)
    assert models[0]["name"] == "fraud" and models[0]["aliases"] == {"production": 1}
    versions = json.loads(cli("models", "versions", "fraud", "--json").stdout)
    assert versions[0]["aliases"] == ["production"] and versions[0]["created_by"] == "bob"
    shown = json.loads(cli("models", "show", "fraud", "1", "--json").stdout)
    assert [(a["approver"], a["comment"]) for a in shown["approvals"]] == [("alice", "ok")]
    history = json.loads(cli("models", "alias", "history", "fraud", "--json").stdout)
    assert [(h["to_version"], h["actor"], h["comment"]) for h in history] == [(1, "bob", "go live")]
    policies = json.loads(cli("policy", "list", "--json").stdout)
    assert policies["protected_aliases"] == [
        {"alias": "production", "approvals": 1, "role": "approver", "allow_registrant": False}
    ]
    assert policies["automation"] == []
    entries = json.loads(cli("audit", "list", "--object", "model_version:fraud/*", "--json").stdout)
    assert [e["action"] for e in entries] == ["approval.create", "model_version.create"]
    assert cli("audit", "verify").returncode == 0
    unset = cli("models", "alias", "unset", "fraud", "production")
    assert unset.returncode == 0 and "unset" in unset.stdout
