"""Reading the gateway's traces back: windows, and statistics per prompt version and route.

Trace rows are written as the gateway writes them (``trace_row`` through the real
``PredictionLogger``) and every statistic is checked against NumPy on the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keel
from _support.monitoring import HOUR, T0
from _support.traces import write_traces
from keel.errors import InvalidInput, StorageError
from keel.llm.traces import STATS_COLUMNS, TraceStats, read_traces, summarize, trace_stats


def _mixed(rng: np.random.Generator, n: int, version: int, start: int) -> list[dict[str, Any]]:
    """``n`` traces of one version: answered, failed, over budget and rejected, some priced."""
    statuses = rng.choice([200, 200, 200, 200, 502, 504, 429, 400], size=n)
    out = []
    for i, status in enumerate(statuses.tolist()):
        answered = status < 400
        out.append(
            {
                "time_ms": start + i * 1_000,
                "version": version,
                "route": "primary" if version == 1 else "canary",
                "status": status,
                "error": None if answered else "upstream failed",
                "latency_ms": float(rng.gamma(2.0, 150.0)),
                "ttft_ms": float(rng.uniform(5, 50)) if answered and i % 3 else None,
                "input_tokens": int(rng.integers(5, 400)),
                "output_tokens": int(rng.integers(0, 300)) if answered else 0,
                "cost_usd": float(rng.uniform(1e-5, 1e-3)) if answered and i % 4 else None,
                "cache_hit": bool(answered and i % 5 == 0),
            }
        )
    return out


def _expected(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of ``traces``, computed the obvious way with NumPy."""
    status = np.array([t["status"] for t in traces])
    answered = status < 400
    over = status == 429
    errors = status >= 500
    latency = np.array([t["latency_ms"] for t in traces])[answered]
    ttft = np.array([t["ttft_ms"] for t in traces if t["status"] < 400 and t["ttft_ms"]])
    priced = [t["cost_usd"] for t in traces if t["cost_usd"] is not None]
    answered_priced = [
        t["cost_usd"] for t in traces if t["cost_usd"] is not None and t["status"] < 400
    ]
    tokens = sum(t["input_tokens"] + t["output_tokens"] for t in traces if t["status"] < 400)
    return {
        "requests": len(traces),
        "answered": int(answered.sum()),
        "errors": int(errors.sum()),
        "over_budget": int(over.sum()),
        "rejected": int(((status >= 400) & (status < 500) & ~over).sum()),
        "error_rate": errors.sum() / (len(traces) - over.sum()),
        "quantiles": np.quantile(latency, [0.5, 0.95, 0.99]).tolist(),
        "ttft_p50_ms": float(np.median(ttft)),
        "input_tokens": sum(t["input_tokens"] for t in traces),
        "output_tokens": sum(t["output_tokens"] for t in traces),
        "tokens_per_request": tokens / answered.sum(),
        "cost_usd": sum(priced),
        "cost_per_request": sum(answered_priced) / len(answered_priced),
        "cache_hits": sum(1 for t in traces if t["cache_hit"]),
        "unpriced": sum(1 for t in traces if t["status"] < 400 and t["cost_usd"] is None),
    }


def _assert_matches(stats: TraceStats, want: dict[str, Any]) -> None:
    counts = ("requests", "answered", "errors", "over_budget", "rejected", "cache_hits", "unpriced")
    assert {k: getattr(stats, k) for k in counts} == {k: want[k] for k in counts}
    assert (stats.input_tokens, stats.output_tokens) == (
        want["input_tokens"],
        want["output_tokens"],
    )
    # the same values through the same NumPy function: the same numbers, bit for bit
    assert [stats.p50_ms, stats.p95_ms, stats.p99_ms] == want["quantiles"]
    assert stats.ttft_p50_ms == want["ttft_p50_ms"]
    assert stats.error_rate == pytest.approx(want["error_rate"], rel=1e-15)
    assert stats.tokens_per_request == pytest.approx(want["tokens_per_request"], rel=1e-15)
    assert stats.cost_usd == pytest.approx(want["cost_usd"], rel=1e-12)
    assert stats.cost_per_request == pytest.approx(want["cost_per_request"], rel=1e-12)


