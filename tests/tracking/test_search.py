"""The run search language end to end, on SQLite, PostgreSQL and through a server.

Every test builds the same small set of runs through ``keel.Client`` and
asserts the exact set (or order) of runs a filter or ``order_by`` returns.
The world, with the latest value of each metric:

======== ======== ======= ============= ======= ====== ======== ============ =========
run      status   lr      model         acc     loss   stage    owner        other
======== ======== ======= ============= ======= ====== ======== ============ =========
alpha    FINISHED '0.001' 'rf'          0.9 *   0.3    prod     Ann          model.depth=8, val loss, layer.0.loss
beta     FAILED   '0.1'   'RF'          0.8     0.5    dev      bob          model.depth=12, tags.desc
gamma    RUNNING  '1e-3'  'gb'          0.7     NaN    prod     -            -
delta    KILLED   -       -             -       0.1    -        -            -
epsilon  RUNNING  'fast'  'rf_v2'       0.9     -      -        -            -
======== ======== ======= ============= ======= ====== ======== ============ =========

(* alpha logged acc 0.95 at step 0, then 0.9 at step 1.) Runs are created in
that order, a few milliseconds apart, so the default order (newest first) is
epsilon, delta, gamma, beta, alpha. A sixth run, ``outsider``, lives in
another experiment and must never show up when the search is restricted.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pytest

import keel
from keel.errors import InvalidInput
from keel.tracking.entities import Metric
from keel.tracking.search import Compare, Logical, Not, parse_filter

NAMES = ("alpha", "beta", "gamma", "delta", "epsilon")
NEWEST_FIRST = ["epsilon", "delta", "gamma", "beta", "alpha"]


@dataclass
class World:
    client: keel.Client
    experiment_id: int
    other_experiment_id: int
    ids: dict[str, str]  # run name -> run id
    start: dict[str, int]  # run name -> start_time (ms)
    end: dict[str, int]  # run name -> end_time (ms) of the ended runs

    def names(self, ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[i] for i in ids]

    def search(self, filter_string: str | None = None, order_by=None, **kwargs) -> list[str]:
        """Run names, in the order returned, of one page of a search in the main experiment."""
        kwargs.setdefault("experiment_ids", [self.experiment_id])
        page = self.client.search_runs(filter_string=filter_string, order_by=order_by, **kwargs)
        return self.names([r.id for r in page.runs])

    def match(self, filter_string: str) -> set[str]:
        return set(self.search(filter_string))


def _metric(key: str, value: float, step: int = 0) -> Metric:
    return Metric(key, value, step, 1_700_000_000_000 + step)


def _create(client: keel.Client, experiment_id: int, name: str, start: dict[str, int]) -> str:
    info = client.create_run(experiment_id, name, capture=False)
    start[name] = info.start_time
    time.sleep(0.005)  # distinct start times, so "newest first" is well defined
    return info.id


@pytest.fixture
def world(any_env) -> World:
    client = keel.Client()
    exp = client.create_experiment("search")
    other = client.create_experiment("elsewhere")
    start: dict[str, int] = {}
    ids = {name: _create(client, exp, name, start) for name in NAMES}
    outsider = ids["outsider"] = client.create_run(other, "outsider", capture=False).id
    client.log_batch(
        outsider,
        metrics=[_metric("acc", 0.9)],
        params={"lr": "0.001", "model": "rf"},
        tags={"stage": "prod"},
    )

    a, b, g, d, e = (ids[n] for n in NAMES)
    client.log_batch(
        a,
        metrics=[
            _metric("acc", 0.95, 0),
            _metric("acc", 0.9, 1),
            _metric("loss", 0.3),
            _metric("val loss", 0.25),
            _metric("layer.0.loss", 0.5),
        ],
        params={"lr": "0.001", "model": "rf", "model.depth": "8"},
        tags={"stage": "prod", "owner": "Ann"},
    )
    client.log_batch(
        b,
        metrics=[_metric("acc", 0.8), _metric("loss", 0.5)],
        params={"lr": "0.1", "model": "RF", "model.depth": "12"},
        tags={"stage": "dev", "owner": "bob", "desc": "baseline"},
    )
    client.log_batch(
        g,
        metrics=[_metric("acc", 0.7), _metric("loss", math.nan)],
        params={"lr": "1e-3", "model": "gb"},
        tags={"stage": "prod"},
    )
    client.log_batch(d, metrics=[_metric("loss", 0.1)])
    client.log_params(e, {"lr": "fast", "model": "rf_v2"})
    client.log_batch(e, metrics=[_metric("acc", 0.9)])

    base = max(start.values()) + 1_000
    end = {"alpha": base + 300, "beta": base + 100, "delta": base + 200}
    client.set_terminated(a, "FINISHED", end_time=end["alpha"])
    client.set_terminated(b, "FAILED", end_time=end["beta"])
    client.set_terminated(d, "KILLED", end_time=end["delta"])
    return World(client, exp, other, ids, start, end)


def _iso(ms: int, *, naive: bool = False) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if naive:
        moment = moment.replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds")


# -- the world is what the table says ----------------------------------------------------


def test_world_without_filter_is_every_run_of_the_experiment_newest_first(world: World) -> None:
    assert world.search() == NEWEST_FIRST
    assert world.search("") == NEWEST_FIRST
    assert world.search("   ") == NEWEST_FIRST
    everything = world.search(experiment_ids=None)
    assert len(everything) == 6  # the outsider too
    assert set(everything) - set(NEWEST_FIRST) == {"outsider"}


# -- metrics: every operator, on the latest value ---------------------------------------


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("metrics.acc = 0.9", {"alpha", "epsilon"}),
        ("metrics.acc == 0.9", {"alpha", "epsilon"}),
        ("metrics.acc != 0.9", {"beta", "gamma"}),
        ("metrics.acc <> 0.9", {"beta", "gamma"}),
        ("metrics.acc < 0.8", {"gamma"}),
        ("metrics.acc <= 0.8", {"beta", "gamma"}),
        ("metrics.acc > 0.8", {"alpha", "epsilon"}),
        ("metrics.acc >= 0.8", {"alpha", "beta", "epsilon"}),
        ("metrics.acc>=0.8", {"alpha", "beta", "epsilon"}),
        ("metric.loss < 1", {"alpha", "beta", "delta"}),
    ],
)
def test_metric_comparison_operators_use_latest_value(
    world: World, filter_string: str, expected: set[str]
) -> None:
    assert world.match(filter_string) == expected


def test_metric_filter_ignores_earlier_steps(world: World) -> None:
    # alpha logged 0.95 at step 0 but its latest value is 0.9.
    assert world.match("metrics.acc > 0.92") == set()
    assert world.match("metrics.acc = 0.95") == set()


def test_metric_on_missing_key_is_false_for_every_operator(world: World) -> None:
    # delta has no acc: neither "= 0.9" nor "!= 0.9" matches it.
    assert "delta" not in world.match("metrics.acc != 0.9")
    assert "delta" not in world.match("metrics.acc < 100")
    assert world.match("metrics.nonexistent > -1") == set()


# -- params: text with a string literal, numbers with a number literal ------------------


def test_param_compared_numerically_with_number_literal(world: World) -> None:
    # '0.001' and '1e-3' are both 0.001; 'fast' is not a number and never matches.
    assert world.match("params.lr < 0.01") == {"alpha", "gamma"}
    assert world.match("params.lr = 0.001") == {"alpha", "gamma"}
    assert world.match("params.lr > 0.01") == {"beta"}
    assert world.match("params.model.depth >= 10") == {"beta"}


def test_param_compared_as_text_with_string_literal(world: World) -> None:
    assert world.match("params.lr = '1e-3'") == {"gamma"}
    assert world.match("params.lr = '0.001'") == {"alpha"}
    # Text order: '0.001' < '0.01' < '0.1' < '1e-3' < 'fast'.
    assert world.match("params.lr > '0.01'") == {"beta", "gamma", "epsilon"}
    assert world.match("params.lr != 'fast'") == {"alpha", "beta", "gamma"}


def test_param_numeric_filter_differs_from_text_filter(world: World) -> None:
    assert world.match("params.model.depth > 9") == {"beta"}
    assert world.match("params.model.depth > '9'") == set()  # '12' < '8' < '9' as text


# -- tags ------------------------------------------------------------------------------


def test_tag_equality_and_inequality(world: World) -> None:
    assert world.match("tags.stage = 'prod'") == {"alpha", "gamma"}
    assert world.match("tags.stage != 'prod'") == {"beta"}
    assert world.match('tags.owner = "Ann"') == {"alpha"}
    assert world.match("tag.owner = 'ann'") == set()


# -- attributes --------------------------------------------------------------------------


def test_attribute_status_and_name(world: World) -> None:
    assert world.match("attributes.status = 'FINISHED'") == {"alpha"}
    assert world.match("status = 'RUNNING'") == {"gamma", "epsilon"}
    assert world.match("attributes.status != 'RUNNING'") == {"alpha", "beta", "delta"}
    assert world.match("attributes.name = 'beta'") == {"beta"}
    assert world.match("run.run_name = 'delta'") == {"delta"}
    assert world.match(f"attributes.run_id = '{world.ids['gamma']}'") == {"gamma"}


def test_attribute_start_time_accepts_iso_string_and_milliseconds(world: World) -> None:
    gamma = world.start["gamma"]
    assert world.match(f"attributes.start_time >= '{_iso(gamma)}'") == {
        "gamma",
        "delta",
        "epsilon",
    }
    assert world.match(f"attributes.start_time < '{_iso(gamma)}'") == {"alpha", "beta"}
    # A time without a zone is UTC.
    assert world.match(f"attributes.start_time = '{_iso(gamma, naive=True)}'") == {"gamma"}
    assert world.match(f"attributes.start_time = {gamma}") == {"gamma"}


def test_attribute_end_time_is_null_for_running_runs(world: World) -> None:
    assert world.match("attributes.end_time IS NULL") == {"gamma", "epsilon"}
    assert world.match("attributes.end_time IS NOT NULL") == {"alpha", "beta", "delta"}
    assert world.match(f"end_time > {world.end['beta']}") == {"alpha", "delta"}


def test_attribute_experiment_id_selects_other_experiment(world: World) -> None:
    found = world.search(
        f"attributes.experiment_id = {world.other_experiment_id}", experiment_ids=None
    )
    assert found == ["outsider"]
    # experiment_ids restricts even when the filter alone would match the outsider.
    assert world.match("params.model = 'rf'") == {"alpha"}


# -- LIKE and ILIKE ----------------------------------------------------------------------


def test_like_is_case_sensitive_on_every_backend(world: World) -> None:
    # beta's model is 'RF': LIKE 'rf%' must not match it, on SQLite as on PostgreSQL.
    assert world.match("params.model LIKE 'rf%'") == {"alpha", "epsilon"}
    assert world.match("params.model LIKE 'RF'") == {"beta"}
    assert world.match("tags.owner LIKE 'ann'") == set()
    assert world.match("attributes.name LIKE 'ALPHA'") == set()


def test_not_like_is_case_sensitive_on_every_backend(world: World) -> None:
    assert world.match("params.model NOT LIKE 'rf%'") == {"beta", "gamma"}


def test_ilike_ignores_case(world: World) -> None:
    assert world.match("params.model ILIKE 'rf%'") == {"alpha", "beta", "epsilon"}
    assert world.match("tags.owner ILIKE 'ANN'") == {"alpha"}
    assert world.match("attributes.name ILIKE 'ALPHA'") == {"alpha"}
    assert world.match("params.model NOT ILIKE 'rf%'") == {"gamma"}


def test_like_wildcards(world: World) -> None:
    assert world.match("params.model LIKE '_b'") == {"gamma"}
    assert world.match("attributes.name LIKE '%ta'") == {"beta", "delta"}
    assert world.match("params.lr LIKE '%e%'") == {"gamma"}


# -- IN and NOT IN -----------------------------------------------------------------------


def test_in_and_not_in_on_text(world: World) -> None:
    assert world.match("params.model IN ('rf', 'gb')") == {"alpha", "gamma"}
    assert world.match("params.model NOT IN ('rf', 'gb')") == {"beta", "epsilon"}
    assert world.match("tags.owner IN ('Ann', 'bob')") == {"alpha", "beta"}
    assert world.match("attributes.status IN ('FINISHED', 'FAILED')") == {"alpha", "beta"}
    assert world.match("status NOT IN ('RUNNING')") == {"alpha", "beta", "delta"}


def test_in_and_not_in_on_numbers(world: World) -> None:
    assert world.match("metrics.acc IN (0.7, 0.8)") == {"beta", "gamma"}
    assert world.match("metrics.acc NOT IN (0.7, 0.8)") == {"alpha", "epsilon"}
    assert world.match("params.lr IN (0.001, 0.1)") == {"alpha", "beta", "gamma"}
    assert world.match("params.lr IN ('0.001', '0.1')") == {"alpha", "beta"}


# -- IS NULL / IS NOT NULL ---------------------------------------------------------------


def test_is_null_matches_runs_without_the_key(world: World) -> None:
    assert world.match("params.lr IS NULL") == {"delta"}
    assert world.match("params.lr IS NOT NULL") == {"alpha", "beta", "gamma", "epsilon"}
    assert world.match("metrics.acc IS NULL") == {"delta"}
    assert world.match("tags.owner IS NULL") == {"gamma", "delta", "epsilon"}
    assert world.match("tags.owner is not null") == {"alpha", "beta"}
    assert world.match("params.never_logged IS NULL") == set(NAMES)


# -- NaN -----------------------------------------------------------------------------------


def test_nan_metric_is_kept_and_returned_as_nan(world: World) -> None:
    # gamma has loss = NaN: it has the key, so IS NULL does not match it.
    assert world.match("metrics.loss IS NULL") == {"epsilon"}
    assert world.match("metrics.loss IS NOT NULL") == {"alpha", "beta", "gamma", "delta"}
    (gamma,) = world.client.search_runs([world.experiment_id], "attributes.name = 'gamma'").runs
    assert math.isnan(gamma.metrics["loss"])
    assert gamma.metrics["acc"] == pytest.approx(0.7)
    # No number compares true with NaN.
    assert world.match("metrics.loss > 0") == {"alpha", "beta", "delta"}
    assert world.match("metrics.loss < 1") == {"alpha", "beta", "delta"}


def test_nan_metric_sorts_with_missing_values_last(world: World) -> None:
    # gamma (NaN) and epsilon (no loss) come last in both directions, newest first.
    assert world.search(order_by="metrics.loss ASC") == [
        "delta",
        "alpha",
        "beta",
        "epsilon",
        "gamma",
    ]
    assert world.search(order_by="metrics.loss DESC") == [
        "beta",
        "alpha",
        "delta",
        "epsilon",
        "gamma",
    ]


# -- AND, OR, NOT, parentheses ---------------------------------------------------------


def test_and_or_not_combine(world: World) -> None:
    assert world.match("metrics.acc > 0.75 AND tags.stage = 'prod'") == {"alpha"}
    assert world.match("tags.stage = 'dev' OR params.model = 'gb'") == {"beta", "gamma"}
    assert world.match("tags.stage = 'dev' or params.model = 'gb'") == {"beta", "gamma"}
    # NOT of a comparison also matches runs without the key, unlike "!=".
    assert world.match("NOT tags.stage = 'prod'") == {"beta", "delta", "epsilon"}
    assert world.match("NOT NOT tags.stage = 'prod'") == {"alpha", "gamma"}


def test_and_binds_tighter_than_or(world: World) -> None:
    # dev OR (prod AND acc > 0.8) → beta, alpha;  (dev OR prod) AND acc > 0.8 → alpha.
    assert world.match("tags.stage = 'dev' OR tags.stage = 'prod' AND metrics.acc > 0.8") == {
        "alpha",
        "beta",
    }
    assert world.match("(tags.stage = 'dev' OR tags.stage = 'prod') AND metrics.acc > 0.8") == {
        "alpha"
    }
    assert world.match("metrics.acc > 0.8 AND tags.stage = 'prod' OR tags.stage = 'dev'") == {
        "alpha",
        "beta",
    }


def test_not_binds_tighter_than_and(world: World) -> None:
    # (NOT stage = 'prod') AND acc > 0.75 → beta, epsilon; NOT (… AND …) would add more.
    assert world.match("NOT tags.stage = 'prod' AND metrics.acc > 0.75") == {"beta", "epsilon"}
    assert world.match("NOT (tags.stage = 'prod' AND metrics.acc > 0.75)") == {
        "beta",
        "gamma",
        "delta",
        "epsilon",
    }


def test_nested_parentheses(world: World) -> None:
    assert world.match(
        "NOT (params.model = 'rf' OR (metrics.acc < 0.75 AND tags.stage = 'prod')) "
        "AND metrics.loss IS NOT NULL"
    ) == {"beta", "delta"}
    assert world.match(
        "((params.lr < 0.01) AND ((tags.stage = 'prod'))) OR (((status = 'KILLED')))"
    ) == {"alpha", "gamma", "delta"}


# -- keys -------------------------------------------------------------------------------


def test_keys_with_dots(world: World) -> None:
    assert world.match("params.model.depth = 8") == {"alpha"}
    assert world.match("params.model.depth = '12'") == {"beta"}
    assert world.match("params.`model.depth` = '12'") == {"beta"}
    assert world.match("params.\"model.depth\" = '8'") == {"alpha"}
    # "params.model" is a different key from "params.model.depth".
    assert world.match("params.model = '8'") == set()


def test_keys_with_dots_and_numeric_segments(world: World) -> None:
    # "layer.0.loss" is a valid key; its ".0" must not be read as the number 0.
    assert world.match("metrics.layer.0.loss < 1") == {"alpha"}


def test_backtick_quoted_keys_with_spaces(world: World) -> None:
    assert world.match("metrics.`val loss` < 0.3") == {"alpha"}
    assert world.match("metrics.`val loss` IS NULL") == {"beta", "gamma", "delta", "epsilon"}
    assert world.search(order_by="metrics.`val loss` DESC")[0] == "alpha"


def test_keys_spelled_like_keywords_keep_their_case(world: World) -> None:
    # beta has the tag "desc"; keywords are case-insensitive, keys are not.
    assert world.match("tags.`desc` = 'baseline'") == {"beta"}
    assert world.match("tags.desc = 'baseline'") == {"beta"}
    assert world.search(order_by="tags.desc DESC")[0] == "beta"


# -- order_by ------------------------------------------------------------------------------


def test_order_by_metric_asc_desc_missing_last(world: World) -> None:
    # Ties (alpha and epsilon at 0.9) fall back to newest first; delta has no acc.
    assert world.search(order_by="metrics.acc DESC") == [
        "epsilon",
        "alpha",
        "beta",
        "gamma",
        "delta",
    ]
    assert world.search(order_by=["metrics.acc ASC"]) == [
        "gamma",
        "beta",
        "epsilon",
        "alpha",
        "delta",
    ]
    assert world.search(order_by="metrics.acc") == world.search(order_by="metrics.acc ASC")


def test_order_by_param_numbers_then_text_then_missing(world: World) -> None:
    # 0.001 and 1e-3 tie as numbers and are then ordered by their text.
    assert world.search(order_by="params.lr ASC") == [
        "alpha",
        "gamma",
        "beta",
        "epsilon",
        "delta",
    ]
    assert world.search(order_by="params.lr DESC") == [
        "beta",
        "gamma",
        "alpha",
        "epsilon",
        "delta",
    ]
    # 8 < 12 as numbers (as text '12' < '8').
    assert world.search(order_by="params.model.depth ASC")[:2] == ["alpha", "beta"]


def test_order_by_attributes(world: World) -> None:
    assert world.search(order_by="attributes.start_time ASC") == list(reversed(NEWEST_FIRST))
    assert world.search(order_by="start_time DESC") == NEWEST_FIRST
    assert world.search(order_by="attributes.name") == [
        "alpha",
        "beta",
        "delta",
        "epsilon",
        "gamma",
    ]
    # Running runs have no end time: last in both directions.
    assert world.search(order_by="attributes.end_time ASC") == [
        "beta",
        "delta",
        "alpha",
        "epsilon",
        "gamma",
    ]
    assert world.search(order_by="attributes.end_time DESC") == [
        "alpha",
        "delta",
        "beta",
        "epsilon",
        "gamma",
    ]


def test_order_by_several_keys(world: World) -> None:
    assert world.search(order_by=["tags.stage ASC", "metrics.acc DESC"]) == [
        "beta",
        "alpha",
        "gamma",
        "epsilon",
        "delta",
    ]


def test_order_by_combines_with_filter(world: World) -> None:
    assert world.search("params.lr IS NOT NULL", order_by="metrics.acc ASC") == [
        "gamma",
        "beta",
        "epsilon",
        "alpha",
    ]


# -- pagination -----------------------------------------------------------------------------


def _all_pages(world: World, size: int, **kwargs) -> list[list[str]]:
    pages: list[list[str]] = []
    token = None
    while True:
        page = world.client.search_runs(
            [world.experiment_id], max_results=size, page_token=token, **kwargs
        )
        pages.append(world.names([r.id for r in page.runs]))
        token = page.next_page_token
        if token is None:
            return pages
        assert len(pages) < 10, "pagination does not terminate"


def test_pagination_covers_every_run_exactly_once(world: World) -> None:
    pages = _all_pages(world, 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [name for page in pages for name in page] == NEWEST_FIRST

    ordered = _all_pages(world, 3, order_by="metrics.acc DESC")
    assert [name for page in ordered for name in page] == world.search(order_by="metrics.acc DESC")

    filtered = _all_pages(world, 1, filter_string="params.lr IS NOT NULL")
    flat = [name for page in filtered for name in page]
    assert sorted(flat) == sorted({"alpha", "beta", "gamma", "epsilon"})
    assert len(flat) == len(set(flat))


def test_last_full_page_has_no_next_token(world: World) -> None:
    page = world.client.search_runs([world.experiment_id], max_results=5)
    assert len(page) == 5
    assert page.next_page_token is None
    page = world.client.search_runs([world.experiment_id], max_results=4)
    assert len(page) == 4
    assert page.next_page_token is not None


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "%%%",
        base64.urlsafe_b64encode(json.dumps({"offset": -1}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"offset": "2"}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps([2]).encode()).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_bad_page_token_is_invalid_input(world: World, token: str) -> None:
    with pytest.raises(InvalidInput, match=r"page token .* is not one this search returned"):
        world.client.search_runs([world.experiment_id], page_token=token)


@pytest.mark.parametrize("max_results", [0, -1, 100_001, True, 2.5, "10", None])
def test_max_results_out_of_range_is_invalid_input(world: World, max_results) -> None:
    with pytest.raises(InvalidInput, match="max_results must be an integer from 1 to 100000"):
        world.client.search_runs([world.experiment_id], max_results=max_results)
    with pytest.raises(InvalidInput, match="max_results must be an integer from 1 to 100000"):
        world.client.search_runs_frame([world.experiment_id], max_results=max_results)


def test_max_results_bounds_are_accepted(world: World) -> None:
    assert len(world.client.search_runs([world.experiment_id], max_results=1)) == 1
    assert len(world.client.search_runs([world.experiment_id], max_results=100_000)) == 5


# -- the DataFrame -------------------------------------------------------------------------

BASE_COLUMNS = [
    "run_id",
    "experiment_id",
    "name",
    "status",
    "start_time",
    "end_time",
    "parent_id",
    "user",
]


def test_search_runs_frame_shape(world: World) -> None:
    frame = world.client.search_runs_frame([world.experiment_id], order_by="metrics.acc DESC")
    assert list(frame.columns) == [
        *BASE_COLUMNS,
        "metrics.acc",
        "metrics.layer.0.loss",
        "metrics.loss",
        "metrics.val loss",
        "params.lr",
        "params.model",
        "params.model.depth",
        "tags.desc",
        "tags.owner",
        "tags.stage",
    ]
    assert frame["name"].tolist() == ["epsilon", "alpha", "beta", "gamma", "delta"]
    assert frame["run_id"].tolist() == [world.ids[n] for n in frame["name"]]
    by_name = frame.set_index("name")
    assert by_name.loc["alpha", "metrics.acc"] == pytest.approx(0.9)
    assert math.isnan(by_name.loc["delta", "metrics.acc"])  # missing
    assert math.isnan(by_name.loc["gamma", "metrics.loss"])  # NaN kept
    assert by_name.loc["gamma", "params.lr"] == "1e-3"  # params stay text
    assert pd.isna(by_name.loc["delta", "params.lr"])  # missing
    assert by_name.loc["beta", "tags.desc"] == "baseline"
    assert by_name.loc["alpha", "status"] == "FINISHED"
    assert pd.api.types.is_float_dtype(frame["metrics.acc"])
    assert isinstance(frame["start_time"].dtype, pd.DatetimeTZDtype)
    assert by_name.loc["alpha", "start_time"] == pd.Timestamp(
        world.start["alpha"], unit="ms", tz="UTC"
    )
    assert pd.isna(by_name.loc["gamma", "end_time"])
    assert set(frame["experiment_id"]) == {world.experiment_id}


def test_search_runs_frame_filtered_and_empty(world: World) -> None:
    frame = world.client.search_runs_frame([world.experiment_id], "params.lr < 0.01")
    assert set(frame["name"]) == {"alpha", "gamma"}
    assert "metrics.acc" in frame.columns
    assert "tags.desc" not in frame.columns  # only beta has it

    empty = world.client.search_runs_frame([world.experiment_id], "metrics.acc > 2")
    assert len(empty) == 0
    assert list(empty.columns) == BASE_COLUMNS


# -- malformed filters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_string", "message"),
    [
        ("metrics.acc >", r"position 14: expected a value .*, got end of input"),
        ("metrics.acc > 'x'", r"position 13: metrics\.acc is a number; compare it with a number"),
        ("foo.bar = 1", r"position 1: expected a field such as metrics\.<key>.*, got 'foo'"),
        (
            "(metrics.a > 1",
            r"position 15: expected '\)' to close the parenthesis, got end of input",
        ),
        (
            "metrics.a > 1 metrics.b < 2",
            r"position 15: expected AND, OR or the end of the filter, got 'metrics'",
        ),
        (
            "attributes.colour = 'x'",
            r"position 1: unknown attribute 'colour'; expected one of run_id, name, status",
        ),
        ("metrics.acc > 0.9 AND", r"position 22: expected a field .*, got end of input"),
        ("metrics.acc LIKE 'a%'", r"position 13: metrics\.acc is a number; LIKE needs text"),
        ("params.model LIKE 3", r"position 19: expected a 'quoted pattern' after LIKE, got '3'"),
        ("params.x IS 5", r"position 13: expected NULL after IS, got '5'"),
        ("params.x IN ()", r"position 14: expected a value .*, got '\)'"),
        (
            "params.x IN (1, 2",
            r"position 18: expected ',' or '\)' in the IN list, got end of input",
        ),
        ("params.x NOT = 1", r"position 10: expected IN, LIKE or ILIKE after NOT, got 'NOT'"),
        ("params.x 'a'", r"position 10: expected a comparison \(=, !=, <"),
        ("metrics = 1", r"position 9: expected '\.' and a key after 'metrics', got '='"),
        ("metrics.a > 1 ; DROP TABLE runs", r"position 15: unexpected character ';'"),
        (
            "attributes.start_time > 'yesterday'",
            r"position 23: expected milliseconds since the epoch or an ISO-8601 time, got 'yesterday'",
        ),
        ("metrics.acc > 0.9)", r"position 18: expected AND, OR or the end of the filter, got '\)'"),
    ],
)
def test_malformed_filter_names_position_and_expectation(
    world: World, filter_string: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid filter at " + message):
        world.client.search_runs([world.experiment_id], filter_string)
    with pytest.raises(InvalidInput, match=r"^invalid filter at " + message):
        world.client.search_runs_frame([world.experiment_id], filter_string)


def test_malformed_order_by_is_invalid_input(world: World) -> None:
    with pytest.raises(InvalidInput, match="position 13: expected ASC, DESC or the end"):
        world.search(order_by="metrics.acc SIDEWAYS")
    with pytest.raises(InvalidInput, match="position 1: expected a field"):
        world.search(order_by="acc DESC")


def _snapshot(world: World) -> list[dict]:
    page = world.client.search_runs(None, order_by="attributes.name")
    return [
        {**r.to_dict(), "metrics": {k: repr(v) for k, v in r.metrics.items()}} for r in page.runs
    ]


def test_malformed_filter_changes_nothing_in_the_store(world: World) -> None:
    before = _snapshot(world)
    points = world.client.count_metric_points()
    bad = [
        "metrics.a > 1 ; DROP TABLE runs",
        "params.x = 'a' OR 1 = 1; DELETE FROM params --",
        "(metrics.a > 1",
        "tags.stage = 'prod' AND",
    ]
    for filter_string in bad:
        with pytest.raises(InvalidInput):
            world.client.search_runs(None, filter_string)
    # A well-formed filter whose literal looks like SQL is just text.
    assert world.match("params.model = 'rf''; DROP TABLE runs; --'") == set()
    assert world.match("tags.stage = 'x'' OR ''1''=''1'") == set()
    assert _snapshot(world) == before
    assert world.client.count_metric_points() == points
    assert world.search() == NEWEST_FIRST


# -- the parser alone (no database) -----------------------------------------------------------


def _shape(node):
    """A parse tree as nested tuples, without source positions."""
    if isinstance(node, Logical):
        return (node.op, *(_shape(i) for i in node.items))
    if isinstance(node, Not):
        return ("NOT", _shape(node.item))
    assert isinstance(node, Compare)
    return (str(node.field), node.op, node.value)


A = ("metrics.a", "=", 1)
B = ("params.b", "=", "x")
C = ("tags.c", "!=", "y")


@pytest.mark.parametrize(
    ("source", "tree"),
    [
        ("metrics.a = 1 OR params.b = 'x' AND tags.c != 'y'", ("OR", A, ("AND", B, C))),
        ("metrics.a = 1 AND params.b = 'x' OR tags.c != 'y'", ("OR", ("AND", A, B), C)),
        ("(metrics.a = 1 OR params.b = 'x') AND tags.c != 'y'", ("AND", ("OR", A, B), C)),
        ("metrics.a = 1 and params.b = 'x' or tags.c <> 'y'", ("OR", ("AND", A, B), C)),
        ("metrics.a == 1 AND params.b = 'x' AND tags.c != 'y'", ("AND", A, B, C)),
        ("metrics.a = 1 OR params.b = 'x' OR tags.c != 'y'", ("OR", A, B, C)),
        ("NOT metrics.a = 1 AND params.b = 'x'", ("AND", ("NOT", A), B)),
        ("NOT (metrics.a = 1 AND params.b = 'x')", ("NOT", ("AND", A, B))),
        ("NOT NOT metrics.a = 1", ("NOT", ("NOT", A))),
        ("((metrics.a = 1))", A),
        (
            "metrics.a = 1 OR NOT (params.b = 'x' OR tags.c != 'y') AND metrics.a = 1",
            ("OR", A, ("AND", ("NOT", ("OR", B, C)), A)),
        ),
    ],
)
def test_parse_filter_precedence(source: str, tree) -> None:
    assert _shape(parse_filter(source)) == tree


def test_parse_filter_empty_is_none() -> None:
    assert parse_filter(None) is None
    assert parse_filter("") is None
    assert parse_filter(" \t\n") is None


def test_parse_filter_fields_and_values() -> None:
    node = parse_filter("params.model.depth >= 3")
    assert (node.field.kind, node.field.key, node.op, node.value) == (
        "params",
        "model.depth",
        ">=",
        3,
    )
    assert isinstance(node.value, int)
    node = parse_filter("params.lr < 1e-3")
    assert node.value == pytest.approx(0.001)
    assert isinstance(node.value, float)
    node = parse_filter("metrics.`val loss` IN (1, 2.5)")
    assert (node.field.key, node.op, node.value) == ("val loss", "IN", (1, 2.5))
    node = parse_filter("tags.note = 'it''s'")
    assert node.value == "it's"
    node = parse_filter("status = 'RUNNING'")
    assert (node.field.kind, node.field.key) == ("attributes", "status")
    node = parse_filter("attr.id NOT LIKE 'ab%'")
    assert (node.field.key, node.op, node.value) == ("run_id", "NOT LIKE", "ab%")
    node = parse_filter("params.x is not null")
    assert (node.op, node.value) == ("IS NOT NULL", None)


def test_parse_filter_keeps_key_case_for_keyword_like_keys() -> None:
    assert parse_filter("tags.desc = 'x'").field.key == "desc"
    assert parse_filter("params.in = 'x'").field.key == "in"


def test_parse_filter_reads_numeric_key_segments() -> None:
    assert parse_filter("metrics.layer.0.loss < 1").field.key == "layer.0.loss"
