"""``run_eval``: score a prompt version on an eval set, as a tracked run, and decide its gates.

What one evaluation does, in order:

1. resolves the candidate prompt version (and ``against``, a version or alias of
   the same prompt), the eval set's dataset version and the scorers, and checks
   every case, scorer and gate **before any call is sent** (a missing variable,
   a case without the field a scorer needs, a gate on a metric the eval does
   not measure: all refused up front, naming the case or the gate);
2. opens a run in experiment ``evals`` (params: prompt versions, dataset
   version, scorers; the dataset version recorded as the run's input);
3. renders each case with the prompt's variables (a case may hold more
   variables than a prompt uses, so one set serves versions whose variables
   differ) and sends every request of both versions through one bounded pool;
4. scores the answers (a failed call scores 0 on every scorer; a scorer that
   cannot decide leaves NaN with its reason), aggregates per version, pairs
   the two versions' scores per case, and decides the gates;
5. logs the metrics, the per-case results (``eval/cases.parquet``, one row per
   case), the whole result (``eval/result.json``) and the HTML report
   (``eval/report.html``), and ends the run FINISHED (FAILED if the
   evaluation itself broke; a failed gate is a finished run whose
   ``keel.eval.passed`` tag is ``false``).

Metrics, for the candidate (the compared version's have an ``against.`` prefix):
``cases``, ``failures`` (calls that failed), ``failure_rate``, ``pass_rate``
(cases answered and passing every scorer), ``latency_p50_ms``,
``latency_p95_ms``, ``tokens``, ``prompt_tokens``, ``completion_tokens`` and
``cost_usd`` (when the gateway reports them), and per scorer ``NAME`` (the
mean of the decided scores), ``NAME.pass_rate`` and ``NAME.failed``. With
``against``: ``diff.NAME`` (mean paired difference), ``diff.NAME.ci_low``,
``diff.NAME.ci_high`` and ``diff.NAME.p_value`` (:mod:`.stats`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInput
from keel.llm.evals.calls import Answer, Call, Gateway
from keel.llm.evals.cases import Case, EvalSet, load_cases
from keel.llm.evals.factory import build_builtin, load_custom
from keel.llm.evals.gates import Bound, GateSpec, check_bounds, decide, parse_gates
from keel.llm.evals.judge import DEFAULT_JUDGE, JudgeScorer, load_judge
from keel.llm.evals.result import EvalResult
from keel.llm.evals.scorers import Scorer, ScorerSpec, Scores, parse_scorer_spec
from keel.llm.evals.stats import PairedDiff, paired_difference, percentiles

if TYPE_CHECKING:
    import pandas as pd

    from keel.client import Client
    from keel.llm.entities import PromptVersion

__all__ = ["DEFAULT_EXPERIMENT", "build_scorers", "run_eval"]

#: The experiment eval runs go to unless told otherwise.
DEFAULT_EXPERIMENT = "evals"
#: Called with (stage, done, total): ``calling`` as answers arrive, ``judging`` for a judge.
StageProgress = Callable[[str, int, int], None]
#: Metrics of each version besides its scorers'.
RUN_METRICS = (
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
)
_DIFF_PARTS = ("", ".ci_low", ".ci_high", ".p_value")


# -- building ----------------------------------------------------------------------------


def build_scorers(
    specs: Sequence[ScorerSpec],
    prompt: PromptVersion,
    *,
    client: Client,
    gateway: Gateway,
    judge: str = DEFAULT_JUDGE,
) -> list[Scorer]:
    """The scorers ``specs`` name (see :mod:`keel.llm.evals.scorers` for the spelling).

    Raises:
        InvalidInput: an unknown scorer or option, no scorer at all, or two with one name.
        NotFound: a custom scorer's module, or the judge prompt, does not exist.
    """
    if isinstance(specs, str | Mapping):
        specs = [specs]
    if not specs:
        raise InvalidInput(
            "an eval needs at least one scorer, e.g. --scorer exact or --scorer similarity"
        )
    scorers: list[Scorer] = []
    for spec in specs:
        kind, options = parse_scorer_spec(spec)
        scorer: Scorer
        if kind == "judge":
            options = dict(options)
            version = load_judge(str(options.pop("prompt", judge)), client)
            scorer = JudgeScorer(
                version,
                gateway,
                options.pop("name", None),
                options.pop("threshold", None),
                low=options.pop("min", 1),
                high=options.pop("max", 5),
            )
        elif ":" in kind:
            scorer = load_custom(kind)
        else:
            scorer = build_builtin(kind, options, prompt)
        scorers.append(scorer)
    names = [s.name for s in scorers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(
            f"two scorers are named {', '.join(map(repr, twice))}; give one another name "
            "(e.g. contains:name=mentions_refund)"
        )
    return scorers


def known_metrics(scorers: Sequence[Scorer], against: bool) -> set[str]:
    """Every metric an eval with these scorers measures (what gates may name)."""
    own = set(RUN_METRICS)
    for scorer in scorers:
        own |= {scorer.name, f"{scorer.name}.pass_rate", f"{scorer.name}.failed"}
        own |= {f"{scorer.name}.{m}" for m in scorer.extra_metrics}
    if not against:
        return own
    diffs = {f"diff.{s.name}{part}" for s in scorers for part in _DIFF_PARTS}
    return own | {f"against.{m}" for m in own} | diffs


def _against_uri(name: str, against: str) -> str:
    from keel.uris import PROMPTS, scheme_of

    if scheme_of(against) == PROMPTS:
        return against
    if against.isascii() and against.isdigit():
        return f"prompts:/{name}/{against}"
    return f"prompts:/{name}@{against}"


def _calls(version: PromptVersion, cases: Sequence[Case]) -> list[Call]:
    """Each case rendered with the variables ``version`` uses; a missing one is refused."""
    variables = version.variables
    label = f"{version.name}/{version.version}"
    calls = []
    for case in cases:
        missing = [v for v in variables if v not in case.vars]
        if missing:
            raise InvalidInput(
                f"case {case.index} has no variable(s) {', '.join(map(repr, missing))}, which "
                f"{version.uri} needs; its vars are {', '.join(map(repr, case.vars)) or 'none'}"
            )
        rendered = version.render(**{v: case.vars[v] for v in variables})
        calls.append(Call(rendered.request(), label))
    return calls


# -- measuring ---------------------------------------------------------------------------


@dataclass
class _Side:
    """One prompt version's answers and scores over the eval set."""

    version: PromptVersion
    answers: list[Answer]
    scores: dict[str, Scores] = field(default_factory=dict)

    @property
    def answered(self) -> np.ndarray:
        return np.array([a.output is not None for a in self.answers], dtype=bool)


