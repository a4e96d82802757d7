"""The registry through a real ``keel server``: every client method, scoped roles, races.

Model packages come from a training process beside the server (on its own store
and S3 bucket); everything else goes through the REST API with real tokens.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import keel
from _support.control_plane import ControlPlane
from keel.config import Settings, load_settings
from keel.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from keel.registry import AliasPolicy

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _beside(server: ControlPlane, s3_server: str, home: Path) -> Settings:
    return load_settings(
        home=home,
        store_url=server.store_url,
        artifacts_url=server.artifacts_url,
        s3_endpoint_url=s3_server,
    )


def _logged_models(
    settings: Settings, tmp_path: Path, payloads: list[str], experiment_name: str | None = None
) -> list[str]:
    """One run per payload, each holding a model folder; their runs:/ URIs."""
    client = keel.Client(settings)
    experiment = client.tracking.get_or_create_experiment(experiment_name or _unique("training"))
    uris = []
    for payload in payloads:
        run = client.tracking.create_run(experiment.id, capture=False)
        folder = tmp_path / _unique(payload)
        folder.mkdir()
        (folder / "weights.bin").write_text(payload)
        (folder / "keel-model.json").write_text('{"flavor": "test"}')
        client.tracking.log_artifacts(run.id, folder, artifact_path="model")
        uris.append(f"runs:/{run.id}/model")
    return uris


def _as(server: ControlPlane, token: str, home: Path) -> keel.Client:
    return keel.Client(load_settings(home=home, server_url=server.url, token=token))


def test_models_versions_tags_aliases_and_uris_round_trip(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path
) -> None:
    server = control_plane
    name = _unique("wine")
    editor_name = _unique("ed")
    editor = _as(server, server.make_user(editor_name, "editor"), tmp_path / "ed")
    one, two = _logged_models(_beside(server, s3_server, tmp_path / "job"), tmp_path, ["a", "b"])

    made = editor.registry.create_registered_model(name, description="red or white")
    assert (made.name, made.description, made.latest_version, made.created_by) == (
        name,
        "red or white",
        0,
        editor_name,
    )
    with pytest.raises(Conflict, match="already exists"):
        editor.registry.create_registered_model(name)

    v1 = editor.registry.create_model_version(name, one, description="first", tags={"k": 1})
    v2 = editor.registry.create_model_version(name, two)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.tags == {"k": "1"} and len(v1.manifest_digest or "") == 64
    # the same bytes from the same source again: the same version, not a twin
    assert editor.registry.create_model_version(name, one).version == 1

    editor.registry.set_model_version_tag(name, 2, "stage", "candidate")
    described = editor.registry.update_model_version(name, 2, description="second")
    assert described.description == "second" and described.tags == {"stage": "candidate"}
    assert [v.version for v in editor.registry.list_model_versions(name)] == [1, 2]
    assert editor.registry.get_model_version(name, 1).source == one

    change = editor.registry.set_alias(name, "champion", 1, comment="first")
    assert (change.from_version, change.to_version, change.actor) == (None, 1, editor_name)
    with pytest.raises(Conflict):
        editor.registry.set_alias(name, "champion", 2, expected=2)
    editor.registry.set_alias(name, "champion", 2, expected=1)
    assert editor.registry.get_alias(name, "champion") == 2
    assert editor.registry.get_alias(name, "nothing") is None
    assert editor.registry.find_model_version(f"{name}@champion").version == 2
    assert editor.registry.get_registered_model(name).aliases == {"champion": 2}

    resolved = editor.registry.resolve_model(f"models:/{name}@champion")
    assert (resolved.name, resolved.version, resolved.runs_uri) == (name, 2, two)
    assert editor.registry.resolve_model(f"models:/{name}/1").manifest_digest == v1.manifest_digest
    assert editor.registry.resolve_model(f"models:/{name}/latest").version == 2

    editor.registry.delete_alias(name, "champion", expected=2)
    with pytest.raises(NotFound, match="champion"):
        editor.registry.get_model_version_by_alias(name, "champion")
    history = editor.registry.alias_history(name, "champion")
    assert [(c.from_version, c.to_version) for c in history] == [(None, 1), (1, 2), (2, None)]
    assert name in [m.name for m in editor.registry.list_registered_models()]

    with pytest.raises(NotFound, match="has no version 9"):
        editor.registry.get_model_version(name, 9)
    with pytest.raises(InvalidInput, match="register a run's model"):
        editor.registry.create_model_version(name, f"models:/{name}/1")
    with pytest.raises(InvalidInput, match="conn="):
        editor.registry.set_alias(name, "champion", 1, conn=object())  # type: ignore[arg-type]


def test_a_model_scoped_grant_covers_that_model_and_its_aliases_only(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path
) -> None:
    server = control_plane
    mine, theirs = _unique("mine"), _unique("theirs")
    user, experiment = _unique("scoped"), _unique("training")
    token = server.make_user(user)
    admin = _as(server, server.admin_token, tmp_path / "admin")
    scoped = _as(server, token, tmp_path / "scoped")
    job = _beside(server, s3_server, tmp_path / "job")
    a, b = _logged_models(job, tmp_path, ["a", "b"], experiment)
    [hidden] = _logged_models(job, tmp_path, ["c"])
    admin.registry.create_model_version(theirs, b)

    def grant(role: str, kind: str, scope: str) -> None:
        with server.http() as http:
            body = {"user": user, "role": role, "scope_kind": kind, "scope_name": scope}
            granted = http.post("/roles", json=body)
            assert granted.status_code == 200, granted.text

    grant("editor", "model", mine)
    # a version's bytes are its run's: registering one needs read on the run's experiment
    with pytest.raises(PermissionDenied, match="lacks permission 'read' on experiment"):
        scoped.registry.create_model_version(mine, a)
    grant("viewer", "experiment", experiment)
    scoped.registry.create_model_version(mine, a)
    with pytest.raises(PermissionDenied, match="'read' on experiment"):
        scoped.registry.create_model_version(mine, hidden)
    scoped.registry.set_alias(mine, "champion", 1)
    assert [m.name for m in scoped.registry.list_registered_models()] == [mine]
    with pytest.raises(PermissionDenied, match=f"lacks permission 'write' on model '{theirs}'"):
        scoped.registry.create_model_version(theirs, a)
    with pytest.raises(PermissionDenied, match=f"lacks permission 'read' on model '{theirs}'"):
        scoped.registry.get_registered_model(theirs)
    with pytest.raises(PermissionDenied, match="'write' on alias"):
        scoped.registry.set_alias(theirs, "champion", 1)
    with pytest.raises(PermissionDenied, match="'read' on model"):
        scoped.registry.resolve_model(f"models:/{theirs}/1")
    assert admin.registry.get_registered_model(theirs).aliases == {}


def test_alias_policies_and_roles_through_the_server(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    server = control_plane
    alias = "gold" + uuid.uuid4().hex[:8]
    admin = _as(server, server.admin_token, tmp_path / "admin")
    user = _unique("carol")
    server.make_user(user, "viewer")

    policy = admin.registry.set_alias_policy(alias, approvals=2, role="approver")
    assert policy == AliasPolicy(alias, 2, "approver", False)
    assert policy in admin.registry.list_alias_policies()
    admin.registry.grant_role(user, "approver")
    assert sorted(admin.registry.list_roles()[user]) == ["approver", "viewer"]
    admin.registry.revoke_role(user, "approver")
    assert admin.registry.list_roles()[user] == ["viewer"]
    admin.registry.delete_alias_policy(alias)
    assert policy not in admin.registry.list_alias_policies()
    with pytest.raises(NotFound, match="not protected"):
        admin.registry.delete_alias_policy(alias)


REGISTER = """
import sys, time
from pathlib import Path
import keel
name, source, go = sys.argv[1:4]
client = keel.Client()
print(client.transport.user, flush=True)
while not Path(go).exists():
    time.sleep(0.005)
