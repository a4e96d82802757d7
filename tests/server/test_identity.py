"""Identity on a real ``keel server``: the token decides who acts; scoped grants limit where."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from _support.control_plane import ControlPlane, start_control_plane
from keel.errors import PermissionDenied


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with start_control_plane(tmp_path_factory.mktemp("identity") / ".keel") as running:
        yield running


def test_keel_user_means_nothing_the_token_decides(
    server: ControlPlane, run_keel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bob = server.make_user("bob", "admin")
    env = server.environ(bob, KEEL_USER="alice", KEEL_HOME=str(server.home))
    made = run_keel("users", "create", "carol", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["created_by"] == "bob"
    with server.http() as admin:
        [entry] = admin.get("/audit", params={"object_type": "user", "object_id": "carol"}).json()
    with server.http(bob) as http:
        whoami = http.get("/whoami").json()
    assert whoami["user"] == "bob" and entry["actor"] == "bob"
    assert entry["token_id"] == whoami["token_id"]
    # the Python API too: keel.init(server_url=..., token=...) with KEEL_USER set
    monkeypatch.setenv("KEEL_USER", "alice")
    keel.init(home=tmp_path / ".keel", server_url=server.url, token=bob)
    from keel.governance.client import IdentityClient

    assert IdentityClient().whoami()["user"] == "bob"
    assert keel.Client().user == "bob"


def _client(server: ControlPlane, tmp_path: Path, token: str) -> keel.Client:
    return keel.Client(keel.init(home=tmp_path / ".keel", server_url=server.url, token=token))


def test_an_editor_on_one_model_writes_that_model_and_no_other(
    server: ControlPlane, run_keel, tmp_path: Path
):
    with server.http() as admin:
        for name in ("fraud", "other"):
            assert admin.post("/models", json={"name": name}).status_code == 201
    token = server.make_user("ed")
    granted = run_keel("roles", "grant", "ed", "editor", "--model", "fraud", env=server.environ())
    assert granted.returncode == 0, granted.stderr
    assert "ed now has role 'editor' on model 'fraud'" in granted.stdout
    client = _client(server, tmp_path, token)
    with server.http(token) as http:
        # past the permission check on fraud: the version is missing (404), not forbidden
        tagged = http.post("/models/fraud/versions/1/tags", json={"key": "k", "value": "v"})
        assert tagged.status_code == 404, tagged.text
        refused = http.post("/models/other/versions/1/tags", json={"key": "k", "value": "v"})
        assert refused.status_code == 403
        assert "lacks permission 'write' on model 'other'" in refused.json()["error"]
    with pytest.raises(PermissionDenied, match="lacks permission 'read' on model 'other'"):
        client.get_registered_model("other")
    with pytest.raises(PermissionDenied, match="lacks permission 'write' on model 'fresh'"):
        client.create_registered_model("fresh")
    assert client.get_registered_model("fraud").name == "fraud"


def test_an_alias_grant_moves_exactly_that_alias(server: ControlPlane, run_keel, tmp_path: Path):
    from keel.config import load_settings

    local = keel.Client(
        load_settings(
            home=server.home,
            store_url=server.store_url,
            artifacts_url=server.artifacts_url,
            user="operator",
        )
    )
    run = local.create_run(local.create_experiment("alias-exp"))
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w")
    local.log_artifacts(run.id, folder, artifact_path="model")
    local.create_registered_model("scorer")
    local.create_model_version("scorer", f"runs:/{run.id}/model")
    token = server.make_user("mover")
    granted = run_keel(
        "roles", "grant", "mover", "editor", "--alias", "scorer@staging", env=server.environ()
    )
    assert granted.returncode == 0, granted.stderr
    client = _client(server, tmp_path, token)
    client.set_alias("scorer", "staging", 1)
    assert local.get_alias("scorer", "staging") == 1
    with pytest.raises(PermissionDenied, match="lacks permission 'write' on alias 'scorer@prod'"):
        client.set_alias("scorer", "prod", 1)
    assert local.get_alias("scorer", "prod") is None
    revoked = run_keel(
        "roles", "revoke", "mover", "editor", "--alias", "scorer@staging", env=server.environ()
    )
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(
        PermissionDenied, match="lacks permission 'write' on alias 'scorer@staging'"
    ):
        client.delete_alias("scorer", "staging")
