"""``keel demo llm``, run as users run it: a real process that starts the stand-in upstream
and a real gateway, and leaves a home whose store says what the automation decided."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel

pytestmark = pytest.mark.slow


def test_llm_demo_promotes_v2_rolls_back_v3_and_leaves_no_process(tmp_path: Path, run_keel):
    home = tmp_path / "demo"
    result = run_keel("demo", "llm", "--home", str(home), timeout=300.0)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "The upstream is a stand-in, not a language model" in result.stdout
    assert "simulated after the gate passed" in result.stdout  # the outage is the demo's doing
    assert "Done in" in result.stdout
    assert f"keel --home {home} ui" in result.stdout  # how to look further

    keel.init(home=home)
    from keel.automation import history

    events = [(e.kind, e.version) for e in history("support-loop") if e.kind != "resumed"]
    assert events == [
        ("triggered", 2),
        ("gate_passed", 2),
        ("canary_started", 2),
        ("promoted", 2),
        ("triggered", 3),
        ("gate_passed", 3),
        ("canary_started", 3),
        ("rolled_back", 3),
    ]
    # v2's gate compared it with production's v1 on the same cases
    gate = history("support-loop", kinds=("gate_passed",))[0]
    evals = gate.details["metrics"]["evals"]
    assert (evals["prompt"], evals["against"]) == ("prompts:/support/2", "prompts:/support/1")
    assert evals["metrics"]["contains"] == 1.0
    assert evals["metrics"]["against.contains"] == 0.25
    assert evals["metrics"]["diff.contains"] == pytest.approx(0.75)
    # v3 went back on its live error rate; production never left v2
    rolled_back = history("support-loop", kinds=("rolled_back",))[0]
    assert rolled_back.reason.startswith("error_rate ") and "> 0.05" in rolled_back.reason
    assert keel.prompts.get_alias("support", "production") == 2
    moves = keel.prompts.alias_history("support", "production")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, 1), (1, 2)]
    from keel.serving import Deployments

    routes = Deployments().get("support-llm").spec.routes
    assert [(r.model, r.ref, r.weight) for r in routes] == [("support", "production", 100)]

    # the gateway's traces: every version answered, priced; only v3 failed, and v2 cost more
    from keel.llm.traces import trace_stats

    stats = trace_stats(keel.Client(), "support-llm", 0)
    assert set(stats) == {"support/1", "support/2", "support/3"}
    assert stats["support/1"].errors == 0 and stats["support/2"].errors == 0
    assert stats["support/3"].errors > 0
    assert all(s.unpriced == 0 and s.answered > 0 for s in stats.values())
    assert stats["support/2"].cost_per_request > stats["support/1"].cost_per_request

    from keel.governance import audit
    from keel.store import get_store

    assert audit.verify(get_store(keel.Client().settings)).ok
    assert _processes_with_env(f"KEEL_HOME={home}") == []  # the stand-in and gateway stopped


def _processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``entry`` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
