"""The local copy of a remote index table: a hostile listing cannot write outside the cache."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.artifacts.backends import LocalBackend
from keel.errors import InvalidInput
from keel.llm.rag.mirror import download, upload


class HostileStore(LocalBackend):
    """A real folder store whose listing also names a file that climbs out of the table."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        yield from super().keys(prefix)
        yield f"{prefix}/../../../escaped.txt"

    def open(self, key: str) -> io.BytesIO:
        if key.endswith("escaped.txt"):
            return io.BytesIO(b"written outside")
        with super().open(key) as handle:
            return io.BytesIO(handle.read())


def test_a_remote_path_that_climbs_out_is_refused_and_nothing_is_written(tmp_path: Path):
    table = tmp_path / "built" / "k.lance"
    (table / "_versions").mkdir(parents=True)
    (table / "data.lance").write_bytes(b"rows")
    (table / "_versions" / "1.manifest").write_bytes(b"manifest")
    store = HostileStore(tmp_path / "store")
    assert upload(store, "rag/k.lance", table) == 2

    cache = tmp_path / "home" / "cache" / "rag"
    with pytest.raises(InvalidInput, match=r"must be relative and stay inside the folder"):
        download(store, "rag/k.lance", cache / "k.lance")
    assert not (cache / "k.lance").exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not list(cache.glob(".*.part"))  # the staging folder is gone too


def test_a_copy_holds_every_file_of_the_table(tmp_path: Path):
    table = tmp_path / "built" / "k.lance"
    (table / "_versions").mkdir(parents=True)
    (table / "data.lance").write_bytes(b"rows")
    (table / "_versions" / "1.manifest").write_bytes(b"manifest")
    store = LocalBackend(tmp_path / "store")
    upload(store, "rag/k.lance", table)
    copy = download(store, "rag/k.lance", tmp_path / "cache" / "k.lance")
    assert (copy / "data.lance").read_bytes() == b"rows"
    assert (copy / "_versions" / "1.manifest").read_bytes() == b"manifest"