print(client.registry.create_model_version(name, source).version, flush=True)
"""


def test_eight_client_processes_registering_at_once_get_versions_one_to_eight(
    control_plane: ControlPlane, s3_server: str, tmp_path: Path
) -> None:
    server = control_plane
    name = _unique("race")
    sources = _logged_models(
        _beside(server, s3_server, tmp_path / "job"), tmp_path, [f"w{i}" for i in range(8)]
    )
    users = [_unique(f"trainer{i}") for i in range(8)]
    tokens = [server.make_user(user, "editor") for user in users]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, name, source, str(go)],
            env=server.environ(token, KEEL_HOME=str(tmp_path / f"client{i}")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (source, token) in enumerate(zip(sources, tokens, strict=True))
    ]
    for proc, user in zip(procs, users, strict=True):  # each has authenticated and waits
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == user, proc.stderr.read() if proc.stderr else ""
    go.touch()
    numbers = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        numbers.append(int(out.strip()))

    assert sorted(numbers) == list(range(1, 9))
    admin = _as(server, server.admin_token, tmp_path / "admin")
    versions = admin.registry.list_model_versions(name)
    assert [v.version for v in versions] == list(range(1, 9))
    # every version holds the source and registrant of the process that got its number
    by_source = {v.source: v for v in versions}
    for source, user, number in zip(sources, users, numbers, strict=True):
        assert (by_source[source].version, by_source[source].created_by) == (number, user)
    assert admin.registry.get_registered_model(name).latest_version == 8
