"""Push and pull against the loopback S3 server: only missing objects move; kills resume.

Push and pull copy objects between a machine's own artifact store and a data remote (how
data is shared without a server), so these tests stay on the local stores; a client of
keel server shares the server's store instead. The error for a missing remote is the
same on every mode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import keel
import keel.data as kd
from keel.artifacts import ArtifactStore
from keel.errors import InvalidInput


def make_tree(root: Path, n: int, size: int = 1500, loose: int = 0) -> Path:
    """``n`` files of ``size`` bytes (small ones are packed) and ``loose`` files of 300 KB."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i:03}.bin").write_bytes(os.urandom(size))
    for i in range(loose):
        (root / f"big{i}.bin").write_bytes(os.urandom(300_000))
    return root


def remote_digests(url: str, endpoint: str) -> set[str]:
    return set(ArtifactStore.from_url(url, endpoint).iter_digests())


def test_push_then_pull_into_a_fresh_home_round_trips_the_bytes(
    store_url, s3_bucket, s3_server, tmp_path: Path
):
    remote = f"{s3_bucket}/data"
    keel.init(home=tmp_path / "a", store_url=store_url, s3_endpoint_url=s3_server)
    tree = make_tree(tmp_path / "raw", 12, loose=2)
    version = kd.add(tree)
    pushed = kd.push(["raw@1"], remote=remote)
    # 2 loose files, 1 pack holding the 12 small ones, the pack index and the manifest
    assert (pushed.objects, pushed.present, pushed.moved) == (5, 0, 5)
    assert kd.push(remote=remote).moved == 0

    # Another machine: the same metadata store, an empty artifact store.
    keel.init(
        home=tmp_path / "b",
        store_url=store_url,
        s3_endpoint_url=s3_server,
        data_remote=remote,
    )
    pulled = kd.pull([version.uri])
    assert (pulled.objects, pulled.moved) == (5, 5)
    kd.checkout("raw@1", tmp_path / "restored")
    assert kd.diff(tree, tmp_path / "restored").clean
    assert kd.pull([version.uri]).moved == 0


def test_push_moves_only_the_objects_a_new_version_added(
    sqlite_env, s3_bucket, s3_server, tmp_path: Path
):
    keel.init(home=sqlite_env.home, s3_endpoint_url=s3_server, data_remote=f"{s3_bucket}/d")
    tree = make_tree(tmp_path / "raw", 10, loose=3)
    kd.add(tree)
    kd.push()
    (tree / "f003.bin").write_bytes(b"new bytes")
    (tree / "big1.bin").write_bytes(os.urandom(300_000))
    kd.add(tree)
    report = kd.push(["raw@2"])
    # New: one loose file, a pack holding the changed small file, the pack index, the manifest.
    # Already there: two unchanged loose files and the first pack (it still holds 9 files).
    assert (report.moved, report.present) == (4, 3)


def test_a_digest_the_metadata_store_does_not_know_is_pulled_by_manifest(
    sqlite_env, s3_bucket, s3_server, tmp_path: Path
):
    remote = f"{s3_bucket}/d"
    keel.init(home=tmp_path / "a", s3_endpoint_url=s3_server)
    version = kd.add(make_tree(tmp_path / "raw", 0, loose=3))
    kd.push(remote=remote)
    keel.init(home=tmp_path / "b", s3_endpoint_url=s3_server)  # its own, empty database
    assert kd.pull([version.digest], remote=remote).moved == 4  # three files and the manifest
    local = ArtifactStore.from_url(str(tmp_path / "b" / "artifacts"))
    assert version.digest in set(local.iter_digests())


def test_push_without_a_remote_says_how_to_configure_one(any_env, tmp_path: Path):
    kd.add(make_tree(tmp_path / "raw", 1))
    with pytest.raises(
        InvalidInput,
        match="no data remote: pass --remote s3://bucket/prefix, or set KEEL_DATA_REMOTE",
    ):
        kd.push()


KILLED_PUSH = """
import os, signal, sys
import keel, keel.data
keel.init(home=sys.argv[1], s3_endpoint_url=sys.argv[2])
stop_after = int(sys.argv[4])

def on_object(moved):
    if moved >= stop_after:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, uploads in flight are cut off

keel.data.push(["raw@1"], remote=sys.argv[3], on_object=on_object)
"""


@pytest.mark.slow
def test_a_push_killed_midway_resumes_moving_only_what_is_missing(
    sqlite_env, s3_bucket, s3_server, tmp_path: Path
):
    remote = f"{s3_bucket}/d"
    keel.init(home=sqlite_env.home, s3_endpoint_url=s3_server)
    tree = make_tree(tmp_path / "raw", 0, loose=60)
    version = kd.add(tree)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PUSH, str(sqlite_env.home), s3_server, remote, "20"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    there = remote_digests(remote, s3_server)
    assert 20 <= len(there) < 61
    assert version.digest not in there  # the manifest goes last: the version is not "there"
    resumed = kd.push(["raw@1"], remote=remote)
    assert resumed.present == len(there)
    assert resumed.moved == 61 - len(there)
    assert len(remote_digests(remote, s3_server)) == 61

    # Every object on the remote is whole: a fresh home pulls and checks out the exact tree.
    keel.init(home=tmp_path / "other", store_url=sqlite_env.store_url, s3_endpoint_url=s3_server)
    kd.pull(["raw@1"], remote=remote)
    kd.checkout("raw@1", tmp_path / "restored")
    assert kd.diff(tree, tmp_path / "restored").clean
