"""The LLM gateway's overhead: Keel's gateway vs LiteLLM's proxy, both over the same stand-in.

What is measured
----------------
One OpenAI-compatible upstream, the stand-in of :mod:`keel.demo.upstream`
(not a language model: a deterministic answer after a fixed 20 ms sleep),
reached three ways with the same request body (a one-message, non-streaming
chat completion of model ``bench``):

* **direct**: straight to the stand-in: the baseline;
* **keel**: through ``keel gateway start --config gateway.yaml`` (one worker,
  ``auth: none``, one provider pointing at the stand-in, traces on, as shipped
  otherwise) on a fresh ``KEEL_HOME`` in a temporary folder;
* **litellm**: through LiteLLM's proxy, ``litellm --config litellm.yaml
  --num_workers 1`` from its own virtualenv (``.venv-litellm``, ``make
  bench-venvs``), one ``openai/`` model at the stand-in's base URL, no
  database, no master key, telemetry and callbacks off, the model cost map
  read locally, uvicorn's access log off (Keel's servers keep none either).

Three scenarios, every path measured ``--rounds`` times (default 2),
alternating paths within a round so that a slow spell of the machine is
spread over all of them; each figure printed is the best of the rounds (lowest
latency, highest throughput), taken the same way for every path:

1. **latency at a fixed rate**: an open-loop generator sends ``--rate``
   requests per second (default 200) on a fixed schedule, whether or not the
   earlier ones have answered, for ``--duration`` seconds (default 15) after a
   3-second warm-up. Each request is timed from when it is sent to when its
   whole body is read; one with no answer within 30 s counts as a timeout, and
   its 30 s stay in the percentiles (leaving it out would flatter a path that
   cannot keep up). p50/p95/p99 per path; *added latency* = path - direct
   at each percentile. The generator also reports how late it sent requests
   against its schedule (p99): a late generator is a busy machine. The server
   processes' CPU time per request (user + system, read from /proc for the
   proxy's whole process session) is printed with it. The same run again at a
   light ``--light-rate`` (default 25 req/s), where no path is near its limit,
   shows the per-request cost alone; a proxy that cannot keep up with the
   main rate on this machine shows queueing there instead.
2. **max throughput**: ``--connections`` (default 64) closed-loop clients,
   each sending its next request as soon as the last answered, for
   ``--throughput-duration`` seconds (default 10) after a 2-second warm-up:
   requests per second. The direct line is the ceiling of this generator and
   stand-in on this machine, not a target.
3. **streaming**: the fixed-rate run again with ``"stream": true``: time to
   first token (the first body bytes of the event stream) and to the end of
   the stream; *added time to first token* = path - direct.

Targets (informational; nothing here asserts on timing): Keel's gateway adds
at most 1 ms at p50 and 3 ms at p99 over the direct call at 200 req/s, and is
ahead of LiteLLM's proxy on added latency (p50 and p99, at 200 req/s) and on
max throughput.

The machine
-----------
All of it shares the machine's cores: the load generator, the stand-in and
the proxy under test are three processes, and on a 2-core machine they compete
(nothing is pinned). The direct line pays for two of them, a proxy line for
three; that is the cost a gateway has on a small box, and it is the same for
both gateways. The 1-minute load average is printed before and after.

How it runs
-----------
The load generator is this file re-invoked with ``--worker load`` in its own
process (asyncio with uvloop where installed, one pooled keep-alive
``aiohttp.ClientSession``), so that its event loop times requests without
sharing a loop or a GIL with any server. Not httpx: its async connection pool
slows down as concurrency grows (64 clients straight at the stand-in made
12-33 req/s with ``httpx.AsyncClient`` and 1,600 with aiohttp on the same
machine), so it would have measured itself. Each server runs in its own
process session; everything lives in one temporary folder, removed at the end
(``--keep`` keeps it, with the servers' logs). ``KEEL_*`` variables are not passed on, except the temporary
``KEEL_HOME`` given to the gateway. Before timing, each path must answer the
request with the stand-in's deterministic reply; a non-2xx answer during timing
is counted and makes the run exit 1.

Usage::

    python bench/gateway.py               # from the dev venv: .venv/bin/python bench/gateway.py
    python bench/gateway.py --duration 5 --rounds 1 --skip-litellm --json

The default run takes about twelve minutes, most of it LiteLLM working off the
requests it could not keep up with (the next path is measured only once the
previous server is idle again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import Server, clean_env, fmt, peer_python, peer_unavailable

RESULT_MARKER = "KEEL_BENCH_RESULT "
HOST = "127.0.0.1"
MODEL = "bench"
CHAT_PATH = "/v1/chat/completions"
UPSTREAM_LATENCY_MS = 20.0
LATENCY_WARMUP = 3.0
THROUGHPUT_WARMUP = 2.0
READY_TIMEOUT = {"direct": 60.0, "keel": 90.0, "litellm": 180.0}
PATHS = ("direct", "keel", "litellm")
PERCENTILES = (50, 95, 99)
QUESTION = "What is the capital of France? Answer in one word."
EXPECTED_REPLY = f"You said: {QUESTION}"
#: the issue's targets for Keel's added latency over the direct call, in ms
ADDED_P50_TARGET_MS = 1.0
ADDED_P99_TARGET_MS = 3.0
JSON_HEADERS = {"Content-Type": "application/json"}
#: seconds without a whole answer before a request counts as a timeout
REQUEST_TIMEOUT = 30.0
#: the open loop's connection pool: enough for every request in flight when a path queues
OPEN_LOOP_CONNECTIONS = 1024

Result = dict[str, Any]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chat_body(stream: bool) -> bytes:
    doc: Result = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        doc["stream"] = True
    return json.dumps(doc).encode()


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(values: list[float]) -> Result:
    """p50/p95/p99 of durations in seconds, as milliseconds."""
    ordered = sorted(values)
    return {f"p{q}": percentile(ordered, q) * 1000 for q in PERCENTILES}


# -- worker: the load generator ---------------------------------------------------------------


def _event_loop_policy() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _send(session: Any, url: str, body: bytes, stream: bool) -> tuple[str, float, float]:
    """One request: (outcome, seconds to the first body bytes, seconds to the end).

    The outcome is ``ok`` (2xx), ``timeout`` (no whole answer within
    ``REQUEST_TIMEOUT``) or ``error`` (another status, or a socket error).
    """
    import aiohttp

    began = time.perf_counter()
    first = math.nan
    try:
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            if stream:
                async for chunk in response.content.iter_any():
                    if chunk and math.isnan(first):
                        first = time.perf_counter()
            else:
                await response.read()
                first = time.perf_counter()
            outcome = "ok" if 200 <= response.status < 300 else "error"
    except TimeoutError:
        outcome = "timeout"
    except aiohttp.ClientError:
        outcome = "error"
    ended = time.perf_counter()
    return outcome, first - began, ended - began


def _session(connections: int) -> Any:
    """One pooled keep-alive client session for the whole run."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


