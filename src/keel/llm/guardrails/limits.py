"""Limit scanners: a text's size in tokens, terms it must not contain, and patterns of your own.

- ``token_limit`` trips when a text has more than ``max_tokens`` tokens. Tokens
  are counted the way the gateway estimates them when an upstream reports no
  usage (:func:`keel.llm.gateway.tokens.estimate_text`: characters and words,
  no tokenizer), so a limit means the same in a guardrail and in a budget, and
  is within a few tens of percent of a real tokenizer. It blocks or flags; it
  cannot redact (cutting a prompt short changes what it asks).
- ``banned_terms`` trips on any of its terms, matched ignoring case and only
  as whole words: "ass" does not match "class", and a term of several words
  matches across any run of spaces. Redaction masks each match as
  ``<BANNED_TERM_n>``.
- ``regex`` trips on any of its rules: patterns you give, compiled once when
  the scanner is made (a pattern that does not compile is refused then, with
  the error), each with a name that reasons and placeholders use
  (``<ORDER_ID_1>``).

Each scores 1.0 when it trips and 0.0 otherwise. Reasons name counts and rule
names, never the matched text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import ClassVar

from keel.errors import InvalidInput
from keel.llm.guardrails.base import Finding, ScanContext, Scanner, Verdict

__all__ = ["BannedTerms", "RegexRules", "TokenLimit"]

_RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TokenLimit(Scanner):
    """Trips on a text of more than ``max_tokens`` tokens (estimated as the gateway does).

    Args:
        max_tokens: the most tokens a text may have (a positive whole number).
        action: ``block`` (the default) or ``flag``.
        threshold: unused beyond its check: the score is 1.0 over the limit, else 0.0.
    """

    name: ClassVar[str] = "token_limit"
    default_action: ClassVar[str] = "block"

    def __init__(
        self, *, max_tokens: int, action: str | None = None, threshold: float = 0.5
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        if self.action == "redact":
            raise InvalidInput(
                "guardrail 'token_limit' cannot redact (it would cut the text short); "
                "use action block or flag"
            )
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidInput(
                f"guardrail 'token_limit': max_tokens must be a whole number >= 1, "
                f"got {max_tokens!r}"
            )
        self.max_tokens = max_tokens

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """Whether ``text`` is over the limit; the reason gives the count and the limit."""
        from keel.llm.gateway.tokens import estimate_text

        tokens = estimate_text(text)
        over = tokens > self.max_tokens
        relation = "over" if over else "within"
        return Verdict(
            scanner=self.name,
            stage=stage,
            tripped=over,
            score=1.0 if over else 0.0,
            reason=f"{tokens} tokens (estimated), {relation} the limit of {self.max_tokens}",
            action=self.action,
        )


def _masked(
    text: str, spans: Sequence[tuple[str, int, int]], context: ScanContext, *, fold_case: bool
) -> tuple[str, list[Finding]]:
    """``text`` with each (kind, start, end) span replaced by its placeholder, spans in order."""
    pieces: list[str] = []
    findings: list[Finding] = []
    last = 0
    for kind, start, end in spans:
        if start < last:  # overlaps one already masked (two rules matched the same text)
            continue
        value = text[start:end]
        placeholder = context.redactor.placeholder(kind, value.lower() if fold_case else value)
        pieces += [text[last:start], placeholder]
        findings.append(Finding(kind, start, end, placeholder))
        last = end
    pieces.append(text[last:])
    return "".join(pieces), findings


class BannedTerms(Scanner):
    """Trips on any of ``terms``, ignoring case, matched only as whole words.

    Args:
        terms: the words or phrases (at least one, none empty).
        action: ``block`` (the default), ``redact`` or ``flag``.
        threshold: unused beyond its check: the score is 1.0 on a match, else 0.0.
    """

    name: ClassVar[str] = "banned_terms"
    default_action: ClassVar[str] = "block"

    def __init__(
        self, *, terms: Sequence[str], action: str | None = None, threshold: float = 0.5
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        if (
            isinstance(terms, str)
            or not isinstance(terms, Sequence)
            or not terms
            or not all(isinstance(term, str) and term.strip() for term in terms)
        ):
            raise InvalidInput(
                f"guardrail 'banned_terms': terms must be a non-empty list of non-empty texts, "
                f"got {terms!r:.200}"
            )
        self.terms = tuple(term.strip() for term in terms)
        # longest first, so "credit card number" wins over "credit card" at the same place
        alternatives = "|".join(
            r"\s+".join(re.escape(word) for word in term.split())
            for term in sorted(set(self.terms), key=len, reverse=True)
        )
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """Whether ``text`` holds a banned term; with ``action="redact"``, each masked."""
        spans = [("banned_term", m.start(), m.end()) for m in self._pattern.finditer(text)]
        return _verdict(self, stage, text, spans, context, what="banned term")


class RegexRules(Scanner):
    """Trips on any of its rules: named regular expressions, compiled once.

    Args:
        patterns: a pattern, a list of patterns (named ``rule_1``, ``rule_2``…), or a
            mapping of rule name (lower case, digits, ``_``) to pattern.
        ignore_case: match ignoring case.
        action: ``block`` (the default), ``redact`` or ``flag``.
        threshold: unused beyond its check: the score is 1.0 on a match, else 0.0.
    """

    name: ClassVar[str] = "regex"
    default_action: ClassVar[str] = "block"

    def __init__(
        self,
        *,
        patterns: str | Sequence[str] | Mapping[str, str],
        ignore_case: bool = False,
        action: str | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        if isinstance(patterns, str):
            named = {"rule_1": patterns}
        elif isinstance(patterns, Mapping):
            named = dict(patterns)
        elif isinstance(patterns, Sequence):
            named = {f"rule_{i}": pattern for i, pattern in enumerate(patterns, start=1)}
        else:
            named = {}
        if not named:
            raise InvalidInput(
                "guardrail 'regex': patterns must be a pattern, a non-empty list of patterns "
                f"or a mapping of rule name to pattern, got {patterns!r:.200}"
            )
        if not isinstance(ignore_case, bool):
            raise InvalidInput(
                f"guardrail 'regex': ignore_case must be true or false, got {ignore_case!r}"
            )
        flags = re.IGNORECASE if ignore_case else 0
        compiled: dict[str, re.Pattern[str]] = {}
        for rule, pattern in named.items():
            if not isinstance(rule, str) or not _RULE_NAME.match(rule):
                raise InvalidInput(
                    f"guardrail 'regex': rule name {rule!r} must be lower case letters, digits "
                    "and '_', starting with a letter (it names the rule's placeholder)"
                )
            if not isinstance(pattern, str) or not pattern:
                raise InvalidInput(
                    f"guardrail 'regex': rule {rule!r} needs a pattern (a non-empty text), "
                    f"got {pattern!r}"
                )
            try:
                compiled[rule] = re.compile(pattern, flags)
            except re.error as exc:
                raise InvalidInput(
                    f"guardrail 'regex': rule {rule!r} is not a valid regular expression "
                    f"({exc}); check its escapes (in YAML, quote backslashes with single quotes)"
                ) from None
            if compiled[rule].fullmatch("") is not None:
                raise InvalidInput(
                    f"guardrail 'regex': rule {rule!r} matches the empty text, so it would trip "
                    "on every text; make it match at least one character"
                )
        self.patterns = {rule: pattern.pattern for rule, pattern in compiled.items()}
        self.ignore_case = ignore_case
        self._compiled = compiled

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """Whether ``text`` matches a rule; with ``action="redact"``, each match masked."""
        spans = [
            (rule, m.start(), m.end())
            for rule, pattern in self._compiled.items()
            for m in pattern.finditer(text)
            if m.end() > m.start()
        ]
        spans.sort(key=lambda span: (span[1], -span[2]))
        return _verdict(self, stage, text, spans, context, what="rule")


def _verdict(
    scanner: Scanner,
    stage: str,
    text: str,
    spans: list[tuple[str, int, int]],
    context: ScanContext,
    *,
    what: str,
) -> Verdict:
    """The verdict of a scanner that trips on any span: counted, and masked when it redacts."""
    if not spans:
        return Verdict(
            scanner=scanner.name,
            stage=stage,
            tripped=False,
            score=0.0,
            reason=f"no {what} matched",
            action=scanner.action,
        )
    counts = Counter(kind for kind, _, _ in spans)
    if what == "rule":
        reason = "matched " + ", ".join(f"rule {rule!r} ({n})" for rule, n in counts.items())
    else:
        reason = f"{len(spans)} banned term match{'es' if len(spans) > 1 else ''}"
    redacted: str | None = None
    if scanner.action == "redact":
        redacted, findings = _masked(text, spans, context, fold_case=what != "rule")
    else:
        findings = [Finding(kind, start, end) for kind, start, end in spans]
    return Verdict(
        scanner=scanner.name,
        stage=stage,
        tripped=True,
        score=1.0,
        reason=reason,
        action=scanner.action,
        findings=tuple(findings),
        redacted=redacted,
    )
