"""The http transport's artifact backend against a real ``keel server`` process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.control_plane import ControlPlane, start_control_plane
from keel.artifacts import ArtifactStore, hash_bytes
from keel.config import load_settings
from keel.transport.http import HttpTransport

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with start_control_plane(tmp_path_factory.mktemp("blob-server")) as started:
        yield started


def _artifacts(plane: ControlPlane, home: Path) -> ArtifactStore:
    settings = load_settings(home=home, server_url=plane.url, token=plane.admin_token)
    return HttpTransport(settings).artifacts


def test_a_20_mib_object_round_trips_byte_exact(plane: ControlPlane, tmp_path: Path) -> None:
    data = os.urandom(20 << 20)  # past the 8 MiB the download keeps in memory
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    artifacts = _artifacts(plane, tmp_path / "home")

    blob = artifacts.put_file(source)
    assert (blob.digest, blob.size) == (hash_bytes(data), len(data))

    copied = artifacts.get_file(blob.digest, tmp_path / "out" / "weights.bin")
    assert copied.read_bytes() == data
    assert artifacts.get_bytes(blob.digest) == data


def test_a_small_object_round_trips_and_reads_from_the_start(
    plane: ControlPlane, tmp_path: Path
) -> None:
    artifacts = _artifacts(plane, tmp_path / "home")
    blob = artifacts.put_bytes(b"a few bytes")
    with artifacts.backend.open(ArtifactStore.key(blob.digest)) as handle:
        assert handle.read(5) == b"a few"
        assert handle.read() == b" bytes"