async def open_loop(url: str, body: bytes, rate: float, duration: float, stream: bool) -> Result:
    """Send ``rate`` requests per second on a fixed schedule, whatever is outstanding."""
    async with _session(OPEN_LOOP_CONNECTIONS) as session:
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        warmup = int(LATENCY_WARMUP * rate)
        total = warmup + int(duration * rate)
        tasks: list[asyncio.Task[tuple[str, float, float]]] = []
        lags: list[float] = []
        start = loop.time() + 0.05
        for i in range(total):
            due = start + i * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i >= warmup:
                lags.append(max(0.0, loop.time() - due))
            tasks.append(asyncio.create_task(_send(session, url, body, stream)))
        done = await asyncio.gather(*tasks)
    measured = done[warmup:]
    # A timeout is a latency (at least REQUEST_TIMEOUT), not a request to leave out: leaving
    # them out would flatter a path that cannot keep up.
    timed = [r for r in measured if r[0] != "error"]
    result: Result = {
        "sent": total,
        "requests": len(measured),
        "errors": len(measured) - len(timed),
        "timeouts": sum(r[0] == "timeout" for r in measured),
        "rate": rate,
        "seconds": duration,
        "latency_ms": summary_ms([r[2] for r in timed]),
        "send_lag_p99_ms": percentile(sorted(lags), 99) * 1000,
    }
    if stream:
        result["first_token_ms"] = summary_ms(
            [r[2] if r[0] == "timeout" or math.isnan(r[1]) else r[1] for r in timed]
        )
    return result


