"""Policies: what retrains a model (or tries a prompt), how the candidate is gated and rolled out.

A policy is a YAML (or JSON) document, or the same as Python objects. A
*model* policy retrains::

    name: churn-retrain
    model: churn                  # the registered model
    deployment: churn-api         # the deployment serving it (its primary follows the alias)
    alias: champion               # the alias a challenger is promoted to
    triggers:
      - drift: {window: 1h, share: 0.3}            # share of drifted columns, or:
      - drift: {window: 1h, columns: [age, plan]}  # any of these columns drifted
      - quality: {metric: accuracy, below: 0.85, min_labels: 200, window: 1d}
      - schedule: {cron: "0 3 * * *"}
      - dataset: {name: churn-train}               # a new version of this dataset
    cooldown: 1h                  # no new trigger within this long after a cycle ends
    retrain:
      pipeline: churn_pipeline:train               # module:attr or path/file.py:attr
      params: {data: "datasets:/churn-train@latest", seed: 7}
      output: model                                # the returned key holding models:/churn/N
      queue: gpu-train                             # optional: submit it as a job of this queue
      resources: {gpus: 1, gpu_type: a100, cpus: 8, memory: 32Gi, priority: high,
                  timeout: 2h, retries: 1}         # what the job asks for (with a queue only)
    gates:
      data: datasets:/churn-holdout@latest         # fresh evaluation data (or a file)
      target: churned
      rules:                                       # the rules of `keel models check`
        metrics: {roc_auc: {min: 0.8}}
        against: {roc_auc: {min_delta: 0.0}}       # no worse than the champion
      latency: {p99_ms: 50, requests: 200}         # a short load check on the candidate
    rollout:
      canary: {weight: 20, min_requests: 200, max_duration: 30m}
      promote_when: {error_rate: 0.01, p99_ratio: 1.5, prediction_drift: 0.2}
      rollback_when: {error_rate: 0.05, p99_ratio: 3.0}
    approval: {mode: auto}                         # or {mode: required}: see Approval

A *prompt* policy names ``prompt`` instead of ``model`` and has no ``retrain``:
its candidate is the newest version of the prompt, when it is newer than the
alias's and the policy has not tried it yet. Its gates are evaluations against the
alias, its canary a weight on the prompt deployment's route, judged on the
gateway's traces::

    name: support-loop
    prompt: support               # the registered prompt
    deployment: support-llm       # the prompt deployment (its primary follows the alias)
    alias: production             # the default for prompts
    triggers:
      - prompt: {}                                 # a new version of the prompt
      - dataset: {name: support-evals}             # a new version of the eval set
      - schedule: {cron: "0 3 * * *"}              # try new versions at 03:00 only
      - alert: {rule: llm_error_rate}              # an alert of the deployment is firing
    gates:
      evals:                                       # keel evals run … --against <alias>
        dataset: datasets:/support-evals@latest
        scorers: [exact, "numeric:tolerance=0.01"]
        gates: ["exact >= 0.8", "diff.exact >= -0.05"]  # diff: against the alias
        gateway: http://127.0.0.1:4000/v1          # default: $KEEL_GATEWAY_URL
    rollout:
      canary: {weight: 20, min_requests: 200, max_duration: 30m}
      promote_when: {error_rate: 0.01, p99_ratio: 1.5, cost_ratio: 1.2}
      rollback_when: {error_rate: 0.05, cost_per_request: 0.01, feedback_drop: 0.1}

An *index* policy names ``index`` and keeps one alias of a RAG index fresh
(:mod:`keel.automation.indexes`): when the alias's ``index_stale`` alert fires,
the index is rebuilt with its own chunker and embedder on the newest source
version, evaluated against the alias on labelled questions, and the alias moves
if the gates pass. No deployment, no retrain, no canary::

    name: kb-fresh
    index: kb                     # the RAG index
    alias: production             # the default for indexes
    triggers:
      - index_stale: {}                            # the alias's source changed
    gates:
      retrieval:                                   # keel rag eval … --against <alias>
        questions: datasets:/kb-questions@latest
        k: 10
        gates: ["recall@10 >= 0.8", "diff.recall@10 >= -0.02"]

Every field is validated when the policy is loaded; an error names the
field, what came and what was expected. What the fields name (the model,
deployment, pipeline, datasets and columns) is resolved against the store
when the policy is applied or dry-run (:mod:`keel.automation.references`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.automation.durations import human_duration, parse_duration
from keel.automation.resources import RetrainResources, check_job_target
from keel.errors import InvalidInput
from keel.uris import is_dataset_uri, parse_dataset_uri
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.automation.retrieval import RetrievalGates

__all__ = [
    "KINDS",
    "Approval",
    "Canary",
    "EvalGates",
    "Gates",
    "LiveCriteria",
    "Policy",
    "Retrain",
    "Rollout",
    "Trigger",
    "human_duration",
    "load_policy",
    "parse_duration",
]

#: What a policy targets: a registered model (retrained), a registered prompt (its
#: versions) or a RAG index (rebuilt on its source; see :mod:`keel.automation.indexes`).
KINDS = ("model", "prompt", "index")
TRIGGER_KINDS = ("drift", "quality", "schedule", "dataset", "alert", "prompt", "index_stale")
#: The triggers each kind of policy may have: drift and quality read a model's monitor;
#: ``prompt`` fires on a prompt's new version; ``index_stale`` on the index alias's alert.
KIND_TRIGGERS = {
    "model": ("drift", "quality", "schedule", "dataset", "alert"),
    "prompt": ("prompt", "schedule", "dataset", "alert"),
    "index": ("index_stale",),
}
_TRIGGER_EXAMPLES = {
    "model": "{drift: {window: 1h, share: 0.3}}",
    "prompt": "{prompt: {}}",
    "index": "{index_stale: {}}",
}
#: What monitoring measures once labels arrive (predicted labels, no probabilities).
QUALITY_METRICS = ("accuracy", "f1", "rmse", "mae", "r2")
LIVE_METRICS = (
    "error_rate",
    "p99_ratio",
    "p99_ms",
    "prediction_drift",
    "cost_ratio",
    "cost_per_request",
    "feedback_drop",
)
#: The live metrics each kind of canary measures: a model's predictions drift; a
#: prompt's requests cost money and may receive feedback.
KIND_LIVE_METRICS = {
    "model": ("error_rate", "p99_ratio", "p99_ms", "prediction_drift"),
    "prompt": (
        "error_rate",
        "p99_ratio",
        "p99_ms",
        "cost_ratio",
        "cost_per_request",
        "feedback_drop",
    ),
}
#: The alias a policy promotes to when it names none.
DEFAULT_ALIAS = {"model": "champion", "prompt": "production", "index": "production"}


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _only(doc: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
        )


def _number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise InvalidInput(f"{where}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _count(value: Any, where: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Trigger:
    """One reason to start a cycle.

    ``kind`` is ``drift`` (``share`` of drifted columns, or any of ``columns``,
    over ``window``), ``quality`` (``metric`` ``below`` a value once
    ``min_labels`` labels arrived in ``window``), ``schedule`` (``cron``),
    ``dataset`` (a new version of ``name``), ``alert`` (the deployment's alert
    ``rule`` is firing) or, for prompt policies, ``prompt`` (a new version of
    the prompt). Which kinds a policy may have depends on what it targets
    (:data:`KIND_TRIGGERS`).
    """

    kind: str
    window: float | None = None
    share: float | None = None
    columns: tuple[str, ...] = ()
    metric: str | None = None
    below: float | None = None
    min_labels: int = 100
    cron: str | None = None
    dataset: str | None = None
    rule: str | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str, target: str = "model") -> Trigger:
        doc = _mapping(doc, where)
        allowed = KIND_TRIGGERS[target]
        if len(doc) != 1 or next(iter(doc)) not in allowed:
            other = next(iter(doc)) if len(doc) == 1 else None
            owners = [k for k in KINDS if k != target and other in KIND_TRIGGERS[k]]
            because = (
                f" ({other} triggers are for {' and '.join(owners)} policies)" if owners else ""
            )
            raise InvalidInput(
                f"{where}: a trigger is one of {', '.join(allowed)} with its settings, "
                f"e.g. {_TRIGGER_EXAMPLES[target]}; got {dict(doc)!r}{because}"
            )
        kind = next(iter(doc))
        body = _mapping(doc[kind], f"{where}.{kind}")
        at = f"{where}.{kind}"
        if kind == "drift":
            _only(body, ("window", "share", "columns"), at)
            columns = tuple(_text(c, f"{at}.columns") for c in body.get("columns") or ())
            share = body.get("share")
            if share is None and not columns:
                share = 0.3
            return cls(
                kind,
                window=parse_duration(body.get("window", "1h"), f"{at}.window"),
                share=None if share is None else _fraction(share, f"{at}.share"),
                columns=columns,
            )
        if kind == "quality":
            _only(body, ("metric", "below", "min_labels", "window"), at)
            if "below" not in body:
                raise InvalidInput(f"{at}: needs below: the value under which to retrain")
            metric = _text(body.get("metric", "accuracy"), f"{at}.metric")
            if metric not in QUALITY_METRICS:
                # A metric monitoring never measures would make a trigger that never fires.
                raise InvalidInput(
                    f"{at}.metric: expected one of {', '.join(QUALITY_METRICS)} (what monitoring "
                    f"measures from labels), got {metric!r}"
                )
            return cls(
                kind,
                window=parse_duration(body.get("window", "1d"), f"{at}.window"),
                metric=metric,
                below=_number(body["below"], f"{at}.below", minimum=float("-inf")),
                min_labels=_count(body.get("min_labels", 100), f"{at}.min_labels"),
            )
        if kind == "schedule":
            _only(body, ("cron",), at)
            cron = _text(body.get("cron"), f"{at}.cron")
            _check_cron(cron, f"{at}.cron")
            return cls(kind, cron=cron)
        if kind == "alert":
            _only(body, ("rule",), at)
            return cls(kind, rule=_text(body.get("rule"), f"{at}.rule"))
        if kind in ("prompt", "index_stale"):
            _only(body, (), at)
            return cls(kind)
        _only(body, ("name",), at)
        return cls(kind, dataset=_text(body.get("name"), f"{at}.name"))

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "drift":
            body: dict[str, Any] = {"window": self.window}
            if self.share is not None:
                body["share"] = self.share
            if self.columns:
                body["columns"] = list(self.columns)
        elif self.kind == "quality":
            body = {
                "metric": self.metric,
                "below": self.below,
                "min_labels": self.min_labels,
                "window": self.window,
            }
        elif self.kind == "schedule":
            body = {"cron": self.cron}
        elif self.kind == "alert":
            body = {"rule": self.rule}
        elif self.kind in ("prompt", "index_stale"):
            body = {}
        else:
            body = {"name": self.dataset}
        return {self.kind: body}

    def describe(self) -> str:
        if self.kind == "drift":
            what = (
                f"share of drifted columns >= {self.share:g}"
                if self.share is not None
                else f"any of {', '.join(self.columns)} drifted"
            )
            return f"drift over {human_duration(self.window)}: {what}"
        if self.kind == "quality":
            return (
                f"{self.metric} below {self.below:g} over {human_duration(self.window)} "
                f"(at least {self.min_labels} labels)"
            )
        if self.kind == "schedule":
            return f"schedule {self.cron}"
        if self.kind == "alert":
            return f"the deployment's alert {self.rule} is firing"
        if self.kind == "prompt":
            return "a new version of the prompt"
        if self.kind == "index_stale":
            return "the index alias's index_stale alert is firing"
        return f"a new version of dataset {self.dataset}"


def _fraction(value: Any, where: str) -> float:
    number = _number(value, where)
    if number > 1:
        raise InvalidInput(f"{where}: expected a share between 0 and 1, got {value!r}")
    return number


def _check_cron(expression: str, where: str) -> None:
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter is a dependency
        raise InvalidInput("schedule triggers need croniter: pip install croniter") from None
    if not croniter.is_valid(expression):
        raise InvalidInput(
            f"{where}: {expression!r} is not a cron expression; expected five fields like "
            "'0 3 * * *' (03:00 every day)"
        )


@dataclass(frozen=True)
class Retrain:
    """The pipeline that trains a challenger, its parameters, and which output is the model.

    With ``queue`` the retrain is not run by the controller: it is submitted as a
    pipeline job to that job queue (``keel jobs``), asking for ``resources``
    (:class:`~keel.automation.resources.RetrainResources`), and the controller
    follows the job across ticks. Without it, the controller runs the pipeline itself.
    """

    pipeline: str
    params: Mapping[str, Any] = field(default_factory=dict)
    output: str = "model"
    queue: str | None = None
    resources: RetrainResources | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Retrain:
        doc = _mapping(doc, where)
        _only(doc, ("pipeline", "params", "output", "queue", "resources"), where)
        pipeline = _text(doc.get("pipeline"), f"{where}.pipeline")
        if ":" not in pipeline:
            raise InvalidInput(
                f"{where}.pipeline: expected module:attribute or path/file.py:attribute, "
                f"got {pipeline!r}"
            )
        params = dict(_mapping(doc.get("params"), f"{where}.params"))
        try:
            json.dumps(params)
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}.params: parameters must be JSON values") from None
        queue = doc.get("queue")
        if queue is not None:
            queue = check_name(queue, f"{where}.queue: a job queue name")
            check_job_target(pipeline, f"{where}.pipeline")
        elif doc.get("resources") is not None:
            # Without a queue the controller runs the pipeline itself: nothing would honour them.
            raise InvalidInput(
                f"{where}.resources: resources are what a queued retrain asks its job queue for; "
                "add queue: <a job queue> (see `keel jobs queues list`), or remove resources"
            )
        return cls(
            pipeline,
            params,
            _text(doc.get("output", "model"), f"{where}.output"),
            queue=queue,
            resources=(  # None: the defaults (RetrainResources())
                None
                if doc.get("resources") is None
                else RetrainResources.from_dict(doc["resources"], f"{where}.resources")
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "pipeline": self.pipeline,
            "params": dict(self.params),
            "output": self.output,
        }
        if self.queue is not None:  # absent otherwise, so older specs stay byte for byte
            doc["queue"] = self.queue
            if self.resources is not None:
                doc["resources"] = self.resources.to_dict()
        return doc


@dataclass(frozen=True)
class EvalGates:
    """A prompt candidate's gates: an evaluation run against the version the alias holds.

    Attributes:
        dataset: the eval set (``datasets:/support-evals@latest`` is pinned to its newest
            version when a cycle starts).
        scorers: what scores each case, as ``keel evals run --scorer`` takes them.
        gates: conditions on the scores that must all hold (``"exact >= 0.8"``; ``diff.``
            compares with the alias's version on the same cases).
        gateway: the OpenAI-compatible base URL the cases are sent to (default: the
            ``KEEL_GATEWAY_URL`` environment variable where the controller runs).
    """

    dataset: str
    scorers: tuple[Any, ...]
    gates: tuple[str, ...]
    gateway: str | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> EvalGates:
        doc = _mapping(doc, where)
        _only(doc, ("dataset", "scorers", "gates", "gateway"), where)
        dataset = _text(doc.get("dataset"), f"{where}.dataset")
        if not is_dataset_uri(dataset):
            raise InvalidInput(
                f"{where}.dataset: expected the eval set as a dataset URI like "
                f"datasets:/support-evals@latest, got {dataset!r}"
            )
        parse_dataset_uri(dataset)  # a malformed URI's message shows the accepted shapes
        scorers = doc.get("scorers")
        if not isinstance(scorers, list) or not scorers:
            raise InvalidInput(
                f"{where}.scorers: expected a non-empty list of scorers (e.g. [exact]), "
                f"got {scorers!r}"
            )
        from keel.llm.evals.gates import parse_gate
        from keel.llm.evals.scorers import parse_scorer_spec

        # The evals library's own checks, so a policy fails when applied, not at 3 a.m.
        for n, scorer in enumerate(scorers):
            if not isinstance(scorer, str | Mapping):
                raise InvalidInput(
                    f"{where}.scorers[{n}]: expected a scorer like exact or "
                    f"numeric:tolerance=0.01, got {scorer!r}"
                )
            try:
                parse_scorer_spec(scorer)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.scorers[{n}]: {exc}") from None
        try:
            json.dumps(scorers)
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}.scorers: scorers must be JSON values") from None
        gates = doc.get("gates")
        if not isinstance(gates, list) or not gates:
            # Without a condition the evaluation could never fail: it would gate nothing.
            raise InvalidInput(
                f"{where}.gates: expected a non-empty list of conditions like "
                f"'similarity >= 0.8', got {gates!r}"
            )
        for n, gate in enumerate(gates):
            try:
                parse_gate(_text(gate, f"{where}.gates[{n}]"))
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.gates[{n}]: {exc}") from None
        gateway = doc.get("gateway")
        return cls(
            dataset=dataset,
            scorers=tuple(scorers),
            gates=tuple(_text(g, f"{where}.gates[{n}]") for n, g in enumerate(gates)),
            gateway=None if gateway is None else _text(gateway, f"{where}.gateway"),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "dataset": self.dataset,
            "scorers": [s if isinstance(s, str) else dict(s) for s in self.scorers],
            "gates": list(self.gates),
        }
        if self.gateway is not None:
            doc["gateway"] = self.gateway
        return doc


@dataclass(frozen=True)
class Gates:
    """What a candidate must pass before it sees traffic.

    For a model: the rules of ``keel models check`` on evaluation data, and a latency
    check. For a prompt: ``evals`` (:class:`EvalGates`), and nothing else. For an index:
    ``retrieval`` (:class:`keel.automation.retrieval.RetrievalGates`), and nothing else.
    """

    data: str | None = None
    target: str | None = None
    rules: Mapping[str, Any] = field(default_factory=dict)
    latency_p99_ms: float | None = None
    latency_requests: int = 200
    evals: EvalGates | None = None
    retrieval: RetrievalGates | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str, target: str = "model") -> Gates:
        doc = _mapping(doc, where)
        if target == "index":
            from keel.automation.retrieval import RetrievalGates

            _only(doc, ("retrieval",), where)
            found = doc.get("retrieval")
            return cls(
                retrieval=None
                if found is None
                else RetrievalGates.from_dict(found, f"{where}.retrieval")
            )
        if target == "prompt":
            _only(doc, ("evals",), where)
            evals = doc.get("evals")
            return cls(
                evals=None if evals is None else EvalGates.from_dict(evals, f"{where}.evals")
            )
        _only(doc, ("data", "target", "rules", "latency"), where)
        rules = dict(_mapping(doc.get("rules"), f"{where}.rules"))
        if rules:
            from keel.checks import Rules

            try:
                Rules.from_dict(rules)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.rules: {exc}") from None
        data = doc.get("data")
        target = doc.get("target")
        if rules and (data is None or target is None):
            raise InvalidInput(f"{where}: rules need data (the evaluation set) and target")
        latency = _mapping(doc.get("latency"), f"{where}.latency")
        _only(latency, ("p99_ms", "requests"), f"{where}.latency")
        return cls(
            data=None if data is None else _text(data, f"{where}.data"),
            target=None if target is None else _text(target, f"{where}.target"),
            rules=rules,
            latency_p99_ms=(
                None
                if latency.get("p99_ms") is None
                else _number(latency["p99_ms"], f"{where}.latency.p99_ms")
            ),
            latency_requests=_count(latency.get("requests", 200), f"{where}.latency.requests"),
        )

    def to_dict(self, target: str = "model") -> dict[str, Any]:
        if target == "index":
            return {} if self.retrieval is None else {"retrieval": self.retrieval.to_dict()}
        if target == "prompt":
            return {} if self.evals is None else {"evals": self.evals.to_dict()}
        doc: dict[str, Any] = {"rules": dict(self.rules)}
        if self.data is not None:
            doc["data"] = self.data
        if self.target is not None:
            doc["target"] = self.target
        if self.latency_p99_ms is not None:
            doc["latency"] = {"p99_ms": self.latency_p99_ms, "requests": self.latency_requests}
        return doc


@dataclass(frozen=True)
class LiveCriteria:
    """Bounds on the canary's live metrics.

    ``error_rate``: failed requests / all requests of the canary version.
    ``p99_ratio``: the canary's p99 latency / the primary's. ``p99_ms``: the
    canary's p99 latency. ``prediction_drift`` (models): the drift statistic
    between the canary's and the primary's predictions in the same window.
    ``cost_ratio`` (prompts): the canary's cost per request / the primary's.
    ``cost_per_request`` (prompts): the canary's cost per priced request, in USD.
    ``feedback_drop`` (prompts): the primary's mean feedback score minus the
    canary's, once both received feedback (:data:`keel.automation.live.MIN_FEEDBACK`).
    """

    error_rate: float | None = None
    p99_ratio: float | None = None
    p99_ms: float | None = None
    prediction_drift: float | None = None
    cost_ratio: float | None = None
    cost_per_request: float | None = None
    feedback_drop: float | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str, target: str = "model") -> LiveCriteria:
        doc = _mapping(doc, where)
        allowed = KIND_LIVE_METRICS[target]
        misplaced = sorted(k for k in doc if k in LIVE_METRICS and k not in allowed)
        if misplaced:
            other = "prompt" if target == "model" else "model"
            raise InvalidInput(
                f"{where}: {', '.join(misplaced)} bound(s) a {other} canary's metrics, not a "
                f"{target}'s; a {target} canary measures {', '.join(allowed)}"
            )
        _only(doc, allowed, where)
        # feedback_drop may be negative: "at most 0.05 worse", or "at least 0.1 better".
        return cls(
            **{
                k: _number(v, f"{where}.{k}", minimum=-1.0 if k == "feedback_drop" else 0.0)
                for k, v in doc.items()
                if v is not None
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def breaches(self, measured: Mapping[str, float | None]) -> list[str]:
        """``metric value > bound`` for each bound the measured values exceed."""
        out = []
        for name, bound in self.to_dict().items():
            value = measured.get(name)
            if value is not None and value > bound:
                out.append(f"{name} {value:.4g} > {bound:g}")
        return out

    def unknown(self, measured: Mapping[str, float | None]) -> list[str]:
        """Bounded metrics that could not be measured yet."""
        return [name for name in self.to_dict() if measured.get(name) is None]


@dataclass(frozen=True)
class Canary:
    weight: int = 10
    min_requests: int = 200
    max_duration: float = 1800.0

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Canary:
        doc = _mapping(doc, where)
        _only(doc, ("weight", "min_requests", "max_duration"), where)
        weight = _count(doc.get("weight", 10), f"{where}.weight")
        if weight > 99:
            raise InvalidInput(f"{where}.weight: a canary takes 1 to 99 percent, got {weight}")
        return cls(
            weight=weight,
            min_requests=_count(doc.get("min_requests", 200), f"{where}.min_requests"),
            max_duration=parse_duration(doc.get("max_duration", "30m"), f"{where}.max_duration"),
        )


@dataclass(frozen=True)
class Rollout:
    canary: Canary = field(default_factory=Canary)
    promote_when: LiveCriteria = field(
        default_factory=lambda: LiveCriteria(error_rate=0.01, p99_ratio=2.0)
    )
    rollback_when: LiveCriteria = field(
        default_factory=lambda: LiveCriteria(error_rate=0.05, p99_ratio=5.0)
    )

    @classmethod
    def from_dict(cls, doc: Any, where: str, target: str = "model") -> Rollout:
        doc = _mapping(doc, where)
        _only(doc, ("canary", "promote_when", "rollback_when"), where)
        default = cls()
        return cls(
            canary=Canary.from_dict(doc.get("canary"), f"{where}.canary"),
            promote_when=(
                LiveCriteria.from_dict(doc["promote_when"], f"{where}.promote_when", target)
                if "promote_when" in doc
                else default.promote_when
            ),
            rollback_when=(
                LiveCriteria.from_dict(doc["rollback_when"], f"{where}.rollback_when", target)
                if "rollback_when" in doc
                else default.rollback_when
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary": asdict(self.canary),
            "promote_when": self.promote_when.to_dict(),
            "rollback_when": self.rollback_when.to_dict(),
        }


@dataclass(frozen=True)
class Approval:
    """``auto``: promote when the canary passes; ``required``: wait for approvals first.

    Who may approve, and how many approvals it takes, is the alias's protection
    (``keel policy protect champion --approvals 1 --role approver``); ``required``
    insists that protection exists. An ``auto`` policy on a protected alias also
    waits for the approvals the protection asks for.
    """

    mode: str = "auto"

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Approval:
        doc = _mapping(doc, where)
        _only(doc, ("mode",), where)
        mode = doc.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidInput(f"{where}.mode: expected auto or required, got {mode!r}")
        return cls(mode)


@dataclass(frozen=True)
class Policy:
    """A model's retraining, or a prompt's versions: gating, rollout and approval rules.

    See the module docstring. ``model`` is the registered name the policy targets, a
    model or (``kind="prompt"``) a prompt: prompts are rows of the same registry, so
    their aliases, approvals and permissions are a model's.
    """

    name: str
    model: str
    deployment: str
    retrain: Retrain | None = None
    triggers: tuple[Trigger, ...] = ()
    alias: str = "champion"
    cooldown: float = 3600.0
    gates: Gates = field(default_factory=Gates)
    rollout: Rollout = field(default_factory=Rollout)
    approval: Approval = field(default_factory=Approval)
    kind: str = "model"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"policy kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        named = [("name", self.name), (self.kind, self.model)]
        if self.kind != "index":
            named.append(("deployment", self.deployment))
        elif self.deployment:
            raise InvalidInput(
                "policy: an index policy has no deployment (queries load the index through its "
                "alias); remove deployment"
            )
        for label, value in named:
            check_name(value, f"policy {label}")
        if self.kind == "model" and self.retrain is None:
            raise InvalidInput("policy: missing retrain; see `keel policy apply --help`")
        if self.kind == "prompt" and self.retrain is not None:
            raise InvalidInput(
                "policy: a prompt policy has no retrain: its candidate is the prompt's newest "
                "version that is newer than the alias's; remove retrain"
            )
        if self.kind == "index" and self.retrain is not None:
            raise InvalidInput(
                "policy: an index policy has no retrain: it rebuilds the index with its own "
                "chunker and embedder on the newest source version; remove retrain"
            )
        if self.kind == "model" and self.gates.evals is not None:
            raise InvalidInput("policy.gates: evals gate a prompt; a model policy uses rules")

    @property
    def is_prompt(self) -> bool:
        """True when the policy targets a prompt (no retraining; traces, not prediction logs)."""
        return self.kind == "prompt"

    @property
    def is_index(self) -> bool:
        """True when the policy keeps a RAG index alias fresh (rebuild, retrieval eval, move)."""
        return self.kind == "index"

    def label(self, version: int | None) -> str:
        """``churn/3`` or ``support/3``: how messages name a version of the target."""
        return self.model if version is None else f"{self.model}/{version}"

    def uri(self, version: int) -> str:
        """``models:/churn/3``, ``prompts:/support/3`` or ``rag:/kb/3``."""
        scheme = "rag" if self.kind == "index" else f"{self.kind}s"
        return f"{scheme}:/{self.model}/{version}"

    @classmethod
    def from_dict(cls, doc: Any) -> Policy:
        doc = _mapping(doc, "policy")
        kind = "prompt" if "prompt" in doc else "index" if "index" in doc else "model"
        if "prompt" in doc and "model" in doc:
            raise InvalidInput(
                "policy: name either model (a model it retrains) or prompt (a prompt whose "
                "versions it tries), not both"
            )
        if kind == "index" and ("model" in doc or "prompt" in doc):
            raise InvalidInput(
                "policy: an index policy names index (the RAG index whose alias it keeps "
                "fresh), and neither model nor prompt"
            )
        if kind == "index":
            _only(
                doc, ("name", kind, "alias", "triggers", "cooldown", "gates", "approval"), "policy"
            )
        else:
            common = ("name", kind, "deployment", "alias", "triggers", "cooldown", "gates")
            _only(
                doc,
                (*common, "rollout", "approval") + (("retrain",) if kind == "model" else ()),
                "policy",
            )
        required: tuple[str, ...] = ("name", kind)
        if kind != "index":
            required += ("deployment",) + (("retrain",) if kind == "model" else ())
        for field_name in required:
            if field_name not in doc:
                raise InvalidInput(f"policy: missing {field_name}; see `keel policy apply --help`")
        triggers = doc.get("triggers") or []
        if not isinstance(triggers, list):
            raise InvalidInput(f"policy.triggers: expected a list, got {type(triggers).__name__}")
        return cls(
            name=doc["name"],
            model=doc[kind],
            deployment=doc.get("deployment", ""),
            alias=_text(doc.get("alias", DEFAULT_ALIAS[kind]), "policy.alias"),
            triggers=tuple(
                Trigger.from_dict(t, f"policy.triggers[{n}]", kind) for n, t in enumerate(triggers)
            ),
            cooldown=parse_duration(doc.get("cooldown", "1h"), "policy.cooldown"),
            retrain=(
                Retrain.from_dict(doc["retrain"], "policy.retrain") if kind == "model" else None
            ),
            gates=Gates.from_dict(doc.get("gates"), "policy.gates", kind),
            rollout=Rollout.from_dict(doc.get("rollout"), "policy.rollout", kind),
            approval=Approval.from_dict(doc.get("approval"), "policy.approval"),
            kind=kind,
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            self.kind: self.model,
            "deployment": self.deployment,
            "alias": self.alias,
            "triggers": [t.to_dict() for t in self.triggers],
            "cooldown": self.cooldown,
        }
        if self.retrain is not None:
            doc["retrain"] = self.retrain.to_dict()
        doc.update(
            {
                "gates": self.gates.to_dict(self.kind),
                "rollout": self.rollout.to_dict(),
                "approval": asdict(self.approval),
            }
        )
        if self.is_index:  # no deployment routes an index, and nothing is canaried
            del doc["deployment"], doc["rollout"]
        return doc


def load_policy(source: str | os.PathLike[str] | Mapping[str, Any] | Policy) -> Policy:
    """A policy from a YAML/JSON file, a dict, or a :class:`Policy` (returned as is).

    Raises:
        InvalidInput: the file is missing or malformed, or a field is invalid.
    """
    if isinstance(source, Policy):
        return source
    if isinstance(source, Mapping):
        return Policy.from_dict(source)
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"policy file {path} does not exist")
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    try:
        return Policy.from_dict(doc)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
