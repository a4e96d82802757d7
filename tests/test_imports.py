"""How the modules of ``keel`` meet: no import cycles, no private names across modules, one lazy-export helper."""

from __future__ import annotations

import importlib

import pytest

from _support.imports import PACKAGE_ROOT, cycles, import_graph, private_imports


def test_the_top_level_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []


def test_the_lazy_export_helper_imports_nothing_of_keel():
    # Every package loads it, the foundations included.
    assert import_graph()["keel.lazy"] == set()


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_every_lazy_package_uses_the_one_helper():
    copies = [
        str(path.relative_to(PACKAGE_ROOT))
        for path in PACKAGE_ROOT.rglob("__init__.py")
        if "def __getattr__" in path.read_text(encoding="utf-8")
    ]
    assert copies == []


@pytest.mark.parametrize(
    "package", ["keel", "keel.data", "keel.models", "keel.monitoring", "keel.pipelines"]
)
def test_a_lazy_package_names_what_it_lacks(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=rf"^module '{package}' has no attribute 'nope'$"):
        module.nope  # noqa: B018
    assert set(module.__all__) - {"__version__"} <= set(dir(module))