async def closed_loop(url: str, body: bytes, connections: int, duration: float) -> Result:
    """``connections`` clients, each sending its next request when the last one answered."""
    async with _session(connections) as session:
        begin = time.perf_counter()
        measure_from = begin + THROUGHPUT_WARMUP
        stop_at = measure_from + duration
        latencies: list[float] = []
        errors = timeouts = sent = 0

        async def worker() -> None:
            nonlocal errors, timeouts, sent
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                outcome, _, took = await _send(session, url, body, stream=False)
                sent += 1
                if began >= measure_from and began + took <= stop_at:
                    if outcome == "ok":
                        latencies.append(took)
                    errors += outcome == "error"
                    timeouts += outcome == "timeout"

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {
        "sent": sent,
        "requests": len(latencies),
        "errors": errors,
        "timeouts": timeouts,
        "connections": connections,
        "seconds": duration,
        "rps": len(latencies) / duration,
        "latency_ms": summary_ms(latencies),
    }


def load_worker(args: argparse.Namespace) -> Result:
    loop_kind = _event_loop_policy()
    url = f"http://{HOST}:{args.port}{CHAT_PATH}"
    if args.mode == "closed":
        result = asyncio.run(
            closed_loop(url, chat_body(False), args.connections, args.throughput_duration)
        )
    else:
        stream = args.mode == "stream"
        result = asyncio.run(open_loop(url, chat_body(stream), args.rate, args.duration, stream))
    result["event_loop"] = loop_kind
    return result


# -- the driver: servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_upstream(tmp: Path) -> Server:
    progress(f"direct: the stand-in upstream, {UPSTREAM_LATENCY_MS:g} ms per answer")
    port = free_port()
    models = json.dumps({MODEL: {"latency_ms": UPSTREAM_LATENCY_MS}})
    command = [sys.executable, "-m", "keel.demo.upstream", "--port", str(port), "--models", models]
    server = Server("direct", command, clean_env(), tmp, port, "/v1/models")
    problem = server.wait_ready(READY_TIMEOUT["direct"])
    if problem:
        server.stop()
        raise SystemExit(problem)
    return server


def keel_gateway_base() -> list[str] | None:
    """How to run ``keel gateway``: the CLI when it has the group, else its Typer app directly."""
    script = Path(sys.executable).with_name("keel")
    if script.exists():
        probe = subprocess.run(
            [str(script), "gateway", "--help"], capture_output=True, env=clean_env(), check=False
        )
        if probe.returncode == 0:
            return [str(script), "gateway"]
    probe = subprocess.run(
        [sys.executable, "-c", "import keel.cli.gateway"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        runner = "import sys; from keel.cli.gateway import gateway_app; sys.exit(gateway_app())"
        return [sys.executable, "-c", runner]
    return None


def start_keel(tmp: Path, upstream: Server) -> tuple[Server | None, str]:
    """Keel's gateway and how it was started; ``(None, why)`` when it cannot run."""
    base = keel_gateway_base()
    if base is None:
        return None, "neither `keel gateway` nor keel.cli.gateway is available in this install"
    progress("keel: keel gateway start (auth: none, traces on)")
    config = tmp / "gateway.yaml"
    config.write_text(
        "name: bench\n"
        "providers:\n"
        "  - name: standin\n"
        f"    base_url: http://{HOST}:{upstream.port}/v1\n"
        "models:\n"
        f"  - name: {MODEL}\n"
        f"    targets: [{{provider: standin, model: {MODEL}}}]\n"
        "auth: none\n"
    )
    port = free_port()
    command = [*base, "start", "--config", str(config), "--host", HOST, "--port", str(port)]
    env = clean_env(KEEL_HOME=str(tmp / "keel-home"))
    server = Server("keel", command, env, tmp, port, "/health")
    problem = server.wait_ready(READY_TIMEOUT["keel"])
    if problem:
        server.stop()
        return None, problem
    how = (
        "keel gateway start"
        if base[-1] == "gateway"
        else "keel.cli.gateway's app (not yet in `keel`)"
    )
    return server, how


LITELLM_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {"uvicorn.access": {"level": "WARNING"}},
}


def start_litellm(tmp: Path, python: Path, upstream: Server) -> tuple[Server | None, str]:
    """LiteLLM's proxy and its version; ``(None, why)`` when it does not come up."""
    progress("litellm: litellm --config litellm.yaml --num_workers 1 (no database)")
    version = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    ).stdout.strip()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://{HOST}:{upstream.port}/v1\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
        # Keel's gateway runs with `auth: none`; LiteLLM refuses that unless told.
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )
    logging_config = tmp / "litellm-logging.json"
    logging_config.write_text(json.dumps(LITELLM_LOGGING))
    cli = python.parent / "litellm"
    base = [str(cli)] if cli.exists() else [str(python), "-m", "litellm.proxy.proxy_cli"]
    port = free_port()
    command = [
        *base,
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(logging_config),
    ]
    env = clean_env(
        # The cost map ships in the package; without this LiteLLM fetches it at start.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        PATH=os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]),
    )
    server = Server("litellm", command, env, tmp, port, "/health/liveliness")
    problem = server.wait_ready(READY_TIMEOUT["litellm"])
    if problem:
        server.stop()
        return None, problem
    return server, version or "?"


