"""What a job asks for, what a queue may use, and what a pool has: one vocabulary.

A job's request and a queue's quota are *resource vectors*: a mapping from a
resource name to an amount. The names are

- ``cpus``: CPUs (a float, ``0.5`` is half a CPU);
- ``memory``: bytes (given as ``16Gi``, ``512Mi``, ``2G`` or a number of bytes);
- ``gpu:<type>``: whole GPUs of one type (``gpu:a100``, ``gpu:l4``); a type is
  a lower-case name as :func:`gpu_type_name` makes it from NVML's device name.

A job that asks for GPUs without a type takes any type its queue has quota
for, tried in the order the queue lists them (Kueue's flavour order).

A :class:`Pool` is where admitted jobs run: the inventory of one worker
(``keel jobs worker``): CPUs, memory, and GPUs by type with their device
indices and memory per device. Admission gives a job exact devices, so a local
job sees exactly those GPUs in ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInput

__all__ = [
    "CPUS",
    "MEMORY",
    "PRIORITIES",
    "Inventory",
    "Request",
    "check_priority",
    "check_vector",
    "format_memory",
    "gpu_key",
    "gpu_type_name",
    "parse_memory",
    "priority_name",
]

CPUS = "cpus"
MEMORY = "memory"
_GPU_PREFIX = "gpu:"

#: Priorities by name; a higher number is admitted first and may preempt lower borrowers.
PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2}

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)
_GPU_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def parse_memory(value: object, what: str = "memory") -> int:
    """Bytes from ``16Gi``, ``512Mi``, ``2G``, ``1.5Ti`` or a number of bytes.

    Raises:
        InvalidInput: not a size, or negative; the message shows the accepted forms.
    """
    if isinstance(value, bool):
        value = None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"{what} must be 0 or more bytes, got {value!r}")
        return int(value)
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(
            f"{what} must be a size such as 16Gi, 512Mi, 2G or a number of bytes, got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def format_memory(n: float) -> str:
    """Bytes as the largest binary unit that keeps one decimal: ``16Gi``, ``1.5Ti``."""
    for unit, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return f"{text}{unit}"
    return f"{int(n)}"


def gpu_type_name(device_name: str) -> str:
    """A GPU type from NVML's device name: ``NVIDIA A100-SXM4-80GB`` → ``a100``.

    The first word after the vendor that holds a digit (``A100``, ``L4``, ``H100``,
    ``T4``), lower-cased; the whole name, simplified, when none does.
    """
    words = re.split(r"[\s_-]+", device_name.strip())
    words = [w for w in words if w.lower() not in {"nvidia", "tesla", "geforce", "quadro"}]
    for word in words:
        if any(c.isdigit() for c in word):
            return check_gpu_type(re.sub(r"[^a-z0-9.]", "", word.lower()))
    return check_gpu_type(re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "gpu")


def check_gpu_type(value: object) -> str:
    """``value`` if it can name a GPU type (``a100``, ``l4``), else ``InvalidInput``."""
    if not isinstance(value, str) or not _GPU_TYPE_RE.match(value):
        raise InvalidInput(
            "a GPU type must be 1-64 lower-case letters, digits, '_', '-' or '.' "
            f"(such as a100 or l4), got {value!r}"
        )
    return value


def gpu_key(gpu_type: str) -> str:
    """The resource name of ``gpu_type``'s GPUs: ``gpu:a100``."""
    return f"{_GPU_PREFIX}{gpu_type}"


def check_priority(value: object) -> int:
    """A priority's number from its name (``low``, ``normal``, ``high``) or number."""
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in PRIORITIES.values():
        return value
    raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}")


def priority_name(value: int) -> str:
    """``high`` for 2, and so on (the number itself when it has no name)."""
    for name, number in PRIORITIES.items():
        if number == value:
            return name
    return str(value)


