"""A definitions file: imported, its definitions collected and checked as a whole.

``keel features apply defs.py`` imports the file (the user's own code, as a pipeline
file is) and collects every :class:`~keel.features.definitions.Entity`,
:class:`~keel.features.definitions.FeatureView` and
:class:`~keel.features.definitions.OnDemandFeatureView` it defines at module level.
An on-demand view's function is imported again from the same file when it runs,
and refused when its source no longer matches the digest applied
(:func:`load_function`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from keel.errors import Conflict, InvalidInput, NotFound
from keel.features.definitions import (
    Entity,
    FeatureView,
    OnDemandFeatureView,
    where_prefix,
)

__all__ = ["Definitions", "collect", "load_definitions", "load_function"]


@dataclass(frozen=True)
class Definitions:
    """Every definition of one file, checked together, with their stored specs."""

    file: str
    entities: tuple[Entity, ...]
    views: tuple[FeatureView, ...]
    on_demand: tuple[OnDemandFeatureView, ...]

    def specs(self) -> list[dict[str, Any]]:
        """Every definition's spec: entities first, then views, then on-demand views."""
        keys = {e.name: list(e.join_keys) for e in self.entities}
        base = Path(self.file).parent
        out = [e.spec() for e in self.entities]
        for view in self.views:
            spec = view.spec([k for name in view.entity_names for k in keys[name]])
            if spec["source"]["type"] == "file":
                path = Path(spec["source"]["path"]).expanduser()
                spec["source"]["path"] = str(path if path.is_absolute() else (base / path))
            out.append(spec)
        out += [o.spec(self.file) for o in self.on_demand]
        return out


def collect(namespace: Mapping[str, Any], file: str) -> Definitions:
    """The definitions among ``namespace``'s values, checked as a whole.

    Raises:
        InvalidInput: two definitions share a name, a view names an entity the file
            does not define, or an on-demand view reads a view it does not define;
            each message starts with the file and line of the definition at fault.
    """
    entities: dict[str, Entity] = {}
    views: dict[str, FeatureView] = {}
    on_demand: dict[str, OnDemandFeatureView] = {}
    names: dict[str, tuple[str, int] | None] = {}
    seen: set[int] = set()
    for value in namespace.values():
        if id(value) in seen or not isinstance(value, Entity | FeatureView | OnDemandFeatureView):
            continue
        seen.add(id(value))
        if isinstance(value, Entity):
            # an entity and a view may share a name (a view per entity is common)
            if value.name in entities and entities[value.name] != value:
                raise InvalidInput(
                    f"{where_prefix(value.site)}entity {value.name!r} is defined twice "
                    f"(also at {where_prefix(entities[value.name].site).rstrip(': ')})"
                )
            entities[value.name] = value
            continue
        if value.name in names:
            other = names[value.name]
            raise InvalidInput(
                f"{where_prefix(value.site)}the feature view name {value.name!r} is taken "
                f"(also at {where_prefix(other).rstrip(': ') or 'another definition'}); "
                "views and on-demand views share one namespace"
            )
        names[value.name] = value.site
        if isinstance(value, FeatureView):
            views[value.name] = value
            for entity in value.entities:
                if isinstance(entity, Entity):
                    entities.setdefault(entity.name, entity)
        else:
            on_demand[value.name] = value
    for view in views.values():
        for entity_name in view.entity_names:
            if entity_name not in entities:
                raise InvalidInput(
                    f"{where_prefix(view.site)}feature view {view.name!r} names unknown entity "
                    f"{entity_name!r}; defined entities: {sorted(entities) or 'none'}"
                )
        keys = [k for n in view.entity_names for k in entities[n].join_keys]
        clash = sorted(set(keys) & set(view.feature_names))
        if clash:
            raise InvalidInput(
                f"{where_prefix(view.site)}feature view {view.name!r} has join key(s) {clash} "
                "among its features"
            )
    for odfv in on_demand.values():
        for source in odfv.sources:
            if isinstance(source, FeatureView) and views.get(source.name) is not source:
                raise InvalidInput(
                    f"{where_prefix(odfv.site)}on-demand feature view {odfv.name!r} reads feature "
                    f"view {source.name!r}, which this file does not define at module level"
                )
    return Definitions(
        file,
        tuple(entities[k] for k in sorted(entities)),
        tuple(views[k] for k in sorted(views)),
        tuple(on_demand[k] for k in sorted(on_demand)),
    )


def _import_file(path: Path) -> ModuleType:
    """Import the definitions file at ``path`` as a module of its own (its own code runs).

    Its folder goes on ``sys.path``, as ``python defs.py`` would put it, so the file may
    import its sibling modules (shared transformations, constants).
    """
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    module_name = f"keel_feature_definitions_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"{path} is not a Python file; pass a definitions file such as defs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise InvalidInput(f"{exc.filename}:{exc.lineno}: {exc.msg}") from None
    except InvalidInput:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"{path}:{line}: " if line else f"{path}: "
        raise InvalidInput(f"{where}{type(exc).__name__}: {exc}") from None
    return module


def load_definitions(path: str | Path) -> Definitions:
    """Import a definitions file and collect what it defines.

    Raises:
        NotFound: no such file.
        InvalidInput: the file fails to import or a definition is wrong (file:line first).
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise NotFound(f"no definitions file at {path}; pass the .py file that defines the views")
    module = _import_file(file)
    return collect(vars(module), str(file))


_FUNCTIONS: dict[tuple[str, str, str], Callable[[Any], Any]] = {}


def load_function(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The function of an on-demand view's stored spec, imported from its definitions file.

    Raises:
        NotFound: the definitions file or the function is gone.
        Conflict: the function's source differs from the one applied, so what would run
            is not what was applied (re-apply the definitions).
    """
    fn_spec = spec["function"]
    key = (fn_spec["file"], fn_spec["name"], fn_spec["code_digest"])
    cached = _FUNCTIONS.get(key)
    if cached is not None:
        return cached
    file = Path(fn_spec["file"])
    view = spec["name"]
    if not file.is_file():
        raise NotFound(
            f"on-demand feature view {view!r} was applied from {file}, which is gone; "
            "apply the definitions again from where they now live"
        )
    module = _import_file(file)
    fn = getattr(module, fn_spec["name"], None)
    if isinstance(fn, OnDemandFeatureView):
        fn = fn.function
    if not callable(fn):
        raise NotFound(f"{file} no longer defines {fn_spec['name']!r} for on-demand view {view!r}")
    code = textwrap.dedent(inspect.getsource(fn))
    if hashlib.sha256(code.encode()).hexdigest() != fn_spec["code_digest"]:
        raise Conflict(
            f"the function {fn_spec['name']!r} of on-demand feature view {view!r} changed in "
            f"{file} since it was applied; run `keel features apply {file}` so training and "
            "serving run the same code"
        )
    _FUNCTIONS[key] = fn
    return fn
