"""MLflow's search syntax translated into Keel's (``keel.server.mlflow.filters``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput
from keel.server.mlflow import filters
from keel.tracking.search import parse_filter, parse_order_by


@pytest.mark.parametrize(
    ("mlflow", "keel_filter"),
    [
        ("metrics.acc > 0.5", "metrics.`acc` > 0.5"),
        (
            "metrics.x > 0.5 and params.y = 'a' and tags.z = 'b c'",
            "metrics.`x` > 0.5 AND params.`y` = 'a' AND tags.`z` = 'b c'",
        ),
        ("metric.`my metric` <= -1", "metrics.`my metric` <= -1"),
        ('params."model.depth" != "3"', "params.`model.depth` != '3'"),
        ("tags.mlflow.source.type = 'LOCAL'", "tags.`mlflow.source.type` = 'LOCAL'"),
        ("tags.`mlflow.runName` = 'first'", "attributes.name = 'first'"),
        ("tags.mlflow.runName LIKE 'fi%'", "attributes.name LIKE 'fi%'"),
        ("attributes.status = 'FINISHED'", "attributes.status = 'FINISHED'"),
        ("status != 'RUNNING'", "attributes.status != 'RUNNING'"),
        ("run_name = 'r1'", "attributes.name = 'r1'"),
        ("attributes.run_name ILIKE '%R%'", "attributes.name ILIKE '%R%'"),
        ("`Run name` = 'r1'", "attributes.name = 'r1'"),
        ("attributes.user_id = 'ana'", "attributes.user = 'ana'"),
        ("attributes.created >= 1700000000000", "attributes.start_time >= 1700000000000"),
        ("attributes.end_time < 5", "attributes.end_time < 5"),
        ("attributes.run_id IN ('a', 'b')", "attributes.run_id IN ('a', 'b')"),
        ("attributes.run_id NOT IN ('a')", "attributes.run_id NOT IN ('a')"),
        ("params.p IS NULL", "params.`p` IS NULL"),
        ("tags.t IS NOT NULL", "tags.`t` IS NOT NULL"),
        ("params.q = 'it''s'", "params.`q` = 'it''s'"),
        ("params.q = 'back\\\\slash'", "params.`q` = 'back\\\\slash'"),
        ("", None),
        ("   ", None),
    ],
)
def test_run_filter_translates_to_keel_syntax(mlflow: str, keel_filter: str | None) -> None:
    translated = filters.run_filter(mlflow)
    assert translated == keel_filter
    if translated is not None:
        parse_filter(translated)  # Keel's parser takes it


def test_a_quoted_value_survives_the_round_trip_exactly() -> None:
    tree = parse_filter(filters.run_filter("params.q = 'it''s a \\\\ and \"q\"'"))
    assert tree.value == 'it\'s a \\ and "q"'


@pytest.mark.parametrize(
    ("mlflow", "named"),
    [
        ("datasets.name = 'iris'", "datasets.name = 'iris'"),
        ("attributes.artifact_uri = 'x'", "artifact_uri"),
        ("attributes.lifecycle_stage = 'active'", "lifecycle_stage"),
        ("attributes.color = 'red'", "unknown run attribute 'color'"),
        ("metrics.acc = 'high'", "compare metrics.acc with a number"),
        ("params.lr > '0.1'", "params.lr takes"),
        ("metrics.acc LIKE '1%'", "metrics.acc takes"),
        ("params.a = 'x' OR params.b = 'y'", "OR is not part of MLflow's filter syntax"),
        ("metrics.acc >", "expected a value"),
        ("colour.x = 1", "unknown entity 'colour'"),
        ("params.a = 'x' params.b = 'y'", "expected AND or the end"),
        ("params.a = 'x' ; drop", "unexpected character ';'"),
    ],
)
def test_unsupported_or_malformed_terms_are_refused_naming_them(mlflow: str, named: str) -> None:
    with pytest.raises(InvalidInput, match="MLflow filter") as caught:
        filters.run_filter(mlflow)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("mlflow", "keel_order"),
    [
        (["metrics.acc DESC"], ["metrics.`acc` DESC"]),
        (
            ["attributes.start_time", "params.`a b` asc"],
            ["attributes.start_time ASC", "params.`a b` ASC"],
        ),
        (["run_name DESC"], ["attributes.name DESC"]),
        (["tags.mlflow.runName"], ["attributes.name ASC"]),
        ([], None),
        (None, None),
    ],
)
def test_run_order_by_translates_to_keel_syntax(
    mlflow: list[str] | None, keel_order: list[str] | None
) -> None:
    translated = filters.run_order_by(mlflow)
    assert translated == keel_order
    if translated:
        parse_order_by(translated)


@pytest.mark.parametrize(
    "clause", ["metrics.acc sideways", "datasets.name", "attributes.artifact_uri"]
)
def test_run_order_by_refuses_what_keel_cannot_order_by(clause: str) -> None:
    with pytest.raises(InvalidInput, match="MLflow filter"):
        filters.run_order_by([clause])


def test_translated_filters_select_the_same_runs_keel_would(tmp_path: Path) -> None:
    keel.init(home=tmp_path / ".keel")
    tracking = keel.Client().tracking
    experiment = tracking.create_experiment("filters")
    good = tracking.create_run(experiment, "good", tags={"stage": "dev"}, capture=False)
    tracking.log_batch(good.id, params={"model": "rf"})
    tracking.log_metric(good.id, "acc", 0.9)
    bad = tracking.create_run(experiment, "bad", capture=False)
    tracking.log_batch(bad.id, params={"model": "lr"})
    tracking.log_metric(bad.id, "acc", 0.95)

    def ids(mlflow: str) -> list[str]:
        page = tracking.search_runs([experiment], filters.run_filter(mlflow))
        return sorted(r.id for r in page)

    assert ids("metrics.acc > 0.5 and params.model = 'rf' and tags.stage = 'dev'") == [good.id]
    assert ids("tags.mlflow.runName = 'bad'") == [bad.id]
    assert ids("params.model LIKE '%r%'") == sorted([good.id, bad.id])
    assert ids("attributes.run_id IN ('" + bad.id + "')") == [bad.id]
    assert ids("tags.stage IS NULL") == [bad.id]


def test_record_matcher_filters_by_the_fields_given() -> None:
    matches = filters.record_matcher(
        "name LIKE 'churn%' and attributes.status = 'READY'", {"name": "n", "status": "s"}, "models"
    )
    assert matches({"n": "churn-v2", "s": "READY"})
    assert not matches({"n": "Churn", "s": "READY"})  # LIKE is case-sensitive; ILIKE is not
    assert not matches({"n": "churn", "s": "PENDING"})
    assert filters.record_matcher("name ILIKE 'CH_RN'", {"name": "n"}, "models")({"n": "churn"})
    assert filters.record_matcher(None, {"name": "n"}, "models")({"n": "anything"})


def test_record_matcher_refuses_fields_it_was_not_given() -> None:
    with pytest.raises(InvalidInput, match="Keel filters experiments only by name"):
        filters.record_matcher("tags.team = 'risk'", {"name": "name"}, "experiments")


def test_record_matcher_compares_tags_only_when_the_caller_reads_them() -> None:
    fields = {"name": "name", "version_number": lambda r: r["version"]}
    matches = filters.record_matcher(
        "tags.team = 'risk' AND tags.`owner` IS NULL", fields, "versions", tags=lambda r: r["tags"]
    )
    assert matches({"name": "m", "version": 1, "tags": {"team": "risk"}})
    assert not matches({"name": "m", "version": 1, "tags": {"team": "ops"}})
    assert not matches({"name": "m", "version": 1, "tags": {"team": "risk", "owner": "ann"}})
    with pytest.raises(InvalidInput, match=r"only by name, version_number .* or tags.<key>"):
        filters.record_matcher("params.a = '1'", fields, "versions", tags=lambda r: r["tags"])


def test_record_matcher_takes_terms_a_caller_already_parsed() -> None:
    terms = [t for t in filters.parse("name = 'a' AND tags.skip = 'x'") if t.entity != "tags"]
    matches = filters.record_matcher(terms, {"name": "n"}, "models")
    assert matches({"n": "a"}) and not matches({"n": "b"})


def test_record_matcher_refuses_a_number_compared_with_text_and_the_reverse() -> None:
    fields = {"name": "name", "version_number": "version"}
    by_number = filters.record_matcher("version_number > '2'", fields, "versions")
    with pytest.raises(InvalidInput, match="compare version_number with a number"):
        by_number({"name": "m", "version": 3})
    by_text = filters.record_matcher("name = 3", fields, "versions")
    with pytest.raises(InvalidInput, match="compare name with a 'quoted string'"):
        by_text({"name": "m", "version": 3})
    # IN compares as text, so a list of quoted numbers still finds a version
    assert filters.record_matcher("version_number IN ('3', '4')", fields, "versions")(
        {"name": "m", "version": 3}
    )
