"""No artifact write leaves its folder: logged paths are checked, and every writer is confined.

Run on a local artifact folder and on a loopback S3 bucket where the store is involved.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import keel
from keel.artifacts import ArtifactStore, canonical_json
from keel.artifacts.store import MANIFEST_FORMAT
from keel.config import Settings
from keel.errors import InvalidInput
from keel.pipelines.materialize import Materialized, load


@pytest.fixture
def env(tmp_path: Path, artifacts_url: str, s3_endpoint: str | None) -> Settings:
    """Keel on a local artifact folder, then on a loopback S3 bucket."""
    return keel.init(
        home=tmp_path / ".keel", artifacts_url=artifacts_url, s3_endpoint_url=s3_endpoint
    )


@pytest.fixture
def local_env(tmp_path: Path) -> Settings:
    """Keel on a local artifact folder only (for checks that refuse before the store is used)."""
    return keel.init(home=tmp_path / ".keel", artifacts_url=str(tmp_path / "artifacts"))


def _store(settings: Settings) -> ArtifactStore:
    return ArtifactStore.from_url(settings.artifacts_url, settings.s3_endpoint_url)


@pytest.fixture
def store(env: Settings) -> ArtifactStore:
    return _store(env)


@pytest.fixture
def local_store(local_env: Settings) -> ArtifactStore:
    return _store(local_env)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _crafted_manifest(store: ArtifactStore, entries: list[tuple[str, bytes]]) -> str:
    """A folder manifest as the store writes one, but holding whatever paths it is given."""
    rows = [[path, store.put_bytes(data).digest, len(data)] for path, data in entries]
    doc = {"format": MANIFEST_FORMAT, "entries": sorted(rows)}
    return store.put_bytes(canonical_json(doc)).digest


# -- download ------------------------------------------------------------------------------


@pytest.mark.parametrize("whole_run", ["", "/"])
def test_downloading_the_whole_run_keeps_every_full_path_under_dst(
    env: Settings, tmp_path: Path, whole_run: str
):
    # Logged under the one-letter folder "a": cutting the first character of
    # "a/<unique>/top.txt" would make it the absolute "/<unique>/top.txt".
    unique = f"keel-{uuid.uuid4().hex}"
    src = tmp_path / "src"
    (src / unique / "c").mkdir(parents=True)
    (src / unique / "top.txt").write_bytes(b"top")
    (src / unique / "c" / "deep.txt").write_bytes(b"deep")
    with keel.start_run() as run:
        keel.log_artifacts(src, artifact_path="a/")  # a trailing slash names the same folder
        keel.log_dict({"k": 1}, "meta.json")
    dst = tmp_path / "dst"
    try:
        out = keel.Client().download_artifacts(run.id, whole_run, dst)
        assert out == dst
        assert _files(dst) == {
            f"a/{unique}/top.txt": b"top",
            f"a/{unique}/c/deep.txt": b"deep",
            "meta.json": b'{\n  "k": 1\n}',
        }
    finally:
        escaped = Path(dst.anchor) / unique
        assert not escaped.exists(), f"{escaped} was written outside dst"


def test_download_refuses_a_dst_whose_subfolder_is_a_symlink_outside(
    local_env: Settings, tmp_path: Path
):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "first.txt").write_bytes(b"1")
    (src / "sub" / "f.txt").write_bytes(b"2")
    with keel.start_run() as run:
        keel.log_artifacts(src)
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    dst.mkdir()
    outside.mkdir()
    (dst / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match=r"'sub/f.txt' would be written outside .*nothing was"):
        keel.Client().download_artifacts(run.id, "", dst)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in dst.iterdir()) == ["sub"]  # checked before the first write


def test_download_of_an_unsafe_artifact_path_argument_is_refused(
    local_env: Settings, tmp_path: Path
):
    with keel.start_run() as run:
        keel.log_dict({}, "x.json")
    with pytest.raises(
        InvalidInput,
        match=r"artifact path 'a/\.\./\.\.' must be relative and stay inside the folder: it has",
    ):
        keel.Client().download_artifacts(run.id, "a/../..", tmp_path / "dst")


# -- logging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact_path", "message"),
    [
        ("../up", "empty, '.' or '..' segment"),
        ("a/../../up", "empty, '.' or '..' segment"),
        ("a\\b", "contains a backslash"),
        ("C:/models", "is absolute"),
        ("pl\x07ots", "control character"),
        ("a//b", "empty, '.' or '..' segment"),
        ("x" * 256, "segment of 256 bytes; the limit is 255"),
        ("/".join(["y" * 210] * 5), "bytes long; the limit is 1024"),
    ],
)
def test_an_unsafe_artifact_path_is_refused_and_nothing_is_stored(
    local_env: Settings,
    local_store: ArtifactStore,
    tmp_path: Path,
    artifact_path: str,
    message: str,
):
    file = tmp_path / "model.bin"
    file.write_bytes(b"weights")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "f.txt").write_bytes(b"folder bytes")
    client = keel.Client()
    with keel.start_run() as run:
        with pytest.raises(InvalidInput, match=message):
            client.log_artifact(run.id, file, artifact_path)
        with pytest.raises(InvalidInput, match=message):
            client.log_artifacts(run.id, folder, artifact_path)
        with pytest.raises(InvalidInput, match=message):
            client.log_dict(run.id, {"a": 1}, f"{artifact_path}/d.json")
    assert client.list_artifacts(run.id) == []
    assert list(local_store.iter_digests()) == []


@pytest.mark.parametrize("artifact_path", ["/plots", "//x"])
def test_an_absolute_artifact_path_is_refused_not_made_relative(
    env: Settings, store: ArtifactStore, tmp_path: Path, artifact_path: str
):
    file = tmp_path / "roc.png"
    file.write_bytes(b"png")
    with keel.start_run() as run:
        with pytest.raises(InvalidInput, match="is absolute; give a folder relative to the run"):
            keel.log_artifact(file, artifact_path)
        with pytest.raises(InvalidInput, match="is absolute"):
            keel.log_artifacts(tmp_path, artifact_path)
    assert keel.Client().list_artifacts(run.id) == []
    assert list(store.iter_digests()) == []


def test_a_folder_holding_an_unsafe_file_name_is_refused_before_any_byte_is_stored(
    local_env: Settings, local_store: ArtifactStore, tmp_path: Path
):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "fine.txt").write_bytes(b"fine")
    (folder / "bad\\name.txt").write_bytes(b"bad")  # one file on Linux, two folders on Windows
    with (
        keel.start_run() as run,
        pytest.raises(
            InvalidInput, match=r"'bad\\\\name.txt' must be relative .* it contains a backslash"
        ),
    ):
        keel.log_artifacts(folder)
    with pytest.raises(InvalidInput, match="contains a backslash"):
        local_store.put_dir(folder)
    assert keel.Client().list_artifacts(run.id) == []
    assert list(local_store.iter_digests()) == []


# -- stored manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "/abs/x", "a\\..\\..\\x", "a\nb", "ok/../../x"])
def test_a_crafted_manifest_is_refused_on_read_and_writes_nothing(
    local_store: ArtifactStore, tmp_path: Path, bad: str
):
    _refuses_crafted_manifest(local_store, tmp_path, bad)


def test_a_crafted_manifest_is_refused_on_a_local_folder_and_on_s3(
    store: ArtifactStore, tmp_path: Path
):
    _refuses_crafted_manifest(store, tmp_path, "../x")


def _refuses_crafted_manifest(store: ArtifactStore, tmp_path: Path, bad: str) -> None:
    digest = _crafted_manifest(store, [("fine.txt", b"fine"), (bad, b"escaped")])
    with pytest.raises(InvalidInput, match=f"manifest {digest} is refused: manifest path"):
        store.read_manifest(digest)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InvalidInput, match="It was not written by Keel; nothing was written"):
        store.get_dir(digest, work / "dest" / "inner")
    assert _files(work) == {}


def test_get_dir_refuses_a_destination_subfolder_that_is_a_symlink_outside(
    local_store: ArtifactStore, tmp_path: Path
):
    digest = _crafted_manifest(local_store, [("a.txt", b"a"), ("sub/f.txt", b"f")])
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match=r"'sub/f.txt' would be written outside"):
        local_store.get_dir(digest, dest)
    assert list(outside.iterdir()) == []
    assert not (dest / "a.txt").exists()


# -- pipeline materialization ------------------------------------------------------------


def test_a_stored_model_output_with_an_unsafe_manifest_path_is_not_materialized(
    local_store: ArtifactStore, tmp_path: Path
):
    manifest = _crafted_manifest(
        local_store, [("keel-model.json", b"{}"), ("..\\..\\..\\evil.py", b"print('hi')")]
    )
    output = Materialized("model", "model", "0" * 64, manifest, 0)
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(InvalidInput, match="contains a backslash"):
        load(output, local_store, cache)
    assert list(cache.iterdir()) == []


# -- batch scoring output --------------------------------------------------------------


@pytest.mark.parametrize("route", ["symlinked folder", "subfolder"])
def test_batch_output_routed_into_the_input_folder_is_refused(
    local_env: Settings, tmp_path: Path, route: str
):
    pytest.importorskip("skops", reason="model packages for scikit-learn need skops")
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from keel.scoring import predict_file

    frame = pd.DataFrame({"x": [float(i) for i in range(20)]})
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    frame.to_parquet(inputs / "part-0.parquet", index=False)
    model = LinearRegression().fit(frame[["x"]], frame["x"] * 2)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=frame.head())
    if route == "symlinked folder":
        folder = tmp_path / "scores"
        folder.symlink_to(inputs, target_is_directory=True)
    else:
        folder = inputs / "scores"
        folder.mkdir()
    with pytest.raises(InvalidInput, match="would overwrite or land inside the input"):
        predict_file(info.uri, inputs, folder / "out.parquet")
    assert _files(inputs) == {"part-0.parquet": (inputs / "part-0.parquet").read_bytes()}
