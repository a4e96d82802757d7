"""The public surface is exactly what is meant to be public, and importing it is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import keel
import keel.errors


def test_keel_all_is_the_documented_api():
    assert sorted(keel.__all__) == sorted(
        [
            "Client",
            "__version__",
            "active_run",
            "end_run",
            "flush",
            "get_run",
            "guardrails",
            "init",
            "log_artifact",
            "log_artifacts",
            "log_dataset",
            "log_dict",
            "log_metric",
            "load_dataset",
            "load_model",
            "log_metrics",
            "log_model",
            "log_param",
            "log_params",
            "pipeline",
            "prompts",
            "rag",
            "register_model",
            "search_runs",
            "seed_everything",
            "set_experiment",
            "set_tag",
            "set_tags",
            "start_run",
            "step",
        ]
    )
    for name in keel.__all__:
        assert getattr(keel, name) is not None


def test_error_tree_matches_the_builtins_it_promises():
    e = keel.errors
    assert issubclass(e.InvalidInput, ValueError) and issubclass(e.InvalidInput, e.KeelError)
    assert issubclass(e.NotFound, LookupError)
    assert issubclass(e.ApprovalRequired, e.PermissionDenied)
    assert issubclass(e.StorageError, OSError) and issubclass(e.StorageError, e.SystemFault)
    assert {
        c.status_code for c in (e.InvalidInput, e.NotFound, e.Conflict, e.PermissionDenied)
    } == {
        400,
        404,
        409,
        403,
    }


def test_import_keel_does_not_load_heavy_modules():
    code = "import sys, keel; print(','.join(m for m in ('sqlalchemy', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "package",
    [
        "keel.data",
        "keel.pipelines",
        "keel.monitoring",
        "keel.automation",
        "keel.serving",
        "keel.models",
    ],
)
def test_no_public_name_is_shadowed_by_a_submodule_once_everything_is_imported(package):
    import importlib
    import pkgutil
    import types

    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
    shadowed = [n for n in module.__all__ if isinstance(getattr(module, n), types.ModuleType)]
    assert shadowed == []
