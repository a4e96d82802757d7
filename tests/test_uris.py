"""Keel's URIs, parsed in one place: every form, and every malformed one with its message."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.uris import (
    DatasetURI,
    FeatureURI,
    ModelURI,
    PromptURI,
    RagURI,
    RunURI,
    is_dataset_uri,
    parse_dataset_ref,
    parse_dataset_uri,
    parse_model_ref,
    parse_model_uri,
    parse_rag_uri,
    parse_run_uri,
    parse_uri,
    scheme_of,
)

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


# -- the one resolver: every form, and every malformed form with its message ---------------


@pytest.mark.parametrize(
    ("uri", "expected", "canonical"),
    [
        ("runs:/abc123", RunURI("abc123"), None),
        ("runs:/abc123/model", RunURI("abc123", "model"), None),
        ("runs:/abc123/models/best", RunURI("abc123", "models/best"), None),
        ("runs:/abc123/model/", RunURI("abc123", "model"), "runs:/abc123/model"),
        ("models:/churn/3", ModelURI("churn", 3), None),
        ("models:/churn/latest", ModelURI("churn"), None),
        ("models:/churn@champion", ModelURI("churn", alias="champion"), None),
        ("models:/churn-v2.1@shadow_2", ModelURI("churn-v2.1", alias="shadow_2"), None),
        ("datasets:/churn@3", DatasetURI("churn", 3), None),
        ("datasets:/churn", DatasetURI("churn"), None),
        ("datasets:/churn@latest", DatasetURI("churn"), "datasets:/churn"),
        (f"datasets:/{DIGEST}", DatasetURI(None, None, DIGEST), None),
        ("prompts:/summarize/4", PromptURI("summarize", 4), None),
        ("prompts:/summarize@prod", PromptURI("summarize", alias="prod"), None),
        ("features:/churn_features", FeatureURI("churn_features"), None),
        ("features:/churn_features@2", FeatureURI("churn_features", 2), None),
        ("rag:/kb/3", RagURI("kb", 3), None),
        ("rag:/kb@production", RagURI("kb", alias="production"), None),
    ],
)
def test_parse_uri_dispatches_on_the_scheme_and_prints_back(uri, expected, canonical):
    parsed = parse_uri(uri)
    assert parsed == expected and type(parsed) is type(expected)
    assert str(parsed) == (canonical or uri)
    assert parse_uri(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("churn@champion", r"expected a URI starting with runs:/, models:/, datasets:/, "),
        ("s3://bucket/model", "expected a URI starting with"),
        ("model:/churn/3", "expected a URI starting with"),
        ("runs:/", r"expected runs:/<run_id>\[/<path>\], got 'runs:/'"),
        ("models:/churn", r"expected models:/<name>/<version>, models:/<name>/latest or "),
        ("models:/churn/0", r"expected models:/<name>/<version>"),
        ("models:/churn/x", r"expected models:/<name>/<version>"),
        ("models:/churn/٣", r"expected models:/<name>/<version>"),  # a non-ASCII digit
        ("models:/", r"expected models:/<name>/<version>"),
        ("models:/bad name/3", "model name must be 1-128 letters, digits"),
        ("models:/churn@", "alias must start with a letter"),
        ("models:/churn@1st", "alias must start with a letter"),
        ("models:/churn@latest", r"\(up to 128, and not 'latest'\)"),
        ("models:/@champion", "model name must be"),
        ("datasets:/", r"expected datasets:/<name>@<version>, datasets:/<name>\[@latest\]"),
        ("datasets:/churn@0", r"expected datasets:/<name>@<version>"),
        ("datasets:/churn@x", r"expected datasets:/<name>@<version>"),
        ("datasets:/a/b@1", r"expected datasets:/<name>@<version>"),
        ("datasets:/bad name@1", "dataset name must be 1-128"),
        ("prompts:/summarize", r"expected prompts:/<name>/<version> or prompts:/<name>@<alias>"),
        ("prompts:/summarize/0", r"expected prompts:/<name>/<version>"),
        ("prompts:/summarize@latest", "alias must start with a letter"),
        ("features:/", r"expected features:/<view> or features:/<view>@<version>"),
        ("features:/a/b", r"expected features:/<view>"),
        ("features:/v@0", r"expected features:/<view>"),
        ("features:/-v", "feature view name must be"),
        ("rag:/kb", r"expected rag:/<name>/<version> or rag:/<name>@<alias>"),
        ("rag:/kb/0", r"expected rag:/<name>/<version>"),
        ("rag:/kb@latest", "alias must start with a letter"),
        ("rag:/bad name@production", "index name must be 1-128"),
    ],
)
def test_parse_uri_refuses_each_malformed_form_with_what_it_expected(uri, message):
    with pytest.raises(InvalidInput, match=message):
        parse_uri(uri)


def test_a_name_longer_than_the_rule_is_refused_in_every_scheme():
    name = "m" * 129
    for uri in (f"models:/{name}/1", f"datasets:/{name}@1", f"prompts:/{name}/1"):
        with pytest.raises(InvalidInput, match="must be 1-128 letters"):
            parse_uri(uri)
    assert parse_uri(f"models:/{'m' * 128}/1") == ModelURI("m" * 128, 1)


def test_a_model_uri_is_a_registered_version_or_a_run_artifact_with_a_path():
    assert parse_model_uri("models:/u@champion") == ModelURI("u", alias="champion")
    assert parse_model_uri("runs:/abc/model") == RunURI("abc", "model")
    with pytest.raises(InvalidInput, match=r"expected runs:/<run_id>/<path>, got 'runs:/abc'"):
        parse_model_uri("runs:/abc")
    with pytest.raises(InvalidInput, match="model URI must start with runs:/ or models:/"):
        parse_model_uri("datasets:/churn@1")
    with pytest.raises(InvalidInput, match="model URI must be a string, got int"):
        parse_model_uri(3)  # type: ignore[arg-type]


def test_short_references_parse_without_the_scheme():
    assert parse_model_ref("churn@champion") == ModelURI("churn", alias="champion")
    assert parse_model_ref(" churn/5 ") == ModelURI("churn", 5)
    assert parse_dataset_ref("churn@3") == DatasetURI("churn", 3)
    assert parse_dataset_ref(DIGEST) == DatasetURI(None, None, DIGEST)
    with pytest.raises(InvalidInput, match="expected a dataset reference like 'churn@3'"):
        parse_dataset_ref("  ")
    with pytest.raises(InvalidInput, match="expected a run URI such as runs:/<run_id>/model"):
        parse_run_uri("models:/churn/1")
    assert parse_rag_uri("kb@production") == RagURI("kb", alias="production")
    assert parse_rag_uri("kb/2") == RagURI("kb", 2)
    with pytest.raises(InvalidInput, match="expected a RAG index URI such as rag:/kb@production"):
        parse_rag_uri("prompts:/kb@production")


def test_scheme_of_names_the_scheme_even_of_a_malformed_uri():
    assert scheme_of("models:/") == "models:/"
    assert scheme_of("features:/x") == "features:/"
    assert scheme_of("artifacts:/abc") is None and scheme_of(None) is None
