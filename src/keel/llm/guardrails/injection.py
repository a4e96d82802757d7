"""Prompt injection and jailbreaks: heuristics, a classifier on MiniLM embeddings, and both combined.

Three scanners, all subclasses of :class:`~keel.llm.guardrails.base.Scanner`:

- ``injection_heuristics``
  (:class:`~keel.llm.guardrails.injection_rules.InjectionHeuristics`):
  compiled rules for the attack classes, read over several views of the text
  (as written, reversed, rot13, digits-for-letters undone, spacing squashed,
  base64, hex and percent-encoded runs decoded, text hidden in Unicode tag
  characters). See :mod:`keel.llm.guardrails.injection_rules`.
- ``injection_classifier``
  (:class:`~keel.llm.guardrails.injection_model.InjectionClassifier`):
  logistic regression on an embedding of the text by the packaged
  all-MiniLM-L6-v2, with a ``static`` (the default) or a ``contextual``
  encoder. See :mod:`keel.llm.guardrails.injection_model`, which also holds
  the labelled set, the weights file and :func:`train`.
- ``injection`` (:class:`InjectionScanner`, here): both, stacked.

Stacking: the combined score is a small logistic regression over the
heuristic score and the classifier's log-odds,
``sigmoid(a * heuristic + b * logit(classifier) + c)``. ``a`` and ``b`` are
fitted on out-of-fold classifier scores of the training split (so the stacker
sees the classifier as it does on texts it was not fitted on), and ``c`` is
shifted so that 0.5 is the operating point chosen on the training split (2 %
false positives). The three numbers live per encoder in the weights file
beside the classifier's (see :data:`WEIGHTS_PATH` and ``data/README.md``);
:func:`train` fits both.

Scores are in ``[0, 1]``; each scanner trips at its ``threshold`` (0.5 by
default). Reasons name the kinds found, never the text. The rules take about
0.1 ms on a chat message and the static encoder about 0.1 ms more; see
``bench/guardrails.py``.

This module also re-exports the public names of the two layers, so
``from keel.llm.guardrails.injection import train`` (and the others in
``__all__``) works as it always has.
"""

from __future__ import annotations

from typing import ClassVar

from keel.llm.guardrails.base import ScanContext, Verdict
from keel.llm.guardrails.injection_model import (
    DATA_PATH,
    ENCODERS,
    WEIGHTS_PATH,
    InjectionClassifier,
    Labelled,
    check_encoder,
    embed_texts,
    load_labelled,
    load_model,
    load_weights,
    train,
    write_weights,
)
from keel.llm.guardrails.injection_rules import (
    HeuristicResult,
    InjectionBase,
    InjectionHeuristics,
    describe_kinds,
    heuristic_scan,
)

__all__ = [
    "DATA_PATH",
    "ENCODERS",
    "WEIGHTS_PATH",
    "HeuristicResult",
    "InjectionClassifier",
    "InjectionHeuristics",
    "InjectionScanner",
    "Labelled",
    "embed_texts",
    "heuristic_scan",
    "load_labelled",
    "load_weights",
    "train",
    "write_weights",
]


class InjectionScanner(InjectionBase):
    """Prompt injection and jailbreaks: the rules and the classifier, stacked.

    The score is ``sigmoid(a * heuristic + b * logit(classifier) + c)`` with
    ``a``, ``b`` and ``c`` from the weights file (fitted on out-of-fold scores
    of the training split; ``c`` puts 0.5 where that split's false-positive
    rate is 2 %). Findings are the rules' spans.

    Args:
        action: ``block`` (the default) or ``flag``.
        threshold: the combined score at which it trips.
        encoder: the classifier's encoder (see :class:`InjectionClassifier`).
        weights: a weights file other than the packaged one.
    """

    name: ClassVar[str] = "injection"

    def __init__(
        self,
        *,
        action: str | None = None,
        threshold: float = 0.5,
        encoder: str = "static",
        weights: str | None = None,
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        self.encoder = check_encoder(encoder, self.name)
        self.weights = weights

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """The combined verdict on ``text``; the reason gives both layers' scores."""
        model = load_model(self.encoder, self.weights)
        rules = heuristic_scan(text)
        classifier = float(model.probabilities([text])[0])
        score = model.combine(rules.score, classifier)
        found = describe_kinds(rules.kinds) or "nothing"
        if rules.mention and rules.kinds:
            found += ", asked about rather than used"
        detail = f"rules {rules.score:.2f} ({found}), classifier {classifier:.2f}"
        return self._verdict(stage, score, detail, rules.findings)
