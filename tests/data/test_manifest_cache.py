"""The local copy of a version's manifest: status reads it without opening the store,
and a copy that is missing, torn or someone else's is never believed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from keel.data.snapshot import DataContext, add, status

if TYPE_CHECKING:
    from keel.config import Settings


@pytest.fixture
def raw(sqlite_env: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    for n in range(30):
        (folder / f"f{n:02}.csv").write_text(f"x\n{n}\n")
    return folder


def _copy(settings: Settings, digest: str) -> Path:
    return DataContext(settings).manifest_cache / digest


def test_add_leaves_a_copy_that_status_reads_when_the_store_cannot(sqlite_env: Settings, raw: Path):
    version = add(raw, "raw", settings=sqlite_env)
    copy = _copy(sqlite_env, version.digest)
    assert copy.is_file()
    (raw / "f03.csv").write_text("x\n333\n")

    # the store's own object gone: only the copy can answer
    DataContext(sqlite_env).object_path(version.digest).unlink()
    (report,) = status(raw, settings=sqlite_env)
    assert report.diff.changed == ["f03.csv"]


@pytest.mark.parametrize("damage", ["torn", "another manifest", "empty", "missing"])
def test_a_copy_that_is_not_the_manifest_is_read_from_the_store_again(
    sqlite_env: Settings, raw: Path, tmp_path: Path, damage: str
):
    version = add(raw, "raw", settings=sqlite_env)
    copy = _copy(sqlite_env, version.digest)
    good = copy.read_bytes()
    if damage == "torn":
        copy.write_bytes(good[: len(good) // 2])
    elif damage == "another manifest":
        other = tmp_path / "other"
        other.mkdir()
        (other / "f00.csv").write_text("x\n0\n")
        copy.write_bytes(
            _copy(sqlite_env, add(other, "other", settings=sqlite_env).digest).read_bytes()
        )
    elif damage == "empty":
        copy.write_bytes(b"")
    else:
        copy.unlink()
    (raw / "f07.csv").unlink()

    (report,) = status(raw, settings=sqlite_env)
    assert (report.diff.added, report.diff.changed, report.diff.removed) == ([], [], ["f07.csv"])
    assert copy.read_bytes() == good  # the store's bytes replaced what was there
