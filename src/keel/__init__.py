"""Keel: MLOps in one install.

The module-level API is loaded on first use so that ``import keel`` (and
``keel --help``) stay fast::

    import keel

    keel.set_experiment("churn")
    with keel.start_run():
        keel.log_params({"model": "rf", "max_depth": 8})
        for epoch in range(10):
            keel.log_metric("loss", 1 / (epoch + 1))
"""

from __future__ import annotations

from keel.lazy import lazy_exports

# Not ``typing.TYPE_CHECKING``: importing typing costs ``keel --version`` a quarter of its
# time. Type checkers read any constant of this name as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "keel.client",
    "init": "keel.tracking.fluent",
    "register_model": "keel.registry",
    "log_model": "keel.models",
    "load_model": "keel.models",
    "set_experiment": "keel.tracking.fluent",
    "start_run": "keel.tracking.fluent",
    "end_run": "keel.tracking.fluent",
    "active_run": "keel.tracking.fluent",
    "log_param": "keel.tracking.fluent",
    "log_params": "keel.tracking.fluent",
    "log_metric": "keel.tracking.fluent",
    "log_metrics": "keel.tracking.fluent",
    "set_tag": "keel.tracking.fluent",
    "set_tags": "keel.tracking.fluent",
    "log_artifact": "keel.tracking.fluent",
    "log_artifacts": "keel.tracking.fluent",
    "log_dict": "keel.tracking.fluent",
    "flush": "keel.tracking.fluent",
    "get_run": "keel.tracking.fluent",
    "search_runs": "keel.tracking.fluent",
    "seed_everything": "keel.tracking.fluent",
    "log_dataset": "keel.data",
    "load_dataset": "keel.data",
    "step": "keel.pipelines",
    "pipeline": "keel.pipelines",
    "prompts": "keel.llm",
    "guardrails": "keel.llm",
    "rag": "keel.llm",
}

__all__ = [
    "Client",
    "__version__",
    "active_run",
    "end_run",
    "flush",
    "get_run",
    "guardrails",
    "init",
    "load_dataset",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_dataset",
    "log_dict",
    "log_metric",
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

if TYPE_CHECKING:
    from keel.client import Client
    from keel.data import load_dataset, log_dataset
    from keel.llm import guardrails, prompts, rag
    from keel.models import load_model, log_model
    from keel.pipelines import pipeline, step
    from keel.registry import register_model
    from keel.tracking.fluent import (
        active_run,
        end_run,
        flush,
        get_run,
        init,
        log_artifact,
        log_artifacts,
        log_dict,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        search_runs,
        seed_everything,
        set_experiment,
        set_tag,
        set_tags,
        start_run,
    )


#: Subpackages reachable as attributes (``keel.models.log_model``) without an import.
_SUBPACKAGES = {
    "artifacts",
    "checks",
    "data",
    "errors",
    "features",
    "governance",
    "llm",
    "models",
    "pipelines",
    "registry",
    "tracking",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=_SUBPACKAGES)