def _score(sides: list[_Side], scorers: Sequence[Scorer], cases: Sequence[Case]) -> None:
    """Score every answered case of every side, each scorer in one call over all sides."""
    outputs: list[str] = []
    scored_cases: list[Case] = []
    where: list[tuple[int, int]] = []
    for s, side in enumerate(sides):
        for i, answer in enumerate(side.answers):
            if answer.output is not None:
                outputs.append(answer.output)
                scored_cases.append(cases[i])
                where.append((s, i))
    n = len(cases)
    for scorer in scorers:
        got = scorer.score_all(outputs, scored_cases) if outputs else Scores(np.zeros(0), [], None)
        for side in sides:
            # no answer scores 0: a failed call must pull the mean down, not vanish from it
            values = np.zeros(n)
            errors: list[str | None] = [None] * n
            details: list[str | None] | None = [None] * n if got.details is not None else None
            side.scores[scorer.name] = Scores(values, errors, details, dict(got.metrics))
        for j, (s, i) in enumerate(where):
            own = sides[s].scores[scorer.name]
            own.values[i] = got.values[j]
            own.errors[i] = got.errors[j]
            if own.details is not None and got.details is not None:
                own.details[i] = got.details[j]
        if len(sides) > 1 and got.metrics:
            # a scorer's own totals (a judge's tokens) are for the whole eval: keep them once
            for side in sides[1:]:
                side.scores[scorer.name].metrics = {}


