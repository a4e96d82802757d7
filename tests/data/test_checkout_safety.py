"""Checkout and pull never write outside their folder, whatever a manifest or a symlink says.

Checkouts run on each mode (``any_env``: SQLite, PostgreSQL, and through keel server,
where the hostile manifest comes through the server's routes); tests of a local cache
or of the local artifact store say why they stay local.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import keel
import keel.data as kd
from keel.artifacts import ArtifactStore, canonical_json
from keel.artifacts.store import MANIFEST_FORMAT
from keel.config import Settings
from keel.data.client import NewVersion
from keel.data.snapshot import DataContext
from keel.errors import InvalidInput


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _crafted_version(store: ArtifactStore, entries: list[tuple[str, bytes]]) -> str:
    """Store a manifest the way ``add`` does, holding the given paths, and record it as a version.

    It goes through the client's own parts (on a server: its blob and data routes), as a
    hostile client could. Returns the manifest's digest; the version is ``crafted@1``.
    """
    rows = [[path, store.put_bytes(data).digest, len(data)] for path, data in entries]
    doc = {"format": MANIFEST_FORMAT, "entries": sorted(rows)}
    digest = store.put_bytes(canonical_json(doc)).digest
    DataContext().catalog.register_version(
        NewVersion("crafted", digest, "folder", len(rows), sum(r[2] for r in rows))
    )
    return digest


# -- checkout ---------------------------------------------------------------------------


@pytest.mark.parametrize("escape", ["../x", "sub/../../x"])
def test_checkout_refuses_a_manifest_entry_that_climbs_out_and_writes_nothing(
    any_env: Settings, tmp_path: Path, escape: str
):
    _crafted_version(keel.Client().artifacts, [("a.txt", b"fine"), (escape, b"escaped")])
    work = tmp_path / "work"
    target = work / "target"
    with pytest.raises(InvalidInput, match=r"manifest path .* has an empty, '\.' or '\.\.'"):
        kd.checkout("crafted@1", target)
    assert not work.exists() or _files(work) == []
    assert not (tmp_path / "x").exists()


def test_a_manifest_cached_before_paths_were_checked_is_checked_again(
    sqlite_env: Settings, tmp_path: Path
):
    # local: plants a file in the local manifest cache
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    digest = _crafted_version(store, [("../x", b"escaped")])
    # A verified local copy of the manifest, as an earlier read would have left it.
    cache = DataContext(sqlite_env).manifest_cache
    cache.mkdir(parents=True)
    (cache / digest).write_bytes(store.get_bytes(digest))
    with pytest.raises(InvalidInput, match=f"manifest {digest} is refused"):
        kd.checkout("crafted@1", tmp_path / "work" / "target")
    assert not (tmp_path / "work" / "x").exists()


def test_checkout_cli_refuses_a_target_subfolder_that_is_a_symlink_outside(
    tmp_path: Path, run_keel
):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "top.csv").write_text("x\n1\n")
    (raw / "sub" / "inner.csv").write_text("x\n2\n")
    assert run_keel("init", cwd=tmp_path).returncode == 0
    added = run_keel("data", "add", "raw", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)

    result = run_keel("data", "checkout", "raw@1", "target", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith("error: path 'sub/inner.csv' would be written outside")
    assert "nothing was written" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in target.iterdir()) == ["sub"]  # refused before the first file


def test_checkout_refuses_a_symlinked_subfolder_for_a_version_with_packed_files(
    any_env: Settings, tmp_path: Path
):
    # Small files come out of packs, large ones are placed one by one: both routes are confined.
    raw = tmp_path / "raw"
    (raw / "deep" / "sub").mkdir(parents=True)
    (raw / "deep" / "sub" / "small.bin").write_bytes(b"s" * 100)
    (raw / "deep" / "sub" / "large.bin").write_bytes(os.urandom(300_000))
    kd.add(raw)
    target, outside = tmp_path / "target", tmp_path / "outside"
    (target / "deep").mkdir(parents=True)
    outside.mkdir()
    (target / "deep" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match="would be written outside"):
        kd.checkout("raw@1", target)
    assert list(outside.iterdir()) == []


# -- pull ---------------------------------------------------------------------------------


def test_pull_refuses_a_remote_manifest_with_an_entry_that_climbs_out(
    sqlite_env: Settings, tmp_path: Path, artifacts_url: str, s3_endpoint: str | None
):
    # local: pull fills this machine's own artifact store from a data remote
    keel.init(home=sqlite_env.home, s3_endpoint_url=s3_endpoint)
    remote = ArtifactStore.from_url(artifacts_url, s3_endpoint)
    rows = [[p, remote.put_bytes(d).digest, len(d)] for p, d in [("../x", b"escaped")]]
    digest = remote.put_bytes(canonical_json({"format": MANIFEST_FORMAT, "entries": rows})).digest
    local = ArtifactStore.from_url(sqlite_env.artifacts_url)

    with pytest.raises(InvalidInput, match=f"manifest {digest} is refused: manifest path '../x'"):
        kd.pull([digest], remote=artifacts_url)

    assert not local.exists(digest)
    assert not local.exists(rows[0][1])
    assert not (DataContext().manifest_cache / digest).exists()


def test_pull_refuses_to_write_through_a_symlinked_folder_of_the_local_store(
    sqlite_env: Settings, tmp_path: Path
):
    # local: about the local store's own folder
    remote = tmp_path / "remote"
    kd.add(_tree(tmp_path / "raw"))
    kd.push(remote=str(remote))
    # Another machine whose store's objects folder is a symlink to somewhere else.
    home = tmp_path / "b" / ".keel"
    settings = keel.init(home=home, store_url=sqlite_env.store_url)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = Path(settings.artifacts_url)
    root.mkdir(parents=True)
    (root / "objects").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidInput, match=r"object 'objects/.*' would be written outside"):
        kd.pull(["raw@1"], remote=str(remote))
    assert _files(outside) == []


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "small.txt").write_bytes(b"small")
    return root