def trace_rows(home: Path) -> int:
    """Rows in the gateway's trace files under ``home`` (its artifact root)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in home.rglob("traces/**/*.parquet"))


def check_answer(name: str, port: int) -> None:
    """The path must answer the timed request with the stand-in's reply, or nothing is timed."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{CHAT_PATH}",
        data=chat_body(False),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, doc = response.status, json.loads(response.read())
        reply = doc["choices"][0]["message"]["content"]
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise SystemExit(f"{name}: the check request failed ({exc}). Nothing was timed.") from exc
    if status != 200 or reply != EXPECTED_REPLY:
        raise SystemExit(
            f"{name}: answered {status} {reply!r}, expected {EXPECTED_REPLY!r}. Nothing was timed."
        )


# -- the driver: measuring -------------------------------------------------------------------------


def parse_result(stdout: str, what: str) -> Result:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise SystemExit(f"{what} printed no result; its output is above")
    result: Result = json.loads(lines[-1][len(RESULT_MARKER) :])
    return result


def run_load(port: int, mode: str, rate: float, args: argparse.Namespace) -> Result:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "load",
        "--port",
        str(port),
        "--mode",
        mode,
        "--rate",
        str(rate),
        "--duration",
        str(args.duration),
        "--connections",
        str(args.connections),
        "--throughput-duration",
        str(args.throughput_duration),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=clean_env(), check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"the load generator failed (exit code {done.returncode}); see above")
    return parse_result(done.stdout, "the load generator")


def measure(
    servers: dict[str, Server], mode: str, args: argparse.Namespace, rate: float = 0.0
) -> dict[str, Result]:
    """Every path ``args.rounds`` times, alternating; the best of each path's rounds."""
    rounds: dict[str, list[Result]] = {name: [] for name in servers}
    for n in range(args.rounds):
        for name, server in servers.items():
            if mode == "closed":
                what = f"{args.connections} clients, {args.throughput_duration:g} s"
            else:
                what = f"{rate:g} req/s, {args.duration:g} s"
            progress(f"  {mode} round {n + 1}/{args.rounds}: {name} ({what})")
            cpu_before = server.cpu_seconds()
            result = run_load(server.port, mode, rate, args)
            server.settle()  # the work it is still doing for these requests counts too
            cpu_after = server.cpu_seconds()
            result["cpu_ms_per_request"] = (
                1000 * (cpu_after - cpu_before) / result["sent"]
                if cpu_before is not None and cpu_after is not None and result["sent"]
                else None
            )
            rounds[name].append(result)
            figures = f"{result['rps']:,.0f} req/s, " if "rps" in result else ""
            progress(
                f"    {figures}p50 {result['latency_ms']['p50']:,.2f} ms, "
                f"p99 {result['latency_ms']['p99']:,.2f} ms, {result['errors']} errors, "
                f"{result['timeouts']} timeouts"
            )
    return {name: best_of(results) for name, results in rounds.items()}


