"""How Keel's values cross HTTP: the one codec ``keel server`` and the http transport share.

:func:`to_wire` turns what a client method returns (frozen dataclasses such
as ``Run`` or ``ModelVersion``, and lists, dicts, tuples and scalars of
them) into JSON-ready data; :func:`from_wire` rebuilds the value from that
data and the type the method declares. Field names are the dataclasses' own,
so the wire format is the Python API's shape and needs no second set of
models. Floats that JSON cannot carry (NaN, ±infinity, which metrics may
hold) travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Any, Union

from keel.errors import InvalidInput

__all__ = ["from_wire", "to_wire"]

_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_wire(value: Any) -> Any:
    """``value`` as JSON-ready data (dataclasses as objects of their fields)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return to_wire(value.item())
    raise TypeError(f"cannot send a {type(value).__name__} over the wire")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_wire(data: Any, kind: Any) -> Any:
    """Rebuild a value of type ``kind`` from :func:`to_wire`'s data.

    Raises:
        InvalidInput: ``data`` does not have the shape ``kind`` asks for.
    """
    if kind is Any or kind is object:
        return data
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if data is None:
            return None
        if len(options) == 1:
            return from_wire(data, options[0])
        for option in options:
            try:
                return from_wire(data, option)
            except (InvalidInput, TypeError, ValueError):
                continue
        raise InvalidInput(f"expected one of {kind}, got {type(data).__name__}")
    if origin in (list, set, frozenset, tuple) or kind in (list, tuple):
        args = typing.get_args(kind)
        if not isinstance(data, list):
            raise InvalidInput(f"expected a list, got {type(data).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(from_wire(v, a) for v, a in zip(data, args, strict=True))
        item = args[0] if args else Any
        items = [from_wire(v, item) for v in data]
        return items if origin in (list, None) else (origin or list)(items)
    if origin is dict or kind is dict:
        args = typing.get_args(kind)
        value_kind = args[1] if len(args) == 2 else Any
        if not isinstance(data, dict):
            raise InvalidInput(f"expected an object, got {type(data).__name__}")
        return {k: from_wire(v, value_kind) for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise InvalidInput(f"expected a {kind.__name__} object, got {type(data).__name__}")
        hints = _hints(kind)
        fields = {f.name for f in dataclasses.fields(kind) if f.init}
        required = {
            f.name
            for f in dataclasses.fields(kind)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        }
        lacking = sorted(required - set(data))
        if lacking:
            raise InvalidInput(f"a {kind.__name__} object needs {', '.join(lacking)}")
        return kind(**{k: from_wire(v, hints[k]) for k, v in data.items() if k in fields})
    if kind is float:
        if isinstance(data, str) and data in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[data]
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise InvalidInput(f"expected a number, got {type(data).__name__}")
    if kind in (int, str, bool):
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            raise InvalidInput(f"expected {kind.__name__}, got {type(data).__name__}")
        return data
    return data
