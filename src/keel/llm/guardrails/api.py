"""Running guardrails: :func:`scan` for every verdict, :func:`guard` for what the text becomes.

Scanners are given as instances, by name (``"pii"``), or as a mapping of the
name and its options (``{"scanner": "pii", "action": "redact", "kinds":
["email"]}``); :func:`make_scanner` builds one and refuses an unknown name or
option with the list of valid ones. The options are the scanner class's
keyword arguments, so a class documents its own.

Names map to scanner classes through a registry: each module of
:data:`SCANNER_MODULES` declares its scanners as the ``Scanner`` subclasses
it defines, each under its ``name``. A module is imported the first time one
of its names is asked for (the classifier's module, and the model behind it,
load only for a configuration that uses it), and a class of your own joins
with :func:`register_scanner`.

The rules of a run:

- :func:`scan` gives every scanner the same original text and returns every
  verdict, in order; :func:`guard` applies them: a ``redact`` verdict's masked
  text is what the next scanner reads, and the first ``block`` stops the run
  (``Guarded.blocked_by`` is its verdict, naming the scanner). A ``flag``
  changes nothing. A scanner that trips with ``redact`` but masks nothing
  leaves the text as it was.
- A scanner runs only at the stages it declares (``json_schema`` and
  ``groundedness`` read answers only); at another stage it is skipped, with
  no verdict.
- Every verdict's ``latency_ms`` is measured here, around the scanner's call.
- One :class:`ScanContext` is one request: pass the same one to the input and
  output runs, so a value keeps its placeholder from prompt to answer.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidInput, KeelError
from keel.llm.guardrails.base import ScanContext, Scanner, Verdict

__all__ = [
    "DEFAULT_SCANNERS",
    "SCANNER_MODULES",
    "SCANNER_NAMES",
    "Guarded",
    "ScannerSpec",
    "guard",
    "make_scanner",
    "make_scanners",
    "register_scanner",
    "scan",
    "scanner_class",
]

#: A scanner as a configuration gives it: an instance, a name, or ``{"scanner": name, ...}``.
ScannerSpec = Scanner | str | Mapping[str, Any]

#: The built-in scanners' names and the modules that define them (imported on first use).
SCANNER_MODULES: dict[str, str] = {
    "pii": "keel.llm.guardrails.pii",
    "token_limit": "keel.llm.guardrails.limits",
    "banned_terms": "keel.llm.guardrails.limits",
    "regex": "keel.llm.guardrails.limits",
    "json_schema": "keel.llm.guardrails.output",
    "groundedness": "keel.llm.guardrails.output",
    "injection": "keel.llm.guardrails.injection",
    "injection_heuristics": "keel.llm.guardrails.injection_rules",
    "injection_classifier": "keel.llm.guardrails.injection_model",
}
#: The built-in scanners' names.
SCANNER_NAMES: tuple[str, ...] = tuple(SCANNER_MODULES)
#: What :func:`scan` and :func:`guard` run when given no scanners.
DEFAULT_SCANNERS: tuple[str, ...] = ("injection", "pii")
#: The stages a run reads (a scanner may declare ``both``; a run is one or the other).
_RUN_STAGES = ("input", "output")

_registry: dict[str, type[Scanner]] = {}
_imported: set[str] = set()
_lock = threading.Lock()


def register_scanner(cls: type[Scanner]) -> type[Scanner]:
    """Make ``cls`` buildable by its ``name`` (usable as a class decorator).

    Raises:
        InvalidInput: ``cls`` is not a Scanner subclass with a ``name``, or the name is
            another class's.
    """
    if not (isinstance(cls, type) and issubclass(cls, Scanner)) or inspect.isabstract(cls):
        raise InvalidInput(f"a guardrail scanner must be a concrete Scanner subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"scanner class {cls.__qualname__} needs a 'name' class attribute")
    module = SCANNER_MODULES.get(name)
    if module is not None and module != cls.__module__:
        # load the built-in of that name first, so a clash is refused rather than shadowing it
        try:
            _load_module(module)
        except ImportError:
            pass
    with _lock:
        taken = _registry.get(name)
        if taken is not None and taken is not cls:
            raise InvalidInput(
                f"scanner name {name!r} is taken by {taken.__module__}.{taken.__qualname__}; "
                f"give {cls.__qualname__} another name"
            )
        _registry[name] = cls
    return cls


def _load_module(module: str) -> None:
    """Import ``module`` and register the Scanner subclasses it defines (once)."""
    if module in _imported:
        return
    loaded = importlib.import_module(module)
    for value in list(vars(loaded).values()):
        if (
            isinstance(value, type)
            and issubclass(value, Scanner)
            and value.__module__ == module
            and not inspect.isabstract(value)
            and isinstance(getattr(value, "name", None), str)
        ):
            register_scanner(value)
    _imported.add(module)


def _load_all() -> None:
    """Import every module of :data:`SCANNER_MODULES` that imports, for names they add."""
    for module in dict.fromkeys(SCANNER_MODULES.values()):
        try:
            _load_module(module)
        except ImportError:
            continue  # its own names say so when asked for (scanner_class)


def _known_names() -> list[str]:
    extra = sorted(set(_registry) - set(SCANNER_NAMES))
    return [*SCANNER_NAMES, *extra]


def scanner_class(name: str) -> type[Scanner]:
    """The scanner class registered as ``name``, importing its module on first use.

    Raises:
        InvalidInput: no scanner has that name (the message lists the valid names), or
            the module that defines it cannot be imported.
    """
    found = _registry.get(name)
    if found is not None:
        return found
    module = SCANNER_MODULES.get(name)
    if module is None:
        _load_all()  # a module may define more scanners than the table names
        found = _registry.get(name)
        if found is not None:
            return found
        raise InvalidInput(
            f"unknown guardrail scanner {name!r}; valid names: {', '.join(_known_names())}"
        )
    try:
        _load_module(module)
    except ImportError as exc:
        raise InvalidInput(
            f"guardrail scanner {name!r} is not available: its module {module} does not "
            f"import ({exc})"
        ) from None
    found = _registry.get(name)
    if found is None:
        raise KeelError(f"module {module} defines no scanner named {name!r}")
    return found


def _options(cls: type[Scanner]) -> tuple[list[str], list[str], bool]:
    """``cls``'s keyword options, the required ones, and whether it takes any (``**kwargs``)."""
    options: list[str] = []
    required: list[str] = []
    takes_any = False
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.name == "self" or parameter.kind is parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            takes_any = True
            continue
        options.append(parameter.name)
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    return options, required, takes_any


