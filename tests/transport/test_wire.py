"""The wire codec: every value a client method returns survives the trip to JSON and back."""

from __future__ import annotations

import json
import math

import pytest

from keel.errors import InvalidInput
from keel.registry.entities import ModelVersion
from keel.tracking.entities import Experiment, Metric, Run, RunInfo, RunsPage
from keel.transport.wire import from_wire, to_wire


def _trip(value, kind):
    return from_wire(json.loads(json.dumps(to_wire(value), allow_nan=False)), kind)


def _run_info(**overrides) -> RunInfo:
    from dataclasses import fields

    values = {}
    for f in fields(RunInfo):
        kind = str(f.type)
        values[f.name] = (
            1 if "int" in kind else 0.5 if "float" in kind else None if "None" in kind else "x"
        )
    values.update(overrides)
    return RunInfo(**values)


def test_nested_dataclasses_round_trip_through_strict_json():
    info = _run_info()
    page = RunsPage(
        runs=[Run(info=info, params={"a": "1"}, metrics={"m": 0.25}, tags={})], next_page_token="t"
    )
    assert _trip(page, RunsPage) == page


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.5e300])
def test_floats_json_cannot_carry_travel_as_strings_and_come_back(value):
    metric = Metric(key="loss", value=value, step=3, timestamp=7)
    back = _trip(metric, Metric)
    assert back.key == "loss" and back.step == 3
    assert (math.isnan(back.value) and math.isnan(value)) or back.value == value


def test_lists_dicts_and_optionals_decode_by_the_declared_type():
    experiments = [Experiment(**{f: _field_value(Experiment, f) for f in _names(Experiment)})]
    assert _trip(experiments, list[Experiment]) == experiments
    assert _trip({"a": 1.0, "b": math.nan}, dict[str, float])["a"] == 1.0
    assert _trip(None, ModelVersion | None) is None


def test_a_value_of_the_wrong_shape_is_refused_with_the_expected_type():
    with pytest.raises(InvalidInput, match="expected a Metric object, got list"):
        from_wire([1, 2], Metric)
    with pytest.raises(InvalidInput, match="expected a number, got str"):
        from_wire("seven", float)
    with pytest.raises(InvalidInput, match="expected int, got bool"):
        from_wire(True, int)
    with pytest.raises(InvalidInput, match="a Metric object needs key, step, timestamp, value"):
        from_wire({}, Metric)


def test_an_unsendable_value_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="cannot send a object"):
        to_wire(object())


def _names(cls):
    from dataclasses import fields

    return [f.name for f in fields(cls)]


def _field_value(cls, name):
    from dataclasses import fields

    kind = str(next(f.type for f in fields(cls) if f.name == name))
    if "int" in kind:
        return 4
    if "float" in kind:
        return 0.5
    if "dict" in kind:
        return {}
    if "None" in kind:
        return None
    return "n"
