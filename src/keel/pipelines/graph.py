"""Building a pipeline's graph from plain Python calls, and validating it before anything runs.

A pipeline is a function whose body calls steps. Building runs that body
once with the pipeline's parameters while a :class:`Builder` is active:
each step call binds its arguments against the step's signature, records
a :class:`Node` with the caller's file and line, and returns a
:class:`StepOutput` placeholder. Placeholders can be passed to other steps,
indexed (``metrics["auc"]``), unpacked when the step declares ``outputs``,
and returned; anything else (``df.head()``, ``if model:``, ``len(x)``) is a
mistake that is reported at the line that made it, before any step runs.

Arguments that are not placeholders must be JSON-able values: they are the
step's parameters, and they enter its cache key.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.pipelines.steps import Step

__all__ = [
    "Builder",
    "CallSite",
    "Graph",
    "Node",
    "StepOutput",
    "check_literal",
    "current_builder",
    "map_leaves",
]

_builder: contextvars.ContextVar[Builder | None] = contextvars.ContextVar(
    "keel_pipeline_builder", default=None
)


def current_builder() -> Builder | None:
    """The builder of the pipeline being built in this context, if any."""
    return _builder.get()


@dataclass(frozen=True)
class CallSite:
    """A place in the user's code."""

    filename: str
    lineno: int

    @classmethod
    def of(cls, frame: FrameType) -> CallSite:
        return cls(frame.f_code.co_filename, frame.f_lineno)

    def __str__(self) -> str:
        path = self.filename
        try:
            rel = os.path.relpath(path)
            if not rel.startswith(".."):
                path = rel
        except ValueError:  # another drive on Windows
            pass
        return f"{path}:{self.lineno}"


def _misuse(ref: StepOutput, what: str, frame: FrameType | None) -> InvalidInput:
    where = f"{CallSite.of(frame)}: " if frame is not None else ""
    return InvalidInput(
        f"{where}{what} on the output of step {ref.node.id!r} (called at {ref.node.site}); "
        "while a pipeline is built, step outputs are placeholders that can only be passed to "
        "other steps, indexed with [...], or returned. Do this work inside a step"
    )


class StepOutput:
    """The future output of a step call, while the pipeline's graph is built.

    Attributes:
        node: the call that produces it.
        index: which element of a declared tuple output, if the step declares ``outputs``.
        path: keys applied after loading (``out["auc"]`` → ``("auc",)``).
    """

    __slots__ = ("index", "node", "path")

    def __init__(self, node: Node, index: int | None = None, path: tuple[Any, ...] = ()) -> None:
        self.node = node
        self.index = index
        self.path = path

    @property
    def output_name(self) -> str:
        outputs = self.node.step.outputs
        return outputs[self.index] if outputs and self.index is not None else "return"

    def __getitem__(self, key: Any) -> StepOutput:
        import sys

        if not isinstance(key, str | int) or isinstance(key, bool):
            raise _misuse(self, f"indexing with {key!r} (only str or int keys)", sys._getframe(1))
        if self.node.step.outputs and self.index is None:
            raise _misuse(
                self,
                f"indexing [{key!r}]: step {self.node.step.name!r} returns several outputs "
                f"({', '.join(self.node.step.outputs)}); unpack them first",
                sys._getframe(1),
            )
        return StepOutput(self.node, self.index, (*self.path, key))

    def __iter__(self) -> Iterator[StepOutput]:
        import sys

        outputs = self.node.step.outputs
        if not outputs or self.index is not None or self.path:
            raise InvalidInput(
                f"{CallSite.of(sys._getframe(1))}: cannot unpack the output of step "
                f"{self.node.id!r}: it returns one value. Declare its names with "
                f"@step(outputs=['a', 'b']) to return a tuple and unpack it"
            )
        return iter([StepOutput(self.node, i) for i in range(len(outputs))])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import sys

        raise _misuse(self, f"attribute access .{name}", sys._getframe(1))

    def __bool__(self) -> bool:
        import sys

        raise _misuse(self, "a truth test (if/while/and/or)", sys._getframe(1))

    def __len__(self) -> int:
        import sys

        raise _misuse(self, "len()", sys._getframe(1))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import sys

        raise _misuse(self, "a call", sys._getframe(1))

    def _arith(self, *_: Any) -> Any:
        import sys

        raise _misuse(self, "arithmetic or comparison", sys._getframe(1))

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = _arith
    __lt__ = __le__ = __gt__ = __ge__ = _arith

    def __repr__(self) -> str:
        suffix = "" if self.index is None else f".{self.output_name}"
        keys = "".join(f"[{k!r}]" for k in self.path)
        return f"<output of step {self.node.id}{suffix}{keys}>"


