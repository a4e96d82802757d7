"""LLM-as-judge: a registered, versioned judge prompt, sent through the gateway, its score parsed.

The judge is a Keel prompt like any other, so its wording is versioned,
aliased, diffed and audited, and an eval run records the judge version it
used. Keel ships one template (:data:`DEFAULT_JUDGE_TEMPLATE`); ``keel evals
judge-prompt --model MODEL`` (:func:`register_judge_prompt`) registers it as
``prompts:/judge`` and points ``@production`` at it, the judge that
``--scorer judge`` uses unless ``--judge`` names another.

A judge template may use these variables, filled per case:

- ``input``: the case's variables, one ``name: value`` line each (the same for
  the candidate and a compared version, so their judgements pair up);
- ``output``: the answer being judged;
- ``expected``, ``reference``, ``context``: the case's fields (``(none)`` when absent);
- ``vars``: the case's variables as JSON.

The reply must hold ``SCORE: N`` with N on the judge's scale (1 to 5 unless
``min``/``max`` say otherwise); the last such line counts, so a judge may
reason first. N maps linearly to [0, 1] (``SCORE: 4`` on 1-5 is 0.75). A reply
without a score on the scale, or a judge call that failed, is a failed score
(NaN, with the reply or the error kept), never a guess.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInput, NotFound
from keel.llm.evals.calls import Call, Gateway
from keel.llm.evals.cases import Case
from keel.llm.evals.scorers import Scorer, Scores

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.entities import PromptVersion

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_JUDGE_TEMPLATE",
    "JUDGE_VARIABLES",
    "JudgeScorer",
    "parse_judge_score",
    "register_judge_prompt",
]

#: The judge prompt ``--scorer judge`` uses unless told otherwise.
DEFAULT_JUDGE = "prompts:/judge@production"
#: The variables a judge template may use.
JUDGE_VARIABLES = ("input", "output", "expected", "reference", "context", "vars")
#: Keel's judge: a grader that reasons briefly, then ends with ``SCORE: N`` on 1-5.
DEFAULT_JUDGE_TEMPLATE = [
    {
        "role": "system",
        "content": (
            "You grade answers. Compare the ANSWER with the REFERENCE for the INPUT below. "
            "Judge correctness first, then completeness; ignore style and length. "
            "Give one or two sentences of reasoning, then end with a line of exactly "
            "'SCORE: N', where N is an integer from 1 (wrong or unrelated) to 5 (fully "
            "correct and complete)."
        ),
    },
    {
        "role": "user",
        "content": (
            "INPUT:\n{{ input }}\n\nREFERENCE:\n{{ reference }}\n\n"
            "CONTEXT:\n{{ context }}\n\nANSWER:\n{{ output }}"
        ),
    },
]
_SCORE_RE = re.compile(r"SCORE\s*[:=]\s*\**\s*([-+]?\d+(?:\.\d+)?)", re.IGNORECASE)
_NONE = "(none)"


def parse_judge_score(reply: str, low: float = 1, high: float = 5) -> float | None:
    """The judge's score mapped to [0, 1], or ``None`` when the reply holds none on the scale.

    The last ``SCORE: N`` in the reply counts.
    """
    found = _SCORE_RE.findall(reply or "")
    if not found:
        return None
    value = float(found[-1])
    if not low <= value <= high:
        return None
    return (value - low) / (high - low)


def register_judge_prompt(
    model: str,
    *,
    name: str = "judge",
    alias: str | None = "production",
    parameters: dict[str, Any] | None = None,
    client: Client | None = None,
) -> PromptVersion:
    """Register Keel's judge template as prompt ``name`` and point ``alias`` at it.

    Registering it again returns the same version (nothing new is numbered).

    Args:
        model: the model the judge runs on (a name the gateway knows).
        name: the judge prompt's name.
        alias: the alias to point at it (``None``: leave aliases alone).
        parameters: the call's parameters; default ``{"temperature": 0}``.
        client: default ``keel.Client()``.
    """
    from keel.client import Client

    prompts = (client or Client()).prompts
    version = prompts.register(
        name,
        template=[dict(m) for m in DEFAULT_JUDGE_TEMPLATE],
        model=model,
        parameters={"temperature": 0} if parameters is None else parameters,
        description="Keel's built-in judge: reasoning, then SCORE: 1-5",
    )
    if alias is not None and prompts.get_alias(name, alias) != version.version:
        prompts.set_alias(name, alias, version.version)
        version = prompts.load(version.uri)
    return version


def load_judge(uri: str, client: Client) -> PromptVersion:
    """The judge prompt ``uri`` names, with a message saying how to make one when absent."""
    try:
        return client.prompts.load(uri)
    except NotFound as exc:
        raise NotFound(
            f"no judge prompt {uri} ({exc}); register Keel's judge with "
            "`keel evals judge-prompt --model MODEL`, or pass --judge prompts:/NAME@ALIAS"
        ) from None


def _text(value: Any) -> str:
    if value is None:
        return _NONE
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def judge_input(case: Case) -> str:
    """A case's variables as ``name: value`` lines (what the judge sees as the input)."""
    return "\n".join(f"{k}: {_text(v)}" for k, v in case.vars.items())


