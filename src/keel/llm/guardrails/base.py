"""What every guardrail scanner is: a name, a stage, an action, and a ``scan`` that returns a verdict.

A scanner reads one text (a request's prompt on the way in, an answer on the
way out) and returns a :class:`Verdict`: whether it tripped, a score in
``[0, 1]`` (higher means more likely a violation), a reason a person can read
(never the offending text itself), and, for a scanner that redacts, the text
with the findings masked. What happens next is the scanner's configured
``action``:

- ``block``: the request stops with a 4xx that carries the reason;
- ``redact``: the masked text goes on in place of the original;
- ``flag``: the text goes on unchanged and the verdict is logged.

A :class:`ScanContext` travels through every scanner of one request. It holds
the :class:`Redactor`, so the same value gets the same placeholder wherever it
appears in the request (``alice@example.com`` is ``<EMAIL_1>`` in the prompt
and in the answer), and what output scanners compare with: the prompt's
response schema and the retrieved context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from keel.errors import InvalidInput

__all__ = [
    "ACTIONS",
    "STAGES",
    "Finding",
    "Redactor",
    "ScanContext",
    "Scanner",
    "Verdict",
    "check_action",
]

#: What a scanner's trip does: stop with a 4xx, mask and go on, or go on and log.
ACTIONS = ("block", "redact", "flag")
#: Where a scanner runs: on the request's text, on the answer, or on either.
STAGES = ("input", "output", "both")


def check_action(action: object, *, scanner: str) -> str:
    """``action`` if it is one of :data:`ACTIONS`, else an InvalidInput naming the choices."""
    if action not in ACTIONS:
        raise InvalidInput(
            f"guardrail {scanner!r}: action must be one of {', '.join(ACTIONS)}, got {action!r}"
        )
    return str(action)


@dataclass(frozen=True)
class Finding:
    """One span a scanner found: its kind (``email``, ``card``, ``override``…) and where it is.

    ``start`` and ``end`` index the scanned text; ``placeholder`` is what replaced
    the span when the scanner redacted it. The matched text itself is not kept.
    """

    kind: str
    start: int
    end: int
    placeholder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "start": self.start, "end": self.end}
        if self.placeholder is not None:
            out["placeholder"] = self.placeholder
        return out


@dataclass(frozen=True)
class Verdict:
    """What one scanner decided about one text.

    Attributes:
        scanner: the scanner's name (``injection``, ``pii``, ``json_schema``…).
        stage: ``input`` or ``output``: which text it read.
        tripped: whether the text violates the scanner's rule (score at or over its threshold).
        score: how strongly, in ``[0, 1]``.
        reason: why, for a person and for the 4xx of a block; never the offending text.
        action: the scanner's configured action (see :data:`ACTIONS`).
        findings: the spans found, for scanners that find spans.
        redacted: the text with the findings masked, when ``action`` is ``redact`` and it tripped.
        latency_ms: how long the scan took.
    """

    scanner: str
    stage: str
    tripped: bool
    score: float
    reason: str
    action: str
    findings: tuple[Finding, ...] = ()
    redacted: str | None = None
    latency_ms: float = 0.0

    @property
    def blocks(self) -> bool:
        """Whether this verdict stops the request."""
        return self.tripped and self.action == "block"

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a trace records it (no text, only spans, score and reason)."""
        return {
            "scanner": self.scanner,
            "stage": self.stage,
            "tripped": self.tripped,
            "score": round(float(self.score), 6),
            "reason": self.reason,
            "action": self.action,
            "findings": [finding.to_dict() for finding in self.findings],
            "latency_ms": round(float(self.latency_ms), 3),
        }


class Redactor:
    """Placeholders that stay the same within one request: one value, one placeholder.

    >>> redactor = Redactor()
    >>> redactor.placeholder("email", "a@example.com")
    '<EMAIL_1>'
    >>> redactor.placeholder("email", "a@example.com")
    '<EMAIL_1>'
    >>> redactor.placeholder("email", "b@example.com")
    '<EMAIL_2>'
    """

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder of ``value`` of this ``kind``: the one it had, or the next number."""
        key = (kind, value)
        found = self._by_value.get(key)
        if found is None:
            number = self._counts.get(kind, 0) + 1
            self._counts[kind] = number
            found = f"<{kind.upper()}_{number}>"
            self._by_value[key] = found
        return found


@dataclass
class ScanContext:
    """What the scanners of one request share.

    Attributes:
        redactor: the request's placeholders (one per distinct value).
        response_schema: the JSON schema the answer must follow (a prompt's ``response_schema``).
        context: the retrieved passages an answer should rest on (for groundedness).
    """

    redactor: Redactor = field(default_factory=Redactor)
    response_schema: dict[str, Any] | None = None
    context: list[str] = field(default_factory=list)


class Scanner(ABC):
    """A guardrail: reads one text, returns one :class:`Verdict`.

    Subclasses set ``name`` and ``stages`` and implement :meth:`scan`. The
    constructor only stores its arguments (validated), so a scanner is cheap to
    build; anything heavy (a model) loads on the first scan, once per process.

    Args:
        action: what a trip does (see :data:`ACTIONS`).
        threshold: the score at or over which the scanner trips.
    """

    #: The scanner's name in configurations, verdicts and traces.
    name: ClassVar[str]
    #: The stages it can run on (a subset of ``("input", "output")``).
    stages: ClassVar[tuple[str, ...]] = ("input", "output")
    #: The action when none is configured.
    default_action: ClassVar[str] = "flag"

    def __init__(self, *, action: str | None = None, threshold: float = 0.5) -> None:
        self.action = check_action(action or self.default_action, scanner=self.name)
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
            raise InvalidInput(
                f"guardrail {self.name!r}: threshold must be a number in [0, 1], got {threshold!r}"
            )
        self.threshold = float(threshold)

    @abstractmethod
    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """The verdict on ``text`` read at ``stage``."""
