"""Guardrails: scanners that read a prompt or an answer and block, redact or flag it.

``scan(text, scanners=[...])`` returns every scanner's :class:`Verdict`;
``guard(text, scanners)`` applies them in order (redactions feed the next
scanner, the first block stops) and returns a :class:`Guarded`. Scanners are
instances, names or ``{"scanner": name, **options}`` mappings
(:func:`make_scanner`); :data:`SCANNER_NAMES` lists the built-in ones:

- ``pii`` (:mod:`~keel.llm.guardrails.pii`): emails, phones, cards, IBANs,
  national IDs, IP addresses, API keys and secrets, redacted consistently;
- ``token_limit``, ``banned_terms``, ``regex`` (:mod:`~keel.llm.guardrails.limits`);
- ``json_schema``, ``groundedness`` (:mod:`~keel.llm.guardrails.output`), on answers;
- ``injection``, ``injection_heuristics``, ``injection_classifier``
  (:mod:`~keel.llm.guardrails.injection`): prompt injection and jailbreaks.

The rules of a run are :mod:`~keel.llm.guardrails.api`'s; what a scanner is,
:mod:`~keel.llm.guardrails.base`'s. Names load on first use, so importing this
package loads no scanner and no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

_EXPORTS = {
    "ACTIONS": "keel.llm.guardrails.base",
    "STAGES": "keel.llm.guardrails.base",
    "Finding": "keel.llm.guardrails.base",
    "Redactor": "keel.llm.guardrails.base",
    "ScanContext": "keel.llm.guardrails.base",
    "Scanner": "keel.llm.guardrails.base",
    "Verdict": "keel.llm.guardrails.base",
    "DEFAULT_SCANNERS": "keel.llm.guardrails.api",
    "SCANNER_NAMES": "keel.llm.guardrails.api",
    "Guarded": "keel.llm.guardrails.api",
    "ScannerSpec": "keel.llm.guardrails.api",
    "guard": "keel.llm.guardrails.api",
    "make_scanner": "keel.llm.guardrails.api",
    "make_scanners": "keel.llm.guardrails.api",
    "register_scanner": "keel.llm.guardrails.api",
    "scan": "keel.llm.guardrails.api",
    "PII_KINDS": "keel.llm.guardrails.pii",
    "PiiScanner": "keel.llm.guardrails.pii",
    "BannedTerms": "keel.llm.guardrails.limits",
    "RegexRules": "keel.llm.guardrails.limits",
    "TokenLimit": "keel.llm.guardrails.limits",
    "Groundedness": "keel.llm.guardrails.output",
    "JsonSchemaScanner": "keel.llm.guardrails.output",
    "InjectionClassifier": "keel.llm.guardrails.injection",
    "InjectionHeuristics": "keel.llm.guardrails.injection",
    "InjectionScanner": "keel.llm.guardrails.injection",
}

__all__ = [
    "ACTIONS",
    "DEFAULT_SCANNERS",
    "PII_KINDS",
    "SCANNER_NAMES",
    "STAGES",
    "BannedTerms",
    "Finding",
    "Groundedness",
    "Guarded",
    "InjectionClassifier",
    "InjectionHeuristics",
    "InjectionScanner",
    "JsonSchemaScanner",
    "PiiScanner",
    "Redactor",
    "RegexRules",
    "ScanContext",
    "Scanner",
    "ScannerSpec",
    "TokenLimit",
    "Verdict",
    "guard",
    "make_scanner",
    "make_scanners",
    "register_scanner",
    "scan",
]

if TYPE_CHECKING:
    from keel.llm.guardrails.api import (
        DEFAULT_SCANNERS,
        SCANNER_NAMES,
        Guarded,
        ScannerSpec,
        guard,
        make_scanner,
        make_scanners,
        register_scanner,
        scan,
    )
    from keel.llm.guardrails.base import (
        ACTIONS,
        STAGES,
        Finding,
        Redactor,
        ScanContext,
        Scanner,
        Verdict,
    )
    from keel.llm.guardrails.injection import (
        InjectionClassifier,
        InjectionHeuristics,
        InjectionScanner,
    )
    from keel.llm.guardrails.limits import BannedTerms, RegexRules, TokenLimit
    from keel.llm.guardrails.output import Groundedness, JsonSchemaScanner
    from keel.llm.guardrails.pii import PII_KINDS, PiiScanner

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
