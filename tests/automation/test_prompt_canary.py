"""A prompt policy's cycle, judged on traces written as the gateway writes them.

Prompt ``support`` v1 is at ``production``; a prompt deployment follows it. Trace rows
go through the real ``PredictionLogger`` (``trace_row``) under the deployment's name,
where the gateway would write them; the controller measures, judges, promotes or rolls
back from them. Through ``keel server`` the traces go under the server's artifact root
(its loopback S3 prefix), where the server measures the canary; that root outlives a
test, so each deployment has a name of its own.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keel
from _support.llm import start_upstream
from _support.traces import write_traces
from keel.automation import Controller, PolicyStore, history, measure_canary
from keel.config import Settings
from keel.monitoring import run_monitor
from keel.predictions import PredictionLogger
from keel.serving.deployments import Deployments, build_spec
from keel.store.sql import now_ms

TEMPLATE = [{"role": "user", "content": "{{ question }}"}]
_IDS = itertools.count()


@dataclass
class Prompted:
    """A prompt deployment following ``support@production``, and a writer of its traces."""

    name: str
    root: str
    endpoint: str | None
    spill: Path

    def log(self, version: int, n: int, **fields: Any) -> list[str]:
        """``n`` traces of ``version`` (answered unless ``status`` says otherwise), now; ids."""
        ids = [f"r{next(_IDS)}" for _ in range(n)]
        route = "primary" if version == 1 else "canary"
        traces = [
            {"request_id": i, "time_ms": now_ms(), "version": version, "route": route, **fields}
            for i in ids
        ]
        write_traces(self.root, self.name, traces, spill=self.spill, endpoint=self.endpoint)
        return ids

    def feedback(self, request_ids: list[str], labels: list[Any]) -> None:
        with PredictionLogger(
            self.root, s3_endpoint_url=self.endpoint, spill_dir=self.spill
        ) as logger:
            logger.log_feedback(self.name, request_ids, labels)


def _prompted(settings: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Prompted:
    keel.prompts.register("support", template=TEMPLATE, model="good")
    keel.prompts.set_alias("support", "production", 1)
    name = f"support-{uuid.uuid4().hex[:8]}"
    Deployments().create(name, build_spec("prompts:/support@production", kind="prompt"))
    if settings.server_url:  # the gateway logs where the server reads: its own root
        server = request.getfixturevalue("control_plane")
        root, endpoint = server.artifacts_url, request.getfixturevalue("s3_server")
    else:
        root, endpoint = str(settings.artifacts_url), settings.s3_endpoint_url
    return Prompted(name, root, endpoint, tmp_path / "spill")


@pytest.fixture
def prompted(sqlite_env: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Prompted:
    return _prompted(sqlite_env, request, tmp_path)


@pytest.fixture
def prompted_anywhere(
    any_env: Settings, request: pytest.FixtureRequest, tmp_path: Path
) -> Prompted:
    """On SQLite, PostgreSQL and through a real server."""
    return _prompted(any_env, request, tmp_path)


def _apply(prompted: Prompted, **overrides: Any) -> None:
    doc = {
        "name": "support-loop",
        "prompt": "support",
        "deployment": prompted.name,
        "triggers": [{"prompt": {}}],
        "cooldown": "1s",
        "rollout": {
            "canary": {"weight": 20, "min_requests": 30, "max_duration": "1h"},
            "promote_when": {"error_rate": 0.01},
            "rollback_when": {"error_rate": 0.05},
        },
    }
    doc.update(overrides)
    PolicyStore().apply(doc)


def _register(n: int = 1) -> None:
    for _ in range(n):
        count = len(keel.prompts.versions("support"))
        template = [{"role": "system", "content": f"Version {count + 1}."}, *TEMPLATE]
        keel.prompts.register("support", template=template, model="good")


def _kinds() -> list[tuple[str, int | None]]:
    return [(e.kind, e.version) for e in history("support-loop")]


def _routes(prompted: Prompted) -> list[tuple[str, str, int]]:
    return [(r.model, r.ref, r.weight) for r in Deployments().get(prompted.name).spec.routes]


def test_a_prompt_canary_is_measured_from_its_traces_by_the_traces_counting_rule(prompted):
    since = now_ms()
    prompted.log(1, 40, latency_ms=100.0, cost_usd=0.001)
    prompted.log(2, 30, latency_ms=200.0, cost_usd=0.003)
    prompted.log(2, 10, status=502, error="upstream failed")  # the version's failures
    prompted.log(2, 5, status=400, error="missing variable")  # rejected: not answered
    prompted.log(2, 3, status=429, error="over budget")  # not the version's fault at all

    metrics = measure_canary(prompted.name, 2, since)  # the deployment says it is a prompt's
    assert (metrics.canary_requests, metrics.canary_errors) == (30, 10)
    assert (metrics.primary_requests, metrics.primary_errors) == (40, 0)
    assert metrics.error_rate == pytest.approx(10 / 40)
    assert metrics.canary_p99_ms == pytest.approx(200.0)
    assert metrics.p99_ratio == pytest.approx(2.0)
    assert metrics.cost_ratio == pytest.approx(3.0)
    assert metrics.measured()["cost_per_request"] == pytest.approx(0.003)
    assert metrics.prediction_drift is None and metrics.feedback_drop is None
    # nothing before the canary started counts
    assert measure_canary(prompted.name, 2, now_ms() + 60_000).canary_requests == 0


def test_a_version_that_rejects_every_request_is_never_promoted(prompted):
    _apply(prompted, rollout={"canary": {"weight": 20, "min_requests": 30, "max_duration": "1m"}})
    _register()
    [started] = Controller().tick()
    assert started.after == "canary"
    prompted.log(1, 40)
    prompted.log(2, 40, status=400, error="missing variable 'product'")
    [waiting] = Controller().tick()
    assert waiting.events == [] and waiting.after == "canary"
    [late] = Controller(clock=lambda: now_ms() + 120_000).tick()
    [rolled_back] = late.events
    assert rolled_back.kind == "rolled_back"
    assert rolled_back.reason == "the canary saw 0 of the 30 requests it needs within 1m"
    assert keel.prompts.get_alias("support", "production") == 1


def test_feedback_is_compared_once_both_sides_have_enough_of_it(prompted):
    since = now_ms()
    primary = prompted.log(1, 30)
    canary = prompted.log(2, 30)
    prompted.feedback(primary[:25], [1] * 25)
    prompted.feedback(canary[:19], [1] * 19)
    assert measure_canary(prompted.name, 2, since).feedback_drop is None  # 19 < 20: noise
    # a later label of a request replaces its earlier one
    prompted.feedback(canary[:10], [0] * 10)
    prompted.feedback(canary[19:25], [0] * 6)
    metrics = measure_canary(prompted.name, 2, since)
    assert (metrics.canary_feedback_count, metrics.primary_feedback_count) == (25, 25)
    assert metrics.canary_feedback == pytest.approx(9 / 25)
    assert metrics.feedback_drop == pytest.approx(1 - 9 / 25)
    assert metrics.to_dict()["feedback_drop"] == pytest.approx(1 - 9 / 25)


def test_a_canary_that_costs_more_per_request_is_rolled_back_on_its_cost_ratio(prompted):
    _apply(
        prompted,
        rollout={
            "canary": {"weight": 20, "min_requests": 100, "max_duration": "1h"},
            "rollback_when": {"error_rate": 0.05, "cost_ratio": 1.5},
        },
    )
    _register()
    [started] = Controller().tick()
    assert started.after == "canary"
    prompted.log(1, 30, cost_usd=0.001)
    prompted.log(2, 25, cost_usd=0.003)
    [judged] = Controller().tick()
    [rolled_back] = judged.events
    assert rolled_back.kind == "rolled_back"
    assert rolled_back.reason.startswith("cost_ratio 3 > 1.5 (25 canary requests, 0 failed")
    assert keel.prompts.get_alias("support", "production") == 1
    assert _routes(prompted) == [("support", "production", 100)]


def test_the_candidate_is_the_newest_version_and_a_tried_one_is_never_tried_again(prompted):
    _apply(prompted)
    _register(2)  # versions 2 and 3 at once: only the newest is worth a canary
    [first] = Controller().tick()
    assert (first.events[0].kind, first.events[0].version) == ("triggered", 3)
    assert _routes(prompted) == [("support", "production", 80), ("support", "3", 20)]
    prompted.log(3, 20, status=503)
    Controller().tick()
    assert _kinds()[-1] == ("rolled_back", 3)

    # neither 3 (tried) nor 2 (superseded by 3) starts a cycle, after any cooldown
    later = Controller(clock=lambda: now_ms() + 3_600_000)
    [nothing] = later.tick()
    assert nothing.events == [] and nothing.after == "idle"

    _register()  # version 4
    [next_cycle] = later.tick()
    assert [(e.kind, e.version) for e in next_cycle.events] == [
        ("triggered", 4),
        ("gate_passed", 4),
        ("canary_started", 4),
    ]
    assert next_cycle.events[1].reason == "no gates configured: nothing to pass"
    assert _routes(prompted) == [("support", "production", 80), ("support", "4", 20)]


def test_a_firing_alert_of_the_deployment_starts_a_cycle_for_the_candidate(prompted):
    _apply(prompted, triggers=[{"alert": {"rule": "llm_error_rate"}}])
    _register()
    # the candidate exists, but nothing fired yet
    [quiet] = Controller().tick()
    assert quiet.events == []
    prompted.log(1, 16)
    prompted.log(1, 4, status=502)  # 20% of production's requests fail
    [alert] = run_monitor(prompted.name).alerts
    assert (alert.rule, alert.state) == ("llm_error_rate", "firing")

    [started] = Controller().tick()
    triggered = started.events[0]
    assert (triggered.kind, triggered.version) == ("triggered", 2)
    assert triggered.details["trigger"] == f"alert:llm_error_rate:{alert.id} for support/2"
    assert triggered.reason.startswith(f"alert llm_error_rate of {prompted.name} is firing")
    assert started.after == "canary"


def test_a_protected_prompt_alias_waits_for_an_approval_then_promotes_through_any_client(
    prompted_anywhere, as_user
):
    prompted = prompted_anywhere
    client = keel.Client()
    client.set_alias_policy("production", approvals=1, role="approver")
    alice = as_user("alice")
    client.grant_role("alice", "approver")
    _apply(prompted, approval={"mode": "required"})
    _register()
    [started] = Controller().tick()
    assert started.after == "canary"
    prompted.log(1, 40)
    prompted.log(2, 30)

    [asked] = Controller().tick()
    [requested] = asked.events
    assert (requested.kind, asked.after) == ("approval_requested", "awaiting_approval")
    assert "keel prompts approve support 2 --for production" in requested.reason
    assert keel.prompts.get_alias("support", "production") == 1
    [waiting] = Controller().tick()  # still waiting: no second request, no move
    assert waiting.events == [] and waiting.after == "awaiting_approval"

    alice.prompts.approve("support", 2, "production", comment="the canary looked fine")
    [done] = Controller().tick()
    [promoted] = done.events
    assert (promoted.kind, promoted.version) == ("promoted", 2)
    assert promoted.reason.startswith("production 1 → 2: approved")
    assert keel.prompts.get_alias("support", "production") == 2
    assert _routes(prompted) == [("support", "production", 100)]
    assert [h.to_version for h in keel.prompts.alias_history("support", "production")] == [1, 2]


def test_a_candidate_that_fails_its_evals_never_sees_traffic_and_is_not_tried_again(
    prompted, tmp_path
):
    cases = [{"vars": {"question": "What is the capital of France?"}, "expected": "Paris"}] * 2
    path = tmp_path / "support-evals.jsonl"
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))
    keel.data.add(path, name="support-evals")
    # the stand-in is the evals' endpoint here: "good" knows the answer, "wrong" does not
    with start_upstream({"good": {"rules": {"france": "Paris"}}, "wrong": {}}) as upstream:
        _apply(
            prompted,
            triggers=[{"prompt": {}}, {"dataset": {"name": "support-evals"}}],
            gates={
                "evals": {
                    "dataset": "datasets:/support-evals",
                    "scorers": ["exact"],
                    "gates": ["exact >= 1"],
                    "gateway": upstream.base_url,
                }
            },
        )
        keel.prompts.register("support", template=TEMPLATE, model="wrong")
        [judged] = Controller().tick()
        assert judged.failed and judged.after == "idle"
        assert [(e.kind, e.version) for e in judged.events] == [
            ("triggered", 2),
            ("gate_failed", 2),
        ]
        failed = judged.events[1]
        assert failed.reason == "failed exact >= 1: exact 0 < 1 (off by 1)"
        assert failed.details["metrics"]["evals"]["dataset"] == "datasets:/support-evals@1"
        assert _routes(prompted) == [("support", "production", 100)]
        assert upstream.requests("wrong") == 2 and upstream.requests("good") == 2  # + against

        # a new eval-set version is news, but version 2 was tried: nothing starts
        path.write_text(path.read_text() + json.dumps(cases[0]) + "\n")
        keel.data.add(path, name="support-evals")
        [quiet] = Controller(clock=lambda: now_ms() + 3_600_000).tick()
        assert quiet.events == [] and quiet.after == "idle"
        assert upstream.requests("wrong") == 2
