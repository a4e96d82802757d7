"""Four-eyes with real identities: approvals through ``keel server`` count the token's user.

The registrant, the approver and the admin each hold their own token of a real
server (PostgreSQL and loopback S3 behind it). The model package comes from a
training process that writes next to the server, on the server's own store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import keel
from _support.control_plane import ControlPlane
from keel.config import Settings, load_settings
from keel.errors import ApprovalRequired, PermissionDenied
from keel.governance import audit
from keel.store import Store

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _server_side(server: ControlPlane, s3_server: str, home: Path) -> Settings:
    """Settings on the server's own store and artifacts, as a training job beside it has."""
    return load_settings(
        home=home,
        store_url=server.store_url,
        artifacts_url=server.artifacts_url,
        s3_endpoint_url=s3_server,
    )


def _logged_model(settings: Settings, tmp_path: Path, payload: str) -> str:
    """A run holding a model folder in the server's store; its runs:/ URI."""
    client = keel.Client(settings)
    experiment = client.tracking.get_or_create_experiment(_unique("training"))
    run = client.tracking.create_run(experiment.id, capture=False)
    folder = tmp_path / payload
    folder.mkdir()
    (folder / "weights.bin").write_text(payload)
    (folder / "keel-model.json").write_text('{"flavor": "test"}')
    client.tracking.log_artifacts(run.id, folder, artifact_path="model")
    client.tracking.set_terminated(run.id)
    return f"runs:/{run.id}/model"


def _as(server: ControlPlane, token: str, home: Path) -> keel.Client:
    return keel.Client(load_settings(home=home, server_url=server.url, token=token))


def _token_id(server: ControlPlane, token: str) -> str:
    with server.http(token) as http:
        return str(http.get("/whoami").json()["token_id"])


def test_registrants_approval_is_refused_and_another_approvers_moves_the_alias(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path
) -> None:
    server = control_plane
    model, alias = _unique("fraud"), "prod" + uuid.uuid4().hex[:8]
    bob_name, alice_name = _unique("bob"), _unique("alice")
    # bob registers and may also approve: only the four-eyes rule can stop his own approval
    bob_token = server.make_user(bob_name, "editor", "approver")
    alice_token = server.make_user(alice_name, "approver")
    admin = _as(server, server.admin_token, tmp_path / "admin")
    bob = _as(server, bob_token, tmp_path / "bob")
    alice = _as(server, alice_token, tmp_path / "alice")
    admin.registry.set_alias_policy(alias, approvals=1, role="approver")
    source = _logged_model(_server_side(server, s3_server, tmp_path / "job"), tmp_path, "w1")

    version = bob.registry.create_model_version(model, source)
    assert version.version == 1 and version.created_by == bob_name

    with pytest.raises(PermissionDenied, match="four-eyes rule"):
        bob.registry.approve(model, 1, alias)
    with pytest.raises(ApprovalRequired, match=r"needs 1 approval\(s\).*it has 0"):
        bob.registry.set_alias(model, alias, 1)
    assert bob.registry.list_approvals(model) == []

    approval = alice.registry.approve(model, 1, alias, comment="reviewed the eval")
    assert approval.approver == alice_name
    change = bob.registry.set_alias(model, alias, 1, comment="ship it")
    assert (change.to_version, change.actor) == (1, bob_name)
    assert alice.registry.get_model_version_by_alias(model, alias).version == 1

    entries = audit.list_entries(Store(server.store_url), object_id=f"{model}*", newest_first=False)
    by_action = {(e.action, e.actor): e for e in entries}
    bob_tok, alice_tok = _token_id(server, bob_token), _token_id(server, alice_token)
    assert by_action[("model_version.create", bob_name)].token_id == bob_tok
    assert by_action[("approval.create", alice_name)].token_id == alice_tok
    moves = [e for e in entries if e.action.startswith("alias.")]
    assert [(e.actor, e.token_id) for e in moves] == [(bob_name, bob_tok)]
    # no entry claims bob approved, and none was written without a token
    assert ("approval.create", bob_name) not in by_action
    assert all(e.token_id for e in entries)


def test_keel_user_in_the_environment_does_not_change_who_acts(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path, run_keel
) -> None:
    server = control_plane
    model, alias = _unique("churn"), "prod" + uuid.uuid4().hex[:8]
    alice_name, bob_name = _unique("alice"), _unique("bob")
    alice_token = server.make_user(alice_name, "editor", "approver")
    bob_token = server.make_user(bob_name, "editor", "approver")
    _as(server, server.admin_token, tmp_path / "admin").registry.set_alias_policy(alias)
    source = _logged_model(_server_side(server, s3_server, tmp_path / "job"), tmp_path, "w1")
    _as(server, alice_token, tmp_path / "alice").registry.create_model_version(model, source)

    # bob claims to be alice: were KEEL_USER believed, four-eyes would refuse this approval
    script = (
        "import json, sys, keel\n"
        "client = keel.Client()\n"
        f"approval = client.registry.approve({model!r}, 1, {alias!r})\n"
        "print(json.dumps({'user': client.transport.user, 'approver': approval.approver}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=server.environ(bob_token, KEEL_USER=alice_name, KEEL_HOME=str(tmp_path / "bob")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"user": bob_name, "approver": bob_name}
    [approval] = _as(server, alice_token, tmp_path / "a2").registry.list_approvals(model, 1)
    assert approval.approver == bob_name

    # the CLI, too: bob's token under alice's name moves the alias as bob
    moved = run_keel(
        "models", "alias", "set", model, alias, "1",
        env=server.environ(bob_token, KEEL_USER=alice_name, KEEL_HOME=str(tmp_path / "bob")),
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    [change] = _as(server, alice_token, tmp_path / "a3").registry.alias_history(model, alias)
    assert (change.actor, change.to_version) == (bob_name, 1)


def test_approver_role_on_the_server_is_needed_to_approve(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path
) -> None:
    server = control_plane
    model, alias = _unique("scoring"), "prod" + uuid.uuid4().hex[:8]
    editor_token = server.make_user(_unique("ed"), "editor")
    viewer_token = server.make_user(_unique("vi"), "viewer")
    _as(server, server.admin_token, tmp_path / "admin").registry.set_alias_policy(alias)
    source = _logged_model(_server_side(server, s3_server, tmp_path / "job"), tmp_path, "w1")
    editor = _as(server, editor_token, tmp_path / "ed")
    viewer = _as(server, viewer_token, tmp_path / "vi")
    editor.registry.create_model_version(model, source)

    with pytest.raises(PermissionDenied, match="lacks permission 'approve' on model"):
        editor.registry.approve(model, 1, alias)
    with pytest.raises(PermissionDenied, match="lacks permission 'write' on alias"):
        viewer.registry.set_alias(model, alias, 1)
    with pytest.raises(PermissionDenied, match="lacks permission 'admin'"):
        editor.registry.set_alias_policy(alias, approvals=2)
    assert editor.registry.list_approvals(model) == []
    assert viewer.registry.get_registered_model(model).aliases == {}
