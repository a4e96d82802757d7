"""Evaluations: score a prompt version on an eval set, gate it like a model.

::

    from keel.llm.evals import run_eval

    result = run_eval(
        "prompts:/support/4",
        "datasets:/support-evals@3",
        ["exact", "similarity", "numeric:tolerance=0.01"],
        against="production",
        gates=["similarity >= 0.8", "diff.similarity >= -0.02"],
        gateway="http://127.0.0.1:4000/v1",
    )
    result.passed, result.metrics["similarity"], result.run_id

An eval set is a dataset version of JSONL cases (:mod:`.cases`); scorers are
described in :mod:`.scorers`, the judge in :mod:`.judge`, gates in
:mod:`.gates`, and what a run records in :mod:`.runner`. ``keel evals run`` is
the same on the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_JUDGE_TEMPLATE",
    "Answer",
    "Bound",
    "Call",
    "Case",
    "EvalResult",
    "EvalSet",
    "Gateway",
    "JudgeScorer",
    "PairedDiff",
    "Scorer",
    "Scores",
    "build_scorers",
    "load_cases",
    "paired_difference",
    "parse_gates",
    "parse_judge_score",
    "parse_scorer_spec",
    "register_judge_prompt",
    "render_report",
    "run_eval",
]

_EXPORTS = {
    "DEFAULT_JUDGE": "keel.llm.evals.judge",
    "DEFAULT_JUDGE_TEMPLATE": "keel.llm.evals.judge",
    "Answer": "keel.llm.evals.calls",
    "Bound": "keel.llm.evals.gates",
    "Call": "keel.llm.evals.calls",
    "Case": "keel.llm.evals.cases",
    "EvalResult": "keel.llm.evals.result",
    "EvalSet": "keel.llm.evals.cases",
    "Gateway": "keel.llm.evals.calls",
    "JudgeScorer": "keel.llm.evals.judge",
    "PairedDiff": "keel.llm.evals.stats",
    "Scorer": "keel.llm.evals.scorers",
    "Scores": "keel.llm.evals.scorers",
    "build_scorers": "keel.llm.evals.runner",
    "load_cases": "keel.llm.evals.cases",
    "paired_difference": "keel.llm.evals.stats",
    "parse_gates": "keel.llm.evals.gates",
    "parse_judge_score": "keel.llm.evals.judge",
    "parse_scorer_spec": "keel.llm.evals.scorers",
    "register_judge_prompt": "keel.llm.evals.judge",
    "render_report": "keel.llm.evals.report",
    "run_eval": "keel.llm.evals.runner",
}

if TYPE_CHECKING:
    from keel.llm.evals.calls import Answer, Call, Gateway
    from keel.llm.evals.cases import Case, EvalSet, load_cases
    from keel.llm.evals.gates import Bound, parse_gates
    from keel.llm.evals.judge import (
        DEFAULT_JUDGE,
        DEFAULT_JUDGE_TEMPLATE,
        JudgeScorer,
        parse_judge_score,
        register_judge_prompt,
    )
    from keel.llm.evals.report import render_report
    from keel.llm.evals.result import EvalResult
    from keel.llm.evals.runner import build_scorers, run_eval
    from keel.llm.evals.scorers import Scorer, Scores, parse_scorer_spec
    from keel.llm.evals.stats import PairedDiff, paired_difference

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
