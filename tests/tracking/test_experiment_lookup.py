"""One experiment lookup, by name or id, shared by the CLI and ``keel.search_runs``."""

from __future__ import annotations

import pytest

import keel
from keel.errors import NotFound


def test_resolve_experiment_finds_by_name_and_by_id(any_env):
    client = keel.Client().tracking
    experiment_id = client.create_experiment("wine-quality")
    assert client.resolve_experiment("wine-quality").id == experiment_id
    assert client.resolve_experiment(experiment_id).name == "wine-quality"
    assert client.resolve_experiment(str(experiment_id)).name == "wine-quality"


def test_resolve_experiment_prefers_a_name_made_of_digits_over_an_id(any_env):
    client = keel.Client().tracking
    first = client.create_experiment("first")
    named_like_an_id = client.create_experiment(str(first))
    assert client.resolve_experiment(str(first)).id == named_like_an_id


def test_an_unknown_experiment_name_names_the_closest(any_env):
    client = keel.Client().tracking
    client.create_experiment("wine-quality")
    with pytest.raises(
        NotFound, match=r"^no experiment named 'wine-qualty'; did you mean 'wine-quality'\?$"
    ):
        client.resolve_experiment("wine-qualty")


def test_an_unknown_experiment_id_says_where_to_look(any_env):
    with pytest.raises(NotFound, match=r"no experiment with id 999; see `keel experiments list`"):
        keel.Client().tracking.resolve_experiment(999)


def test_search_runs_with_a_mistyped_experiment_name_is_an_error_not_an_empty_frame(any_env):
    keel.set_experiment("wine-quality")
    with keel.start_run():
        keel.log_metric("acc", 0.9)
    assert len(keel.search_runs(experiment_names=["wine-quality"])) == 1
    with pytest.raises(NotFound, match=r"did you mean 'wine-quality'\?"):
        keel.search_runs(experiment_names=["wine-qualty"])


def test_search_runs_of_a_current_experiment_without_runs_is_empty(any_env):
    keel.set_experiment("nothing-logged-yet")
    assert len(keel.search_runs()) == 0
