"""``keel.validation``: the one check of names and of artifact and manifest paths, confined
joins, and the one translation of IO errors into Keel's."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from keel.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    StorageError,
    from_os_error,
)
from keel.validation import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    check_alias,
    check_name,
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


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["churn", "churn-v2.1", "Churn_2", "7day", "screening", "wine-api", "m" * 128]
)
def test_names_of_letters_digits_and_separators_up_to_128_are_accepted(name: str):
    assert check_name(name, "model name") == name


@pytest.mark.parametrize(
    "name", ["", "m" * 129, "-lead", ".hidden", "_x", "a b", "a/b", "a@b", "é", "a\nb", None, 3]
)
def test_every_other_name_gets_the_one_rule_naming_what_it_is(name: object):
    with pytest.raises(
        InvalidInput,
        match=r"^deployment name must be 1-128 letters, digits, '_', '-' or '\.', starting with "
        r"a letter or digit; got ",
    ):
        check_name(name, "deployment name")


def test_aliases_start_with_a_letter_and_latest_is_reserved():
    assert check_alias("champion") == "champion" and check_alias("shadow_2-b") == "shadow_2-b"
    for bad in ("latest", "1st", "a.b", "", "a" * 129, None):
        with pytest.raises(InvalidInput, match=r"^alias must start with a letter .*not 'latest'"):
            check_alias(bad)


def test_the_name_rule_is_the_same_for_models_datasets_deployments_and_policies():
    from keel.automation.policy import Policy
    from keel.data.catalog import check_dataset_name
    from keel.predictions import check_deployment
    from keel.uris import parse_model_ref

    long = "n" * 129
    for check, what in (
        (lambda name: parse_model_ref(f"{name}/1"), "model name"),
        (check_dataset_name, "dataset name"),
        (check_deployment, "deployment name"),
    ):
        with pytest.raises(InvalidInput, match=f"^{what} must be 1-128 letters"):
            check(long)
    with pytest.raises(InvalidInput, match=r"^policy model must be 1-128 letters"):
        Policy.from_dict(
            {"name": "p", "model": long, "deployment": "d", "retrain": {"pipeline": "m:f"}}
        )


# -- IO errors -----------------------------------------------------------------------------


class EndpointConnectionError(Exception):
    """Shaped like botocore's: not an OSError, named for what it is."""


class ReadTimeoutError(Exception):
    """Shaped like botocore's read timeout."""


class ClientError(Exception):
    """Shaped like botocore's catch-all: a refusal the store gave."""


@pytest.mark.parametrize(
    ("exc", "named", "error", "message"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), True, NotFound, r"^no object 'k'$"),
        (FileNotFoundError(errno.ENOENT, "No such file"), False, StorageError, r"^object 'k': "),
        (PermissionError(errno.EACCES, "Denied"), True, StorageError, "^access denied to object"),
        (IsADirectoryError(errno.EISDIR, "Is a dir"), True, StorageError, r"^object 'k': .*Is a"),
        (NotADirectoryError(errno.ENOTDIR, "Not a dir"), True, StorageError, "Not a dir"),
        (OSError(errno.ENOSPC, "No space left"), True, StorageError, "^no space left for object"),
        (OSError(errno.EDQUOT, "Quota"), True, StorageError, "free space or raise the quota"),
        (OSError(errno.EIO, "I/O error"), True, StorageError, r"^object 'k': .*I/O error"),
        (TimeoutError("timed out"), True, BackendUnavailable, "^cannot reach object 'k'"),
        (ConnectionRefusedError(111, "refused"), True, BackendUnavailable, "check the endpoint"),
        (EndpointConnectionError("no endpoint"), True, BackendUnavailable, "^cannot reach"),
        (ReadTimeoutError("read timeout"), True, BackendUnavailable, "^cannot reach"),
        (ClientError("SlowDown"), True, StorageError, "^object 'k': SlowDown"),
    ],
)
def test_io_errors_become_the_keel_error_that_says_whose_fault_it_is(exc, named, error, message):
    translated = from_os_error(exc, "object 'k'", named=named)
    assert type(translated) is error
    assert re.search(message, str(translated))


def test_a_keel_error_passes_through_the_translation_unchanged():
    original = Conflict("taken")
    assert from_os_error(original, "x") is original
