"""Dataset versions: add, status, diff, checkout, tables, run inputs.

Tests of the public API run on the three modes (``any_env``: SQLite, PostgreSQL, and
through a real server on PostgreSQL and loopback S3). Those that stay local say why:
they tamper with or inspect the local object files, read the audit chain from the
store, or are about the local state cache (status).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
import keel.data as kd
from _support.cli import keel_environ
from _support.storage import make_tree, settle
from keel.artifacts import ArtifactStore
from keel.data.client import NewVersion
from keel.data.packs import read_pack_index
from keel.data.profiling import Profile
from keel.data.snapshot import DataContext
from keel.errors import Conflict, IntegrityError, InvalidInput, NotFound


def test_add_folder_records_a_numbered_version_with_its_manifest(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha", "sub/b.bin": os.urandom(5000)})
    v1 = kd.add(tree)
    assert (v1.name, v1.version, v1.kind, v1.files, v1.bytes) == ("raw", 1, "folder", 2, 5005)
    assert v1.uri == "datasets:/raw@1"
    store = keel.Client().artifacts  # the server's store in the server mode
    entries = {e.path: e for e in store.read_manifest(v1.digest)}
    assert sorted(entries) == ["a.txt", "sub/b.bin"]
    # Small files are packed: the version's pack index says where their bytes are. (Bytes
    # the store already held loose, as a shared server may, are not packed again.)
    packs = read_pack_index(store, v1.packs_digest)
    assert entries["sub/b.bin"].digest in packs.entries  # fresh random bytes: packed
    assert set(packs.entries) <= {entries["a.txt"].digest, entries["sub/b.bin"].digest}
    assert entries["a.txt"].digest in packs.entries or store.exists(entries["a.txt"].digest)
    assert (keel.load_dataset(v1.uri) / "a.txt").read_bytes() == b"alpha"
    (tree / "a.txt").write_bytes(b"changed")
    v2 = kd.add(tree)
    assert v2.version == 2 and v2.digest != v1.digest
    assert [v.version for v in kd.list_versions("raw")] == [1, 2]
    assert kd.get("raw").version == 2 and kd.get("raw@1").digest == v1.digest
    assert kd.get(v1.digest).uri == "datasets:/raw@1"


def test_adding_unchanged_content_returns_the_latest_version(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha"})
    first = kd.add(tree, name="stable")
    again = kd.add(tree, name="stable")
    assert (again.version, again.digest) == (first.version, first.digest)
    assert [v.version for v in kd.list_versions("stable")] == [1]


def test_adding_a_version_is_audited_in_the_chain(keel_env, tmp_path: Path):
    # local: reads and verifies the audit chain straight from the store
    from keel.governance import audit
    from keel.store import get_store

    kd.add(make_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    entries = audit.list_entries(get_store(keel_env), object_type="dataset_version")
    assert [(e.action, e.object_id) for e in entries] == [("dataset_version.create", "raw@1")]
    assert audit.verify(get_store(keel_env)).ok


ADD_CONCURRENTLY = """
import sys, time
from pathlib import Path
import keel, keel.data
keel.init(home=sys.argv[1])  # the store or the server: from KEEL_* (keel_environ)
print("ready", flush=True)
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
print(keel.data.add(sys.argv[2], name="race").version, flush=True)
"""


@pytest.mark.slow
def test_concurrent_adds_get_consecutive_version_numbers(any_env, tmp_path: Path):
    folders = [make_tree(tmp_path / f"d{i}", {"x.txt": f"content {i}".encode()}) for i in range(6)]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ADD_CONCURRENTLY, str(any_env.home), str(f), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=keel_environ(any_env),
        )
        for f in folders
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    go.touch()
    numbers = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        numbers.append(int(out.strip()))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert len({v.digest for v in kd.list_versions("race")}) == 6


def test_status_lists_added_changed_and_removed_files(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"keep.txt": b"k", "edit.txt": b"e", "gone.txt": b"g"})
    kd.add(tree)
    (tree / "edit.txt").write_bytes(b"edited")
    (tree / "gone.txt").unlink()
    (tree / "new" / "n.txt").parent.mkdir()
    (tree / "new" / "n.txt").write_bytes(b"n")
    (report,) = kd.status(tree)
    assert not report.clean
    assert (report.diff.added, report.diff.changed, report.diff.removed) == (
        ["new/n.txt"],
        ["edit.txt"],
        ["gone.txt"],
    )
    assert (report.dataset, report.version) == ("raw", 1)


def test_status_of_an_unchanged_tree_hashes_nothing(sqlite_env, tmp_path: Path):
    # local: counts what the local state cache spares hashing; the catalog plays no part
    tree = make_tree(tmp_path / "raw", {f"f{i}.txt": f"{i}".encode() for i in range(50)})
    settle()
    kd.add(tree)
    (report,) = kd.status(tree)
    assert report.clean and report.hashed == 0
    (tree / "f7.txt").write_bytes(b"77")
    (report,) = kd.status(tree)
    assert report.diff.changed == ["f7.txt"] and report.hashed == 1


def test_status_rehashes_files_too_fresh_for_their_mtime_to_be_trusted(sqlite_env, tmp_path: Path):
    # local: about the local state cache and file mtimes; the catalog plays no part
    tree = make_tree(tmp_path / "raw", {"a.txt": b"aaaa"})
    kd.add(tree)  # a.txt was written a moment ago: hashed, but not remembered
    before = os.stat(tree / "a.txt")
    (tree / "a.txt").write_bytes(b"bbbb")  # same size …
    os.utime(tree / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))  # … same mtime
    (report,) = kd.status(tree)
    assert report.diff.changed == ["a.txt"]


def test_status_without_a_path_reports_every_tracked_path_below_the_working_dir(
    any_env, tmp_path: Path
):
    kd.add(make_tree(tmp_path / "one", {"a": b"1"}))
    kd.add(make_tree(tmp_path / "two", {"b": b"2"}))
    reports = kd.status()
    assert [Path(r.path).name for r in reports] == ["one", "two"]
    with pytest.raises(NotFound, match="no dataset is tracked at or under"):
        kd.status(tmp_path / "one" / "..." / "elsewhere")


def test_checkout_restores_exact_bytes_and_removes_extra_files(any_env, tmp_path: Path):
    payload = os.urandom(3 << 20)
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha", "deep/big.bin": payload})
    kd.add(tree)
    (tree / "a.txt").write_bytes(b"beta")
    (tree / "extra.txt").write_bytes(b"x")
    kd.add(tree)
    target = kd.checkout("raw@1", tmp_path / "restore")
    assert target.version == 1
    assert (tmp_path / "restore" / "a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "restore" / "deep" / "big.bin").read_bytes() == payload
    kd.checkout("raw@2", tmp_path / "restore")
    assert (tmp_path / "restore" / "extra.txt").read_bytes() == b"x"
    kd.checkout("raw@1", tmp_path / "restore")
    assert not (tmp_path / "restore" / "extra.txt").exists()
    assert kd.diff("raw@1", tmp_path / "restore").clean
    (report,) = kd.status(tmp_path / "restore")
    assert report.clean and report.version == 1


def test_checkout_refuses_to_overwrite_content_no_version_holds(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha"})
    kd.add(tree)
    (tree / "a.txt").write_bytes(b"unsaved work")
    with pytest.raises(
        Conflict,
        match=r"1 file\(s\) in .* \(first: a.txt\) hold content that is in no stored version",
    ):
        kd.checkout("raw@1", tree)
    assert (tree / "a.txt").read_bytes() == b"unsaved work"
    kd.checkout("raw@1", tree, force=True)
    assert (tree / "a.txt").read_bytes() == b"alpha"


def test_one_file_version_checks_out_into_a_folder_or_to_a_path(any_env, tmp_path: Path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    version = kd.add(tmp_path / "data.csv")
    assert (version.name, version.kind, version.files) == ("data.csv", "file", 1)
    (tmp_path / "out").mkdir()
    kd.checkout("data.csv@1", tmp_path / "out")
    assert (tmp_path / "out" / "data.csv").read_text() == "a,b\n1,2\n"
    kd.checkout("data.csv", tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_text() == "a,b\n1,2\n"


BIG = 300_000  # above the packing threshold: stored as an object of its own


def test_checkout_detects_a_corrupt_object_and_leaves_the_target_alone(sqlite_env, tmp_path: Path):
    # local: overwrites an object file in the local artifact folder
    version = kd.add(make_tree(tmp_path / "raw", {"a.bin": b"a" * BIG}))
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    (entry,) = store.read_manifest(version.digest)
    obj = Path(sqlite_env.artifacts_url) / ArtifactStore.key(entry.digest)
    obj.chmod(0o644)
    obj.write_bytes(b"A" * BIG)
    with pytest.raises(IntegrityError, match=f"object {entry.digest} .* is corrupt"):
        kd.checkout("raw@1", tmp_path / "restore")
    assert not (tmp_path / "restore" / "a.bin").exists()


def test_checkout_detects_a_corrupt_pack(sqlite_env, tmp_path: Path):
    # local: overwrites a pack file in the local artifact folder
    version = kd.add(make_tree(tmp_path / "raw", {"a.txt": b"alpha", "b.txt": b"beta"}))
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    (pack,) = read_pack_index(store, version.packs_digest).packs
    obj = Path(sqlite_env.artifacts_url) / ArtifactStore.key(pack)
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes().replace(b"beta", b"BETA"))
    with pytest.raises(IntegrityError, match=f"object {pack} .* is corrupt"):
        kd.checkout("raw@1", tmp_path / "restore")


def test_checkout_names_the_pull_when_objects_are_missing(sqlite_env, tmp_path: Path):
    # local: deletes an object file from the local artifact folder
    version = kd.add(make_tree(tmp_path / "raw", {"a.bin": b"a" * BIG}))
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    (entry,) = store.read_manifest(version.digest)
    (Path(sqlite_env.artifacts_url) / ArtifactStore.key(entry.digest)).unlink()
    with pytest.raises(
        NotFound, match=r"1 object\(s\) of this version .* fetch them with `keel data pull`"
    ):
        kd.checkout("raw@1", tmp_path / "restore")


def test_hardlinked_snapshots_share_bytes_and_are_write_protected(sqlite_env, tmp_path: Path):
    # local: hard links exist only between the tree and a local artifact folder
    tree = make_tree(tmp_path / "raw", {"big.bin": os.urandom(2 << 20)})
    version = kd.add(tree, link="hardlink,copy")
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    (entry,) = store.read_manifest(version.digest)
    obj = Path(sqlite_env.artifacts_url) / ArtifactStore.key(entry.digest)
    assert os.stat(obj).st_ino == os.stat(tree / "big.bin").st_ino
    assert stat.S_IMODE(os.stat(tree / "big.bin").st_mode) & 0o222 == 0
    kd.checkout("raw@1", tmp_path / "linked", link="hardlink")
    assert os.stat(tmp_path / "linked" / "big.bin").st_ino == os.stat(obj).st_ino


def test_copied_snapshots_stay_independent_of_later_edits(sqlite_env, tmp_path: Path):
    # local: the link setting chooses how bytes enter a local artifact folder
    tree = make_tree(tmp_path / "raw", {"big.bin": b"x" * (2 << 20)})
    version = kd.add(tree, link="copy")
    with open(tree / "big.bin", "r+b") as f:  # an in-place edit
        f.write(b"y")
    kd.checkout(version.uri, tmp_path / "restore")
    assert (tmp_path / "restore" / "big.bin").read_bytes() == b"x" * (2 << 20)


def test_add_rejects_empty_folders_bad_names_and_bad_link_settings(any_env, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"nothing to add: .* holds no files"):
        kd.add(tmp_path / "empty")
    make_tree(tmp_path / "raw", {"a": b"1"})
    with pytest.raises(InvalidInput, match="dataset name must be"):
        kd.add(tmp_path / "raw", name="no spaces")
    with pytest.raises(
        InvalidInput, match="data_link must list one or more of reflink, hardlink, copy"
    ):
        kd.add(tmp_path / "raw", link="symlink")
    with pytest.raises(NotFound, match="no such file or folder"):
        kd.add(tmp_path / "missing")


def test_references_that_name_nothing_say_what_exists(any_env, tmp_path: Path):
    kd.add(make_tree(tmp_path / "raw", {"a": b"1"}))
    with pytest.raises(NotFound, match=r"dataset 'raw' has no version 4 \(latest is 1\)"):
        kd.get("raw@4")
    with pytest.raises(NotFound, match="no dataset named 'nope'"):
        kd.get("datasets:/nope")
    with pytest.raises(InvalidInput, match="expected datasets:/<name>@<version>"):
        kd.get("raw@x")


def test_diff_compares_versions_with_each_other_and_with_folders(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a": b"1", "b": b"2"})
    kd.add(tree)
    (tree / "b").write_bytes(b"22")
    (tree / "c").write_bytes(b"3")
    kd.add(tree)
    changes = kd.diff("raw@1", "raw@2")
    assert (changes.added, changes.changed, changes.removed) == (["c"], ["b"], [])
    assert kd.diff("raw@2", tree).clean


def test_add_and_checkout_through_an_s3_artifact_store(
    store_url, s3_bucket, s3_server, tmp_path: Path
):
    # local: a local client on an S3 artifact store (the server mode's store is S3 already)
    keel.init(
        home=tmp_path / ".keel",
        store_url=store_url,
        artifacts_url=f"{s3_bucket}/keel",
        s3_endpoint_url=s3_server,
    )
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha", "b/c.bin": os.urandom(2000)})
    version = kd.add(tree)
    kd.checkout(version.uri, tmp_path / "restore")
    assert kd.diff(tree, tmp_path / "restore").clean
    assert kd.add(tree).version == 1


def test_log_dataset_stores_parquet_with_schema_profile_and_records_the_run_input(
    any_env, tmp_path: Path
):
    frame = pd.DataFrame(
        {
            "age": np.arange(100, dtype="int64"),
            "score": np.linspace(0, 1, 100),
            "plan": ["a", "b", "b", "c"] * 25,
        }
    )
    frame.loc[3, "score"] = np.nan
    with keel.start_run() as run:
        version = keel.log_dataset(frame, name="churn")
        again = keel.log_dataset(frame, name="churn")
    assert (version.kind, version.num_rows, again.version) == ("table", 100, 1)
    assert (
        version.schema
        == [
            {"name": "age", "type": "int64"},
            {"name": "score", "type": "double"},
            {"name": "plan", "type": "large_string"},
        ]
        or version.schema[2]["type"] == "string"
    )
    stored = keel.Client().artifacts.get_json(version.profile_digest)
    profile = Profile.from_dict(stored)  # the profile monitoring compares traffic with
    assert profile.columns["age"].max == 99.0
    assert profile.columns["score"].missing == 1
    assert profile.columns["plan"].categories == {"b": 50, "a": 25, "c": 25}
    loaded = keel.load_dataset("datasets:/churn@1")
    pd.testing.assert_frame_equal(loaded, frame)
    assert [v.uri for v in kd.run_inputs(run.id)] == ["datasets:/churn@1"]
    assert kd.get_profile("churn@1") == stored


def test_load_dataset_inside_a_run_records_the_version_it_read(any_env, tmp_path: Path):
    keel.log_dataset(pd.DataFrame({"x": [1, 2]}), name="t")
    keel.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), name="t")
    with keel.start_run() as run:
        latest = keel.load_dataset("datasets:/t")
    assert len(latest) == 3
    assert [v.uri for v in kd.run_inputs(run.id)] == ["datasets:/t@2"]


def test_add_inside_a_run_records_the_version_as_an_input_of_that_run(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha"})
    with keel.start_run() as first:
        kd.add(tree)
    with keel.start_run() as second:
        again = kd.add(tree)  # unchanged content: no new number, but this run read it too
    (tree / "a.txt").write_bytes(b"beta")
    with keel.start_run() as third:
        kd.add(tree)
    assert again.version == 1
    assert [v.uri for v in kd.run_inputs(first.id)] == ["datasets:/raw@1"]
    assert [v.uri for v in kd.run_inputs(second.id)] == ["datasets:/raw@1"]
    assert [v.uri for v in kd.run_inputs(third.id)] == ["datasets:/raw@2"]


def test_run_inputs_list_each_version_once_by_name_then_version(any_env, tmp_path: Path):
    kd.add(make_tree(tmp_path / "b", {"x": b"1"}))
    (tmp_path / "b" / "x").write_bytes(b"2")
    kd.add(tmp_path / "b")
    keel.log_dataset(pd.DataFrame({"x": [1]}), name="a")
    with keel.start_run() as run:
        keel.load_dataset("datasets:/b@2")
        keel.load_dataset("datasets:/a")
        keel.load_dataset("datasets:/b@1")
        keel.load_dataset("datasets:/b@2")  # read twice: recorded once
    assert [v.uri for v in kd.run_inputs(run.id)] == [
        "datasets:/a@1",
        "datasets:/b@1",
        "datasets:/b@2",
    ]
    with keel.start_run() as idle:
        pass
    assert kd.run_inputs(idle.id) == []


def test_load_dataset_by_digest_records_the_version_it_names(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "raw", {"a.txt": b"alpha"})
    v1 = kd.add(tree)
    (tree / "a.txt").write_bytes(b"beta")
    kd.add(tree)
    with keel.start_run() as run:
        folder = keel.load_dataset(f"datasets:/{v1.digest}")
    assert (folder / "a.txt").read_bytes() == b"alpha"
    assert [(v.uri, v.digest) for v in kd.run_inputs(run.id)] == [(v1.uri, v1.digest)]


def test_reading_a_dataset_outside_a_run_records_no_input(any_env, tmp_path: Path):
    kd.add(make_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    keel.load_dataset("datasets:/raw@1")  # no active run: nothing to record it on
    with keel.start_run() as run:
        pass
    assert kd.run_inputs(run.id) == []
    assert keel.active_run() is None


def test_run_inputs_of_an_unknown_run_are_not_found_and_a_prefix_names_the_run(
    any_env, tmp_path: Path
):
    version = kd.add(make_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    with keel.start_run() as run:
        keel.load_dataset(version.uri)
    assert [v.uri for v in kd.run_inputs(run.id[:8])] == [version.uri]
    catalog = DataContext().catalog
    missing = "f" * 32
    with pytest.raises(NotFound, match=f"no run with id '{missing}'"):
        kd.run_inputs(missing)
    with pytest.raises(NotFound, match=f"no run with id '{missing}'"):
        catalog.record_input(missing, version.uri, "load_dataset")
    stray = NewVersion("raw", version.digest, "folder", 1, 5, run_id=missing, input_context="add")
    with pytest.raises(NotFound, match=f"no run with id '{missing}'"):
        catalog.register_version(stray)
    with pytest.raises(InvalidInput, match="too short"):
        kd.run_inputs("f")
    assert [v.version for v in kd.list_versions("raw")] == [1]


def test_load_dataset_of_files_gives_a_local_copy(any_env, tmp_path: Path):
    tree = make_tree(tmp_path / "imgs", {"1.png": b"png1", "sub/2.png": b"png2"})
    kd.add(tree)
    folder = keel.load_dataset("datasets:/imgs@1")
    assert (folder / "sub" / "2.png").read_bytes() == b"png2"
    (tmp_path / "one.csv").write_text("x\n1\n")
    kd.add(tmp_path / "one.csv", name="one")
    assert keel.load_dataset("datasets:/one").read_text() == "x\n1\n"


def test_log_dataset_rejects_what_is_not_a_table(any_env):
    with pytest.raises(
        InvalidInput, match="log_dataset takes a pandas DataFrame or a pyarrow Table, got list"
    ):
        keel.log_dataset([1, 2], name="x")


KILLED_ADD = """
import os, signal, sys
import keel, keel.data
keel.init(home=sys.argv[1])

def progress(done, total):
    if done >= int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, writes in flight

keel.data.add(sys.argv[2], progress=progress)
"""


@pytest.mark.slow
def test_an_add_killed_midway_leaves_only_whole_objects_and_can_be_redone(
    sqlite_env, tmp_path: Path
):
    # local: kill -9 of a writer mid-way into the local artifact folder
    tree = make_tree(
        tmp_path / "raw",
        {f"part/{i:03}.bin": os.urandom(BIG) for i in range(400)},  # each stored on its own
    )
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_ADD, str(sqlite_env.home), str(tree), "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert kd.list_datasets() == []  # no version was recorded
    store = ArtifactStore.from_url(sqlite_env.artifacts_url)
    stored = list(store.iter_digests())
    assert 0 < len(stored) < 400  # the add was under way
    for digest in stored:
        store.get_bytes(digest)  # raises IntegrityError for a partly written object
    version = kd.add(tree)
    kd.checkout(version.uri, tmp_path / "restored")
    assert kd.diff(tree, tmp_path / "restored").clean