def best_of(rounds: list[Result]) -> Result:
    """Each figure's best over the rounds: lowest latency and CPU, highest throughput."""
    best: Result = {
        "rounds": rounds,
        "errors": sum(r["errors"] for r in rounds),
        "timeouts": sum(r["timeouts"] for r in rounds),
    }
    for key in ("latency_ms", "first_token_ms"):
        if key in rounds[0]:
            best[key] = {p: min(r[key][p] for r in rounds) for p in rounds[0][key]}
    if "rps" in rounds[0]:
        best["rps"] = max(r["rps"] for r in rounds)
    cpu = [r["cpu_ms_per_request"] for r in rounds if r.get("cpu_ms_per_request") is not None]
    best["cpu_ms_per_request"] = min(cpu) if cpu else None
    if "send_lag_p99_ms" in rounds[0]:
        best["send_lag_p99_ms"] = max(r["send_lag_p99_ms"] for r in rounds)
    return best


def added(results: dict[str, Result], key: str) -> dict[str, Result]:
    """Each proxy's figure minus the direct one, at each percentile."""
    direct = results.get("direct")
    out: dict[str, Result] = {}
    for name, result in results.items():
        if name == "direct" or direct is None or key not in result:
            continue
        out[name] = {p: result[key][p] - direct[key][p] for p in result[key]}
    return out


def lead(keel: float | None, litellm: float | None) -> float | None:
    """LiteLLM's added latency over Keel's; None where either is missing or not above zero."""
    if keel is None or litellm is None or keel <= 0 or litellm <= 0:
        return None
    return litellm / keel


def verdicts(results: Result) -> Result:
    keel_added = results["latency"]["added"].get("keel")
    litellm_added = results["latency"]["added"].get("litellm")
    light = (results.get("light") or {}).get("added") or {}
    keel_light, litellm_light = light.get("keel"), light.get("litellm")
    keel_rps = (results["throughput"]["paths"].get("keel") or {}).get("rps")
    litellm_rps = (results["throughput"]["paths"].get("litellm") or {}).get("rps")
    return {
        "ratios": {
            "litellm_added_over_keel_added_p50": lead(
                keel_added and keel_added["p50"], litellm_added and litellm_added["p50"]
            ),
            "litellm_added_over_keel_added_p99": lead(
                keel_added and keel_added["p99"], litellm_added and litellm_added["p99"]
            ),
            "keel_over_litellm_rps": keel_rps / litellm_rps if keel_rps and litellm_rps else None,
            "light_litellm_added_over_keel_added_p50": lead(
                keel_light and keel_light["p50"], litellm_light and litellm_light["p50"]
            ),
            "light_litellm_added_over_keel_added_p99": lead(
                keel_light and keel_light["p99"], litellm_light and litellm_light["p99"]
            ),
        },
        "targets": {
            f"keel adds <= {ADDED_P50_TARGET_MS:g} ms at p50": None
            if keel_added is None
            else keel_added["p50"] <= ADDED_P50_TARGET_MS,
            f"keel adds <= {ADDED_P99_TARGET_MS:g} ms at p99": None
            if keel_added is None
            else keel_added["p99"] <= ADDED_P99_TARGET_MS,
            "keel adds less than litellm at p50 and p99": None
            if keel_added is None or litellm_added is None
            else keel_added["p50"] < litellm_added["p50"]
            and keel_added["p99"] < litellm_added["p99"],
            "keel's max throughput above litellm's": None
            if keel_rps is None or litellm_rps is None
            else keel_rps > litellm_rps,
        },
    }


# -- the driver: the report ------------------------------------------------------------------------


def print_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for n, row in enumerate([header, *rows]):
        print(
            f"{row[0]:<{widths[0]}}  "
            + "  ".join(f"{row[i]:>{widths[i]}}" for i in range(1, len(row))).rstrip()
        )
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def failures(result: Result) -> str:
    return f"{result['errors']:,}/{result['timeouts']:,}"