def _side_metrics(side: _Side, scorers: Sequence[Scorer]) -> dict[str, float]:
    answers = side.answers
    n = len(answers)
    answered = side.answered
    failures = int(n - answered.sum())
    metrics: dict[str, float] = {
        "cases": float(n),
        "failures": float(failures),
        "failure_rate": failures / n if n else math.nan,
    }
    latencies = np.array(
        [a.latency_ms for a in answers if a.output is not None and a.latency_ms is not None],
        dtype=np.float64,
    )
    p50, p95 = percentiles(latencies, (50, 95))
    metrics["latency_p50_ms"], metrics["latency_p95_ms"] = p50, p95
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        counted = [getattr(a, key) for a in answers if getattr(a, key) is not None]
        if counted:
            metrics["tokens" if key == "total_tokens" else key] = float(sum(counted))
    costs = [a.cost_usd for a in answers if a.cost_usd is not None]
    if costs:
        metrics["cost_usd"] = float(sum(costs))
    passing = answered.copy()
    for scorer in scorers:
        scores = side.scores[scorer.name]
        values = scores.values
        decided = values[~np.isnan(values)]
        metrics[scorer.name] = float(decided.mean()) if decided.size else math.nan
        with np.errstate(invalid="ignore"):
            passes = values >= scorer.threshold  # NaN compares False: undecided does not pass
        metrics[f"{scorer.name}.pass_rate"] = float(passes.mean()) if n else math.nan
        metrics[f"{scorer.name}.failed"] = float(np.isnan(values).sum())
        for key, value in scores.metrics.items():
            metrics[f"{scorer.name}.{key}"] = value
        passing &= passes
    metrics["pass_rate"] = float(passing.mean()) if n else math.nan
    return metrics


def _frame(eval_set: EvalSet, sides: list[_Side], scorers: Sequence[Scorer]) -> pd.DataFrame:
    """One row per case: the case, then each version's answer, costs and scores."""
    import pandas as pd

    cases = eval_set.cases
    columns: dict[str, Any] = {
        "case": [c.index for c in cases],
        "id": [c.id for c in cases],
        "vars": [json.dumps(c.vars, ensure_ascii=False, sort_keys=True) for c in cases],
        "expected": [
            None if c.expected is None else json.dumps(c.expected, ensure_ascii=False)
            for c in cases
        ],
        "reference": [c.reference for c in cases],
    }
    for s, side in enumerate(sides):
        prefix = "" if s == 0 else "against."
        answers = side.answers
        columns[f"{prefix}output"] = [a.output for a in answers]
        columns[f"{prefix}error"] = [a.error for a in answers]
        columns[f"{prefix}latency_ms"] = pd.array([a.latency_ms for a in answers], "Float64")
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            columns[f"{prefix}{key}"] = pd.array([getattr(a, key) for a in answers], "Int64")
        columns[f"{prefix}cost_usd"] = pd.array([a.cost_usd for a in answers], "Float64")
        passing = side.answered.copy()
        for scorer in scorers:
            scores = side.scores[scorer.name]
            columns[f"{prefix}{scorer.name}"] = scores.values
            columns[f"{prefix}{scorer.name}.error"] = scores.errors
            if scores.details is not None:
                columns[f"{prefix}{scorer.name}.detail"] = scores.details
            with np.errstate(invalid="ignore"):
                passing &= scores.values >= scorer.threshold
        columns[f"{prefix}passed"] = passing
    if len(sides) > 1:
        for scorer in scorers:
            columns[f"diff.{scorer.name}"] = (
                sides[0].scores[scorer.name].values - sides[1].scores[scorer.name].values
            )
    return pd.DataFrame(columns)


