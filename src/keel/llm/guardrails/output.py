"""Output scanners: whether an answer follows the prompt's response schema, and rests on its context.

- ``json_schema`` trips when the answer is not JSON (read as it is, with no
  code fence stripped: a client that asked for a schema parses the answer as
  sent, as the ``json_schema`` eval scorer does) or does not validate against
  the request's ``ScanContext.response_schema``. The reason names the broken
  rule and where (``at $.age: 'type' is 'integer'``), never the offending
  value. With no schema for the request, it does not trip and says it was
  skipped. A schema that is not itself a valid JSON schema is a configuration
  error (InvalidInput). Each distinct schema's validator is built once.
- ``groundedness`` compares the answer with ``ScanContext.context`` (the
  passages the request gave the model): the answer and the passages are split
  into sentences and embedded in one batched call with the packaged local
  model (:mod:`keel.llm.embedding`); an answer sentence is supported when its
  cosine similarity to some passage sentence (or whole passage) reaches
  ``min_similarity`` (0.45 by default: sentences that restate a passage score
  0.5-0.95 with all-MiniLM-L6-v2, answers about something else 0.1-0.3). The
  score is the share of unsupported answer sentences, so the default
  ``threshold`` of 0.5 trips when half or more of the answer is unsupported.
  Embedding overlap is a coarse signal: it catches an answer about something
  the context does not mention, not one that contradicts it with the same
  words. With no context, or an empty answer, it does not trip and says it was
  skipped.

Neither can redact (there is nothing to mask, only a judgement), so their
actions are ``block`` or ``flag``. PII leaving in an answer is the ``pii``
scanner's job at the output stage.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.errors import InvalidInput
from keel.llm.guardrails.base import ScanContext, Scanner, Verdict

__all__ = ["Groundedness", "JsonSchemaScanner", "split_sentences"]

_VALIDATORS_MAX = 256
_validators: dict[str, Any] = {}
_validators_lock = threading.Lock()


def _refuse_redact(scanner: Scanner) -> None:
    if scanner.action == "redact":
        raise InvalidInput(
            f"guardrail {scanner.name!r} cannot redact (it judges the whole answer); "
            "use action block or flag"
        )


def _validator(schema: Mapping[str, Any]) -> Any:
    """The jsonschema validator of ``schema``, built once per distinct schema."""
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _validators.get(key)
    if found is not None:
        return found
    try:
        import jsonschema
    except ImportError:
        raise InvalidInput(
            "the json_schema guardrail needs jsonschema: pip install 'keel[llm-evals]'"
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(
            f"guardrail 'json_schema': the response schema is not a valid JSON schema: "
            f"{exc.message}"
        ) from None
    validator = cls(dict(schema))
    with _validators_lock:
        if len(_validators) >= _VALIDATORS_MAX:
            _validators.pop(next(iter(_validators)))
        _validators[key] = validator
    return validator


def _where(path: Any) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class JsonSchemaScanner(Scanner):
    """Trips on an answer that is not JSON valid against the request's response schema.

    Args:
        action: ``block`` (the default) or ``flag``.
        threshold: unused beyond its check: the score is 1.0 on a violation, else 0.0.
    """

    name: ClassVar[str] = "json_schema"
    stages: ClassVar[tuple[str, ...]] = ("output",)
    default_action: ClassVar[str] = "block"

    def __init__(self, *, action: str | None = None, threshold: float = 0.5) -> None:
        super().__init__(action=action, threshold=threshold)
        _refuse_redact(self)

    def scan(self, text: str, context: ScanContext, *, stage: str = "output") -> Verdict:
        """Whether ``text`` parses as JSON and follows ``context.response_schema``.

        Raises:
            InvalidInput: the response schema is not a valid JSON schema.
        """
        schema = context.response_schema
        if schema is None:
            return self._verdict(stage, False, "skipped: the request has no response schema")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            # the position, not the text: a reason never repeats the answer
            where = f"line {exc.lineno}, column {exc.colno}"
            return self._verdict(stage, True, f"the answer is not JSON ({where})")
        error = next(iter(_validator(schema).iter_errors(document)), None)
        if error is None:
            return self._verdict(stage, False, "the answer follows the response schema")
        rule = json.dumps(error.validator_value, default=str)
        if len(rule) > 80:
            rule = rule[:77] + "..."
        return self._verdict(
            stage,
            True,
            f"the answer does not follow the response schema: at {_where(error.absolute_path)}, "
            f"{error.validator!r} is {rule}",
        )

    def _verdict(self, stage: str, tripped: bool, reason: str) -> Verdict:
        return Verdict(
            scanner=self.name,
            stage=stage,
            tripped=tripped,
            score=1.0 if tripped else 0.0,
            reason=reason,
            action=self.action,
        )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after ``.``, ``!`` or ``?`` and at line breaks.

    Fragments of fewer than three words join the sentence before them (a list
    marker, "Yes.", a heading), so each sentence says something to compare.
    """
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if sentences and len(piece.split()) < 3:
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


class Groundedness(Scanner):
    """Trips when too much of an answer is unsupported by the request's context passages.

    Args:
        min_similarity: the cosine similarity, in [0, 1], at which an answer sentence
            counts as supported by a passage sentence.
        action: ``flag`` (the default) or ``block``.
        threshold: the share of unsupported answer sentences at which it trips.
    """

    name: ClassVar[str] = "groundedness"
    stages: ClassVar[tuple[str, ...]] = ("output",)
    default_action: ClassVar[str] = "flag"
    #: It runs a model: a server runs its scans off the event loop.
    heavy: ClassVar[bool] = True

    def __init__(
        self, *, min_similarity: float = 0.45, action: str | None = None, threshold: float = 0.5
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        _refuse_redact(self)
        if (
            isinstance(min_similarity, bool)
            or not isinstance(min_similarity, int | float)
            or not 0.0 <= float(min_similarity) <= 1.0
        ):
            raise InvalidInput(
                f"guardrail 'groundedness': min_similarity must be a number in [0, 1], "
                f"got {min_similarity!r}"
            )
        self.min_similarity = float(min_similarity)

    def scan(self, text: str, context: ScanContext, *, stage: str = "output") -> Verdict:
        """The share of ``text``'s sentences that no passage of ``context.context`` supports."""
        passages = [p for p in context.context if p.strip()]
        if not passages:
            return self._verdict(stage, 0.0, "skipped: the request has no context to compare with")
        answer = split_sentences(text)
        if not answer:
            return self._verdict(stage, 0.0, "skipped: the answer is empty")
        from keel.llm.embedding import embed

        support = list(
            dict.fromkeys([*passages, *(s for p in passages for s in split_sentences(p))])
        )
        vectors = embed([*answer, *support])
        best = (vectors[: len(answer)] @ vectors[len(answer) :].T).max(axis=1)
        unsupported = int((best < self.min_similarity).sum())
        score = unsupported / len(answer)
        reason = (
            f"{unsupported} of {len(answer)} answer sentences unsupported by the context "
            f"(similarity under {self.min_similarity:g})"
        )
        return self._verdict(stage, score, reason)

    def _verdict(self, stage: str, score: float, reason: str) -> Verdict:
        return Verdict(
            scanner=self.name,
            stage=stage,
            tripped=score >= self.threshold and score > 0.0,
            score=score,
            reason=reason,
            action=self.action,
        )
