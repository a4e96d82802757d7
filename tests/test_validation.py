"""``keel.validation``: the one check of artifact and manifest paths, and confined joins."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import InvalidInput
from keel.validation import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    check_relative_path,
    safe_join,
    safe_joins,
)


@pytest.mark.parametrize(
    "path",
    [
        "model.pkl",
        "plots/roc.png",
        "a/b/c/d.txt",
        ".hidden/file",
        "..data",  # a name that starts with dots is not a '..' segment
        "a..b/c",
        "données/été.csv",
        "with space/x y.txt",
        "x" * MAX_SEGMENT_BYTES,
        "/".join(["y" * 200] * 5),  # 1,004 bytes
    ],
)
def test_relative_posix_paths_within_the_limits_are_accepted(path: str):
    assert check_relative_path(path) == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "it is empty"),
        (None, "must be a string like 'plots/roc.png', got None"),
        (b"a", "must be a string"),
        ("/etc/passwd", "is absolute"),
        ("C:/Windows/x", "is absolute"),
        ("c:x", "is absolute"),
        ("a\\b", "contains a backslash"),
        ("..\\..\\x", "contains a backslash"),
        ("../x", "empty, '.' or '..' segment"),
        ("a/../../x", "empty, '.' or '..' segment"),
        ("a/..", "empty, '.' or '..' segment"),
        ("./a", "empty, '.' or '..' segment"),
        ("a//b", "empty, '.' or '..' segment"),
        ("a/", "empty, '.' or '..' segment"),
        ("a\nb", "control character '\\\\n'"),
        ("a\x00b", "control character"),
        ("a\x7fb", "control character"),
        ("a\udcffb", "not valid UTF-8"),
        ("x" * (MAX_SEGMENT_BYTES + 1), "segment of 256 bytes; the limit is 255"),
        ("é" * 128, "segment of 256 bytes"),  # 128 characters, 256 bytes
        ("/".join(["y" * 200] * 6), f"is 1205 bytes long; the limit is {MAX_PATH_BYTES}"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(path: object, message: str):
    with pytest.raises(InvalidInput, match=message):
        check_relative_path(path, "artifact path")


def test_the_message_names_what_the_path_is():
    with pytest.raises(
        InvalidInput,
        match=r"^manifest path '\.\./x' must be relative and stay inside the folder: it has",
    ):
        check_relative_path("../x", "manifest path")


def test_safe_join_lands_under_the_resolved_destination(tmp_path: Path):
    dest = tmp_path / "dest"
    assert safe_join(dest, "a/b.txt") == dest.resolve() / "a" / "b.txt"
    assert not dest.exists()  # checking creates nothing


def test_safe_join_refuses_a_symlinked_folder_that_leads_outside(tmp_path: Path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match=r"'sub/f.txt' would be written outside .*dest"):
        safe_join(dest, "sub/f.txt")
    with pytest.raises(InvalidInput, match="would be written outside"):
        safe_join(dest, "sub/deeper/f.txt")


def test_safe_join_allows_a_symlinked_folder_that_stays_inside(tmp_path: Path):
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    (dest / "alias").symlink_to(dest / "real", target_is_directory=True)
    assert safe_join(dest, "alias/f.txt") == dest / "alias" / "f.txt"


def test_safe_join_follows_a_symlinked_destination_itself(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert safe_join(tmp_path / "link", "f.txt") == real / "f.txt"


def test_safe_joins_checks_every_path_before_returning(tmp_path: Path):
    with pytest.raises(InvalidInput, match=r"'\.\./x'"):
        safe_joins(tmp_path, ["a.txt", "b/c.txt", "../x"])
