"""One-row inference over v2 gRPC against v2 HTTP, on the same ``keel serve`` process.

What is measured
----------------
The model and home of ``bench/serving.py`` (its ``--worker prepare``: a
scikit-learn ``HistGradientBoostingClassifier(random_state=0)`` on breast_cancer,
registered as ``bench@champion`` in a fresh ``KEEL_HOME``), served by one
``keel serve models:/bench@champion --port P --grpc-port G`` with its defaults
(one worker, signature validation and prediction logging on). Each line sends the
same known row, ``C`` requests in flight (default 8) for ``D`` seconds (default
10) after a 2-second warm-up: requests per second, p50 and p99 latency.

* **grpc**: ``ModelInfer`` from tritonclient's asyncio gRPC client, one FP64
  tensor of shape [1, 30] in ``raw_input_contents`` (how tritonclient sends it),
  ``C`` calls in flight on its one HTTP/2 channel.
* **http**: ``POST /v2/models/bench/infer`` from an aiohttp session, ``C``
  keep-alive connections, the v2 JSON body of ``bench/serving.py``'s main line
  (one FP64 input of shape [1] per column).

Both load generators are Python asyncio in a process of their own, so neither
protocol is favoured by a faster client; they share the machine's cores with
the server. Lines alternate over ``--rounds`` (default 3); medians are printed.
Each line also reports the server's CPU time per request (user + system of its
processes, warm-up included): on a machine busy with other work, req/s follows
whichever process the scheduler favours, CPU per request much less so.

``--thread-pool`` adds the design that was not kept: the same app, with grpc's
thread-pool server (``C`` threads, each running the app's ``predict_v2`` on an
event loop of its own) instead of grpc's asyncio server on uvicorn's loop. Its
line says what sharing one event loop gains. (With several threads it also runs
one model's ``predict`` concurrently, which HTTP never does, and it would need
micro-batching and features handed back to the app's loop; it did not earn that:
1.11x the requests per second and 0.88x the CPU per request went to the asyncio
server on 2 cores. Only with the machine overloaded by other processes did the
thread pool answer more, by taking a larger share of the contended CPU with
more runnable threads, at no lower cost per request.)

Before timing, each line is asked for two known rows (one of each class) and
must answer exactly ``model.predict`` of them. Nothing here asserts on timing.

This file is not ``bench/grpc.py``: run as a script, its folder comes first on
``sys.path``, and a ``grpc.py`` there would shadow the grpc package.

Usage::

    .venv/bin/python bench/serving_grpc.py
    .venv/bin/python bench/serving_grpc.py --duration 5 --rounds 1 --thread-pool --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from _common import REPO, Server, clean_env

Result = dict[str, Any]

RESULT_MARKER = "KEEL_BENCH_RESULT "
MODEL_NAME = "bench"
HOST = "127.0.0.1"
WARMUP_SECONDS = 2.0
READY_SECONDS = 60.0
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
SERVING_BENCH = Path(__file__).resolve().with_name("serving.py")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(result: Result) -> None:
    print(RESULT_MARKER + json.dumps(result), flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def run_child(command: list[str], what: str, env: dict[str, str] | None = None) -> Result:
    """Run a worker process to its end; its result line, parsed."""
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env or clean_env())
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"{what} failed (exit code {done.returncode}); see above")
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return dict(json.loads(line[len(RESULT_MARKER) :]))
    raise SystemExit(f"{what} printed no result:\n{done.stdout}")


# -- workers: load --------------------------------------------------------------------------


def known_rows(tmp: Path) -> tuple[list[list[float]], list[Any]]:
    """The rows ``bench/serving.py`` checks (one of each class) and their expected answers."""
    checks = json.loads((tmp / "checks.json").read_text())
    rows = [[d["data"][0] for d in json.loads(c["v2"])["inputs"]] for c in checks]
    return rows, [c["expected"] for c in checks]


async def drive(call: Callable[[], Awaitable[bool]], in_flight: int, duration: float) -> Result:
    """``in_flight`` loops of ``call`` for a warm-up and then ``duration`` seconds."""
    start = time.perf_counter()
    measure_from, stop_at = start + WARMUP_SECONDS, start + WARMUP_SECONDS + duration
    latencies: list[float] = []
    errors = calls = 0

    async def loop() -> None:
        nonlocal errors, calls
        while (began := time.perf_counter()) < stop_at:
            ok = await call()
            ended = time.perf_counter()
            calls += 1
            if began >= measure_from and ended <= stop_at:
                latencies.append(ended - began)
                errors += not ok

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[max(0, int(q / 100 * len(ordered) + 0.999999) - 1)] * 1000

    return {
        "requests": len(ordered),
        "rps": len(ordered) / duration,
        "p50_ms": pct(50) if ordered else None,
        "p99_ms": pct(99) if ordered else None,
        "errors": errors,
        "calls": calls,  # warm-up included: what the server's CPU time is divided by
    }


async def grpc_load(tmp: Path, port: int, in_flight: int, duration: float) -> Result:
    import numpy as np
    import tritonclient.grpc as triton
    import tritonclient.grpc.aio as triton_aio

    rows, expected = known_rows(tmp)
    client = triton_aio.InferenceServerClient(f"{HOST}:{port}")

    def tensor(row: list[float]) -> Any:
        t = triton.InferInput("x", [1, len(row)], "FP64")
        t.set_data_from_numpy(np.asarray([row], dtype=np.float64))
        return t

    for row, want in zip(rows, expected, strict=True):
        got = (await client.infer(MODEL_NAME, [tensor(row)])).as_numpy("predict")[0].item()
        if got != want:
            raise SystemExit(f"grpc answered {got!r} where model.predict gives {want!r}")
    timed = [tensor(rows[0])]

    async def call() -> bool:
        try:
            await client.infer(MODEL_NAME, timed)
            return True
        except Exception:
            return False

    try:
        return await drive(call, in_flight, duration)
    finally:
        await client.close()


async def http_load(tmp: Path, port: int, in_flight: int, duration: float) -> Result:
    import aiohttp

    checks = json.loads((tmp / "checks.json").read_text())
    body = (tmp / "v2.json").read_bytes()
    url = f"http://{HOST}:{port}{V2_PATH}"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as http:
        for check in checks:
            async with http.post(url, data=check["v2"].encode(), headers=headers) as answer:
                got = (await answer.json())["outputs"][0]["data"][0]
            if got != check["expected"]:
                raise SystemExit(f"http answered {got!r} where model.predict gives {check!r}")

        async def call() -> bool:
            try:
                async with http.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status == 200
            except aiohttp.ClientError:
                return False

        return await drive(call, in_flight, duration)


# -- worker: the design not kept (grpc's thread-pool server) ------------------------------------


def thread_pool_server(port: int, grpc_port: int, threads: int) -> int:
    """``keel serve``'s app on uvicorn, with v2 ModelInfer on grpc's thread-pool server.

    Each pool thread runs the app's ``predict_v2`` on an event loop of its own: the
    same work as the shipped asyncio server, handed to threads instead.
    """
    import threading
    from concurrent import futures

    import grpc
    import uvicorn

    from keel.config import get_settings
    from keel.predictions import PredictionLogger
    from keel.serving.app import ServingApp
    from keel.serving.grpc import grpc_predict_v2_pb2 as pb
    from keel.serving.grpc.tensors import fill_response, v2_request
    from keel.serving.server import runtime_for_target

    settings = get_settings()
    runtime = runtime_for_target(f"models:/{MODEL_NAME}@champion")
    logger = PredictionLogger(settings.artifacts_url)
    serving = ServingApp(runtime, logger, own_process=True)
    app = serving.build()
    runtime.table  # noqa: B018 - load before serving
    local = threading.local()

    def infer(request: Any, context: Any) -> Any:
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        started = time.perf_counter()
        parsed = v2_request(request, serving.max_elements)
        handle, output, _ = loop.run_until_complete(
            serving.predict_v2(runtime.table, None, parsed, os.urandom(8).hex(), "grpc", started)
        )
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(handle.version)
        )
        fill_response(response, output)
        return response

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), handlers=[handler])
    server.add_insecure_port(f"{HOST}:{grpc_port}")
    server.start()
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
    server.stop(5)
    return 0


# -- the driver -------------------------------------------------------------------------------


def keel_serve(port: int, grpc_port: int) -> list[str]:
    return [
        str(Path(sys.executable).with_name("keel")),
        "serve",
        f"models:/{MODEL_NAME}@champion",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
    ]


def measure(tmp: Path, kind: str, port: int, server: Server, args: argparse.Namespace) -> Result:
    progress(f"  {kind} on port {port}: {WARMUP_SECONDS:g} s warm-up, {args.duration:g} s measured")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"load-{kind}",
        "--dir",
        str(tmp),
        "--port",
        str(port),
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
    ]
    before = server.cpu_seconds()
    result = run_child(command, f"the {kind} load generator")
    after = server.cpu_seconds()
    if before is not None and after is not None and result["calls"]:
        result["server_cpu_ms"] = (after - before) * 1000 / result["calls"]
    return result


def median(results: list[Result]) -> Result:
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms")
    out: Result = {
        k: statistics.median(v) if (v := [r[k] for r in results if r.get(k) is not None]) else None
        for k in keys
    }
    out["errors"] = sum(r["errors"] for r in results)
    out["requests"] = sum(r["requests"] for r in results)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per line (10)")
    parser.add_argument("--connections", type=int, default=8, help="requests in flight (8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, medians (3)")
    parser.add_argument(
        "--thread-pool",
        action="store_true",
        help="also measure grpc's thread-pool server (the design not kept)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--worker",
        choices=("load-grpc", "load-http", "thread-pool-server"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "load-grpc":
        load = grpc_load(Path(args.dir), args.port, args.connections, args.duration)
        emit(asyncio.run(load))
        return 0
    if args.worker == "load-http":
        emit(asyncio.run(http_load(Path(args.dir), args.port, args.connections, args.duration)))
        return 0
    if args.worker == "thread-pool-server":
        return thread_pool_server(args.port, args.grpc_port, args.connections)
    if args.duration <= 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration must be positive, --connections and --rounds at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    servers: list[Server] = []
    try:
        progress("preparing: bench/serving.py's model, logged and registered in a fresh home")
        run_child(
            [sys.executable, str(SERVING_BENCH), "--worker", "prepare", "--dir", str(tmp)],
            "prepare",
        )
        env = clean_env(KEEL_HOME=str(tmp / "keel-home"), OMP_NUM_THREADS="1")
        lines: dict[str, tuple[str, int, Server]] = {}
        port, grpc_port = free_port(), free_port()
        progress("keel serve --grpc-port (validation and prediction logging on)")
        keel = Server("keel", keel_serve(port, grpc_port), env, tmp, port)
        servers.append(keel)
        lines["http"] = ("http", port, keel)
        lines["grpc"] = ("grpc", grpc_port, keel)
        if args.thread_pool:
            port2, grpc_port2 = free_port(), free_port()
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                "thread-pool-server",
                "--dir",
                str(tmp),
                "--port",
                str(port2),
                "--grpc-port",
                str(grpc_port2),
                "--connections",
                str(args.connections),
            ]
            progress("the app with grpc's thread-pool server")
            pool = Server("thread-pool", command, env, tmp, port2)
            servers.append(pool)
            lines["grpc_thread_pool"] = ("grpc", grpc_port2, pool)
        for server in servers:
            problem = server.wait_ready(READY_SECONDS)
            if problem:
                raise SystemExit(problem)
        rounds: dict[str, list[Result]] = {name: [] for name in lines}
        for n in range(args.rounds):
            progress(f"round {n + 1} of {args.rounds}")
            for name, (kind, line_port, server) in lines.items():
                for each in servers:
                    each.settle()
                rounds[name].append(measure(tmp, kind, line_port, server, args))
        results = {name: median(r) for name, r in rounds.items()}
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ratios = {"grpc_over_http_rps": results["grpc"]["rps"] / results["http"]["rps"]}
    if "grpc_thread_pool" in results:
        ratios["asyncio_over_thread_pool_rps"] = (
            results["grpc"]["rps"] / results["grpc_thread_pool"]["rps"]
        )
        cpu = (results["grpc"]["server_cpu_ms"], results["grpc_thread_pool"]["server_cpu_ms"])
        if None not in cpu:
            # CPU per request: less at the mercy of other work on the machine than req/s
            ratios["thread_pool_over_asyncio_cpu_per_request"] = cpu[1] / cpu[0]
    config = {
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "repo": str(REPO.name),
    }
    if args.json:
        print(json.dumps({"config": config, "results": results, "ratios": ratios}, indent=2))
    else:
        header = f"{'line':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}"
        print(f"{header} {'errors':>7}")
        for name, r in results.items():
            cpu_text = "-" if r["server_cpu_ms"] is None else f"{r['server_cpu_ms']:.2f}"
            print(
                f"{name:<20} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{cpu_text:>18} {r['errors']:>7}"
            )
        print()
        for name, value in ratios.items():
            print(f"{name}: {value:.2f}x")
        print(
            f"({args.connections} in flight, {args.duration:g} s x {args.rounds} rounds, "
            f"medians; {config['cpus']} CPUs, load average {config['loadavg_1m']:.2f})"
        )
    errors = sum(r["errors"] for r in results.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
