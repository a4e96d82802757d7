"""Scorers: what an answer is worth, per case, as a number, and how each is spelled.

A scorer is a small object with a ``name``, a pass ``threshold`` and
``score(output, case) -> float``; ``score_all(outputs, cases)`` scores many at
once (the embedding scorer batches the whole set through its model in one
call). A score is in [0, 1] for every built-in scorer; a custom scorer may
return any number. A score of NaN means the scorer could not decide (a judge's
reply without a score, a custom scorer that raised): it is kept with its
reason, counted in ``<name>.failed`` and left out of the scorer's mean, never
replaced by a guess. A case whose call failed has no answer and scores 0 on
every scorer (the runner sees to that), so failures pull means down.

Spelling (``--scorer`` on the command line, ``scorers=`` in Python, ``scorers:``
in a policy), checked by :func:`parse_scorer_spec`::

    exact                              output == expected (after trimming spaces)
    contains                           expected (text, or every text of a list) is in the output
    regex:pattern=^\\d+$               the output matches (default pattern: expected)
    json_schema                        the output is JSON valid against the prompt's response_schema
    json_schema:schema=schema.json     … or against this schema file
    numeric:tolerance=0.01             the first number in the output is within 0.01 of expected
    similarity                         cosine similarity of output and reference (or expected)
    judge                              an LLM judge: --judge prompts:/judge@production
    judge:prompt=prompts:/judge/2      … with this judge prompt
    my_package.scorers:tone            a custom scorer: a function (output, case) -> float

Options are ``key=value`` after a colon, separated by commas; in Python or
YAML a mapping says the same: ``{"numeric": {"tolerance": 0.01}}``. Every
scorer takes ``name=`` (its metric name, needed to use a kind twice) and
``threshold=`` (the score at which a case passes it: 1 for the yes/no
scorers, 0.8 for similarity, 0.75 for a judge, i.e. 4 of 5, and 0.5 for
custom scorers). ``exact``, ``contains``, ``regex`` and ``numeric`` take
``field=`` (the case field holding what to compare with: ``expected``, the
default, ``reference`` or ``context``) and the first three
``ignore_case=true``. An unknown kind or option is refused with the list of
valid ones. Building scorers from their spelling, custom ones included, is
:mod:`keel.llm.evals.factory`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from keel.errors import InvalidInput
from keel.llm.evals.cases import Case

__all__ = [
    "RESERVED_NAMES",
    "SCORER_KINDS",
    "ContainsScorer",
    "CustomScorer",
    "ExactScorer",
    "JsonSchemaScorer",
    "NumericScorer",
    "RegexScorer",
    "Scorer",
    "ScorerSpec",
    "Scores",
    "SimilarityScorer",
    "check_scorer_name",
    "kinds_help",
    "parse_scorer_spec",
]

#: A scorer as the command line or a policy spells it: text, or ``{kind: {option: value}}``.
ScorerSpec = str | Mapping[str, Any]

#: Metric names of the run itself, which a scorer's name must not take.
RESERVED_NAMES = frozenset(
    {
        "cases",
        "failures",
        "failure_rate",
        "pass_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "tokens",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "against",
        "diff",
        "mean",
    }
)
_CUSTOM_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_OPTION_SPLIT = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FIELDS = ("expected", "reference", "context")


@dataclass
class Scores:
    """One scorer's verdict on many answers.

    Attributes:
        values: a score per answer (float64); NaN where the scorer could not decide.
        errors: why, per answer (``None`` where it decided).
        details: what the scorer saw, per answer, if it has something to show
            (a judge's reply, a schema's first violation).
        metrics: totals of the scorer's own work (a judge's tokens and cost).
    """

    values: np.ndarray
    errors: list[str | None]
    details: list[str | None] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Scorer:
    """The interface: a name, a pass threshold, and a score per answer.

    Subclasses set ``kind`` and ``options`` and implement :meth:`score`, or
    :meth:`score_all` where scoring many at once is cheaper.

    Args:
        name: the metric name (default: the kind).
        threshold: the score at which a case passes this scorer.
    """

    kind: ClassVar[str] = ""
    #: Options this kind takes besides ``name`` and ``threshold``.
    options: ClassVar[tuple[str, ...]] = ()
    default_threshold: ClassVar[float] = 1.0
    #: Names of metrics a scorer adds besides its mean, pass rate and failures.
    extra_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str | None = None, threshold: float | None = None) -> None:
        self.name = check_scorer_name(name or self.kind)
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        self.spec = self.name

    def check(self, cases: Sequence[Case]) -> None:
        """Refuse cases this scorer cannot score (e.g. with no expected answer), before any call.

        Raises:
            InvalidInput: the message names the first case that does not fit.
        """

    def score(self, output: str, case: Case) -> float:
        """The score of ``output`` as an answer to ``case``."""
        raise NotImplementedError

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        """Score every answer; the default calls :meth:`score` on each."""
        values = np.empty(len(outputs), dtype=np.float64)
        errors: list[str | None] = [None] * len(outputs)
        for i, (output, case) in enumerate(zip(outputs, cases, strict=True)):
            try:
                values[i] = self.score(output, case)
            except Exception as exc:  # one case's failure is recorded, not fatal to the set
                values[i] = math.nan
                errors[i] = f"{type(exc).__name__}: {exc}"
        return Scores(values, errors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def check_scorer_name(name: Any) -> str:
    """A scorer's metric name: letters, digits, ``_`` and ``-``, not one of the run's own."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(
            f"a scorer name must be 1-64 letters, digits, '_' or '-', starting with a letter; "
            f"got {name!r}"
        )
    if name in RESERVED_NAMES:
        raise InvalidInput(
            f"a scorer may not be named {name!r}: the eval's own metrics use it; "
            f"pass name=... (reserved: {', '.join(sorted(RESERVED_NAMES))})"
        )
    return name


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _need(cases: Sequence[Case], what: str, kind: str) -> None:
    for case in cases:
        if case.value(what) is None:
            raise InvalidInput(
                f"case {case.index} has no {what!r}; the {kind} scorer compares each answer "
                f"with it (add it to every case, or pass field=... to use another field)"
            )


