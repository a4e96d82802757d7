"""``@keel.step``: a plain function that a pipeline can call, cache, retry and place.

Outside a pipeline a step is the function it decorates: calling it calls
the function. Inside a pipeline being built, calling it records a node of
the graph and returns a placeholder for its output (see
``keel.pipelines.graph``).

Options are validated here, once, when the decorator runs; a bad option
names the file and line of the decorator.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, overload

from keel.errors import InvalidInput

__all__ = ["Step", "parse_memory", "step"]

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IUNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(value: int | str | None) -> int | None:
    """Bytes from ``2_000_000_000``, ``"2GB"`` or ``"512MiB"``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"memory must be bytes or a size like '2GB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidInput(f"memory must be a positive number of bytes, got {value}")
        return value
    match = _MEMORY.match(str(value))
    if not match:
        raise InvalidInput(f"memory must be bytes or a size like '2GB' or '512MiB', got {value!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    factor = _IUNITS[unit[0]] if "i" in unit else _UNITS[unit[:1]]
    result = int(number * factor)
    if result <= 0:
        raise InvalidInput(f"memory must be positive, got {value!r}")
    return result


def _where(depth: int) -> str:
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Step:
    """A function marked as a pipeline step, with its execution options.

    Attributes:
        fn: the decorated function.
        name: the step's name in the graph (default: the function's name).
        cache: reuse outputs when the cache key matches (code, parameters, inputs).
        retries: extra attempts after a failure or a timeout.
        retry_delay: seconds between attempts.
        timeout: seconds an attempt may take before it is killed.
        cpus, gpus, memory: resources the Ray executor reserves (memory in bytes).
        external: files or folders the step reads that its arguments do not name;
            their contents enter the cache key.
        outputs: names of the values a step returns as a tuple, so that a pipeline
            can unpack them (``train, test = split(df)``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        cache: bool = True,
        retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        cpus: float | None = None,
        gpus: float | None = None,
        memory: int | str | None = None,
        external: Sequence[str] = (),
        outputs: Sequence[str] | None = None,
        _depth: int = 2,
    ) -> None:
        where = _where(_depth + 1)
        if not callable(fn) or isinstance(fn, Step):
            raise InvalidInput(f"{where}: @step decorates a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "step"))
        self.cache = cache
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.cpus = cpus
        self.gpus = gpus
        self.memory = memory
        self.external = tuple(external) if not isinstance(external, str) else (external,)
        self.outputs = None if outputs is None else tuple(outputs)
        self.defined_at = where
        self._validate(where)
        functools.update_wrapper(self, fn)

    def _validate(self, where: str) -> None:
        def bad(message: str) -> InvalidInput:
            return InvalidInput(f"{where}: step {self.name!r}: {message}")

        if not isinstance(self.name, str) or not re.match(r"^[A-Za-z_][\w.\-]{0,127}$", self.name):
            raise bad(f"name must be an identifier-like string, got {self.name!r}")
        if not isinstance(self.cache, bool):
            raise bad(f"cache must be True or False, got {self.cache!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise bad(f"retries must be a non-negative integer, got {self.retries!r}")
        if not isinstance(self.retry_delay, int | float) or self.retry_delay < 0:
            raise bad(
                f"retry_delay must be a non-negative number of seconds, got {self.retry_delay!r}"
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or self.timeout <= 0
        ):
            raise bad(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        for label in ("cpus", "gpus"):
            value = getattr(self, label)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise bad(f"{label} must be a non-negative number, got {value!r}")
        try:
            self.memory = parse_memory(self.memory)
        except InvalidInput as exc:
            raise bad(str(exc)) from None
        if not all(isinstance(p, str) and p for p in self.external):
            raise bad(f"external must be a list of paths, got {self.external!r}")
        if self.outputs is not None and (
            len(self.outputs) < 2
            or not all(isinstance(o, str) and o.isidentifier() for o in self.outputs)
            or len(set(self.outputs)) != len(self.outputs)
        ):
            raise bad(
                f"outputs must name two or more distinct values (identifiers), got {self.outputs!r}"
            )

    @property
    def qualname(self) -> str:
        """``module.qualname`` of the function: what the cache and lineage call the step."""
        return (
            f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.name)}"
        )

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @property
    def resources(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("cpus", self.cpus), ("gpus", self.gpus), ("memory", self.memory))
            if v is not None
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from keel.pipelines.graph import current_builder

        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add_call(self, args, kwargs, sys._getframe(1))

    def __repr__(self) -> str:
        return f"<keel step {self.name} ({self.qualname})>"


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = ...,
    cache: bool = ...,
    retries: int = ...,
    retry_delay: float = ...,
    timeout: float | None = ...,
    cpus: float | None = ...,
    gpus: float | None = ...,
    memory: int | str | None = ...,
    external: Sequence[str] = ...,
    outputs: Sequence[str] | None = ...,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function as a pipeline step: ``@keel.step`` or ``@keel.step(retries=2, ...)``.

    Args:
        name: the step's name in the graph (default: the function's name).
        cache: ``False`` for a step that must always run (it reads a clock, a
            live service …); its outputs are then never reused.
        retries: extra attempts after a failure or a timeout.
        retry_delay: seconds between attempts (default 1).
        timeout: seconds an attempt may take; the attempt is then killed and counts
            as failed.
        cpus, gpus, memory: what the Ray executor reserves for the step (``memory``
            as bytes or a size like ``"2GB"``); the local executor ignores them.
        external: paths (files or folders) the step reads directly; a change in their
            contents invalidates the cache.
        outputs: names for the values of a returned tuple, so the pipeline can
            unpack the call (``train, test = split(df)``).
    """
    if fn is not None:
        if options:
            raise InvalidInput("use @step or @step(option=...), not both")
        return Step(fn)

    def decorate(func: Callable[..., Any]) -> Step:
        return Step(func, **options)

    return decorate
