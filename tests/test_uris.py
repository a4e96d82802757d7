"""Keel's URIs, parsed in one place."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.uris import DatasetURI, is_dataset_uri, parse_dataset_uri

DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("uri", "expected", "pinned"),
    [
        ("datasets:/churn@3", DatasetURI("churn", 3), True),
        ("datasets:/churn", DatasetURI("churn"), False),
        ("datasets:/churn@latest", DatasetURI("churn"), False),
        ("datasets:/churn-eval.v2@12", DatasetURI("churn-eval.v2", 12), True),
        (f"datasets:/{DIGEST}", DatasetURI(None, None, DIGEST), True),
    ],
)
def test_dataset_uris_parse_into_name_version_or_digest(uri, expected, pinned):
    parsed = parse_dataset_uri(uri)
    assert parsed == expected and parsed.pinned is pinned
    assert str(parsed) == uri.removesuffix("@latest")


@pytest.mark.parametrize(
    "uri", ["datasets:/churn@0", "datasets:/churn@x", "datasets:/", "datasets:/a/b@1"]
)
def test_malformed_dataset_uris_say_which_shapes_are_accepted(uri):
    with pytest.raises(
        InvalidInput, match=r"expected datasets:/<name>@<version>, datasets:/<name>"
    ):
        parse_dataset_uri(uri)


def test_only_the_datasets_scheme_is_a_dataset_uri():
    assert is_dataset_uri("datasets:/churn") and not is_dataset_uri("churn@3")
    assert not is_dataset_uri(3)
    with pytest.raises(InvalidInput, match="expected a dataset URI such as datasets:/churn@3"):
        parse_dataset_uri("models:/churn@champion")