def make_scanner(spec: ScannerSpec) -> Scanner:
    """One scanner from its spec: an instance (returned as is), a name, or a mapping.

    Args:
        spec: ``"pii"``, or ``{"scanner": "pii", "action": "redact", **options}``: every key
            but ``scanner`` is a keyword argument of the scanner's class (``action`` and
            ``threshold`` for all of them).

    Raises:
        InvalidInput: an unknown name or option, a missing required option, or an option
            value the scanner refuses; the message lists what is valid.
    """
    if isinstance(spec, Scanner):
        return spec
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, Mapping):
        if "scanner" not in spec:
            raise InvalidInput(
                f"a scanner given as a mapping needs a 'scanner' key naming it (one of "
                f"{', '.join(_known_names())}), got keys {sorted(map(str, spec))}"
            )
        name = spec["scanner"]
        given = {str(key): value for key, value in spec.items() if key != "scanner"}
        if not isinstance(name, str):
            raise InvalidInput(f"'scanner' must be a scanner's name, got {name!r}")
    else:
        raise InvalidInput(
            "a scanner is a Scanner, a name or a mapping with a 'scanner' key, "
            f"got {type(spec).__name__}"
        )
    cls = scanner_class(name)
    options, required, takes_any = _options(cls)
    unknown = sorted(set(given) - set(options))
    if unknown and not takes_any:
        raise InvalidInput(
            f"guardrail {name!r}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid options: {', '.join(options)}"
        )
    missing = [option for option in required if option not in given]
    if missing:
        raise InvalidInput(
            f"guardrail {name!r} needs the option{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))} (options: {', '.join(options)})"
        )
    return cls(**given)


