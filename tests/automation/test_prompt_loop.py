"""The loop for prompts, end to end with real components: a real gateway, the stand-in upstream.

Prompt ``support`` v1 answers through gateway model ``good``; the policy's
candidate (the newest version newer than ``production``'s) goes to the gates
without retraining, then gets a canary weight on prompt deployment
``support-llm``. Traffic goes through a real ``keel gateway`` process, whose
traces are the canary's live metrics; the controller rolls back a canary that
raises the error rate, and promotes one that holds its bounds (moving the
alias). Every transition is read back from the store.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

import keel
from _support.cli import keel_environ
from _support.llm import Gateway, Upstream, start_gateway, start_upstream
from keel.automation import Controller, PolicyStore, history, measure_canary
from keel.automation.live import LiveMetrics
from keel.governance import audit
from keel.llm.prices import Prices
from keel.serving.deployments import Deployments, build_spec
from keel.store import get_store
from keel.store.sql import now_ms

pytestmark = pytest.mark.slow

DEPLOYMENT = "support-llm"
QUESTION = "What is the capital of France?"
TEMPLATE = [{"role": "user", "content": "{{ question }}"}]
#: What the stand-in answers: both models know the capital; "bad" is told to fail later.
UPSTREAM = {
    "stand-in-good": {"rules": {"france": "Paris"}},
    "stand-in-bad": {"rules": {"france": "Paris"}},
}
_IDS = itertools.count()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with start_upstream(UPSTREAM) as up:
        yield up


@pytest.fixture
def gateway(keel_env, upstream: Upstream, tmp_path: Path) -> Iterator[Gateway]:
    """A real gateway on the test's home: gateway models ``good`` and ``bad``, no retries
    (a failed upstream call is the request's failure, as the canary must see it)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "gateway",
                "providers": [{"name": "local", "base_url": upstream.base_url, "retries": 0}],
                "models": [
                    {"name": "good", "targets": [{"provider": "local", "model": "stand-in-good"}]},
                    {"name": "bad", "targets": [{"provider": "local", "model": "stand-in-bad"}]},
                ],
                "auth": "none",
            }
        )
    )
    with start_gateway(config, keel_environ(keel_env)) as running:
        yield running


def _v1_in_production() -> None:
    keel.prompts.register("support", template=TEMPLATE, model="good")
    keel.prompts.set_alias("support", "production", 1)
    Deployments().create(DEPLOYMENT, build_spec("prompts:/support@production", kind="prompt"))


def _policy(**overrides) -> dict:
    doc = {
        "name": "support-loop",
        "prompt": "support",
        "deployment": DEPLOYMENT,
        "triggers": [{"prompt": {}}],
        "cooldown": "1s",
        "rollout": {
            "canary": {"weight": 50, "min_requests": 400, "max_duration": "30m"},
            "promote_when": {"error_rate": 0.01},
            "rollback_when": {"error_rate": 0.05},
        },
    }
    doc.update(overrides)
    return doc


def _send(gateway: Gateway, n: int) -> list[int]:
    """``n`` requests for ``prompts:/support@production``, each with its own request id."""
    statuses = []
    with httpx.Client(timeout=30) as http:
        for _ in range(n):
            answer = http.post(
                f"{gateway.base_url}/chat/completions",
                json={
                    "model": "prompts:/support@production",
                    "variables": {"question": QUESTION},
                },
                headers={"x-request-id": f"loop-{next(_IDS)}"},
            )
            statuses.append(answer.status_code)
    return statuses


def _traffic_until(gateway: Gateway, enough, what: str) -> LiveMetrics:  # type: ignore[no-untyped-def]
    """Send traffic until the canary's traces (read as the controller reads them) say
    ``enough(metrics)``: the gateway picks the canary route up within a second or so, and
    writes its traces about once a second."""
    started = PolicyStore().state("support-loop").phase_started_at
    assert started is not None
    deadline = time.monotonic() + 120
    while True:
        _send(gateway, 20)
        metrics = measure_canary(DEPLOYMENT, 2, started)
        if enough(metrics):
            return metrics
        assert time.monotonic() < deadline, f"the canary never {what}: {metrics}"
        time.sleep(0.3)


def _routes() -> list[tuple[str, str, int]]:
    spec = Deployments().get(DEPLOYMENT).spec
    return [(r.model, r.ref, r.weight) for r in spec.routes]


def _kinds() -> list[tuple[str, int | None]]:
    return [(e.kind, e.version) for e in history("support-loop")]