def print_latency(scenario: Result, labels: dict[str, str]) -> None:
    rows = []
    for name in PATHS:
        r = scenario["paths"].get(name)
        add = scenario["added"].get(name)
        if r is None:
            rows.append([labels[name], *(["-"] * 9)])
            continue
        rows.append(
            [
                labels[name],
                *(fmt(r["latency_ms"][f"p{q}"], 2) for q in PERCENTILES),
                *(("-", "-", "-") if add is None else (fmt(add[f"p{q}"], 2) for q in PERCENTILES)),
                fmt(r["cpu_ms_per_request"], 2),
                fmt(r["send_lag_p99_ms"], 1),
                failures(r),
            ]
        )
    print_rows(
        (
            "path",
            "p50",
            "p95",
            "p99",
            "added p50",
            "added p95",
            "added p99",
            "server CPU ms/req",
            "send lag p99",
            "errors/timeouts",
        ),
        rows,
    )


def print_report(results: Result, config: Result, skipped: dict[str, str]) -> None:
    labels = {
        "direct": "direct to the stand-in",
        "keel": f"keel {config['keel_version']} gateway",
        "litellm": f"litellm {config.get('litellm_version') or ''} proxy".replace("  ", " "),
    }
    print(
        f"LLM gateway overhead over a stand-in upstream answering in {UPSTREAM_LATENCY_MS:g} ms "
        "(non-streaming chat completions, one worker per server)"
    )
    print(
        f"{config['cpus']} CPUs shared by the load generator, the stand-in and the proxy "
        f"(nothing pinned); Python {config['python']}, generator on {config['event_loop']} + "
        f"aiohttp; best of {config['rounds']} alternating rounds per figure; load average "
        f"{config['loadavg_before']:.2f} before, {config['loadavg_after']:.2f} after"
    )

    print()
    print(
        f"1. Latency at {config['rate']:g} req/s (open loop, {config['duration']:g} s after "
        f"{LATENCY_WARMUP:g} s warm-up), ms"
    )
    print_latency(results["latency"], labels)
    light = results.get("light")
    if light:
        print()
        print(
            f"1b. The same at a light {config['light_rate']:g} req/s, where no path is near its "
            "limit: the per-request cost alone, ms"
        )
        print_latency(light, labels)

    throughput = results["throughput"]["paths"]
    print()
    print(
        f"2. Max throughput ({config['connections']} closed-loop clients, "
        f"{config['throughput_duration']:g} s after {THROUGHPUT_WARMUP:g} s warm-up)"
    )
    rows = []
    for name in PATHS:
        r = throughput.get(name)
        rows.append(
            [labels[name], "-", "-", "-", "-", "-"]
            if r is None
            else [
                labels[name],
                fmt(r["rps"]),
                fmt(r["latency_ms"]["p50"], 1),
                fmt(r["latency_ms"]["p99"], 1),
                fmt(r["cpu_ms_per_request"], 2),
                failures(r),
            ]
        )
    print_rows(("path", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "errors/timeouts"), rows)
    print(
        "(direct is the ceiling of this load generator and stand-in here, not a target; "
        "server CPU is the stand-in's on the direct line, the proxy's alone on the others, "
        "warm-ups included)"
    )

    streaming = results.get("streaming")
    if streaming:
        print()
        print(f"3. Streaming at {config['rate']:g} req/s: time to first token and to the end, ms")
        rows = []
        for name in PATHS:
            r = streaming["paths"].get(name)
            add = streaming["added"].get(name)
            if r is None:
                rows.append([labels[name], *(["-"] * 6)])
                continue
            rows.append(
                [
                    labels[name],
                    fmt(r["first_token_ms"]["p50"], 2),
                    fmt(r["first_token_ms"]["p99"], 2),
                    "-" if add is None else fmt(add["p50"], 2),
                    "-" if add is None else fmt(add["p99"], 2),
                    fmt(r["latency_ms"]["p50"], 2),
                    failures(r),
                ]
            )
        print_rows(
            (
                "path",
                "TTFT p50",
                "TTFT p99",
                "added p50",
                "added p99",
                "total p50",
                "errors/timeouts",
            ),
            rows,
        )
        print("(added = path - direct, time to first token)")

    print()
    ratios = results["verdict"]["ratios"]
    light_ratios = ""
    if results.get("light"):
        light_ratios = (
            f" (at {config['light_rate']:g} req/s: "
            f"p50 {fmt(ratios['light_litellm_added_over_keel_added_p50'], 1)}x, "
            f"p99 {fmt(ratios['light_litellm_added_over_keel_added_p99'], 1)}x)"
        )
    print(
        f"LiteLLM's added latency / Keel's at {config['rate']:g} req/s: "
        f"p50 {fmt(ratios['litellm_added_over_keel_added_p50'], 1)}x, "
        f"p99 {fmt(ratios['litellm_added_over_keel_added_p99'], 1)}x{light_ratios}; "
        f"Keel's max throughput / LiteLLM's: {fmt(ratios['keel_over_litellm_rps'], 2)}x "
        "(above 1 means Keel is ahead; '-' where a figure is missing or an added latency "
        "is not above zero)."
    )
    traces = results.get("keel_traces")
    if traces:
        print(
            f"Keel's gateway wrote {traces['rows']:,} trace rows for the "
            f"{traces['requests_sent']:,} requests it was sent (warm-ups and the check included)."
        )
    for name, why in skipped.items():
        print(f"{name} was skipped: {why}.")
    status = {True: "met", False: "MISSED", None: "not measured"}
    print(
        "Targets: "
        + "; ".join(f"{goal}: {status[met]}" for goal, met in results["verdict"]["targets"].items())
        + "."
    )
    paths = results["latency"]["paths"]
    direct = paths.get("direct")
    for name in ("keel", "litellm"):
        path = paths.get(name)
        if direct and path and path["latency_ms"]["p50"] > 5 * direct["latency_ms"]["p50"]:
            print(
                f"{labels[name]} could not keep up with {config['rate']:g} req/s on this "
                f"machine ({fmt(path['cpu_ms_per_request'], 1)} ms of CPU per request): its "
                "added latency there is mostly queueing; the light-rate table shows its "
                "per-request cost."
            )
    if direct and direct["latency_ms"]["p50"] > 1.5 * UPSTREAM_LATENCY_MS:
        print(
            f"WARNING: the direct line's p50 was {direct['latency_ms']['p50']:,.1f} ms for a "
            f"{UPSTREAM_LATENCY_MS:g} ms upstream: the machine could not keep up with "
            f"{config['rate']:g} req/s even without a proxy, so the figures say little."
        )
    late = {name: p["send_lag_p99_ms"] for name, p in paths.items() if p["send_lag_p99_ms"] > 5}
    if late:
        runs = ", ".join(f"{name} {lag:,.0f} ms" for name, lag in late.items())
        print(
            f"Note: the generator sent 1% of its requests late by this much or more at "
            f"{config['rate']:g} req/s ({runs}): something else had the CPU (the proxy under "
            "test, or other work), which widens that path's p99."
        )
    if config["loadavg_before"] > 0.5 * (config["cpus"] or 1):
        print(
            f"WARNING: the 1-minute load average was {config['loadavg_before']:.2f} on "
            f"{config['cpus']} CPUs before the run: other work competed with the servers."
        )