class _FieldScorer(Scorer):
    """A scorer comparing the answer with one case field, optionally ignoring case."""

    options: ClassVar[tuple[str, ...]] = ("field", "ignore_case")

    def __init__(
        self,
        name: str | None = None,
        threshold: float | None = None,
        *,
        field: str = "expected",
        ignore_case: bool = False,
    ) -> None:
        super().__init__(name, threshold)
        if field not in _FIELDS:
            raise InvalidInput(
                f"{self.kind}: field must be one of {', '.join(_FIELDS)}; got {field!r}"
            )
        self.field = field
        self.ignore_case = bool(ignore_case)

    def check(self, cases: Sequence[Case]) -> None:
        _need(cases, self.field, self.kind)

    def _fold(self, text: str) -> str:
        return text.casefold() if self.ignore_case else text


class ExactScorer(_FieldScorer):
    """1 when the answer equals the expected value (spaces trimmed), else 0.

    A non-text expected value (a number, a list) matches an answer that is the
    same JSON value.
    """

    kind = "exact"

    def score(self, output: str, case: Case) -> float:
        expected = case.value(self.field)
        if isinstance(expected, str):
            return float(self._fold(output.strip()) == self._fold(expected.strip()))
        try:
            return float(json.loads(output) == expected)
        except ValueError:
            return 0.0


class ContainsScorer(_FieldScorer):
    """1 when the expected text (or every text of a list) appears in the answer, else 0."""

    kind = "contains"

    def check(self, cases: Sequence[Case]) -> None:
        super().check(cases)
        for case in cases:
            value = case.value(self.field)
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise InvalidInput(
                    f"case {case.index}: contains needs {self.field!r} to be text or a list of "
                    f"texts; got {value!r:.80}"
                )

    def score(self, output: str, case: Case) -> float:
        value = case.value(self.field)
        needles = value if isinstance(value, list) else [_text_of(value)]
        text = self._fold(output)
        return float(all(self._fold(n) in text for n in needles))


class RegexScorer(_FieldScorer):
    """1 when the answer matches the pattern (``re.search``), else 0.

    The pattern is the ``pattern`` option, or each case's expected value.
    """

    kind = "regex"
    options = ("pattern", "field", "ignore_case")

    def __init__(
        self,
        name: str | None = None,
        threshold: float | None = None,
        *,
        pattern: str | None = None,
        field: str = "expected",
        ignore_case: bool = False,
    ) -> None:
        super().__init__(name, threshold, field=field, ignore_case=ignore_case)
        self.flags = re.IGNORECASE if self.ignore_case else 0
        self.pattern = None if pattern is None else self._compile(str(pattern), "the pattern")
        self._compiled: dict[str, re.Pattern[str]] = {}

    def _compile(self, pattern: str, where: str) -> re.Pattern[str]:
        try:
            return re.compile(pattern, self.flags)
        except re.error as exc:
            raise InvalidInput(
                f"regex: {where} {pattern!r} is not a regular expression: {exc}"
            ) from None

    def check(self, cases: Sequence[Case]) -> None:
        if self.pattern is not None:
            return
        _need(cases, self.field, self.kind)
        for case in cases:
            text = _text_of(case.value(self.field))
            self._compiled[text] = self._compile(text, f"case {case.index}'s {self.field}")

    def score(self, output: str, case: Case) -> float:
        pattern = self.pattern
        if pattern is None:
            text = _text_of(case.value(self.field))
            pattern = self._compiled.get(text) or self._compile(text, f"case {case.index}")
        return float(pattern.search(output) is not None)


