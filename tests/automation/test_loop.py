"""The closed loop, end to end, with real components: every transition read back from the store.

A real ``keel serve`` process answers over HTTP, its prediction logs feed the
monitor, a Keel pipeline retrains, ``keel models check`` gates, the deployment's
canary route and the alias move happen through the controller. The scenario
is the demo's (:mod:`keel.demo.scenario`): a referral clinic's larger tumours
shift the traffic; later a logistic regression that looks better offline
fails on live rows with a missing value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import keel
from _support.cli import keel_command, keel_environ
from keel.automation import Controller, PolicyStore, history
from keel.demo.scenario import TARGET, load_scenario
from keel.demo.traffic import Server, send_rows
from keel.governance import audit
from keel.serving import Deployments, build_spec
from keel.store import get_store

pytestmark = pytest.mark.slow

DEPLOYMENT = "screening-api"


def policy(**overrides) -> dict:
    doc = {
        "name": "loop",
        "model": "screening",
        "deployment": DEPLOYMENT,
        "triggers": [
            {"drift": {"window": "10m", "share": 0.3}},
            {"dataset": {"name": "screening"}},
        ],
        "cooldown": "1s",
        "retrain": {
            "pipeline": "keel.demo.pipeline:screening",
            "params": {"data": "datasets:/screening@latest", "algorithm": "hgb"},
        },
        "gates": {
            "data": "datasets:/screening-eval@latest",
            "target": TARGET,
            "rules": {
                "metrics": {"roc_auc": {"min": 0.95}},
                "against": {"accuracy": {"min_delta": 0.0}},
            },
            # Measured and reported, but never deciding: timing must not decide a test.
            "latency": {"p99_ms": 60_000, "requests": 50},
        },
        "rollout": {
            "canary": {"weight": 40, "min_requests": 40, "max_duration": "10m"},
            "promote_when": {"error_rate": 0.01},
            "rollback_when": {"error_rate": 0.05},
        },
    }
    doc.update(overrides)
    return doc


@pytest.fixture(params=["embedded", "postgres+s3"])
def profile(request, tmp_path: Path):
    """Keel on SQLite + a folder, or on PostgreSQL + the loopback S3 server; and the server env."""
    home = tmp_path / "home"
    if request.param == "embedded":
        return keel.init(home=home), {}
    store_url = request.getfixturevalue("fresh_postgres_url")
    artifacts_url = request.getfixturevalue("s3_bucket") + "/keel"
    endpoint = request.getfixturevalue("s3_server")
    settings = keel.init(
        home=home, store_url=store_url, artifacts_url=artifacts_url, s3_endpoint_url=endpoint
    )
    return settings, {
        "KEEL_STORE_URL": store_url,
        "KEEL_ARTIFACTS_URL": artifacts_url,
        "KEEL_S3_ENDPOINT_URL": endpoint,
    }


@pytest.fixture
def story():
    return load_scenario()


def _champion_setup(story, settings, server_env, tmp_path):
    from keel.checks import Rules, check_model_version
    from keel.pipelines import run_pipeline

    keel.log_dataset(story.screening, name="screening")
    keel.log_dataset(story.screening_eval, name="screening-eval")
    run = run_pipeline("keel.demo.pipeline:screening", params={"data": "datasets:/screening@1"})
    assert run.outputs["model"] == "models:/screening/1"
    rules = Rules.from_dict({"metrics": {"roc_auc": {"min": 0.9}}})
    assert check_model_version("screening", 1, story.screening_eval, TARGET, rules).passed
    keel.Client().set_alias("screening", "champion", 1)
    Deployments().create(DEPLOYMENT, build_spec("screening@champion"))
    server = Server(DEPLOYMENT, settings.home, tmp_path / "server.log", env=server_env)
    server.wait_ready()
    return server


def _kinds(policy_name: str = "loop") -> list[tuple[str, int | None]]:
    return [(e.kind, e.version) for e in history(policy_name) if e.kind != "resumed"]


def _flush() -> None:
    time.sleep(1.6)  # the server's prediction-log writer flushes once a second


def _spec_routes() -> list[tuple[str, str, int]]:
    spec = Deployments().get(DEPLOYMENT).spec
    return [(r.model, r.ref, r.weight) for r in spec.routes]


def test_drift_retrains_gates_canaries_promotes_then_a_bad_candidate_rolls_back(
    profile, story, tmp_path
):
    settings, server_env = profile
    _drift_then_a_bad_candidate(story, settings, server_env, tmp_path)
    _assert_audited(get_store(settings))


@pytest.mark.parametrize("any_env", ["server"], indirect=True)
def test_the_loop_runs_with_its_controller_and_serving_going_through_keel_server(
    any_env, control_plane, s3_server, story, tmp_path
):
    """The controller and ``keel serve`` are clients of a real ``keel server``: they share its
    artifact root, where the serving process logs and the server monitors and measures."""
    serving_env = {
        "KEEL_SERVER_URL": any_env.server_url,
        "KEEL_TOKEN": any_env.token,
        "KEEL_ARTIFACTS_URL": control_plane.artifacts_url,
        "KEEL_S3_ENDPOINT_URL": s3_server,
    }
    # The gates' rules run here too: each check's report goes up through the blob routes and
    # its record through the registry routes (the bad candidate passes its rules offline, and
    # the canary catches it).
    _drift_then_a_bad_candidate(story, any_env, serving_env, tmp_path)
    from keel.config import load_settings

    _assert_audited(
        get_store(load_settings(home=tmp_path / "srv", store_url=control_plane.store_url))
    )


def _drift_then_a_bad_candidate(story, settings, server_env, tmp_path) -> None:
    server = _champion_setup(story, settings, server_env, tmp_path)

    try:
        assert send_rows(server, story.routine_traffic(80, seed=1), "routine") == {200: 80}
        PolicyStore().apply(policy())
        controller = Controller(lease_seconds=30)
        controller.tick()
        assert _kinds() == []  # routine traffic, known data: nothing to do

        # The shift: new labelled data and traffic from a new sub-population.
        keel.log_dataset(
            pd.concat([story.screening, story.clinic_train], ignore_index=True), name="screening"
        )
        keel.log_dataset(
            pd.concat([story.screening_eval, story.clinic_eval], ignore_index=True),
            name="screening-eval",
        )
        assert send_rows(server, story.shifted_traffic(300, seed=2), "shift") == {200: 300}
        _flush()
        controller.tick()
        assert _kinds() == [
            ("triggered", 1),
            ("retrain_started", None),
            ("retrain_finished", 2),
            ("gate_passed", 2),
            ("canary_started", 2),
        ]
        triggered = history("loop")[0]
        assert triggered.reason.startswith("7") or "drifted" in triggered.reason
        assert triggered.details["params"]["data"] == "datasets:/screening@2"  # pinned
        state = PolicyStore().state("loop")
        assert (state.state, state.candidate_version, state.baseline_version) == ("canary", 2, 1)
        assert _spec_routes() == [("screening", "champion", 60), ("screening", "2", 40)]

        server.wait_routing({1, 2})
        assert send_rows(server, story.shifted_traffic(200, seed=3), "canary") == {200: 200}
        _flush()
        controller.tick()
        assert _kinds()[-1] == ("promoted", 2)
        assert keel.Client().get_alias("screening", "champion") == 2
        assert _spec_routes() == [("screening", "champion", 100)]
        assert PolicyStore().state("loop").state == "idle"

        # A candidate that is better offline but fails on live rows with a blank value.
        PolicyStore().apply(
            policy(
                retrain={
                    "pipeline": "keel.demo.pipeline:screening",
                    "params": {"data": "datasets:/screening@latest", "algorithm": "logreg"},
                },
            )
        )
        keel.log_dataset(
            pd.concat([story.screening, story.clinic_train, story.clinic_more], ignore_index=True),
            name="screening",
        )
        time.sleep(1.1)  # the cooldown
        controller.tick()
        assert _kinds()[-5:] == [
            ("triggered", 2),
            ("retrain_started", None),
            ("retrain_finished", 3),
            ("gate_passed", 3),
            ("canary_started", 3),
        ]
        assert "dataset screening has a new version 3" in history("loop")[-5].reason
        server.wait_routing({2, 3})
        statuses = send_rows(server, story.glitchy_traffic(240, seed=4), "glitch")
        # The canary's signature refuses the blank measurement (422 naming the column) where
        # the champion, which handles missing values itself, answers: no request is a 500.
        assert statuses[422] > 0
        assert statuses[500] == 0
        _flush()
        controller.tick()
        last = history("loop")[-1]
        assert (last.kind, last.version) == ("rolled_back", 3)
        assert last.reason.startswith("error_rate")
        assert keel.Client().get_alias("screening", "champion") == 2  # untouched
        # each candidate's gate recorded its check against the champion of the day
        registry = keel.Client().registry
        recorded = [registry.list_checks("screening", v) for v in (2, 3)]
        assert [[(c.passed, c.against_version) for c in r] for r in recorded] == [
            [(True, 1)],
            [(True, 2)],
        ]
        assert _spec_routes() == [("screening", "champion", 100)]
    finally:
        server.stop()


def _assert_audited(store) -> None:
    """Everything the controller did is in the hash-chained audit trail, intact."""
    assert audit.verify(store).ok
    # the champion's check at setup, then one per gated candidate
    checks = [e for e in audit.list_entries(store) if e.action == "model_version.check"]
    assert sorted(e.object_id for e in checks) == ["screening/1", "screening/2", "screening/3"]
    actions = [e.action for e in audit.list_entries(store) if e.action.startswith("automation.")]
    assert (
        actions.count("automation.promoted") == 1 and actions.count("automation.rolled_back") == 1
    )


def test_a_failing_gate_ends_the_cycle_and_leaves_the_deployment_alone(story, tmp_path):
    settings = keel.init(home=tmp_path / "home")
    server = _champion_setup(story, settings, {}, tmp_path)
    server.stop()  # no traffic needed: the candidate never reaches it
    strict = policy()
    strict["gates"]["rules"]["metrics"] = {"accuracy": {"min": 0.999}}
    PolicyStore().apply(strict)
    controller = Controller()
    controller.tick()  # records the dataset baseline
    keel.log_dataset(
        pd.concat([story.screening, story.clinic_train], ignore_index=True), name="screening"
    )
    controller.tick()
    assert [k for k, _ in _kinds()] == [
        "triggered",
        "retrain_started",
        "retrain_finished",
        "gate_failed",
    ]
    assert "accuracy" in history("loop")[-1].reason
    assert history("loop")[-1].details["passed"] is False
    assert _spec_routes() == [("screening", "champion", 100)]
    assert PolicyStore().state("loop").state == "idle"
    # One trigger never starts two retrains: the same dataset version is not news again.
    time.sleep(1.1)
    controller.tick()
    assert [k for k, _ in _kinds()].count("triggered") == 1


def test_a_protected_alias_waits_for_an_approval_then_promotes(story, tmp_path, monkeypatch):
    settings = keel.init(home=tmp_path / "home")
    server = _champion_setup(story, settings, {}, tmp_path)
    client = keel.Client()
    client.set_alias_policy("champion", approvals=1, role="approver")
    client.grant_role("alice", "approver")
    try:
        PolicyStore().apply(policy(approval={"mode": "required"}))
        controller = Controller()
        controller.tick()
        keel.log_dataset(
            pd.concat([story.screening, story.clinic_train], ignore_index=True), name="screening"
        )
        controller.tick()
        assert _kinds()[-1] == ("canary_started", 2)
        server.wait_routing({1, 2})
        send_rows(server, story.shifted_traffic(200, seed=5), "canary")
        _flush()
        controller.tick()
        assert _kinds()[-1] == ("approval_requested", 2)
        assert "keel models approve screening 2 --for champion" in history("loop")[-1].reason
        assert keel.Client().get_alias("screening", "champion") == 1
        controller.tick()  # still waiting: no second request, no move
        assert [k for k, _ in _kinds()].count("approval_requested") == 1
        monkeypatch.setenv("KEEL_USER", "alice")
        keel.init(home=settings.home)
        keel.Client().approve("screening", 2, "champion", comment="canary looked fine")
        Controller().tick()
        assert _kinds()[-1] == ("promoted", 2)
        assert keel.Client().get_alias("screening", "champion") == 2
    finally:
        server.stop()


def _controller_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        keel_command("automation", "run", "--interval", "0.2"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_state(proc: subprocess.Popen[bytes], state: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while PolicyStore().state("loop").state != state:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, f"the controller did not reach {state}"
        time.sleep(0.05)


def test_controllers_killed_mid_retrain_and_mid_rollout_are_resumed(story, tmp_path):
    settings = keel.init(home=tmp_path / "home")
    server = _champion_setup(story, settings, {}, tmp_path)
    env = keel_environ(KEEL_HOME=str(settings.home))
    started: list[subprocess.Popen[bytes]] = []
    try:
        PolicyStore().apply(policy())
        Controller().tick()  # the dataset baseline
        keel.log_dataset(
            pd.concat([story.screening, story.clinic_train], ignore_index=True), name="screening"
        )
        # 1. Killed while retraining: it holds the policy's lease as it dies.
        first = _controller_process(env)
        started.append(first)
        _wait_state(first, "retraining")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        held = PolicyStore().state("loop")
        assert held.state == "retraining" and f":{first.pid}:" in (held.lease_owner or "")
        result = Controller().tick()[0]  # a dead holder on this host: taken over at once
        assert result.skipped is None and result.after == "canary"
        assert [e.kind for e in result.events][:2] == ["resumed", "retrain_started"]

        # 2. Killed mid-rollout: the canary is live and measured by whoever comes next.
        second = _controller_process(env)
        started.append(second)
        time.sleep(1.0)  # it ticks the canary a few times (too few requests to decide)
        assert PolicyStore().state("loop").state == "canary"
        os.kill(second.pid, signal.SIGKILL)
        second.wait(timeout=30)
        candidate = PolicyStore().state("loop").candidate_version
        server.wait_routing({1, candidate})
        send_rows(server, story.shifted_traffic(200, seed=6), "after-kill")
        _flush()
        Controller().tick()
        kinds = [k for k, _ in _kinds()]
        assert kinds.count("triggered") == 1 and kinds.count("canary_started") == 1
        assert kinds[-1] == "promoted"
        assert keel.Client().get_alias("screening", "champion") == candidate
        assert _spec_routes() == [("screening", "champion", 100)]  # one champion, one route
    finally:
        for proc in started:  # a failed assertion must not leave a controller running
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        server.stop()
    assert audit.verify(get_store(settings)).ok
    moves = [
        (h.from_version, h.to_version) for h in keel.Client().alias_history("screening", "champion")
    ]
    assert moves == [(None, 1), (1, candidate)]