# -- main ------------------------------------------------------------------------------------------


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rate", type=float, default=200.0, help="requests per second (default 200)"
    )
    parser.add_argument(
        "--light-rate",
        type=float,
        default=25.0,
        help="the latency run again at this light rate (default 25 req/s; 0 skips it)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=15.0,
        help="seconds measured at the fixed rate (default 15)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="closed-loop clients for max throughput (default 64)",
    )
    parser.add_argument(
        "--throughput-duration",
        type=float,
        default=10.0,
        help="seconds measured for max throughput (default 10)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="runs per path and scenario, alternating; the best is reported (default 2)",
    )
    parser.add_argument("--skip-streaming", action="store_true", help="no streaming scenario")
    parser.add_argument("--skip-litellm", action="store_true", help="do not run LiteLLM's proxy")
    parser.add_argument("--skip-keel", action="store_true", help="do not run Keel's gateway")
    parser.add_argument(
        "--litellm-python",
        type=Path,
        default=None,
        help="interpreter with litellm[proxy] installed (default .venv-litellm/bin/python)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", choices=("load",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--mode", choices=("open", "closed", "stream"), default="open", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_MARKER + json.dumps(load_worker(args)), flush=True)
        return 0
    if min(args.rate, args.duration, args.throughput_duration) <= 0 or args.light_rate < 0:
        parser.error("--rate, --duration and --throughput-duration must be positive")
    if args.connections < 1 or args.rounds < 1:
        parser.error("--connections and --rounds must be at least 1")

    import keel

    config: Result = {
        "rate": args.rate,
        "light_rate": args.light_rate,
        "duration": args.duration,
        "connections": args.connections,
        "throughput_duration": args.throughput_duration,
        "rounds": args.rounds,
        "upstream_latency_ms": UPSTREAM_LATENCY_MS,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keel_version": keel.__version__,
        "loadavg_before": os.getloadavg()[0],
    }
    skipped: dict[str, str] = {}
    # A SIGTERM (a `timeout`, a CI stop) unwinds like Ctrl-C, so the servers are stopped.
    signal.signal(signal.SIGTERM, _interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    servers: dict[str, Server] = {}
    results: Result = {}
    try:
        servers["direct"] = start_upstream(tmp)
        if args.skip_keel:
            skipped["keel"] = "--skip-keel"
        else:
            keel_server, how = start_keel(tmp, servers["direct"])
            if keel_server is None:
                skipped["keel"] = how
                progress(f"keel skipped: {how}")
            else:
                servers["keel"] = keel_server
                config["keel_started_with"] = how
        if args.skip_litellm:
            skipped["litellm"] = "--skip-litellm"
        else:
            python = peer_python(".venv-litellm", args.litellm_python)
            why = peer_unavailable(python, ".venv-litellm", "litellm.proxy.proxy_server")
            if why is None:
                assert python is not None
                litellm_server, started = start_litellm(tmp, python, servers["direct"])
                if litellm_server is None:
                    why = started
                else:
                    servers["litellm"] = litellm_server
                    config["litellm_version"] = started
            if why:
                skipped["litellm"] = why
                progress(f"litellm skipped: {why}")
        for name, server in servers.items():
            check_answer(name, server.port)

        progress("1. latency at a fixed rate")
        paths = measure(servers, "open", args, args.rate)
        results["latency"] = {"paths": paths, "added": added(paths, "latency_ms")}
        if args.light_rate:
            progress(f"1b. latency at a light {args.light_rate:g} req/s")
            paths = measure(servers, "open", args, args.light_rate)
            results["light"] = {"paths": paths, "added": added(paths, "latency_ms")}
        progress("2. max throughput")
        results["throughput"] = {"paths": measure(servers, "closed", args)}
        if not args.skip_streaming:
            progress("3. streaming at a fixed rate")
            paths = measure(servers, "stream", args, args.rate)
            results["streaming"] = {"paths": paths, "added": added(paths, "first_token_ms")}
    finally:
        for server in servers.values():
            server.stop()  # SIGTERM: the gateway flushes its traces on the way out
        if "keel" in servers and results:
            results["keel_traces"] = {
                "rows": trace_rows(tmp / "keel-home"),
                "requests_sent": 1
                + sum(
                    r["sent"]
                    for scenario in results.values()
                    for r in scenario["paths"].get("keel", {}).get("rounds", [])
                ),
            }
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    config["loadavg_after"] = os.getloadavg()[0]
    config["event_loop"] = results["latency"]["paths"]["direct"]["rounds"][0]["event_loop"]
    results["verdict"] = verdicts(results)
    if args.json:
        print(json.dumps({"config": config, **results, "skipped": skipped}, indent=2))
    else:
        print_report(results, config, skipped)
    failed = sum(
        path["errors"]
        for scenario in ("latency", "light", "throughput", "streaming")
        for path in (results.get(scenario) or {}).get("paths", {}).values()
    )
    if failed:
        print(
            f"{failed} requests failed during timing (an error status or a socket error; "
            "timeouts are counted as latency): the figures are not comparable.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