def test_a_prompt_canary_that_raises_the_error_rate_is_rolled_back_by_the_controller(
    keel_env, upstream, gateway
):
    _v1_in_production()
    PolicyStore().apply(_policy())

    # production holds the newest version: nothing to try, whatever the triggers say
    [idle] = Controller().tick()
    assert (idle.after, idle.events) == ("idle", [])

    keel.prompts.register("support", template=TEMPLATE, model="bad")
    upstream.control("stand-in-bad", fail_rate=0.5)
    [started] = Controller().tick()
    assert started.after == "canary"
    assert [(e.kind, e.version) for e in started.events] == [
        ("triggered", 2),
        ("gate_passed", 2),
        ("canary_started", 2),
    ]
    triggered = started.events[0]
    assert "a prompt is not retrained" in triggered.reason
    assert triggered.details["baseline"] == 1 and triggered.details["trigger"] == "prompt:support/2"
    assert _routes() == [("support", "production", 50), ("support", "2", 50)]

    metrics = _traffic_until(
        gateway, lambda m: m.canary_requests + m.canary_errors >= 40, "got 40 requests"
    )
    assert metrics.canary_errors > 0 and metrics.primary_errors == 0
    assert upstream.requests("stand-in-bad") > 0

    [judged] = Controller().tick()
    [rolled_back] = judged.events
    assert judged.failed and judged.after == "idle"
    assert rolled_back.kind == "rolled_back" and rolled_back.version == 2
    assert rolled_back.reason.startswith("error_rate 0.")
    assert "> 0.05" in rolled_back.reason
    assert rolled_back.details["live"]["error_rate"] > 0.05
    # the alias never moved; the canary route is gone, its traffic back on the primary
    assert keel.prompts.get_alias("support", "production") == 1
    assert [(h.from_version, h.to_version) for h in keel.prompts.alias_history("support")] == [
        (None, 1)
    ]
    assert _routes() == [("support", "production", 100)]

    # a rolled-back version is never tried again, however long after the cooldown
    later = Controller(clock=lambda: now_ms() + 86_400_000)
    [after] = later.tick()
    assert (after.after, after.events) == ("idle", [])
    assert _kinds() == [
        ("triggered", 2),
        ("gate_passed", 2),
        ("canary_started", 2),
        ("rolled_back", 2),
    ]
    store = get_store(keel_env)
    actions = [e.action for e in audit.list_entries(store, newest_first=False)]
    assert [a for a in actions if a.startswith("automation.")][-4:] == [
        "automation.triggered",
        "automation.gate_passed",
        "automation.canary_started",
        "automation.rolled_back",
    ]
    assert audit.verify(store).ok


def _eval_set(folder: Path) -> str:
    cases = [{"vars": {"question": QUESTION}, "expected": "Paris"}] * 3
    path = folder / "support-evals.jsonl"
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))
    return keel.data.add(path, name="support-evals").uri


def test_a_prompt_that_passes_its_evals_and_its_canary_is_promoted_by_moving_the_alias(
    keel_env, upstream, gateway, tmp_path
):
    prices = Prices(keel.Client())
    prices.set("stand-in-good", input_per_million=1.0, output_per_million=2.0, starts_at=0)
    _v1_in_production()
    _eval_set(tmp_path)
    PolicyStore().apply(
        _policy(
            gates={
                "evals": {
                    "dataset": "datasets:/support-evals@latest",
                    "scorers": ["exact"],
                    "gates": ["exact >= 1", "diff.exact >= 0"],
                    "gateway": gateway.base_url,
                }
            },
            rollout={
                "canary": {"weight": 50, "min_requests": 30, "max_duration": "30m"},
                "promote_when": {"error_rate": 0.01, "cost_ratio": 5.0},
                "rollback_when": {"error_rate": 0.05},
            },
        )
    )
    v2 = [{"role": "system", "content": "Answer in one word."}, *TEMPLATE]
    keel.prompts.register("support", template=v2, model="good")

    [started] = Controller().tick()
    assert [e.kind for e in started.events] == ["triggered", "gate_passed", "canary_started"]
    triggered, passed, _ = started.events
    assert triggered.details["eval_set"] == "datasets:/support-evals@1"
    # the evaluation ran against production's version, as a tracked run
    evals = passed.details["metrics"]["evals"]
    assert evals["prompt"] == "prompts:/support/2" and evals["against"] == "prompts:/support/1"
    assert [g["passed"] for g in passed.details["gates"]] == [True, True]
    assert keel.Client().get_run(evals["run_id"]).info.status == "FINISHED"

    _traffic_until(gateway, lambda m: m.canary_requests >= 30, "answered 30 requests")
    [judged] = Controller().tick()
    [promoted] = judged.events
    assert promoted.kind == "promoted" and promoted.version == 2
    assert promoted.reason.startswith("production 1 → 2: error_rate 0 <= 0.01")
    live = promoted.details["live"]
    assert live["canary_errors"] == 0 and live["cost_ratio"] is not None
    assert live["canary_cost_per_request"] > 0
    assert keel.prompts.get_alias("support", "production") == 2
    assert _routes() == [("support", "production", 100)]
    assert PolicyStore().state("support-loop").state == "idle"