def test_stats_per_version_match_numpy_on_the_logged_values(tmp_path: Path):
    rng = np.random.default_rng(7)
    v1 = _mixed(rng, 240, 1, T0)
    v2 = _mixed(rng, 90, 2, T0 + 500)
    write_traces(str(tmp_path / "root"), "support-llm", v1 + v2, spill=tmp_path / "spill")
    stats = trace_stats(str(tmp_path / "root"), "support-llm", T0, T0 + HOUR)
    assert list(stats) == ["support/1", "support/2"]
    _assert_matches(stats["support/1"], _expected(v1))
    _assert_matches(stats["support/2"], _expected(v2))
    # by route the same split (v1 went primary, v2 canary); "all" is the whole window
    by_route = trace_stats(str(tmp_path / "root"), "support-llm", T0, T0 + HOUR, by="route")
    assert by_route == {"canary": stats["support/2"], "primary": stats["support/1"]}
    [(key, everything)] = trace_stats(
        str(tmp_path / "root"), "support-llm", T0, T0 + HOUR, by="all"
    ).items()
    assert key == "all"
    _assert_matches(everything, _expected(v1 + v2))


def test_an_over_budget_429_is_neither_an_error_nor_in_the_error_rate(tmp_path: Path):
    traces = (
        [{"time_ms": T0 + i, "status": 200} for i in range(6)]
        + [{"time_ms": T0 + 10 + i, "status": 503, "output_tokens": 0} for i in range(2)]
        + [{"time_ms": T0 + 20 + i, "status": 429, "latency_ms": 0.1} for i in range(12)]
        + [{"time_ms": T0 + 40, "status": 400, "latency_ms": 0.2}]
    )
    write_traces(str(tmp_path / "root"), "support-llm", traces, spill=tmp_path / "spill")
    [stats] = trace_stats(str(tmp_path / "root"), "support-llm", T0).values()
    assert (stats.requests, stats.answered, stats.errors) == (21, 6, 2)
    assert (stats.over_budget, stats.rejected) == (12, 1)
    # 2 errors of the 9 requests the budget let through (the 400 is judged, not an error)
    assert stats.error_rate == pytest.approx(2 / 9)
    # the quick refusals do not pull the latency of answered requests down
    assert stats.p50_ms == stats.p99_ms == 100.0


def test_unpriced_requests_are_counted_and_left_out_of_the_cost_per_request(tmp_path: Path):
    root = str(tmp_path / "root")
    # a first flush where no trace is priced: its file stores cost_usd as a null column
    write_traces(root, "gw", [{"time_ms": T0 + i} for i in range(3)], spill=tmp_path / "spill")
    assert read_traces(root, "gw", columns=["cost_usd"]).column("cost_usd").null_count == 3
    [alone] = trace_stats(root, "gw", T0).values()
    assert (alone.cost_usd, alone.cost_per_request, alone.unpriced) == (0.0, None, 3)
    write_traces(
        root,
        "gw",
        [{"time_ms": T0 + 10, "cost_usd": 0.002}, {"time_ms": T0 + 11, "cost_usd": 0.004}],
        spill=tmp_path / "spill",
    )
    [stats] = trace_stats(root, "gw", T0).values()
    assert stats.requests == 5
    assert stats.unpriced == 3
    assert stats.cost_usd == pytest.approx(0.006)
    assert stats.cost_per_request == pytest.approx(0.003)  # not 0.006 / 5: unpriced is not free