# -- tracking ----------------------------------------------------------------------------


def _safe_url(url: str) -> str:
    """``url`` without any user name or password in it (params are readable by all)."""
    import httpx

    return str(httpx.URL(url).copy_with(username=None, password=None))


class _Tracked:
    """The eval's run: opened before the calls, finished (or failed) at the end."""

    def __init__(self, client: Client, experiment: str, name: str, tags: dict[str, str]) -> None:
        self.client = client
        experiment_id = client.get_or_create_experiment(experiment).id
        self.run_id = client.create_run(experiment_id, name, tags=tags).id

    def finish(self, result: EvalResult, html: str) -> None:
        from keel.tracking.entities import Metric

        client, run_id = self.client, self.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, now) for k, v in sorted(result.metrics.items())],
            tags={"keel.eval.passed": str(result.passed).lower()},
        )
        with tempfile.TemporaryDirectory(prefix="keel-eval-") as tmp:
            folder = Path(tmp)
            result.cases.to_parquet(folder / "cases.parquet", index=False)
            (folder / "report.html").write_text(html, encoding="utf-8")
            (folder / "result.json").write_text(
                json.dumps(result.to_dict(cases=False), indent=2, sort_keys=True),
                encoding="utf-8",
            )
            for file in ("cases.parquet", "report.html", "result.json"):
                client.log_artifact(run_id, folder / file, "eval")
        client.set_terminated(run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


# -- the evaluation ----------------------------------------------------------------------


def run_eval(
    prompt: str,
    dataset: str,
    scorers: Sequence[ScorerSpec],
    *,
    against: str | None = None,
    gates: GateSpec = None,
    judge: str = DEFAULT_JUDGE,
    gateway: str | Gateway | None = None,
    key: str | None = None,
    concurrency: int = 8,
    timeout_s: float = 60.0,
    experiment: str = DEFAULT_EXPERIMENT,
    html: str | os.PathLike[str] | None = None,
    track: bool = True,
    client: Client | None = None,
    progress: StageProgress | None = None,
) -> EvalResult:
    """Evaluate prompt version ``prompt`` on eval set ``dataset``; see the module docstring.

    Args:
        prompt: ``prompts:/NAME/VERSION`` or ``prompts:/NAME@ALIAS``.
        dataset: ``datasets:/NAME@VERSION`` (or ``NAME``: the latest version).
        scorers: scorer specs, e.g. ``["exact", "similarity", "numeric:tolerance=0.01"]``.
        against: a version number or alias of the same prompt (or a ``prompts:/`` URI)
            to score on the same cases and compare with.
        gates: gate texts (``["similarity >= 0.8"]``) or a rules mapping; see :mod:`.gates`.
        judge: the judge prompt of a ``judge`` scorer that names none.
        gateway: an OpenAI-compatible base URL (default ``$KEEL_GATEWAY_URL``), or a
            :class:`Gateway`.
        key: the gateway's bearer token (default ``$KEEL_GATEWAY_KEY``).
        concurrency: requests in flight at once.
        timeout_s: seconds one request may take.
        experiment: the experiment of the run.
        html: also write the HTML report here.
        track: record the eval as a run (``False``: measure only).
        client: default ``keel.Client()``.
        progress: called with ``(stage, done, total)``.

    Returns:
        The result; ``result.passed`` says whether every gate passed.

    Raises:
        InvalidInput: a malformed prompt, scorer, gate or case (nothing was sent).
        NotFound: the prompt, alias, dataset, judge or custom scorer does not exist.
    """
    from keel.client import Client
    from keel.llm.evals.report import render_report

    client = client or Client()
    candidate = client.prompts.load(prompt)
    baseline = None
    if against is not None:
        baseline = client.prompts.load(_against_uri(candidate.name, str(against)))
    eval_set = load_cases(dataset, client=client)
    caller = (
        gateway
        if isinstance(gateway, Gateway)
        else Gateway(gateway, key=key, concurrency=concurrency, timeout_s=timeout_s)
    )
    built = build_scorers(scorers, candidate, client=client, gateway=caller, judge=judge)
    cases = eval_set.cases
    for scorer in built:
        scorer.check(cases)
    bounds: list[Bound] = parse_gates(gates)
    check_bounds(bounds, known_metrics(built, baseline is not None), against=baseline is not None)
    versions = [candidate] if baseline is None else [candidate, baseline]
    calls = [_calls(version, cases) for version in versions]
    notes = []
    if baseline is not None and baseline.version == candidate.version:
        notes.append(f"{against!r} is {candidate.uri} itself: the differences are noise only")

    tracked = None
    if track:
        name = f"{candidate.name}/{candidate.version}" + (
            "" if baseline is None else f" vs {baseline.version}"
        )
        tracked = _Tracked(
            client,
            experiment,
            name,
            {
                "keel.kind": "eval",
                "keel.prompt": candidate.uri,
                "keel.eval.dataset": eval_set.uri,
            },
        )
    try:
        if tracked is not None:
            params = {
                "prompt": candidate.uri,
                "prompt_ref": prompt,
                "dataset": eval_set.uri,
                "dataset_digest": eval_set.digest,
                "scorers": ", ".join(s.spec for s in built),
                "gateway": _safe_url(caller.base_url),
                "concurrency": caller.concurrency,
                "gates": "; ".join(b.text for b in bounds) or "none",
            }
            if baseline is not None:
                params.update(against=baseline.uri, against_ref=str(against))
            client.log_params(tracked.run_id, params)
            client.data.record_input(tracked.run_id, eval_set.uri, "eval")

        def stage(label: str) -> Callable[[int, int], None] | None:
            if progress is None:
                return None
            return lambda done, total: progress(label, done, total)

        for scorer in built:
            if isinstance(scorer, JudgeScorer):
                scorer.progress = stage(f"judging ({scorer.name})")
        flat = [call for side_calls in calls for call in side_calls]
        answers = caller.call_all(flat, stage("calling"))
        n = len(cases)
        sides = [_Side(version, answers[k * n : (k + 1) * n]) for k, version in enumerate(versions)]
        _score(sides, built, cases)
        metrics = _side_metrics(sides[0], built)
        diffs: dict[str, PairedDiff] = {}
        if len(sides) > 1:
            metrics.update({f"against.{k}": v for k, v in _side_metrics(sides[1], built).items()})
            for scorer in built:
                diff = paired_difference(
                    sides[0].scores[scorer.name].values, sides[1].scores[scorer.name].values
                )
                diffs[scorer.name] = diff
                metrics[f"diff.{scorer.name}"] = diff.mean
                metrics[f"diff.{scorer.name}.ci_low"] = diff.ci_low
                metrics[f"diff.{scorer.name}.ci_high"] = diff.ci_high
                metrics[f"diff.{scorer.name}.p_value"] = diff.p_value
        failed = int(metrics["failures"])
        if failed:
            notes.append(
                f"{failed} of {n} calls to {candidate.uri} failed; they score 0 and are listed "
                "with their errors"
            )
        result = EvalResult(
            prompt=candidate.uri,
            dataset=eval_set.uri,
            against=None if baseline is None else baseline.uri,
            scorers=[{"name": s.name, "spec": s.spec, "threshold": s.threshold} for s in built],
            metrics=metrics,
            diffs=diffs,
            gates=decide(bounds, metrics),
            cases=_frame(eval_set, sides, built),
            run_id=None if tracked is None else tracked.run_id,
            notes=notes,
        )
        report = render_report(result)
        if html is not None:
            Path(html).write_text(report, encoding="utf-8")
        if tracked is not None:
            tracked.finish(result, report)
    except BaseException:
        if tracked is not None:
            tracked.fail()
        raise
    return result
