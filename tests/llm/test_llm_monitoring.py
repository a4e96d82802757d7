"""Monitor runs on prompt deployments: error rate, latency, cost and tokens from the traces.

A real prompt deployment over a registered prompt, traces written as the gateway
writes them (``trace_row`` through the real logger), and the monitor run as users
run it. Through ``keel server`` the traces go under the server's artifact root (its
loopback S3 prefix), where the server's monitor reads them; that root outlives a
test, so each deployment has a name of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keel
from _support.monitoring import HOUR, T0
from _support.traces import write_traces
from keel.config import Settings
from keel.errors import InvalidInput
from keel.monitoring import configure_monitor, list_alerts, monitor_history, run_monitor
from keel.serving import Deployments, build_spec


@dataclass
class Prompted:
    """A prompt deployment following ``support@production``, and a writer of its traces."""

    name: str
    root: str
    endpoint: str | None
    spill: Path

    def log(self, hour: int, ok: int, failed: int = 0, **more: Any) -> None:
        """``ok`` answered and ``failed`` 502 traces spread over hour ``hour`` after T0."""
        n = ok + failed
        traces = [
            {
                "time_ms": T0 + hour * HOUR + i * (HOUR // n),
                "status": 502 if i < failed else 200,
                **more,
            }
            for i in range(n)
        ]
        write_traces(self.root, self.name, traces, spill=self.spill, endpoint=self.endpoint)

    def log_traces(self, traces: list[dict[str, Any]]) -> None:
        write_traces(self.root, self.name, traces, spill=self.spill, endpoint=self.endpoint)

    def run(self, hour: int) -> Any:
        """The monitor run over hour ``hour`` after T0 (the default one-hour window)."""
        return run_monitor(self.name, end=T0 + (hour + 1) * HOUR)


def _prompt_deployment(
    settings: Settings, request: pytest.FixtureRequest, tmp_path: Path, *canary: str
) -> Prompted:
    template = [{"role": "user", "content": "{{ question }}"}]
    keel.prompts.register("support", template=template, model="small")
    shorter = [{"role": "user", "content": "Briefly: {{ question }}"}]
    keel.prompts.register("support", template=shorter, model="small", description="shorter")
    keel.prompts.set_alias("support", "production", 1)
    name = f"support-{uuid.uuid4().hex[:8]}"
    Deployments().create(name, build_spec("support@production", list(canary), kind="prompt"))
    if settings.server_url:  # the gateway logs where the server reads: its own root
        server = request.getfixturevalue("control_plane")
        root, endpoint = server.artifacts_url, request.getfixturevalue("s3_server")
    else:
        root, endpoint = str(settings.artifacts_url), settings.s3_endpoint_url
    return Prompted(name, root, endpoint, tmp_path / "spill")


@pytest.fixture
def prompted(any_env: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Prompted:
    """On SQLite, PostgreSQL and through a real server."""
    return _prompt_deployment(any_env, request, tmp_path)


@pytest.fixture
def prompted_here(keel_env: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Prompted:
    """On SQLite and PostgreSQL."""
    return _prompt_deployment(keel_env, request, tmp_path)


def test_the_error_rate_alert_fires_after_fire_after_runs_and_resolves(prompted: Prompted):
    configure_monitor(prompted.name, fire_after=2, resolve_after=2)
    prompted.log(0, ok=32, failed=8)  # 20% failed: the default SLO is 5%
    prompted.log(1, ok=32, failed=8)
    first = prompted.run(0)
    assert first.llm["overall"]["requests"] == 40
    assert first.llm["overall"]["error_rate"] == pytest.approx(0.2)
    assert first.llm["slo"]["error_rate"] == 0.05
    assert (first.rows, first.share_drifted, first.alerts) == (40, None, [])  # one breach of two
    second = prompted.run(1)
    [fired] = second.alerts
    assert (fired.rule, fired.state, fired.threshold) == ("llm_error_rate", "firing", 0.05)
    assert fired.value == pytest.approx(0.2)
    assert "20.0% of requests failed over 40 requests" in fired.message
    # 4.5%: under the SLO but above where it clears (80% of it): the alert holds
    prompted.log(2, ok=191, failed=9)
    assert prompted.run(2).alerts == []
    # clean hours, with a burst of over-budget refusals: a 429 is not the version's failure
    for hour in (3, 4):
        prompted.log(hour, ok=40)
        prompted.log_traces(
            [{"time_ms": T0 + hour * HOUR + 7 + i, "status": 429} for i in range(30)]
        )
    assert prompted.run(3).alerts == []  # one clear run of two
    [resolved] = prompted.run(4).alerts
    assert (resolved.rule, resolved.state, resolved.value) == ("llm_error_rate", "resolved", 0.0)
    assert [a.state for a in list_alerts(prompted.name)] == ["resolved", "firing"]
    # the runs are stored like any other, and read back with their trace figures
    history = monitor_history(prompted.name)
    assert [r.window_end for r in history] == [T0 + h * HOUR for h in (5, 4, 3, 2, 1)]
    assert [r.llm["overall"]["errors"] for r in history] == [0, 0, 9, 8, 8]
    assert history[0].llm["overall"]["over_budget"] == 30
    assert all(r.quality is None for r in history)


def test_a_failing_canary_version_shows_in_the_alert_and_the_versions(
    any_env: Settings, request: pytest.FixtureRequest, tmp_path: Path
):
    prompted = _prompt_deployment(any_env, request, tmp_path, "support/2:10")
    traces = [{"time_ms": T0 + i, "version": 1} for i in range(90)]
    traces += [
        {"time_ms": T0 + 100 + i, "version": 2, "route": "canary", "status": 503 if i < 6 else 200}
        for i in range(10)
    ]
    prompted.log_traces(traces)
    result = prompted.run(0)
    assert result.llm["versions"]["support/1"]["errors"] == 0
    assert result.llm["versions"]["support/2"]["errors"] == 6
    [fired] = result.alerts  # 6% of the deployment's requests; fire_after is 1 by default
    assert fired.rule == "llm_error_rate"
    # the worst version first
    assert "by version: support/2 60.0% over 10; support/1 0.0% over 90" in fired.message


def test_too_few_requests_judge_nothing_and_keep_the_state(prompted: Prompted):
    prompted.log(0, ok=0, failed=19)  # every request failed, but fewer than min_requests (20)
    result = prompted.run(0)
    assert result.llm["overall"]["error_rate"] == 1.0
    assert result.alerts == []
    prompted.log(1, ok=0, failed=20)
    assert [a.rule for a in prompted.run(1).alerts] == ["llm_error_rate"]


def test_a_window_without_traffic_is_stored_and_moves_no_alert(prompted: Prompted):
    result = prompted.run(0)
    assert (result.rows, result.llm["overall"], result.llm["versions"]) == (0, None, {})
    assert result.alerts == []
    assert result.report() is None  # no drift report for a prompt deployment
    [stored] = monitor_history(prompted.name)
    assert (stored.id, stored.rows) == (result.id, 0)


def test_latency_cost_and_token_slos_fire_once_set(prompted: Prompted):
    name = prompted.name
    settings = configure_monitor(
        name,
        slo={"latency_p99_ms": 500, "cost_per_request": 0.001, "error_rate": None},
    )
    assert settings.slo == {"latency_p99_ms": 500, "cost_per_request": 0.001, "error_rate": None}
    traces = [
        {
            "time_ms": T0 + i,
            "latency_ms": 900.0 if i % 10 == 1 else 100.0,  # answered ones: p99 above 500
            "cost_usd": 0.002,
            "input_tokens": 1_000,
            "output_tokens": 500,
            "status": 200 if i % 2 else 500,  # half fail: the error-rate SLO is off
        }
        for i in range(60)
    ]
    prompted.log_traces(traces)
    result = prompted.run(0)
    fired = {a.rule: a for a in result.alerts}
    assert sorted(fired) == ["llm_cost_per_request", "llm_latency_p99_ms"]
    assert fired["llm_latency_p99_ms"].value == 900.0
    assert fired["llm_cost_per_request"].value == pytest.approx(0.002)
    assert "$0.002 per request over 30 priced answers (SLO $0.001)" in (
        fired["llm_cost_per_request"].message
    )
    assert result.llm["overall"]["tokens_per_request"] == 1_500.0  # measured, no SLO to break
    assert result.llm["slo"]["tokens_per_request"] is None
    # an SLO set later holds the next window to it
    configure_monitor(name, slo={"tokens_per_request": 1_000})
    prompted.log_traces([{**t, "time_ms": t["time_ms"] + HOUR} for t in traces])
    assert [a.rule for a in prompted.run(1).alerts] == [
        "llm_error_rate",  # back on at its default, 5%, once the setting no longer turns it off
        "llm_tokens_per_request",
    ]


def test_slo_settings_name_what_is_wrong(prompted: Prompted):
    with pytest.raises(InvalidInput, match=r"unknown SLO\(s\) 'p99'; valid: error_rate, "):
        configure_monitor(prompted.name, slo={"p99": 100})
    with pytest.raises(InvalidInput, match="error_rate is a share of requests from 0 to 1"):
        configure_monitor(prompted.name, slo={"error_rate": 5})
    with pytest.raises(InvalidInput, match="min_requests must be a whole number >= 1"):
        configure_monitor(prompted.name, slo={"min_requests": None})


def test_keel_monitor_run_prints_the_trace_figures(prompted_here: Prompted, run_keel, keel_env):
    prompted_here.log(0, ok=30, failed=10)
    end = dt.datetime.fromtimestamp((T0 + HOUR) / 1000, dt.UTC).isoformat()
    out = run_keel(
        "monitor", "run", prompted_here.name, "--end", end, "--json", settings=keel_env, check=True
    )
    doc = json.loads(out.stdout)
    assert doc["llm"]["overall"]["errors"] == 10
    assert [a["rule"] for a in doc["alerts"]] == ["llm_error_rate"]
    table = run_keel("monitor", "history", prompted_here.name, settings=keel_env)
    assert table.returncode == 0, table.stderr
    # the human output says what the traces measured, not a drift share it has none of
    again = run_keel("monitor", "run", prompted_here.name, "--end", end, settings=keel_env)
    assert again.returncode == 0, again.stderr
    assert "40 traced requests" in again.stdout
    assert "share drifted" not in again.stdout
    assert "all: 40 requests, error rate 0.25" in again.stdout


def test_a_client_of_keel_server_cannot_read_traces_it_does_not_hold(control_plane, tmp_path):
    from keel.llm.traces import trace_stats

    control_plane.settings(tmp_path / ".keel")
    with pytest.raises(InvalidInput, match="a client of keel server has none of its own"):
        trace_stats(keel.Client(), "support-llm", T0)
