"""A deployment spec's route arithmetic: adding, removing and promoting a canary."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.serving import build_spec


def routes(spec) -> list[tuple[str, str, int]]:
    return [(r.model, r.ref, r.weight) for r in spec.routes]


@pytest.mark.parametrize(
    ("start", "change", "expected"),
    [
        (
            build_spec("churn@champion"),
            lambda s: s.with_canary("churn", 5, 20),
            [("churn", "champion", 80), ("churn", "5", 20)],
        ),
        (  # one candidate per model: a new canary replaces the model's old one
            build_spec("churn@champion", canary=["churn/4:10"]),
            lambda s: s.with_canary("churn", 5, 20),
            [("churn", "champion", 80), ("churn", "5", 20)],
        ),
        (  # another model's canary stays, and the primary gets what is left
            build_spec("churn@champion", canary=["other/2:30"]),
            lambda s: s.with_canary("churn", 5, 20),
            [("churn", "champion", 50), ("other", "2", 30), ("churn", "5", 20)],
        ),
        (
            build_spec("churn@champion", canary=["other/2:30", "churn/5:20"]),
            lambda s: s.without_canary("churn", 5),
            [("churn", "champion", 70), ("other", "2", 30)],
        ),
        (  # nothing routes to that version: the spec is unchanged
            build_spec("churn@champion", canary=["churn/5:20"]),
            lambda s: s.without_canary("churn", 6),
            [("churn", "champion", 80), ("churn", "5", 20)],
        ),
        (  # a primary pinned to a version follows the alias once a candidate is promoted
            build_spec("churn/4", canary=["churn/5:20"]),
            lambda s: s.promoted("churn", 5, "champion"),
            [("churn", "champion", 100)],
        ),
        (
            build_spec("churn@champion", canary=["churn/5:20"]),
            lambda s: s.promoted("churn", 5, "champion"),
            [("churn", "champion", 100)],
        ),
        (  # another model's primary is left alone
            build_spec("other@champion", canary=["churn/5:20"]),
            lambda s: s.promoted("churn", 5, "champion"),
            [("other", "champion", 100)],
        ),
    ],
)
def test_canary_routes_are_added_removed_and_promoted(start, change, expected):
    assert routes(change(start)) == expected


def test_a_spec_knows_which_canary_it_routes_to():
    spec = build_spec("churn@champion", canary=["churn/5:20"])
    assert spec.routes_to("churn", 5)
    assert not spec.routes_to("churn", 4)
    assert not spec.routes_to("other", 5)
    assert not build_spec("churn/5").routes_to("churn", 5)  # the primary is no canary


def test_a_canary_that_leaves_the_primary_no_traffic_is_refused():
    spec = build_spec("churn@champion", canary=["other/2:50"])
    with pytest.raises(
        InvalidInput,
        match=r"a 50% canary of churn/5 leaves no traffic for the primary route churn@champion "
        r"\(other canaries take 50%\); lower the canary's weight",
    ):
        spec.with_canary("churn", 5, 50)
