"""``@keel.pipeline``: a function of steps, its parameters, and loading one by name.

The pipeline's parameters are the decorated function's parameters (their
defaults are the pipeline's defaults). Values must be JSON-able; a string
such as ``"datasets:/churn"`` is a dataset reference, pinned to the version
it names when the run starts (``datasets:/churn@3``) so the run and any
reproduction of it read the same bytes.

A target is a :class:`Pipeline`, ``"package.module:attr"`` or
``"path/to/file.py:attr"``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.pipelines.graph import Builder, Graph, StepOutput, check_literal, map_leaves
from keel.targets import import_user_module

if TYPE_CHECKING:
    from keel.pipelines.runner import PipelineRun

__all__ = ["Pipeline", "load_target", "pipeline"]


class Pipeline:
    """A function whose body calls steps; run it with :meth:`run` or ``keel pipeline run``.

    Attributes:
        fn: the decorated function.
        name: the pipeline's name (default: the function's name); the pipeline run's name.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise InvalidInput(f"@pipeline decorates a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "pipeline"))
        #: How this pipeline was loaded (``module:attr`` or ``file.py:attr``), once known.
        self.target: str | None = None

    @property
    def qualname(self) -> str:
        return (
            f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.name)}"
        )

    def defaults(self) -> dict[str, Any]:
        """The parameters and their default values (required ones are absent)."""
        return {
            name: p.default
            for name, p in inspect.signature(self.fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with ``params``, checked against the function's signature."""
        signature = inspect.signature(self.fn)
        given = dict(params or {})
        accepted = {
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        unknown = sorted(set(given) - accepted)
        if unknown:
            raise InvalidInput(
                f"pipeline {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters are {', '.join(sorted(accepted)) or '(none)'}"
            )
        resolved = {**self.defaults(), **given}
        missing = sorted(accepted - set(resolved))
        if missing:
            raise InvalidInput(
                f"pipeline {self.name!r} needs a value for {', '.join(missing)} "
                f"(e.g. -p {missing[0]}=...)"
            )
        where = f"pipeline {self.name!r}"
        return {k: check_literal(v, f"{where}, parameter {k!r}") for k, v in resolved.items()}

    def build(self, params: Mapping[str, Any] | None = None) -> Graph:
        """Run the body with ``params`` to record the graph; validate it; run no step.

        Raises:
            InvalidInput: a bad parameter, argument or use of a step output, naming
                the file and line where it happened.
        """
        resolved = self.resolve_params(params)
        with Builder(self.name) as builder:
            returned = self.fn(**resolved)
        if not builder.nodes:
            raise InvalidInput(
                f"pipeline {self.name!r} ({_source_of(self.fn)}) calls no steps; decorate the "
                "functions it calls with @keel.step"
            )

        def check(leaf: Any) -> Any:
            if isinstance(leaf, StepOutput):
                if builder.nodes.get(leaf.node.id) is not leaf.node:
                    raise InvalidInput(
                        f"pipeline {self.name!r} returns an output of another pipeline build"
                    )
                return leaf
            return check_literal(
                leaf, f"pipeline {self.name!r} ({_source_of(self.fn)}) return value"
            )

        returned = map_leaves(returned, check) if returned is not None else None
        return Graph(self.name, resolved, builder.nodes, returned)

    def run(self, **params: Any) -> PipelineRun:
        """Run the pipeline locally with these parameters (see :func:`run_pipeline`)."""
        from keel.pipelines.runner import run_pipeline

        return run_pipeline(self, params=params)

    __call__ = run

    def __repr__(self) -> str:
        return f"<keel pipeline {self.name} ({self.qualname})>"


def pipeline(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Mark a function whose body calls steps as a pipeline: ``@keel.pipeline``.

    Args:
        name: the pipeline's name (default: the function's name).
    """
    if fn is not None:
        return Pipeline(fn, name=name)
    return lambda func: Pipeline(func, name=name)


def _source_of(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return "?"
    path = code.co_filename
    try:
        rel = os.path.relpath(path)
        path = rel if not rel.startswith("..") else path
    except ValueError:
        pass
    return f"{path}:{code.co_firstlineno}"


def _import_file(path: Path) -> Any:
    """Import a ``.py`` file as a module the way ``python path.py`` would see its siblings."""
    path = path.resolve()
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        loaded_file = getattr(loaded, "__file__", None)
        if loaded_file and Path(loaded_file).resolve() == path:
            return loaded
        # Another module has that name: load the file under a name of its own.
        digest = hashlib.blake2s(str(path).encode(), digest_size=4).hexdigest()
        name = f"keel_pipeline_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
    if not name.isidentifier():
        raise InvalidInput(f"cannot import {path}: {name!r} is not a valid module name")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_target(target: Pipeline | str) -> Pipeline:
    """The pipeline a target names: a :class:`Pipeline`, ``module:attr`` or ``file.py:attr``.

    Raises:
        InvalidInput: a malformed target, or an attribute that is not a pipeline.
        NotFound: no such module, file or attribute.
    """
    if isinstance(target, Pipeline):
        if target.target is None:
            target.target = _target_of(target)
        return target
    if not isinstance(target, str) or ":" not in target:
        raise InvalidInput(
            f"expected a pipeline target like 'package.module:pipeline' or "
            f"'path/to/file.py:pipeline', got {target!r}"
        )
    where, _, attr = target.rpartition(":")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise NotFound(f"no such pipeline file: {path}")
        module = _import_file(path)
        spec = f"{path.resolve()}:{attr}"
    else:
        module = import_user_module(
            where,
            target,
            "target",
            "run from the folder that holds it, or give a file path like path/to/file.py:attr",
        )
        spec = f"{where}:{attr}"
    found = getattr(module, attr, None)
    if found is None:
        raise NotFound(f"{where} has no attribute {attr!r}")
    if not isinstance(found, Pipeline):
        raise InvalidInput(
            f"{target} is a {type(found).__name__}, not a pipeline; decorate it with @keel.pipeline"
        )
    found.target = spec
    return found


def _target_of(pipe: Pipeline) -> str:
    module_name = getattr(pipe.fn, "__module__", None)
    module = sys.modules.get(module_name or "")
    attr = next(
        (k for k, v in vars(module).items() if v is pipe) if module is not None else iter(()),
        None,
    )
    if module is None or attr is None:
        return f"<in-memory>:{pipe.name}"
    file = getattr(module, "__file__", None)
    importable = module_name != "__main__" and not (module_name or "").startswith("keel_pipeline_")
    if importable and module_name and "." in module_name:
        return f"{module_name}:{attr}"
    if file:  # a script or a loose file: remember where it is
        return f"{Path(file).resolve()}:{attr}"
    return f"{module_name}:{attr}" if importable else f"<in-memory>:{pipe.name}"