@dataclass
class Node:
    """One step call in the graph."""

    id: str
    step: Step
    args: dict[str, Any]
    site: CallSite
    upstream: list[str] = field(default_factory=list)


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with every non-container leaf replaced by ``fn(leaf)`` (dicts, lists, tuples)."""
    if isinstance(value, dict):
        return {k: map_leaves(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_leaves(v, fn) for v in value]
    return fn(value)


def check_literal(value: Any, where: str) -> Any:
    """A JSON-able copy of a step argument (tuples become lists, numpy scalars numbers)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise InvalidInput(f"{where}: dict keys must be strings, got {bad[0]!r}")
        return {k: check_literal(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [check_literal(v, where) for v in value]
    if isinstance(value, StepOutput):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    raise InvalidInput(
        f"{where}: a {type(value).__name__} cannot be a step argument; pass JSON-able values "
        "(str, number, bool, None, lists, dicts), step outputs, or a dataset reference such as "
        "'datasets:/name@3' that the step loads with keel.load_dataset"
    )


class Builder:
    """Collects step calls into a :class:`Graph` while a pipeline function runs."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.nodes: dict[str, Node] = {}
        self._counts: dict[str, int] = {}
        self._token: contextvars.Token[Builder | None] | None = None

    def __enter__(self) -> Builder:
        self._token = _builder.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _builder.reset(self._token)

    def add_call(
        self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any], frame: FrameType
    ) -> Any:
        site = CallSite.of(frame)
        where = f"{site}: step {step.name!r}"
        try:
            bound = step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        upstream: list[str] = []
        for name, value in bound.arguments.items():
            kind = step.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                raise InvalidInput(f"{where}: steps cannot take *{name}; name the arguments")
            checked = check_literal(value, f"{where}, argument {name!r}")
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(checked)
            else:
                arguments[name] = checked

            def collect(leaf: Any, name: str = name) -> Any:
                if isinstance(leaf, StepOutput):
                    if self.nodes.get(leaf.node.id) is not leaf.node:
                        raise InvalidInput(
                            f"{where}: argument {name!r} is the output of a step from another "
                            "pipeline build; steps can only use outputs of the same pipeline"
                        )
                    if leaf.node.step.outputs and leaf.index is None:
                        raise InvalidInput(
                            f"{where}: argument {name!r} is the whole tuple of step "
                            f"{leaf.node.id!r}; unpack it ("
                            f"{', '.join(leaf.node.step.outputs)} = {leaf.node.step.name}(...))"
                        )
                    if leaf.node.id not in upstream:
                        upstream.append(leaf.node.id)
                return leaf

            map_leaves(checked, collect)
        count = self._counts.get(step.name, 0) + 1
        self._counts[step.name] = count
        node_id = step.name if count == 1 else f"{step.name}#{count}"
        node = Node(node_id, step, arguments, site, upstream)
        self.nodes[node_id] = node
        return StepOutput(node)


@dataclass
class Graph:
    """A validated pipeline: its nodes in a runnable order, parameters and return value."""

    pipeline: str
    params: dict[str, Any]
    nodes: dict[str, Node]
    returned: Any

    def downstream(self, node_id: str) -> list[str]:
        return [n.id for n in self.nodes.values() if node_id in n.upstream]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "node": n.id,
                "step": n.step.qualname,
                "upstream": n.upstream,
                "called_at": str(n.site),
                "cache": n.step.cache,
                "resources": n.step.resources,
            }
            for n in self.nodes.values()
        ]