def test_a_window_reads_only_its_rows_and_only_the_hours_it_touches(tmp_path: Path):
    root = tmp_path / "root"
    traces = [{"time_ms": T0 + k * HOUR // 2} for k in range(6)]  # every half hour, 3 hours
    write_traces(str(root), "support-llm", traces, spill=tmp_path / "spill")
    since, until = T0 + HOUR // 2, T0 + 2 * HOUR  # the 2nd and 3rd half hours
    [stats] = trace_stats(str(root), "support-llm", since, until).values()
    assert stats.requests == 3
    window = read_traces(str(root), "support-llm", since, until)
    assert window.column("time").cast("int64").to_pylist() == [t["time_ms"] for t in traces[1:4]]
    # a file that is not Parquet, in an hour the window does not touch, is never opened …
    late = root / "traces" / "deployment=support-llm" / "hour=2026-03-02T11"
    (late / "part-broken.parquet").write_bytes(b"not parquet")
    assert trace_stats(str(root), "support-llm", since, until)["support/1"].requests == 3
    # … and the same file inside the window is reported, not skipped
    with pytest.raises(StorageError, match="not a readable Parquet file"):
        trace_stats(str(root), "support-llm", since, T0 + 3 * HOUR)


def test_read_traces_returns_the_rows_oldest_first_with_their_bodies(tmp_path: Path):
    root = str(tmp_path / "root")
    write_traces(
        root,
        "support-llm",
        [
            {
                "time_ms": T0 + 20,
                "messages": '[{"role": "user", "content": "hi"}]',
                "output": '"hello"',
            },
            {"time_ms": T0 + 10},  # a route that keeps no bodies
        ],
        spill=tmp_path / "spill",
    )
    table = read_traces(root, "support-llm", T0)
    assert table.column("time").cast("int64").to_pylist() == [T0 + 10, T0 + 20]
    assert table.column("input.messages").to_pylist() == [
        None,
        '[{"role": "user", "content": "hi"}]',
    ]
    assert table.column("output.text").to_pylist() == [None, '"hello"']
    projected = read_traces(root, "support-llm", T0, columns=["status", "cost_usd"])
    assert projected.column_names == ["status", "cost_usd"]


def test_an_empty_window_has_no_groups(tmp_path: Path):
    root = str(tmp_path / "root")
    assert trace_stats(root, "support-llm", T0) == {}  # nothing ever logged
    write_traces(root, "support-llm", [{"time_ms": T0}], spill=tmp_path / "spill")
    assert trace_stats(root, "support-llm", T0 + 1, T0 + HOUR) == {}
    assert read_traces(root, "support-llm", T0 + 1, columns=list(STATS_COLUMNS)).num_rows == 0


def test_requests_for_raw_models_group_under_the_model_and_version_0(tmp_path: Path):
    root = str(tmp_path / "root")
    write_traces(
        root,
        "gateway",
        [
            {"time_ms": T0, "model": "small", "version": 0, "route": "direct"},
            {"time_ms": T0 + 1, "model": "support", "version": 10},
            {"time_ms": T0 + 2, "model": "support", "version": 9},
        ],
        spill=tmp_path / "spill",
    )
    # versions in number order, not text order (9 before 10)
    assert list(trace_stats(root, "gateway", T0)) == ["small/0", "support/9", "support/10"]


def test_the_statistics_of_a_client_come_from_its_artifact_root(keel_env, tmp_path: Path):
    write_traces(
        str(keel_env.artifacts_url),
        "support-llm",
        [{"time_ms": T0, "status": 502}, {"time_ms": T0 + 1}],
        spill=tmp_path / "spill",
    )
    [stats] = trace_stats(keel.Client(), "support-llm", T0).values()
    assert (stats.requests, stats.errors, stats.error_rate) == (2, 1, 0.5)


def test_traces_on_s3_read_like_a_folder(s3_bucket: str, s3_server: str, tmp_path: Path):
    root = f"{s3_bucket}/keel"
    write_traces(
        root, "support-llm", [{"time_ms": T0, "cost_usd": 0.5}], spill=tmp_path / "spill",
        endpoint=s3_server,
    )  # fmt: skip
    stats = trace_stats(root, "support-llm", T0, s3_endpoint_url=s3_server)
    assert stats["support/1"].cost_usd == 0.5


def test_bad_arguments_say_what_is_expected(tmp_path: Path):
    root = str(tmp_path / "root")
    with pytest.raises(InvalidInput, match="by must be one of version, route, all, got 'model'"):
        trace_stats(root, "support-llm", T0, by="model")
    with pytest.raises(InvalidInput, match="is not ISO-8601"):
        trace_stats(root, "support-llm", "yesterday")
    with pytest.raises(InvalidInput, match=r"end .* is before start"):
        trace_stats(root, "support-llm", T0, T0 - 1)
    with pytest.raises(InvalidInput, match=r"missing route, latency_ms, status, .*cost_usd"):
        summarize(read_traces(root, "support-llm", columns=["model", "version"]))
