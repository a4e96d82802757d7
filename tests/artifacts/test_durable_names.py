"""An artifact's name is on disk before anything records its digest.

The bytes of every object are fsynced before the rename that names them; these tests
pin the step after: the folders holding the new names are fsynced before a write
returns its digest, since the caller records that digest next (a run's artifact row,
a model version). A folder flush that fails is forced here through the local
backend's own ``fsync`` parameter (the real call is ``os.fsync``); the store is a
real artifact folder and the run a real SQLite row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from _support.storage import Flushes, is_folder
from keel import Client
from keel.artifacts import ArtifactStore, LocalBackend
from keel.errors import StorageError
from keel.transport import LocalTransport

if TYPE_CHECKING:
    from keel.config import Settings


@pytest.fixture
def flushes() -> Flushes:
    return Flushes()


@pytest.fixture
def store(sqlite_env: Settings, flushes: Flushes) -> ArtifactStore:
    return ArtifactStore(LocalBackend(sqlite_env.artifacts_url, fsync=flushes))


def _holding(store: ArtifactStore, digest: str) -> set[str]:
    """The folders whose entries name ``digest``'s object: its own, and each above it."""
    assert isinstance(store.backend, LocalBackend)
    root = store.backend.root
    object_folder = (root / store.key(digest)).parent
    return {str(object_folder), str(object_folder.parent), str(root)}


def test_a_stored_object_returns_only_after_the_folders_naming_it_are_flushed(
    store: ArtifactStore, flushes: Flushes
):
    blob = store.put_bytes(b"a model's weights")
    assert _holding(store, blob.digest) <= flushes.folders


def test_storing_the_same_bytes_again_flushes_the_names_again(
    store: ArtifactStore, flushes: Flushes
):
    # A first writer may have died between its rename and its flush.
    blob = store.put_bytes(b"same")
    before = len(flushes.folder_flushes)
    assert store.put_bytes(b"same") == blob
    assert _holding(store, blob.digest) <= set(flushes.folder_flushes[before:])


def test_a_folder_is_flushed_once_for_all_its_files_and_its_manifest(
    store: ArtifactStore, flushes: Flushes, tmp_path: Path
):
    src = tmp_path / "model"
    src.mkdir()
    for n in range(40):
        (src / f"part-{n}.bin").write_bytes(os.urandom(64))
    manifest, entries = store.put_dir(src)
    wanted = set().union(
        *(_holding(store, d) for d in [manifest.digest, *(e.digest for e in entries)])
    )
    assert wanted <= flushes.folders
    assert len(flushes.folder_flushes) == len(flushes.folders)  # each folder once


def test_a_folder_flush_that_fails_records_no_artifact(
    sqlite_env: Settings, store: ArtifactStore, flushes: Flushes, tmp_path: Path
):
    client = Client(transport=LocalTransport(sqlite_env, artifacts=store))
    run = client.tracking.create_run(client.tracking.get_or_create_experiment("e").id)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(256))
    flushes.fail = is_folder
    with pytest.raises(StorageError, match="cannot flush folder"):
        client.tracking.log_artifact(run.id, weights)
    assert client.tracking.list_artifacts(run.id) == []

    flushes.fail = lambda fd: False  # the disk is back: the same call stores and records it
    entry = client.tracking.log_artifact(run.id, weights)
    assert [e.digest for e in client.tracking.list_artifacts(run.id)] == [entry.digest]
