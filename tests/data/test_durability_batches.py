"""Durability of ``add`` without a global flush, and the scan that ``status`` rests on.

Every object an add writes is fsynced before it is renamed into place; the folders
holding a version's objects are fsynced before the version is recorded. The flushes
are forced to fail here through the local backend's own ``fsync`` parameter (the real
call is ``os.fsync``; a disk that fails it is not something a test machine has), with
a real SQLite catalog and a real artifact folder behind it.

All local: the durability path is the local artifact folder's, and the scan's is this
machine's filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import keel.data as kd
from _support.storage import Flushes, is_folder, make_tree, settle
from keel.artifacts import ArtifactStore, LocalBackend, hash_bytes
from keel.config import Settings
from keel.data.packs import read_pack_index
from keel.data.scan import scan
from keel.errors import StorageError
from keel.transport import LocalTransport

BIG = 300_000  # above the packing threshold: an object of its own


def transport(settings: Settings, fsync: Callable[[int], None]) -> LocalTransport:
    backend = LocalBackend(settings.artifacts_url, fsync=fsync)
    return LocalTransport(settings, artifacts=ArtifactStore(backend))


def test_an_object_whose_flush_fails_is_not_stored_and_no_version_is_recorded(
    sqlite_env, tmp_path: Path
):
    big = os.urandom(BIG)
    tree = make_tree(tmp_path / "raw", {"small.txt": b"s", "big.bin": big})
    flushes = Flushes(fail=lambda fd: os.fstat(fd).st_size == BIG)  # only big.bin's object
    with pytest.raises(StorageError, match=r"a write of .*objects/.*Input/output error"):
        kd.add(tree, transport=transport(sqlite_env, flushes))
    assert kd.list_datasets() == []
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    assert not store.exists(hash_bytes(big))
    leftovers = list((Path(sqlite_env.artifacts_url) / "tmp").glob("*.part"))
    assert leftovers == []  # the unflushed copy was removed, not left half-known
    version = kd.add(tree)  # the disk is back: the same add succeeds
    kd.checkout(version.uri, tmp_path / "restored")
    assert (tmp_path / "restored" / "big.bin").read_bytes() == big


def test_no_version_is_recorded_when_the_folders_of_its_objects_cannot_be_flushed(
    sqlite_env, tmp_path: Path
):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha", "big.bin": os.urandom(BIG)})
    with pytest.raises(StorageError, match=r"cannot flush folder .* to disk .*nothing that names"):
        kd.add(tree, transport=transport(sqlite_env, Flushes(fail=is_folder)))
    assert kd.list_datasets() == []
    assert kd.add(tree).version == 1


def test_every_object_of_a_version_and_every_folder_naming_one_is_flushed(
    sqlite_env, tmp_path: Path
):
    big = os.urandom(BIG)
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha", "b.txt": b"beta", "big.bin": big})
    flushes = Flushes()
    version = kd.add(tree, transport=transport(sqlite_env, flushes))
    root = Path(sqlite_env.artifacts_url).resolve()
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    packs = kd.get(version.uri).packs_digest
    assert packs is not None
    (pack,) = read_pack_index(store, packs).packs
    needed = {version.digest, packs, pack}
    needed |= {e.digest for e in store.read_manifest(version.digest) if e.size == BIG}
    assert len(needed) == 4  # manifest, pack index, the pack, big.bin's object
    for digest in needed:
        inode = (root / ArtifactStore.key(digest)).stat().st_ino
        assert inode in flushes.files, f"object {digest} was not flushed before it was named"
        assert str(root / "objects" / digest[:2]) in flushes.folders
    assert {str(root), str(root / "objects")} <= flushes.folders


def test_a_store_that_is_not_durable_flushes_nothing(tmp_path: Path):
    flushes = Flushes()
    backend = LocalBackend(tmp_path / "store", durable=False, fsync=flushes)
    backend.put_bytes("objects/ab/cdef", b"x")
    backend.sync_folders(["objects/ab/cdef"])
    assert (flushes.files, flushes.folders) == (set(), set())
    assert (tmp_path / "store" / "objects" / "ab" / "cdef").read_bytes() == b"x"


def test_folder_flushes_cover_each_folder_of_the_keys_once_up_to_the_root(tmp_path: Path):
    calls: list[str] = []

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))

    backend = LocalBackend(tmp_path / "store", fsync=fsync)
    keys = ["objects/ab/1", "objects/ab/2", "objects/cd/3"]
    for key in keys:
        backend.put_bytes(key, key.encode())
    calls.clear()
    backend.sync_folders(keys)
    root = str((tmp_path / "store").resolve())
    assert sorted(calls) == sorted(
        [root, f"{root}/objects", f"{root}/objects/ab", f"{root}/objects/cd"]
    )


def test_status_sees_a_one_byte_edit_that_keeps_the_size_of_a_settled_file(
    sqlite_env, tmp_path: Path
):
    tree = make_tree(
        tmp_path / "raw", {f"d{i}/f{j}.bin": bytes(64) for i in range(3) for j in range(4)}
    )
    settle()
    kd.add(tree)
    (report,) = kd.status(tree)
    assert report.clean and report.hashed == 0
    with open(tree / "d1" / "f2.bin", "r+b") as f:  # in place: same inode, same size
        f.seek(10)
        f.write(b"\x01")
    (report,) = kd.status(tree)
    assert report.diff.changed == ["d1/f2.bin"] and report.hashed == 1


def test_scan_follows_links_to_files_but_not_into_linked_folders_and_skips_the_rest(
    tmp_path: Path,
):
    tree = make_tree(
        tmp_path / "raw",
        {"a.txt": b"a", "sub/b.txt": b"bb", ".git/HEAD": b"ref", "sub/.keel/x": b"x"},
    )
    outside = make_tree(tmp_path / "outside", {"c.txt": b"ccc", "d.txt": b"dddd"})
    (tree / "c-link.txt").symlink_to(outside / "c.txt")
    (tree / "linked-folder").symlink_to(outside, target_is_directory=True)
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tree / "sub" / "pipe")
    found = scan(tree)
    files = dict(zip(found.rels, found.sizes, strict=True))
    assert files == {"a.txt": 1, "sub/b.txt": 2, "c-link.txt": 3}
    at = found.rels.index("c-link.txt")
    assert found.inos[at] == os.stat(outside / "c.txt").st_ino  # the file the link names
