"""Registry: versions numbered by the store, compare-and-set aliases, approvals, URIs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.errors import ApprovalRequired, Conflict, InvalidInput, NotFound, PermissionDenied
from keel.registry import parse_model_uri, resolve_model


def _model_run(tmp_path: Path, payload: str = "weights") -> str:
    """A run with a 'model' artifact folder; returns its runs:/ URI."""
    folder = tmp_path / f"model-{payload}"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_text(payload)
    (folder / "keel-model.json").write_text('{"flavor": "test"}')
    with keel.start_run() as run:
        keel.log_artifacts(folder, artifact_path="model")
    return f"runs:/{run.id}/model"


def _as(settings, user: str) -> keel.Client:
    from dataclasses import replace

    return keel.Client(replace(settings, user=user))


def test_versions_are_numbered_and_keep_their_source(keel_env, tmp_path: Path):
    uris = [_model_run(tmp_path, f"w{n}") for n in range(3)]
    versions = [keel.register_model(uri, "churn") for uri in uris]
    assert versions == [1, 2, 3]
    client = keel.Client()
    mv = client.get_model_version("churn", 2)
    assert mv.source == uris[1] and mv.run_id == uris[1].split("/")[1]
    assert mv.created_by == keel_env.user and len(mv.manifest_digest) == 64
    assert [v.version for v in client.list_model_versions("churn")] == [1, 2, 3]
    assert client.get_registered_model("churn").latest_version == 3


def test_registering_pins_the_bytes_of_the_version(keel_env, tmp_path: Path):
    uri = _model_run(tmp_path, "original")
    keel.register_model(uri, "pinned")
    run_id = uri.split("/")[1]
    client = keel.Client()
    before = client.resolve_model("models:/pinned/1")
    # Re-logging the run's artifact path afterwards must not change the version.
    other = tmp_path / "other.bin"
    other.write_text("tampered")
    client.log_artifact(run_id, other, artifact_path="model")
    after = client.resolve_model("models:/pinned/1")
    assert after.manifest_digest == before.manifest_digest
    entries = client.artifacts.read_manifest(after.manifest_digest)
    assert sorted(e.path for e in entries) == ["keel-model.json", "weights.bin"]


def test_register_rejects_bad_sources(keel_env, tmp_path: Path):
    with keel.start_run() as run:
        pass
    with pytest.raises(NotFound, match="has no artifacts at 'model'"):
        keel.register_model(f"runs:/{run.id}/model", "m")
    with pytest.raises(InvalidInput, match="must start with runs:/ or models:/"):
        keel.register_model("s3://bucket/model", "m")
    with pytest.raises(InvalidInput, match="model name must be"):
        keel.register_model(_model_run(tmp_path), "bad/name")
    with pytest.raises(NotFound, match="no run with id"):
        keel.register_model("runs:/" + "f" * 32 + "/model", "m")


def test_alias_set_get_history_and_delete(keel_env, tmp_path: Path):
    for n in range(3):
        keel.register_model(_model_run(tmp_path, f"w{n}"), "churn")
    client = keel.Client()
    client.set_alias("churn", "champion", 1)
    client.set_alias("churn", "champion", 3, comment="better AUC")
    assert client.get_model_version_by_alias("churn", "champion").version == 3
    assert client.get_model_version("churn", 3).aliases == ["champion"]
    client.delete_alias("churn", "champion")
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        client.get_model_version_by_alias("churn", "champion")
    history = [
        (h.from_version, h.to_version, h.comment) for h in client.alias_history("churn", "champion")
    ]
    assert history == [(None, 1, None), (1, 3, "better AUC"), (3, None, None)]
    with pytest.raises(InvalidInput, match="alias must start with a letter"):
        client.set_alias("churn", "latest", 1)
    with pytest.raises(NotFound, match="has no version 9"):
        client.set_alias("churn", "champion", 9)


def test_alias_move_is_compare_and_set(keel_env, tmp_path: Path):
    for n in range(3):
        keel.register_model(_model_run(tmp_path, f"w{n}"), "cas")
    client = keel.Client()
    client.set_alias("cas", "champion", 1)
    client.set_alias("cas", "champion", 2, expected=1)
    with pytest.raises(Conflict, match="is at version 2, not version 1"):
        client.set_alias("cas", "champion", 3, expected=1)
    with pytest.raises(Conflict, match="is at version 2, not unset"):
        client.set_alias("cas", "champion", 3, expected=None)
    assert client.get_alias("cas", "champion") == 2
    assert len(client.alias_history("cas")) == 2  # the refused moves left no trace


def test_model_uris_resolve_for_runs_versions_aliases_and_latest(keel_env, tmp_path: Path):
    uri = _model_run(tmp_path, "a")
    keel.register_model(uri, "u")
    keel.register_model(_model_run(tmp_path, "b"), "u")
    keel.Client().set_alias("u", "champion", 1)
    assert resolve_model("models:/u@champion").runs_uri == uri
    assert resolve_model("models:/u/1").runs_uri == uri
    assert resolve_model("models:/u/latest").version == 2
    assert resolve_model(uri).manifest_digest is None
    assert parse_model_uri("models:/u@champion") == ("alias", "u", "champion")
    for bad in ("models:/u", "models:/u/0", "models:/u/x", "runs:/abc", "u@champion"):
        with pytest.raises(InvalidInput):
            parse_model_uri(bad)


def test_protected_alias_needs_an_approval_from_the_role_and_not_the_registrant(
    keel_env, tmp_path: Path
):
    bob = _as(keel_env, "bob")  # registers
    alice = _as(keel_env, "alice")  # approves
    mallory = _as(keel_env, "mallory")  # has no role
    version = bob.create_model_version("fraud", _model_run(tmp_path)).version
    alice.grant_role("alice", "approver")
    alice.grant_role("bob", "approver")
    alice.set_alias_policy("production", approvals=1, role="approver")

    bob.set_alias("fraud", "staging", version)  # unprotected aliases move freely
    with pytest.raises(
        ApprovalRequired, match=r"needs 1 approval\(s\) from role 'approver'.*it has 0"
    ):
        bob.set_alias("fraud", "production", version)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        bob.approve("fraud", version, "production")
    with pytest.raises(PermissionDenied, match="needs role 'approver'"):
        mallory.approve("fraud", version, "production")
    with pytest.raises(InvalidInput, match="is not protected"):
        alice.approve("fraud", version, "staging")
    alice.approve("fraud", version, "production", comment="metrics reviewed")
    with pytest.raises(Conflict, match="already approved"):
        alice.approve("fraud", version, "production")
    bob.set_alias("fraud", "production", version)
    assert bob.get_alias("fraud", "production") == version
    [approval] = bob.list_approvals("fraud", version)
    assert (approval.approver, approval.comment) == ("alice", "metrics reviewed")


def test_approval_from_someone_who_lost_the_role_does_not_count(keel_env, tmp_path: Path):
    admin = _as(keel_env, "root-admin")
    admin.grant_role("root-admin", "admin")
    admin.grant_role("carol", "approver")
    admin.set_alias_policy("production", approvals=1, role="approver")
    version = admin.create_model_version("m", _model_run(tmp_path)).version
    _as(keel_env, "carol").approve("m", version, "production")
    admin.revoke_role("carol", "approver")
    with pytest.raises(ApprovalRequired, match="it has 0"):
        admin.set_alias("m", "production", version)


def test_once_an_admin_exists_only_admins_change_policy_and_roles(keel_env):
    first = _as(keel_env, "ann")
    first.grant_role("ann", "admin")
    outsider = _as(keel_env, "eve")
    with pytest.raises(PermissionDenied, match="needs role 'admin'"):
        outsider.grant_role("eve", "admin")
    with pytest.raises(PermissionDenied, match="needs role 'admin'"):
        outsider.set_alias_policy("production")
    first.set_alias_policy("production", approvals=2, role="approver")
    assert [p.to_dict() for p in first.list_alias_policies()] == [
        {"alias": "production", "approvals": 2, "role": "approver", "allow_registrant": False}
    ]
    assert first.list_roles() == {"ann": ["admin"]}


REGISTER = """
import sys, time
from pathlib import Path
import keel
keel.init(home=sys.argv[1], store_url=sys.argv[2])
print("ready", flush=True)
go = Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
print(keel.register_model(sys.argv[3], "race"), flush=True)
"""

MOVE = """
import sys, time
from pathlib import Path
import keel
from keel.errors import Conflict
keel.init(home=sys.argv[1], store_url=sys.argv[2])
client = keel.Client()
seen = client.get_alias("race", "champion")
print("ready", flush=True)
go = Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
try:
    client.set_alias("race", "champion", int(sys.argv[3]), expected=seen)
    print("won", flush=True)
