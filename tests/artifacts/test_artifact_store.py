"""The content-addressed artifact store over a local folder and a loopback S3 bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import blake3
import pytest

from keel.artifacts import ArtifactStore, LocalBackend, ManifestEntry, hash_bytes
from keel.errors import IntegrityError, InvalidInput, KeelError, NotFound


@pytest.fixture
def store(artifacts_url: str, s3_endpoint: str | None) -> ArtifactStore:
    return ArtifactStore.from_url(artifacts_url, s3_endpoint)


def _b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _overwrite_raw(
    store: ArtifactStore, artifacts_url: str, s3_endpoint: str | None, digest: str, data: bytes
) -> None:
    """Replace an object's bytes behind the store's back: on disk, or with boto3."""
    key = store.key(digest)
    if s3_endpoint is None:
        path = Path(artifacts_url) / key
        assert path.is_file()
        path.write_bytes(data)
        return
    import boto3

    bucket, _, prefix = artifacts_url[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.head_object(Bucket=bucket, Key=f"{prefix}/{key}")  # the object is where we think
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


# -- round trips -------------------------------------------------------------------------


def test_put_bytes_round_trip_digest_is_blake3(store: ArtifactStore) -> None:
    data = os.urandom(10_000)
    blob = store.put_bytes(data)
    assert blob.digest == _b3(data) == hash_bytes(data)
    assert blob.size == len(data)
    assert store.exists(blob.digest)
    assert store.get_bytes(blob.digest) == data
    # Objects live under objects/<first two hex digits>/<the other 62>.
    assert store.key(blob.digest) == f"objects/{blob.digest[:2]}/{blob.digest[2:]}"
    assert store.backend.exists(f"objects/{blob.digest[:2]}/{blob.digest[2:]}")


def test_put_bytes_empty_object(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"")
    assert (blob.digest, blob.size) == (_b3(b""), 0)
    assert store.get_bytes(blob.digest) == b""


@pytest.mark.parametrize("size", [0, 1, 100_000, 5 * 1024 * 1024 + 7])
def test_put_file_round_trip_digest_is_blake3(
    store: ArtifactStore, tmp_path: Path, size: int
) -> None:
    # 5 MiB is above the size where files are hashed through a memory map on several threads.
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    blob = store.put_file(src)
    assert blob.digest == _b3(data)
    assert blob.size == size
    dest = tmp_path / "out" / "nested" / "copy.bin"
    assert store.get_file(blob.digest, dest) == dest
    assert dest.read_bytes() == data
    assert store.get_bytes(blob.digest) == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no .part left


def test_get_file_replaces_existing_destination(store: ArtifactStore, tmp_path: Path) -> None:
    blob = store.put_bytes(b"new contents")
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"old contents that are longer than the new ones")
    store.get_file(blob.digest, dest)
    assert dest.read_bytes() == b"new contents"


def test_put_json_is_canonical(store: ArtifactStore) -> None:
    first = store.put_json({"b": 1, "a": [1, 2.5, None], "é": "ü"})
    second = store.put_json({"é": "ü", "a": [1, 2.5, None], "b": 1})
    assert first == second
    expected = '{"a":[1,2.5,null],"b":1,"é":"ü"}'.encode()
    assert store.get_bytes(first.digest) == expected
    assert first.digest == _b3(expected)
    assert store.get_json(first.digest) == {"a": [1, 2.5, None], "b": 1, "é": "ü"}


def test_put_file_missing_or_folder_is_rejected(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        store.put_file(tmp_path / "absent.bin")
    with pytest.raises(InvalidInput, match="use put_dir"):
        store.put_file(tmp_path)
    assert list(store.iter_digests()) == []


# -- deduplication ------------------------------------------------------------------------


def test_same_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"the same bytes, over and over\n" * 100
    src = tmp_path / "copy.txt"
    src.write_bytes(data)
    blobs = {store.put_bytes(data), store.put_bytes(data), store.put_file(src)}
    assert len(blobs) == 1
    assert list(store.iter_digests()) == [_b3(data)]
    assert list(store.backend.keys("objects")) == [store.key(_b3(data))]

    store.put_json({"k": 1})
    store.put_json({"k": 1})
    assert sorted(store.iter_digests()) == sorted([_b3(data), _b3(b'{"k":1}')])


# -- folders --------------------------------------------------------------------------------


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "README.md": b"# model\n",
        "weights/layer-1.bin": os.urandom(70_000),
        "weights/layer-2.bin": os.urandom(70_000),
        "weights/copy-of-readme.md": b"# model\n",  # duplicate content
        "config/params.json": b'{"lr": 0.001}',
        "config/empty.txt": b"",
        "a-b.txt": b"dash",
        "a/z.txt": b"slash",
        "deep/er/still/file with spaces.txt": b"spaces",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-folder").mkdir()
    return files


def test_put_dir_manifest_is_sorted_with_correct_entries(
    store: ArtifactStore, tmp_path: Path
) -> None:
    files = _make_tree(tmp_path / "model")
    blob, entries = store.put_dir(tmp_path / "model")
    expected = [ManifestEntry(p, _b3(files[p]), len(files[p])) for p in sorted(files)]
    assert entries == expected
    assert [e.path for e in entries][:3] == ["README.md", "a-b.txt", "a/z.txt"]
    assert store.read_manifest(blob.digest) == expected
    doc = json.loads(store.get_bytes(blob.digest))
    assert doc == {
        "format": "keel.manifest/v1",
        "entries": [[e.path, e.digest, e.size] for e in expected],
    }
    # Eight distinct contents plus the manifest itself.
    assert len(set(files.values())) == 8
    assert sorted(store.iter_digests()) == sorted({*(e.digest for e in expected), blob.digest})


def test_put_dir_twice_gives_same_manifest_and_no_new_objects(
    store: ArtifactStore, tmp_path: Path
) -> None:
    _make_tree(tmp_path / "model")
    first, _ = store.put_dir(tmp_path / "model")
    count = len(list(store.iter_digests()))
    second, _ = store.put_dir(tmp_path / "model", workers=1)
    assert first == second
    assert len(list(store.iter_digests())) == count


def test_get_dir_recreates_tree_byte_identically(store: ArtifactStore, tmp_path: Path) -> None:
    files = _make_tree(tmp_path / "model")
    blob, _ = store.put_dir(tmp_path / "model")
    dest = tmp_path / "restored"
    assert store.get_dir(blob.digest, dest) == dest
    assert _tree(dest) == files
    assert _tree(dest) == _tree(tmp_path / "model")
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]


def test_put_dir_of_empty_folder(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    blob, entries = store.put_dir(tmp_path / "empty")
    assert entries == []
    assert store.read_manifest(blob.digest) == []
    store.get_dir(blob.digest, tmp_path / "out")
    assert (tmp_path / "out").is_dir()
    assert list((tmp_path / "out").iterdir()) == []


def test_put_dir_of_a_file_is_invalid_input(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InvalidInput, match="expected a folder"):
        store.put_dir(tmp_path / "f.txt")


# -- integrity ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["backend", "raw"])
def test_corrupted_object_raises_integrity_error_on_get_bytes(
    store: ArtifactStore, artifacts_url: str, s3_endpoint: str | None, how: str
) -> None:
    data = b"precious model weights " * 1000
    blob = store.put_bytes(data)
    tampered = bytearray(data)
    tampered[500] ^= 0x01  # one bit, same length
    if how == "backend":
        store.backend.put_bytes(store.key(blob.digest), bytes(tampered))
    else:
        _overwrite_raw(store, artifacts_url, s3_endpoint, blob.digest, bytes(tampered))
    with pytest.raises(IntegrityError, match=f"object {blob.digest} .* is corrupt"):
        store.get_bytes(blob.digest)
    with pytest.raises(IntegrityError):
        store.get_json(blob.digest)


@pytest.mark.parametrize("how", ["backend", "raw"])
def test_corrupted_object_raises_on_get_file_and_leaves_no_partial_file(
    store: ArtifactStore,
    artifacts_url: str,
    s3_endpoint: str | None,
    tmp_path: Path,
    how: str,
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 1)  # several read chunks
    blob = store.put_bytes(data)
    bad = data[:-1] + bytes([data[-1] ^ 0xFF])
    if how == "backend":
        store.backend.put_bytes(store.key(blob.digest), bad)
    else:
        _overwrite_raw(store, artifacts_url, s3_endpoint, blob.digest, bad)

    out = tmp_path / "out"
    dest = out / "weights.bin"
    with pytest.raises(IntegrityError, match="is corrupt"):
        store.get_file(blob.digest, dest)
    assert not dest.exists()
    assert list(out.iterdir()) == []  # no temporary file either

    # An existing destination keeps its old bytes.
    dest.write_bytes(b"previous version")
    with pytest.raises(IntegrityError):
        store.get_file(blob.digest, dest)
    assert dest.read_bytes() == b"previous version"
    assert [p.name for p in out.iterdir()] == ["weights.bin"]


def test_corrupted_member_fails_get_dir(store: ArtifactStore, tmp_path: Path) -> None:
    files = _make_tree(tmp_path / "model")
    blob, entries = store.put_dir(tmp_path / "model")
    victim = next(e for e in entries if e.path == "weights/layer-2.bin")
    store.backend.put_bytes(store.key(victim.digest), b"garbage")
    dest = tmp_path / "restored"
    with pytest.raises(IntegrityError):
        store.get_dir(blob.digest, dest)
    assert not (dest / "weights" / "layer-2.bin").exists()
    assert all(data == files[rel] for rel, data in _tree(dest).items())  # nothing half-written


def test_put_after_corruption_repairs_the_object(store: ArtifactStore) -> None:
    # The IntegrityError message says to "re-log the artifact"; that has to work.
    data = b"bytes that get damaged at rest" * 50
    blob = store.put_bytes(data)
    store.backend.put_bytes(store.key(blob.digest), b"damaged")
    with pytest.raises(IntegrityError, match="re-log the artifact"):
        store.get_bytes(blob.digest)
    assert store.put_bytes(data) == blob
    assert store.get_bytes(blob.digest) == data


# -- bad digests, unknown objects, unsafe manifests --------------------------------------


def test_unknown_digest_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    missing = _b3(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(NotFound):
        store.get_bytes(missing)
    with pytest.raises(NotFound):
        store.read_manifest(missing)
    dest = tmp_path / "out" / "x.bin"
    with pytest.raises(NotFound):
        store.get_file(missing, dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(NotFound):
        store.get_dir(missing, tmp_path / "dir")


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "abc",
        "0" * 63,
        "0" * 65,
        "A" * 64,  # hex, but not lowercase
        "g" * 64,
        "../" + "0" * 61,
        "0" * 2 + "/" + "0" * 61,
    ],
)
def test_malformed_digest_is_invalid_input(
    store: ArtifactStore, tmp_path: Path, digest: str
) -> None:
    for call in (
        lambda: store.get_bytes(digest),
        lambda: store.exists(digest),
        lambda: store.get_file(digest, tmp_path / "out.bin"),
        lambda: store.read_manifest(digest),
        lambda: store.key(digest),
    ):
        with pytest.raises(InvalidInput, match="64-character lowercase hex BLAKE3 digest"):
            call()
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("path", ["../evil.txt", "a/../../evil.txt", "/etc/evil.txt", ""])
def test_manifest_path_escaping_the_folder_is_invalid_input(
    store: ArtifactStore, path: str
) -> None:
    digest = store.put_bytes(b"payload").digest
    with pytest.raises(InvalidInput, match="must be relative and stay inside the folder"):
        store.put_manifest([ManifestEntry("ok.txt", digest, 7), ManifestEntry(path, digest, 7)])
    # Only the payload was stored: no manifest.
    assert list(store.iter_digests()) == [digest]


@pytest.mark.parametrize(
    "path", ["../evil.txt", "sub/../../evil.txt", "/nonexistent-keel-root/evil.txt"]
)
def test_get_dir_refuses_hand_made_manifest_escaping_dest(
    store: ArtifactStore, tmp_path: Path, path: str
) -> None:
    payload = store.put_bytes(b"payload")
    manifest = store.put_json(
        {"format": "keel.manifest/v1", "entries": [[path, payload.digest, payload.size]]}
    )
    dest = tmp_path / "a" / "dest"
    with pytest.raises(InvalidInput, match="must be relative and stay inside the folder"):
        store.get_dir(manifest.digest, dest)
    assert not (tmp_path / "a" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / path).exists()


def test_read_manifest_of_plain_object_is_invalid_input(store: ArtifactStore) -> None:
    digest = store.put_json({"format": "something else", "entries": []}).digest
    with pytest.raises(InvalidInput, match="is not a Keel folder manifest"):
        store.read_manifest(digest)
    digest = store.put_bytes(b"[1, 2, 3]").digest
    with pytest.raises(InvalidInput, match="is not a Keel folder manifest"):
        store.read_manifest(digest)


# -- crash safety of the local backend ------------------------------------------------------

_CRASH_SIZE = 200 * 1024 * 1024
_CHILD = """
import sys
from keel.artifacts import ArtifactStore