def make_scanners(specs: ScannerSpec | Iterable[ScannerSpec] | None) -> list[Scanner]:
    """Scanners from specs (one spec alone is a list of one; None: :data:`DEFAULT_SCANNERS`)."""
    if specs is None:
        specs = DEFAULT_SCANNERS
    if isinstance(specs, Scanner | str | Mapping):
        specs = [specs]
    return [make_scanner(spec) for spec in specs]


def _check_run(text: object, stage: str, context: ScanContext | None) -> ScanContext:
    if not isinstance(text, str):
        raise InvalidInput(f"guardrails scan text, got {type(text).__name__}")
    if stage not in _RUN_STAGES:
        raise InvalidInput(f"stage must be one of {', '.join(_RUN_STAGES)}, got {stage!r}")
    return ScanContext() if context is None else context


def _run_one(scanner: Scanner, text: str, stage: str, context: ScanContext) -> Verdict | None:
    """``scanner``'s verdict, timed here; None when it does not read ``stage``."""
    if stage not in scanner.stages and "both" not in scanner.stages:
        return None
    started = time.perf_counter()
    verdict = scanner.scan(text, context, stage=stage)
    elapsed = (time.perf_counter() - started) * 1000.0
    return dataclasses.replace(verdict, latency_ms=elapsed)


def scan(
    text: str,
    scanners: ScannerSpec | Sequence[ScannerSpec] | None = None,
    *,
    stage: str = "input",
    context: ScanContext | None = None,
) -> list[Verdict]:
    """Every scanner's verdict on ``text``, in order (each reads the original text).

    Args:
        text: the prompt (``stage="input"``) or the answer (``stage="output"``).
        scanners: specs as :func:`make_scanner` takes them; :data:`DEFAULT_SCANNERS` if None.
        stage: ``input`` or ``output``; scanners that do not read it are skipped.
        context: the request's context (placeholders, response schema, passages); a fresh
            one if None.

    Raises:
        InvalidInput: a bad spec, text that is not a string, or an unknown stage.
    """
    context = _check_run(text, stage, context)
    verdicts = []
    for scanner in make_scanners(scanners):
        verdict = _run_one(scanner, text, stage, context)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


@dataclass(frozen=True)
class Guarded:
    """What :func:`guard` made of a text.

    Attributes:
        text: the text after the redactions (as far as the run went, when it was blocked).
        verdicts: the verdicts of the scanners that ran, in order.
        blocked_by: the verdict that blocked (its ``scanner`` names the scanner), or None.
    """

    text: str
    verdicts: list[Verdict]
    blocked_by: Verdict | None = None

    @property
    def blocked(self) -> bool:
        """Whether a scanner blocked the text."""
        return self.blocked_by is not None

    @property
    def redacted(self) -> bool:
        """Whether a redaction changed the text."""
        return any(
            v.tripped and v.action == "redact" and v.redacted is not None for v in self.verdicts
        )

    def to_dict(self) -> dict[str, Any]:
        """The outcome as a trace records it: the verdicts and who blocked, never the text."""
        return {
            "blocked_by": None if self.blocked_by is None else self.blocked_by.scanner,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def guard(
    text: str,
    scanners: ScannerSpec | Sequence[ScannerSpec] | None = None,
    *,
    stage: str = "input",
    context: ScanContext | None = None,
) -> Guarded:
    """Run the scanners in order, applying their actions to ``text``.

    A ``redact`` verdict's masked text is what the next scanner reads; the first
    ``block`` stops the run; a ``flag`` only records.

    Args:
        text: the prompt (``stage="input"``) or the answer (``stage="output"``).
        scanners: specs as :func:`make_scanner` takes them; :data:`DEFAULT_SCANNERS` if None.
        stage: ``input`` or ``output``; scanners that do not read it are skipped.
        context: the request's context; pass the input run's to the output run, so values
            keep their placeholders.

    Raises:
        InvalidInput: a bad spec, text that is not a string, or an unknown stage.
    """
    context = _check_run(text, stage, context)
    verdicts: list[Verdict] = []
    for scanner in make_scanners(scanners):
        verdict = _run_one(scanner, text, stage, context)
        if verdict is None:
            continue
        verdicts.append(verdict)
        if verdict.blocks:
            return Guarded(text, verdicts, verdict)
        if verdict.tripped and verdict.action == "redact" and verdict.redacted is not None:
            text = verdict.redacted
    return Guarded(text, verdicts)
