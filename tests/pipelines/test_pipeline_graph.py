"""Building a pipeline's graph validates it before anything runs, pointing at the user's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import InvalidInput
from keel.pipelines.definition import load_target

STEPS = """
import keel

@keel.step
def load(n: int):
    return list(range(n))

@keel.step(outputs=["left", "right"])
def split(rows, at: int = 2):
    return rows[:at], rows[at:]

@keel.step
def count(rows):
    return len(rows)
"""


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_valid_pipeline_builds_its_graph_in_call_order(write_module):
    path = write_module(
        "flow",
        STEPS
        + """
@keel.pipeline
def flow(n: int = 4):
    left, right = split(load(n), at=1)
    return {"left": count(left), "right": count(right)}
""",
    )
    graph = load_target(f"{path}:flow").build()
    assert list(graph.nodes) == ["load", "split", "count", "count#2"]
    assert graph.nodes["count#2"].upstream == ["split"]
    assert graph.nodes["split"].args == {"rows": graph.nodes["split"].args["rows"], "at": 1}
    assert graph.params == {"n": 4}


def test_a_wrong_argument_names_the_file_and_line_of_the_call(write_module):
    path = write_module(
        "bad_arg",
        STEPS
        + """
@keel.pipeline
def flow():
    rows = load(3)
    return count(rows, limit=2)
""",
    )
    line = line_of(path, "count(rows, limit=2)")
    with pytest.raises(
        InvalidInput,
        match=rf"bad_arg.py:{line}: step 'count': got an unexpected keyword argument 'limit'",
    ):
        load_target(f"{path}:flow").build()


def test_using_a_step_output_as_a_value_names_the_line(write_module):
    path = write_module(
        "misuse",
        STEPS
        + """
@keel.pipeline
def flow():
    rows = load(3)
    if rows:
        return count(rows)
""",
    )
    line = line_of(path, "if rows:")
    with pytest.raises(
        InvalidInput, match=rf"misuse.py:{line}: a truth test .* on the output of step 'load'"
    ):
        load_target(f"{path}:flow").build()


def test_attribute_access_on_an_output_is_reported_at_its_line(write_module):
    path = write_module(
        "attr",
        STEPS
        + """
@keel.pipeline
def flow():
    rows = load(3)
    return count(rows.copy())
""",
    )
    line = line_of(path, "rows.copy()")
    with pytest.raises(InvalidInput, match=rf"attr.py:{line}: attribute access .copy"):
        load_target(f"{path}:flow").build()


def test_unpacking_a_single_output_says_to_declare_outputs(write_module):
    path = write_module(
        "unpack",
        STEPS
        + """
@keel.pipeline
def flow():
    a, b = load(3)
    return count(a)
""",
    )
    line = line_of(path, "a, b = load(3)")
    with pytest.raises(
        InvalidInput,
        match=rf"unpack.py:{line}: cannot unpack the output of step 'load': it returns one value",
    ):
        load_target(f"{path}:flow").build()


def test_passing_a_whole_tuple_output_says_to_unpack_it(write_module):
    path = write_module(
        "tuple_arg",
        STEPS
        + """
@keel.pipeline
def flow():
    parts = split(load(3))
    return count(parts)
""",
    )
    with pytest.raises(
        InvalidInput, match="argument 'rows' is the whole tuple of step 'split'; unpack it"
    ):
        load_target(f"{path}:flow").build()


def test_arguments_must_be_json_able(write_module):
    path = write_module(
        "objarg",
        STEPS
        + """
@keel.pipeline
def flow():
    return count(object())
""",
    )
    line = line_of(path, "count(object())")
    with pytest.raises(
        InvalidInput,
        match=rf"objarg.py:{line}: step 'count', argument 'rows': a object cannot be a step argument",
    ):
        load_target(f"{path}:flow").build()


def test_parameters_are_checked_against_the_pipeline_signature(write_module):
    path = write_module(
        "params",
        STEPS
        + """
@keel.pipeline
def flow(n: int, depth: int = 3):
    return count(load(n))
""",
    )
    pipe = load_target(f"{path}:flow")
    with pytest.raises(
        InvalidInput,
        match="pipeline 'flow' has no parameter\\(s\\) dept; its parameters are depth, n",
    ):
        pipe.build({"n": 1, "dept": 2})
    with pytest.raises(InvalidInput, match="pipeline 'flow' needs a value for n"):
        pipe.build({})


def test_bad_step_options_name_the_decorator_line(write_module):
    path = write_module(
        "options",
        """
import keel

@keel.step(retries=-1)
def broken():
    return 1
""",
    )
    line = line_of(path, "@keel.step(retries=-1)")
    with pytest.raises(
        InvalidInput,
        match=rf"options.py:{line}: step 'broken': retries must be a non-negative integer, got -1",
    ):
        load_target(f"{path}:broken")


def test_a_pipeline_that_calls_no_step_is_rejected(write_module):
    path = write_module(
        "empty",
        """
import keel

@keel.pipeline
def flow():
    return 1
""",
    )
    with pytest.raises(InvalidInput, match=r"pipeline 'flow' .* calls no steps"):
        load_target(f"{path}:flow").build()


def test_targets_that_are_not_pipelines_are_explained(write_module):
    path = write_module("plain", "def flow():\n    return 1\n")
    with pytest.raises(
        InvalidInput, match=r"is a function, not a pipeline; decorate it with @keel\.pipeline"
    ):
        load_target(f"{path}:flow")
    with pytest.raises(InvalidInput, match="expected a pipeline target like"):
        load_target("no_colon")


def test_outside_a_pipeline_a_step_is_its_plain_function(write_module):
    path = write_module("plain_call", STEPS)
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_call", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.count([1, 2, 3]) == 3
    assert module.split([1, 2, 3], at=1) == ([1], [2, 3])


def test_memory_sizes_parse_in_decimal_and_binary_units():
    from keel.pipelines.steps import parse_memory

    assert parse_memory("2GB") == 2_000_000_000
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(1024) == 1024
    with pytest.raises(InvalidInput, match="memory must be bytes or a size like '2GB'"):
        parse_memory("lots")