data = bytes(range(256)) * (int(sys.argv[2]) // 256)
ArtifactStore.from_url(sys.argv[1]).put_bytes(data)
print("finished", flush=True)
"""


def _crash_data() -> bytes:
    return bytes(range(256)) * (_CRASH_SIZE // 256)


def _partial_temp_file(tmp_dir: Path) -> Path | None:
    try:
        for part in tmp_dir.iterdir():
            size = part.stat().st_size
            if 0 < size < _CRASH_SIZE:
                return part
    except FileNotFoundError:
        pass
    return None


def test_local_put_killed_midway_leaves_no_object(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), str(_CRASH_SIZE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        part = None
        while part is None and child.poll() is None and time.monotonic() < deadline:
            part = _partial_temp_file(root / "tmp")
        if part is None:
            pytest.fail("the child finished or stalled before it could be killed mid-write")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stdout = child.stdout.read() if child.stdout else b""
    assert child.returncode == -signal.SIGKILL
    assert b"finished" not in stdout

    store = ArtifactStore.from_url(str(root))
    digest = hash_bytes(_crash_data())
    assert list(store.iter_digests()) == []
    assert not store.exists(digest)
    assert not (root / store.key(digest)).exists()
    leftovers = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert leftovers, "the kill came after the write, so the test proved nothing"
    assert all(p.startswith("tmp/") for p in leftovers), leftovers

    # The same data can be stored afterwards, completely.
    blob = store.put_bytes(_crash_data())
    assert blob.digest == digest
    assert blob.size == _CRASH_SIZE
    assert list(store.iter_digests()) == [digest]
    assert store.get_bytes(digest) == _crash_data()


def test_local_backend_put_is_atomic_rename_from_tmp(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "root")
    backend.put_bytes("objects/ab/cd", b"x")
    assert (tmp_path / "root" / "objects" / "ab" / "cd").read_bytes() == b"x"
    assert list((tmp_path / "root" / "tmp").iterdir()) == []  # temp file renamed away
    assert list(backend.keys()) == ["objects/ab/cd"]


# -- S3: a bucket that does not exist -------------------------------------------------------


def test_s3_missing_bucket_is_a_clear_keel_error(
    s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"keel-missing-{uuid.uuid4().hex[:10]}"
    store = ArtifactStore.from_url(f"s3://{bucket}/keel", s3_server)
    with pytest.raises(KeelError) as caught:
        store.put_bytes(b"data for a bucket that is not there")
    message = str(caught.value)
    assert "botocore" not in type(caught.value).__module__
    assert bucket in message
    # It is the bucket that is missing, not the object being written; say so.
    assert "bucket" in message.replace(bucket, "").lower(), message
