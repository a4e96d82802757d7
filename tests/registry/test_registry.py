"""Registry: versions numbered by the store, pinned bytes, URIs.

Aliases are in ``test_aliases.py``, protection and approvals in ``test_approvals.py``,
roles in ``tests/governance/test_roles.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.registry import resolve_model
from keel.uris import ModelURI, parse_model_uri


def test_versions_are_numbered_and_keep_their_source(any_env, model_run):
    uris = [model_run(f"w{n}") for n in range(3)]
    versions = [keel.register_model(uri, "churn") for uri in uris]
    assert versions == [1, 2, 3]
    client = keel.Client()
    mv = client.get_model_version("churn", 2)
    assert mv.source == uris[1] and mv.run_id == uris[1].split("/")[1]
    assert mv.created_by == client.registry.user and len(mv.manifest_digest) == 64
    assert [v.version for v in client.list_model_versions("churn")] == [1, 2, 3]
    assert client.get_registered_model("churn").latest_version == 3


def test_registering_pins_the_bytes_of_the_version(any_env, tmp_path: Path, model_run):
    uri = model_run("original")
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


def test_register_rejects_bad_sources(any_env, model_run):
    with keel.start_run() as run:
        pass
    with pytest.raises(NotFound, match="has no artifacts at 'model'"):
        keel.register_model(f"runs:/{run.id}/model", "m")
    with pytest.raises(InvalidInput, match="must start with runs:/ or models:/"):
        keel.register_model("s3://bucket/model", "m")
    with pytest.raises(InvalidInput, match="model name must be"):
        keel.register_model(model_run(), "bad/name")
    with pytest.raises(NotFound, match="no run with id"):
        keel.register_model("runs:/" + "f" * 32 + "/model", "m")


def test_model_uris_resolve_for_runs_versions_aliases_and_latest(any_env, model_run):
    uri = model_run("a")
    keel.register_model(uri, "u")
    keel.register_model(model_run("b"), "u")
    keel.Client().set_alias("u", "champion", 1)
    assert resolve_model("models:/u@champion").runs_uri == uri
    assert resolve_model("models:/u/1").runs_uri == uri
    assert resolve_model("models:/u/latest").version == 2
    assert resolve_model(uri).manifest_digest is None
    assert parse_model_uri("models:/u@champion") == ModelURI("u", alias="champion")
    for bad in ("models:/u", "models:/u/0", "models:/u/x", "runs:/abc", "u@champion"):
        with pytest.raises(InvalidInput):
            parse_model_uri(bad)


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


@pytest.mark.slow
def test_eight_processes_registering_at_once_get_one_to_eight(
    keel_env, tmp_path: Path, model_run, run_together
):
    # Eight different packages: the same package registered again returns its version.
    uris = [model_run(f"weights-{i}") for i in range(8)]
    outputs = run_together(REGISTER, keel_env, uris, tmp_path / "go")
    assert sorted(int(o) for o in outputs) == list(range(1, 9))
    assert [v.version for v in keel.Client().list_model_versions("race")] == list(range(1, 9))