def _amount(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise InvalidInput(f"{what} must be 0 or more, got {value!r}")
    return float(value)


def check_vector(values: Mapping[str, Any] | None, what: str) -> dict[str, float]:
    """A resource vector from a mapping; memory may be a size (``64Gi``).

    Keys keep their order (a queue lists its GPU types in the order they are tried).

    Raises:
        InvalidInput: an unknown resource name, a negative or non-numeric amount,
            or a fractional GPU count.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what} must be a mapping of resource to amount, got {values!r}")
    vector: dict[str, float] = {}
    for key, raw in values.items():
        name = str(key)
        if name == MEMORY:
            vector[name] = float(parse_memory(raw, f"{what}.memory"))
        elif name == CPUS:
            vector[name] = _amount(raw, f"{what}.cpus")
        elif name.startswith(_GPU_PREFIX):
            check_gpu_type(name.removeprefix(_GPU_PREFIX))
            amount = _amount(raw, f"{what}.{name}")
            if amount != int(amount):
                raise InvalidInput(f"{what}.{name} must be a whole number of GPUs, got {raw!r}")
            vector[name] = amount
        else:
            raise InvalidInput(
                f"{what}: unknown resource {name!r}; expected cpus, memory or gpu:<type> "
                "(such as gpu:a100)"
            )
    return vector


@dataclass(frozen=True)
class Request:
    """What one job asks for.

    Attributes:
        gpus: whole GPUs.
        gpu_type: their type, or ``None`` for any type the queue has quota for.
        cpus: CPUs (fractions allowed).
        memory: bytes of memory.
    """

    gpus: int = 0
    gpu_type: str | None = None
    cpus: float = 1.0
    memory: int = 0

    @classmethod
    def check(
        cls,
        *,
        gpus: object = 0,
        gpu_type: object = None,
        cpus: object = 1.0,
        memory: object = 0,
    ) -> Request:
        """A request from user input, or ``InvalidInput`` naming the bad value."""
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise InvalidInput(f"gpus must be a whole number, 0 or more, got {gpus!r}")
        kind = None if gpu_type in (None, "") else check_gpu_type(gpu_type)
        if kind is not None and gpus == 0:
            raise InvalidInput(f"gpu_type {kind!r} was given without gpus; add --gpus N")
        cpu_count = _amount(cpus, "cpus")
        if cpu_count == 0 and gpus == 0:
            raise InvalidInput("a job must ask for some CPU or a GPU; cpus is 0 and gpus is 0")
        return cls(int(gpus), kind, cpu_count, parse_memory(memory))

    def vector(self, gpu_type: str | None = None) -> dict[str, float]:
        """The resource vector, with its GPUs of ``gpu_type`` (its own type by default)."""
        vector = {CPUS: self.cpus, MEMORY: float(self.memory)}
        kind = gpu_type or self.gpu_type
        if self.gpus:
            if kind is None:
                raise ValueError("a GPU request needs a type to become a vector")
            vector[gpu_key(kind)] = float(self.gpus)
        return vector

    def describe(self, gpu_type: str | None = None) -> str:
        """``2xa100, 8 cpus, 32Gi`` for messages."""
        parts = []
        if self.gpus:
            parts.append(f"{self.gpus}x{gpu_type or self.gpu_type or 'any GPU'}")
        parts.append(f"{self.cpus:g} cpus")
        if self.memory:
            parts.append(format_memory(self.memory))
        return ", ".join(parts)


@dataclass(frozen=True)
class Inventory:
    """What one pool has to run jobs on.

    Attributes:
        cpus: CPUs.
        memory: bytes of memory.
        gpus: device indices by GPU type (``{"a100": (0, 1, 2, 3), "l4": (4, 5)}``).
        gpu_memory: bytes of memory of one device, by GPU type.
    """

    cpus: float
    memory: int
    gpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    gpu_memory: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "inventory") -> Inventory:
        """An inventory from ``{"cpus": 8, "memory": "64Gi", "gpus": {"a100": 4}, ...}``.

        ``gpus`` maps a type to a count (devices numbered on from the previous type's)
        or to a list of device indices; ``gpu_memory`` maps a type to a size.
        """
        if not isinstance(doc, Mapping):
            raise InvalidInput(f"{where} must be a mapping, got {type(doc).__name__}")
        unknown = sorted(set(doc) - {"cpus", "memory", "gpus", "gpu_memory"})
        if unknown:
            raise InvalidInput(
                f"{where}: unknown key(s) {', '.join(unknown)}; expected cpus, memory, gpus, "
                "gpu_memory"
            )
        cpus = _amount(doc.get("cpus", 0), f"{where}.cpus")
        memory = parse_memory(doc.get("memory", 0), f"{where}.memory")
        gpus: dict[str, tuple[int, ...]] = {}
        taken: set[int] = set()
        next_index = 0
        for kind, devices in dict(doc.get("gpus") or {}).items():
            check_gpu_type(kind)
            if isinstance(devices, int) and not isinstance(devices, bool):
                indices = tuple(range(next_index, next_index + devices))
            elif isinstance(devices, list | tuple) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices
            ):
                indices = tuple(devices)
            else:
                raise InvalidInput(
                    f"{where}.gpus.{kind} must be a count or a list of device indices, "
                    f"got {devices!r}"
                )
            if taken & set(indices):
                raise InvalidInput(f"{where}.gpus.{kind}: device index used twice")
            taken |= set(indices)
            next_index = max(taken, default=-1) + 1
            gpus[kind] = indices
        gpu_memory = {
            check_gpu_type(k): parse_memory(v, f"{where}.gpu_memory.{k}")
            for k, v in dict(doc.get("gpu_memory") or {}).items()
        }
        return cls(cpus, memory, gpus, gpu_memory)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "memory": self.memory,
            "gpus": {k: list(v) for k, v in self.gpus.items()},
            "gpu_memory": dict(self.gpu_memory),
        }

    def vector(self) -> dict[str, float]:
        """The inventory as a resource vector (GPU counts by type)."""
        vector = {CPUS: self.cpus, MEMORY: float(self.memory)}
        vector.update({gpu_key(k): float(len(v)) for k, v in self.gpus.items()})
        return vector
