"""Gates a candidate passes before it sees live traffic.

For a model, the metric, improvement and slice gates are ``keel models check``
itself (:func:`keel.checks.check_model_version`) on the policy's evaluation
data, against the version the alias holds now; the report is stored with the
version like any check. The latency gate is a short load check: the
candidate, loaded as a server loads it, answers one row at a time for
``requests`` rows of the evaluation data, and its p99 must stay within budget.

For a prompt, the gates are an evaluation (``keel evals run``, through
:func:`keel.llm.evals.run_eval`) of the candidate on the eval set pinned when
the cycle started, against the version the alias holds now; each condition
of ``gates.evals.gates`` is one gate. The evaluation is a tracked run, like
any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.automation.policy import Policy
from keel.errors import InvalidInput
from keel.uris import is_dataset_uri

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["GateResult", "load_evaluation_data", "run_gates"]


@dataclass(frozen=True)
class GateResult:
    """Whether the candidate passed, each gate's verdict, and the measured values."""

    passed: bool
    gates: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def failures(self) -> list[str]:
        return [f"{g['name']}: {g['detail']}" for g in self.gates if not g["passed"]]

    def summary(self) -> str:
        if self.passed and not self.gates:
            return "no gates configured: nothing to pass"
        if self.passed:
            return f"passed {len(self.gates)} gate(s): " + "; ".join(
                f"{g['name']} ({g['detail']})" for g in self.gates
            )
        return "failed " + "; ".join(self.failures())

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": self.gates, "metrics": self.metrics}


def load_evaluation_data(ref: str, outputs: dict[str, Any] | None = None) -> Any:
    """A DataFrame from ``datasets:/name@N``, a Parquet/CSV path, or ``pipeline:<output>``."""
    if ref.startswith("pipeline:"):
        key = ref.removeprefix("pipeline:")
        if not outputs or key not in outputs:
            raise InvalidInput(
                f"gates.data {ref!r}: the retraining pipeline returned no {key!r}; "
                f"it returned {sorted(outputs or {})}"
            )
        return load_evaluation_data(str(outputs[key]))
    if is_dataset_uri(ref):
        import keel

        return keel.load_dataset(ref)
    from keel.checks import read_table

    return read_table(ref)


def run_gates(
    policy: Policy,
    version: int,
    *,
    client: Client,
    outputs: dict[str, Any] | None = None,
    eval_set: str | None = None,
) -> GateResult:
    """Run the policy's gates on ``models:/<model>/<version>`` (or ``prompts:/…``, ``rag:/…``).

    Args:
        outputs: what the retraining pipeline returned (for ``gates.data: pipeline:…``).
        eval_set: a prompt policy's eval set (an index policy's question set), pinned
            when its cycle started (default: the one the gates name).
    """
    if policy.is_prompt:
        return _run_evals(policy, version, client=client, eval_set=eval_set)
    if policy.is_index:  # its cycle runs them itself: keel.automation.indexes
        raise InvalidInput(
            f"policy {policy.name!r} gates a RAG index: its gates are a retrieval eval, run "
            "by keel.automation.indexes.run_retrieval_gates"
        )
    gates = policy.gates
    found: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    frame = None
    if gates.data is not None:
        frame = load_evaluation_data(gates.data, outputs)
    if gates.rules:
        from keel.checks import Rules, check_model_version

        assert frame is not None and gates.target is not None  # validated with the policy
        baseline = client.get_alias(policy.model, policy.alias)
        rules = Rules.from_dict(dict(gates.rules))
        if baseline is None or baseline == version:
            rules = Rules.from_dict({k: v for k, v in gates.rules.items() if k != "against"})
        report = check_model_version(
            policy.model,
            version,
            frame,
            gates.target,
            rules,
            against=None if baseline is None or baseline == version else str(baseline),
            client=client.registry,
        )
        found.extend(gate.to_dict() for gate in report.gates)
        found.extend(
            {"name": "data", "passed": False, "value": None, "threshold": None, "detail": problem}
            for problem in report.data_problems
        )
        checked = report.to_dict()
        metrics["check"] = {
            k: checked[k] for k in ("metrics", "baseline_metrics", "against", "n_rows")
        }
    if gates.latency_p99_ms is not None:
        if frame is None:
            raise InvalidInput("gates.latency needs gates.data: the rows to send one at a time")
        p99 = _p99_latency_ms(policy.model, version, frame, gates.target, gates.latency_requests)
        metrics["latency_p99_ms"] = p99
        found.append(
            {
                "name": "latency.p99_ms",
                "passed": p99 <= gates.latency_p99_ms,
                "detail": f"p99 {p99:.2f} ms over {gates.latency_requests} one-row requests "
                f"(budget {gates.latency_p99_ms:g} ms)",
                "value": p99,
                "threshold": gates.latency_p99_ms,
            }
        )
    return GateResult(all(g["passed"] for g in found), found, metrics)


def _run_evals(policy: Policy, version: int, *, client: Client, eval_set: str | None) -> GateResult:
    """The prompt candidate's evaluation against the alias, as gates (none: it passes)."""
    evals = policy.gates.evals
    if evals is None:
        return GateResult(True)
    baseline = client.prompts.get_alias(policy.model, policy.alias)
    against = None if baseline is None or baseline == version else policy.alias
    return evaluate_prompt(
        policy.uri(version),
        eval_set or evals.dataset,
        scorers=list(evals.scorers),
        gates=list(evals.gates),
        against=against,
        gateway=evals.gateway,
        client=client,
    )


def evaluate_prompt(
    prompt: str,
    dataset: str,
    *,
    scorers: list[Any],
    gates: list[str],
    against: str | None,
    gateway: str | None,
    client: Client,
) -> GateResult:
    """Evaluate ``prompt`` on ``dataset`` (``keel evals run``); each condition is one gate.

    The one place automation calls the evals library. The evaluation is a tracked run;
    its id is in the result's metrics.
    """
    from keel.llm.evals import run_eval

    result = run_eval(
        prompt, dataset, scorers, against=against, gates=gates, gateway=gateway, client=client
    )
    found = [gate.to_dict() for gate in result.gates]
    summary = result.to_dict(cases=False)
    metrics = {
        "evals": {k: summary[k] for k in ("run_id", "prompt", "against", "dataset", "metrics")},
    }
    if result.notes:
        metrics["evals"]["notes"] = list(result.notes)
    return GateResult(result.passed, found, metrics)


def _p99_latency_ms(model: str, version: int, frame: Any, target: str | None, n: int) -> float:
    from keel.models import load_model

    loaded = load_model(f"models:/{model}/{version}")
    features = frame.drop(columns=[target]) if target and target in frame.columns else frame
    rows = [features.iloc[[i % len(features)]] for i in range(n + 10)]
    times = []
    with _one_thread():  # as keel serve runs models (see keel.serving.server.serve)
        for i, row in enumerate(rows):
            started = time.perf_counter()
            loaded.predict(row)
            if i >= 10:  # the first calls warm caches up
                times.append((time.perf_counter() - started) * 1000)
    return float(np.quantile(np.asarray(times), 0.99))


def _one_thread() -> Any:
    """Limit native thread pools (OpenMP, BLAS) to one thread, where threadpoolctl exists."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)