class JudgeScorer(Scorer):
    """Scores answers by asking a judge prompt, through the same gateway, and parsing its score.

    Args:
        prompt: the judge prompt version.
        gateway: where to send the judge's requests.
        name: the metric name (default ``judge``).
        threshold: the score at which a case passes (default 0.75: 4 on 1-5).
        low, high: the judge's scale.
    """

    kind = "judge"
    options = ("prompt", "min", "max")
    default_threshold = 0.75
    extra_metrics = ("calls_failed", "tokens", "cost_usd")

    def __init__(
        self,
        prompt: PromptVersion,
        gateway: Gateway,
        name: str | None = None,
        threshold: float | None = None,
        *,
        low: float = 1,
        high: float = 5,
    ) -> None:
        super().__init__(name, threshold)
        unknown = sorted(set(prompt.variables) - set(JUDGE_VARIABLES))
        if unknown:
            raise InvalidInput(
                f"judge prompt {prompt.uri} uses variable(s) {', '.join(unknown)}; a judge "
                f"template may use {', '.join(JUDGE_VARIABLES)}"
            )
        if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
            raise InvalidInput(f"judge: the scale needs min < max, got min={low} max={high}")
        self.prompt = prompt
        self.gateway = gateway
        self.low, self.high = float(low), float(high)
        self.spec = f"judge:prompt={prompt.uri}"
        #: Called with (judge calls done, in all), e.g. a progress bar's stage.
        self.progress: Callable[[int, int], None] | None = None

    def score(self, output: str, case: Case) -> float:
        return float(self.score_all([output], [case]).values[0])

    def _call(self, output: str, case: Case) -> Call:
        values = {
            "input": judge_input(case),
            "output": output,
            "expected": _text(case.expected),
            "reference": _text(case.target),
            "context": _text(case.context),
            "vars": json.dumps(case.vars, ensure_ascii=False, sort_keys=True),
        }
        rendered = self.prompt.render(**{k: values[k] for k in self.prompt.variables})
        return Call(rendered.request(), f"{self.prompt.name}/{self.prompt.version}")

    def score_all(self, outputs: Sequence[str], cases: Sequence[Case]) -> Scores:
        calls = [self._call(o, c) for o, c in zip(outputs, cases, strict=True)]
        answers = self.gateway.call_all(calls, self.progress)
        values = np.full(len(calls), math.nan)
        errors: list[str | None] = [None] * len(calls)
        details: list[str | None] = [None] * len(calls)
        for i, answer in enumerate(answers):
            if answer.output is None:
                errors[i] = f"the judge call failed: {answer.error}"
                continue
            details[i] = answer.output
            score = parse_judge_score(answer.output, self.low, self.high)
            if score is None:
                errors[i] = (
                    f"no score in the judge's reply (expected 'SCORE: N' with N from "
                    f"{self.low:g} to {self.high:g})"
                )
            else:
                values[i] = score
        metrics = {"calls_failed": float(sum(a.output is None for a in answers))}
        tokens = [a.total_tokens for a in answers if a.total_tokens is not None]
        costs = [a.cost_usd for a in answers if a.cost_usd is not None]
        if tokens:
            metrics["tokens"] = float(sum(tokens))
        if costs:
            metrics["cost_usd"] = float(sum(costs))
        return Scores(values, errors, details, metrics)
