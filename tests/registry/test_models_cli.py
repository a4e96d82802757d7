"""The registry from the command line, with identities from KEEL_USER."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keel


def _cli(settings, *args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_HOME=str(settings.home), KEEL_STORE_URL=settings.store_url, KEEL_USER=user)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_register_protect_approve_promote_and_trace(keel_env, tmp_path: Path):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "w.bin").write_text("w")
    with keel.start_run() as run:
        keel.log_artifacts(folder, artifact_path="model")
    uri = f"runs:/{run.id}/model"

    registered = _cli(keel_env, "models", "register", uri, "fraud", "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["version"] == 1
    assert _cli(keel_env, "roles", "grant", "alice", "approver", user="ann").returncode == 0
    assert (
        _cli(keel_env, "policy", "protect", "production", "--approvals", "1", user="ann").returncode
        == 0
    )

    refused = _cli(keel_env, "models", "alias", "set", "fraud", "production", "1")
    assert refused.returncode == 1
    assert "needs 1 approval(s) from role 'approver'" in refused.stderr
    assert "keel models approve fraud 1 --for production" in refused.stderr
    self_approval = _cli(keel_env, "models", "approve", "fraud", "1", "--for", "production")
    assert self_approval.returncode == 1 and "needs role 'approver'" in self_approval.stderr
    approved = _cli(
        keel_env,
        "models",
        "approve",
        "fraud",
        "1",
        "--for",
        "production",
        "--comment",
        "ok",
        user="alice",
    )
    assert approved.returncode == 0, approved.stderr
    moved = _cli(
        keel_env, "models", "alias", "set", "fraud", "production", "1", "--comment", "go live"
    )
    assert moved.returncode == 0, moved.stderr

    models = json.loads(_cli(keel_env, "models", "list", "--json").stdout)
    assert models[0]["name"] == "fraud" and models[0]["aliases"] == {"production": 1}
    versions = json.loads(_cli(keel_env, "models", "versions", "fraud", "--json").stdout)
    assert versions[0]["aliases"] == ["production"] and versions[0]["created_by"] == "bob"
    shown = json.loads(_cli(keel_env, "models", "show", "fraud", "1", "--json").stdout)
    assert [(a["approver"], a["comment"]) for a in shown["approvals"]] == [("alice", "ok")]
    history = json.loads(_cli(keel_env, "models", "alias", "history", "fraud", "--json").stdout)
    assert [(h["to_version"], h["actor"], h["comment"]) for h in history] == [(1, "bob", "go live")]
    policies = json.loads(_cli(keel_env, "policy", "list", "--json").stdout)
    assert policies["protected_aliases"] == [
        {"alias": "production", "approvals": 1, "role": "approver", "allow_registrant": False}
    ]
    assert policies["automation"] == []
    entries = json.loads(
        _cli(keel_env, "audit", "list", "--object", "model_version:fraud/*", "--json").stdout
    )
    assert [e["action"] for e in entries] == ["approval.create", "model_version.create"]
    assert _cli(keel_env, "audit", "verify").returncode == 0
    unset = _cli(keel_env, "models", "alias", "unset", "fraud", "production")
    assert unset.returncode == 0 and "unset" in unset.stdout
