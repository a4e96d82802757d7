"""Code digests: what a step's cache key and a pipeline run record about its code.

A step's code is its function's source plus the source of every
*project-local* function and class it reaches: names it uses that resolve,
in its module's globals or its closure, to functions, classes or the
attributes of modules whose files live outside the interpreter's standard
library and site-packages (and outside Keel). The walk follows those
recursively, so editing a helper two calls away invalidates the cache.
Installed libraries are identified by the environment the run records,
not by their source.

Sources are compared as normalized syntax trees (``ast.dump`` without
decorators and docstrings), so reformatting, comments and ``@step`` options
change no digest. The digest is BLAKE3 over the canonical JSON of
``{qualified name: normalized source}``; the readable sources are kept as
the snapshot a pipeline run stores.
"""

from __future__ import annotations

import ast
import functools
import inspect
import marshal
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.artifacts import canonical_json, hash_bytes

__all__ = ["CodeDigest", "code_digest", "combine", "is_project_local", "project_modules"]


@dataclass(frozen=True)
class CodeDigest:
    """A digest and the sources it covers (``{qualified name: source}``)."""

    digest: str
    sources: dict[str, str]
    modules: frozenset[str]


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(sorted(str(Path(r).resolve()) for r in roots if r))


def is_project_local(module: types.ModuleType | None) -> bool:
    """Whether a module is the user's code (not the standard library, an installed package or Keel)."""
    if module is None:
        return False
    name = module.__name__
    if name == "keel" or name.startswith("keel."):
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    resolved = str(Path(file).resolve())
    return not any(resolved.startswith(root + "/") or resolved == root for root in _library_roots())


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _normalized(obj: Any) -> tuple[str, str]:
    """``(readable source, normalized form)``; compiled code stands in when there is no source."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        data = marshal.dumps(code) if code is not None else repr(obj).encode()
        return f"<no source: {obj!r}>", hash_bytes(data)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, source
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node is tree.body[0]:
                node.decorator_list = []
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return source, ast.dump(tree, annotate_fields=False)


def _unwrap(obj: Any) -> Any:
    from keel.pipelines.steps import Step

    if isinstance(obj, Step):
        return obj.fn
    from keel.pipelines.definition import Pipeline

    if isinstance(obj, Pipeline):
        return obj.fn
    return inspect.unwrap(obj) if callable(obj) else obj


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _local_code_object(obj: Any) -> bool:
    if not isinstance(obj, types.FunctionType | type):
        return False
    return is_project_local(sys.modules.get(getattr(obj, "__module__", "") or ""))


def code_digest(fn: Callable[..., Any]) -> CodeDigest:
    """The digest of ``fn`` and the project-local code it reaches."""
    root = _unwrap(fn)
    seen: dict[str, tuple[str, str]] = {}
    modules: set[str] = set()
    todo: list[Any] = [root]
    while todo:
        obj = _unwrap(todo.pop())
        key = _qualname(obj)
        if key in seen:
            continue
        seen[key] = _normalized(obj)
        module_name = getattr(obj, "__module__", None)
        if module_name:
            modules.add(module_name)
        functions = (
            [v for v in vars(obj).values() if isinstance(v, types.FunctionType)]
            if isinstance(obj, type)
            else [obj]
        )
        for func in functions:
            code = getattr(func, "__code__", None)
            if code is None:
                continue
            names = set(_names(code))
            scope = getattr(func, "__globals__", {})
            values = [scope[n] for n in names if n in scope]
            for cell in getattr(func, "__closure__", None) or ():
                try:
                    values.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    continue
            for value in values:
                if isinstance(value, types.ModuleType):
                    if is_project_local(value):
                        for n in names:
                            attr = _unwrap(getattr(value, n, None))
                            if _local_code_object(attr):
                                todo.append(attr)
                    continue
                target = _unwrap(value)
                if _local_code_object(target) and target is not obj:
                    todo.append(target)
    normalized = {k: v[1] for k, v in sorted(seen.items())}
    digest = hash_bytes(canonical_json({"format": "keel.code/v1", "code": normalized}))
    return CodeDigest(digest, {k: v[0] for k, v in sorted(seen.items())}, frozenset(modules))


def combine(parts: dict[str, str]) -> str:
    """One digest over named digests (a pipeline's code: its function and every step)."""
    return hash_bytes(
        canonical_json({"format": "keel.code/v1", "parts": dict(sorted(parts.items()))})
    )


def project_modules(digests: list[CodeDigest]) -> list[types.ModuleType]:
    """The project-local modules these digests cover (what a remote worker must receive by value)."""
    names = sorted({m for d in digests for m in d.modules})
    found = [sys.modules.get(n) for n in names]
    return [m for m in found if m is not None and is_project_local(m)]