except Conflict as exc:
    print("conflict", flush=True)
"""


def _run_together(script: str, settings, args: list[str], go: Path) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(settings.home), settings.store_url, arg, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arg in args
    ]
    for proc in procs:  # every process has read what it needs and is polling for the signal
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


@pytest.mark.slow
def test_eight_processes_registering_at_once_get_one_to_eight(keel_env, tmp_path: Path):
    # Eight different packages: the same package registered again returns its version.
    uris = [_model_run(tmp_path, f"weights-{i}") for i in range(8)]
    outputs = _run_together(REGISTER, keel_env, uris, tmp_path / "go")
    assert sorted(int(o) for o in outputs) == list(range(1, 9))
    assert [v.version for v in keel.Client().list_model_versions("race")] == list(range(1, 9))


@pytest.mark.slow
def test_two_processes_moving_one_alias_one_wins_one_conflicts(keel_env, tmp_path: Path):
    for i in range(3):
        keel.register_model(_model_run(tmp_path, f"weights-{i}"), "race")
    keel.Client().set_alias("race", "champion", 1)
    outputs = _run_together(MOVE, keel_env, ["2", "3"], tmp_path / "go")
    assert sorted(outputs) == ["conflict", "won"]
    winner = 2 if outputs[0] == "won" else 3
    assert keel.Client().get_alias("race", "champion") == winner
    moves = keel.Client().alias_history("race", "champion")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, 1), (1, winner)]
