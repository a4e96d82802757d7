"""Which runtime loads a registered version: its native package or a compiled form.

``keel models compile`` stores a compiled form of a version (ONNX or a treelite
checkpoint) with a parity report, and records the verdict in the registry. A
loader asks for one of:

- ``"native"``: the package as it was logged (the default of :func:`keel.load_model`).
- ``"onnx"`` / ``"treelite"``: the newest compilation to that target that passed
  parity; none is an error that names the command making one.
- ``"auto"``: onnx if a compilation passed parity, else treelite if one did, else
  native, with the reason (``keel serve`` and ``keel predict`` default to it).

Only what the registry recorded counts: a compiled package is used because its
compilation passed parity on the version's own data, never because it is there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, KeelError, NotFound

if TYPE_CHECKING:
    from keel.registry.client import RegistryClient
    from keel.registry.entities import ModelCompilation

__all__ = ["COMPILED", "RUNTIMES", "RuntimeChoice", "check_runtime", "choose_runtime"]

#: What ``runtime=`` takes, for :func:`keel.load_model`, ``keel serve`` and ``keel predict``.
RUNTIMES = ("native", "auto", "onnx", "treelite")
#: The compiled runtimes, in the order ``auto`` prefers them, with the library each runs on.
COMPILED = {"onnx": "onnxruntime", "treelite": "treelite"}

NATIVE_REQUESTED = "native runtime requested"


def check_runtime(runtime: Any) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`.

    Raises:
        InvalidInput: anything else.
    """
    if runtime not in RUNTIMES:
        raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return str(runtime)


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a version loads with, and why.

    Attributes:
        runtime: ``"native"``, ``"onnx"`` or ``"treelite"``.
        reason: one short line, e.g. ``compiled onnx passed parity (max |Δp| 3.1e-07)``.
        package_digest: the compiled package's folder manifest; ``None`` for native.
    """

    runtime: str
    reason: str
    package_digest: str | None = None


def choose_runtime(
    registry: RegistryClient, name: str, version: int, runtime: str
) -> RuntimeChoice:
    """The runtime ``models:/name/version`` loads with when ``runtime`` is asked for.

    Args:
        registry: the registry the version is in (its artifact store holds the reports).
        name: the registered model.
        version: the version.
        runtime: one of :data:`RUNTIMES`.

    Raises:
        InvalidInput: an unknown ``runtime``.
        NotFound: ``"onnx"`` or ``"treelite"`` asked for, and no compilation to it
            passed parity; the message says how to make one.
    """
    runtime = check_runtime(runtime)
    if runtime == "native":
        return RuntimeChoice("native", NATIVE_REQUESTED)
    compilations = registry.list_compilations(name, version)
    targets = tuple(COMPILED) if runtime == "auto" else (runtime,)
    why_not: list[str] = []
    for target in targets:
        mine = [c for c in compilations if c.target == target]
        passed = next((c for c in reversed(mine) if c.passed), None)
        if passed is None:
            if mine:  # the newest failed: say why, from its report
                why_not.append(_failure(registry, mine[-1]))
            continue
        library = COMPILED[target]
        if runtime == "auto" and importlib.util.find_spec(library) is None:
            # auto means "the fastest that is right": a missing library is not an error here
            why_not.append(
                f"{target} compilation of v{version} passed parity but {library} is not "
                "installed (pip install 'keel[compile]')"
            )
            continue
        assert passed.package_digest is not None  # the registry refuses a passed row without one
        return RuntimeChoice(target, _success(registry, passed), passed.package_digest)
    if runtime != "auto":
        failed = f" ({why_not[0]})" if why_not else ""
        raise NotFound(
            f"models:/{name}/{version} has no {runtime} compilation that passed parity"
            f"{failed}; run `keel models compile {name} {version} --to {runtime}`, or "
            "serve it with --runtime native"
        )
    if not why_not:
        return RuntimeChoice("native", f"not compiled (keel models compile {name} {version})")
    return RuntimeChoice("native", "; ".join(why_not))


def _report(registry: RegistryClient, compilation: ModelCompilation) -> dict[str, Any]:
    """The compilation's parity report, or ``{}`` if it cannot be read (it only explains)."""
    try:
        report = registry.artifacts.get_json(compilation.report_digest)
    except (KeelError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _success(registry: RegistryClient, compilation: ModelCompilation) -> str:
    diff = _report(registry, compilation).get("max_abs_diff")
    if isinstance(diff, int | float) and not isinstance(diff, bool):
        return f"compiled {compilation.target} passed parity (max |Δp| {diff:.1e})"
    return f"compiled {compilation.target} passed parity"


def _failure(registry: RegistryClient, compilation: ModelCompilation) -> str:
    c = compilation
    reason = str(_report(registry, c).get("reason") or f"see report {c.report_digest}")
    if c.package_digest is None:  # nothing was compiled: the converter refused
        return f"{c.target} compilation of v{c.version} was refused: {reason}"
    reason = reason.removeprefix("parity failed: ")
    return f"{c.target} compilation of v{c.version} failed parity: {reason}"
