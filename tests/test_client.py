"""``keel.Client`` composes its parts over one transport and exposes who and where it is."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

import keel
from keel.config import Settings, load_settings
from keel.errors import InvalidInput
from keel.registry import RegistryClient
from keel.tracking import TrackingClient
from keel.transport import LocalTransport, Transport

SRC = Path(keel.__file__).parent


def test_registry_is_a_part_of_the_client_not_a_subclass_of_tracking():
    assert not issubclass(RegistryClient, TrackingClient)
    assert not issubclass(keel.Client, (RegistryClient, TrackingClient))
    client = keel.Client()
    assert isinstance(client.tracking, TrackingClient)
    assert isinstance(client.registry, RegistryClient)
    # One transport under every part, and the registry reads runs through the same tracking part.
    assert client.tracking.transport is client.transport
    assert client.registry.transport is client.transport
    assert client.registry.tracking is client.tracking


def test_client_delegates_to_its_parts(sqlite_env: Settings, tmp_path: Path):
    client = keel.Client()
    experiment = client.create_experiment("composed")
    run = client.create_run(experiment, capture=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_text("w")
    client.log_artifacts(run.id, tmp_path / "model", artifact_path="model")
    version = client.create_model_version("churn", f"runs:/{run.id}/model")
    client.set_alias("churn", "champion", version.version)
    # What the client wrote, each part reads back on its own.
    assert client.tracking.get_run(run.id).info.experiment_id == experiment
    assert client.registry.get_model_version_by_alias("churn", "champion").version == 1


def test_settings_and_user_are_public(sqlite_env: Settings):
    client = keel.Client(replace(sqlite_env, user="ada"))
    assert client.settings.home == sqlite_env.home
    assert client.user == "ada"
    assert client.tracking.user == client.registry.user == "ada"
    run = client.create_run(client.create_experiment("who"), capture=False)
    assert client.get_run_info(run.id).user == "ada"


def test_client_without_settings_uses_the_process_settings(sqlite_env: Settings):
    client = keel.Client()
    assert client.settings == sqlite_env
    assert client.user == sqlite_env.user


def test_an_injected_transport_is_the_one_every_part_uses(sqlite_env: Settings, tmp_path: Path):
    other = load_settings(home=tmp_path / "elsewhere", user="grace")
    transport = LocalTransport(other)
    client = keel.Client(transport=transport)
    assert client.transport is transport
    assert client.store is transport.store
    assert client.artifacts is transport.artifacts
    assert client.user == "grace"
    run = client.create_run(client.create_experiment("over-there"), capture=False)
    # Written through the injected transport's home, not the process's.
    assert keel.Client(other).get_run_info(run.id).user == "grace"
    assert keel.Client().get_experiment_by_name("over-there") is None


def test_a_custom_transport_subclass_is_honoured(sqlite_env: Settings, tmp_path: Path):
    class Counting(Transport):
        def __init__(self, inner: LocalTransport) -> None:
            self.inner, self.opened = inner, 0

        @property
        def settings(self) -> Settings:
            return self.inner.settings

        @property
        def store(self):  # type: ignore[no-untyped-def]
            self.opened += 1
            return self.inner.store

        @property
        def artifacts(self):  # type: ignore[no-untyped-def]
            return self.inner.artifacts

    transport = Counting(LocalTransport(sqlite_env))
    client = keel.Client(transport=transport)
    client.list_experiments()
    client.list_registered_models()
    assert transport.opened >= 2


def test_client_constructor_only_stores(tmp_path: Path):
    # A home that does not exist is not created until the client is used.
    home = tmp_path / "not-yet"
    keel.Client(load_settings(home=home))
    assert not home.exists()


def test_settings_and_transport_together_are_refused(sqlite_env: Settings):
    with pytest.raises(InvalidInput, match="pass a transport or settings, not both"):
        keel.Client(sqlite_env, transport=LocalTransport(sqlite_env))


def test_no_module_reads_another_objects_private_settings():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "_settings"
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == [], "read the public `.settings` instead: " + ", ".join(offenders)


def test_no_collaborator_named_client_is_typed_any():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.arg)
                and node.arg == "client"
                and isinstance(node.annotation, ast.Name)
                and node.annotation.id == "Any"
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == [], "type it as keel.Client or the part it uses: " + ", ".join(offenders)