class NumericScorer(Scorer):
    """1 when the first number in the answer is within ``tolerance`` of the expected number."""

    kind = "numeric"
    options = ("tolerance", "field")

    def __init__(
        self,
        name: str | None = None,
        threshold: float | None = None,
        *,
        tolerance: float = 0.0,
        field: str = "expected",
    ) -> None:
        super().__init__(name, threshold)
        if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or tolerance < 0:
            raise InvalidInput(f"numeric: tolerance must be a number >= 0, got {tolerance!r}")
        if field not in _FIELDS:
            raise InvalidInput(f"numeric: field must be one of {', '.join(_FIELDS)}; got {field!r}")
        self.tolerance = float(tolerance)
        self.field = field

    def _expected(self, case: Case) -> float:
        value = case.value(self.field)
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"case {case.index}: numeric needs {self.field!r} to be a number, got {value!r:.80}"
            ) from None

    def check(self, cases: Sequence[Case]) -> None:
        _need(cases, self.field, self.kind)
        for case in cases:
            self._expected(case)

    def score(self, output: str, case: Case) -> float:
        return float(self.score_all([output], [case]).values[0])

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        found = [_NUMBER_RE.search(o.replace(",", "")) for o in outputs]
        got = np.array([float(m.group()) if m else np.nan for m in found], dtype=np.float64)
        want = np.array([self._expected(c) for c in cases], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            close = np.abs(got - want) <= self.tolerance + 1e-12 * np.abs(want)
        details = [None if m else "no number in the answer" for m in found]
        return Scores(close.astype(np.float64), [None] * len(outputs), details)


class JsonSchemaScorer(Scorer):
    """1 when the answer is JSON valid against the schema, else 0 (the violation is kept)."""

    kind = "json_schema"
    options = ("schema",)

    def __init__(
        self,
        name: str | None = None,
        threshold: float | None = None,
        *,
        schema: Mapping[str, Any],
    ) -> None:
        super().__init__(name, threshold)
        try:
            import jsonschema
        except ImportError:
            raise InvalidInput(
                "the json_schema scorer needs jsonschema: pip install 'keel[llm-evals]'"
            ) from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidInput(
                f"json_schema: the schema is not a valid JSON schema: {exc.message}"
            ) from None
        self.schema = dict(schema)
        self._validator = cls(self.schema)

    def score(self, output: str, case: Case) -> float:
        return float(self._violation(output) is None)

    def _violation(self, output: str) -> str | None:
        try:
            doc = json.loads(output)
        except ValueError as exc:
            return f"not JSON: {exc}"
        error = next(iter(self._validator.iter_errors(doc)), None)
        return None if error is None else error.message[:300]

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        details = [self._violation(o) for o in outputs]
        values = np.array([float(d is None) for d in details], dtype=np.float64)
        return Scores(values, [None] * len(outputs), details)


class SimilarityScorer(Scorer):
    """Cosine similarity of the answer's and the reference's embeddings, clipped to [0, 1].

    The reference is each case's ``reference``, else its ``expected``. Every
    answer and reference is embedded in one batched call of the packaged
    all-MiniLM-L6-v2 model (:mod:`keel.llm.embedding`).
    """

    kind = "similarity"
    default_threshold = 0.8

    def check(self, cases: Sequence[Case]) -> None:
        for case in cases:
            if case.target is None:
                raise InvalidInput(
                    f"case {case.index} has neither 'reference' nor 'expected'; the similarity "
                    "scorer compares each answer with one of them"
                )

    def score(self, output: str, case: Case) -> float:
        return float(self.score_all([output], [case]).values[0])

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        from keel.llm.embedding import cosine_rows, embed

        n = len(outputs)
        if n == 0:
            return Scores(np.zeros(0), [])
        targets = [_text_of(c.target) for c in cases]
        # one call, each distinct text once: references repeat when two prompts are compared
        texts = list(dict.fromkeys([*outputs, *targets]))
        position = {t: i for i, t in enumerate(texts)}
        vectors = embed(texts)
        a = vectors[[position[t] for t in outputs]]
        b = vectors[[position[t] for t in targets]]
        values = np.clip(cosine_rows(a, b), 0.0, 1.0)
        return Scores(values, [None] * n)


class CustomScorer(Scorer):
    """A scorer from the user's code: a function, or an object with ``score``.

    Args:
        target: ``module:attribute``, for the record.
        scorer: the function ``(output, case) -> number``, or the object.
    """

    kind = "custom"
    default_threshold = 0.5

    def __init__(self, target: str, scorer: Any, name: str | None = None) -> None:
        own_name = getattr(scorer, "name", None)
        fn_name = getattr(scorer, "__name__", None) or type(scorer).__name__
        threshold = getattr(scorer, "threshold", None)
        super().__init__(name or own_name or fn_name, threshold)
        self.target = target
        self.spec = target
        self._score: Callable[[str, Case], Any] = (
            scorer.score if hasattr(scorer, "score") else scorer
        )
        self._score_all = getattr(scorer, "score_all", None)

    def score(self, output: str, case: Case) -> float:
        value = self._score(output, case)
        return _number(value, self.target)

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        if self._score_all is None:
            return super().score_all(outputs, cases)
        values = np.asarray(
            [_number(v, self.target) for v in self._score_all(list(outputs), list(cases))],
            dtype=np.float64,
        )
        if values.shape != (len(outputs),):
            raise InvalidInput(
                f"{self.target}.score_all returned {values.shape[0]} scores for "
                f"{len(outputs)} answers; it must return one per answer"
            )
        return Scores(values, [None] * len(outputs))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    raise TypeError(f"{where} returned {type(value).__name__} {value!r:.40}, not a number")


# -- spelling ----------------------------------------------------------------------------

#: Built-in kinds, with the options each takes (besides name and threshold).
SCORER_KINDS: dict[str, tuple[str, ...]] = {
    "exact": ExactScorer.options,
    "contains": ContainsScorer.options,
    "regex": RegexScorer.options,
    "json_schema": JsonSchemaScorer.options,
    "numeric": NumericScorer.options,
    "similarity": SimilarityScorer.options,
    "judge": ("prompt", "min", "max"),
}


def kinds_help() -> str:
    """The valid scorer spellings, for messages."""
    return ", ".join(SCORER_KINDS) + ", or module:function for a custom scorer"


def _value(text: str) -> Any:
    """An option's value from text: true/false, a number, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_scorer_spec(spec: ScorerSpec) -> tuple[str, dict[str, Any]]:
    """``(kind, options)`` of a scorer spec; a custom scorer's kind is ``module:attribute``.

    Raises:
        InvalidInput: an unknown kind or option, or a malformed spec; the message
            lists what is valid.
    """
    if isinstance(spec, Mapping):
        if len(spec) != 1:
            raise InvalidInput(
                f"a scorer given as a mapping has one key, its kind ({{'numeric': "
                f"{{'tolerance': 0.01}}}}); got {sorted(map(str, spec))}"
            )
        [(kind, options)] = spec.items()
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise InvalidInput(f"scorer {kind!r}: options must be a mapping, got {options!r:.60}")
        kind, options = str(kind), dict(options)
    elif isinstance(spec, str) and spec.strip():
        text = spec.strip()
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if kind not in SCORER_KINDS:
            if _CUSTOM_RE.match(text):
                return text, {}
            raise InvalidInput(f"unknown scorer {text!r}; expected one of {kinds_help()}")
        options = {}
        if kind == "judge" and rest.strip().startswith("prompts:"):
            rest = f"prompt={rest.strip()}"  # judge:prompts:/judge@production
        for part in _OPTION_SPLIT.split(rest) if rest.strip() else []:
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise InvalidInput(
                    f"scorer {text!r}: options are key=value separated by commas "
                    f"(e.g. numeric:tolerance=0.01), got {part!r}"
                )
            options[key.strip()] = _value(value)
    else:
        raise InvalidInput(f"a scorer must be text or a mapping; got {spec!r:.60}")
    if kind not in SCORER_KINDS:
        raise InvalidInput(f"unknown scorer {kind!r}; expected one of {kinds_help()}")
    allowed = ("name", "threshold", *SCORER_KINDS[kind])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"scorer {kind!r} has no option(s) {', '.join(unknown)}; it takes {', '.join(allowed)}"
        )
    return kind, options
