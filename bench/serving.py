"""Serving one-row requests: Keel (native, ONNX, gRPC) vs a Starlette floor vs MLflow.

What is measured
----------------
One model, one worker process per server, one-row requests from ``C``
concurrent keep-alive connections (default 8) for ``D`` seconds (default 10)
after a 2-second warm-up: requests per second, and the median (p50) and p99
latency seen by the load generator; and, from the server's side, its CPU
time per request ("CPU ms/req": the CPU time of all the server's processes
and threads from the start of the warm-up until it is idle again, divided by
the requests it answered), which other work on the machine disturbs far less
than requests per second. The model is a scikit-learn
``HistGradientBoostingClassifier(random_state=0)`` fitted on the
breast_cancer data (569 rows, 30 float features); every request carries the
same known row, and every answer must be a 2xx (non-2xx answers, gRPC errors
and socket errors are counted and printed, and make the run exit 1).

Preparing: the model is logged with ``keel.log_model(model, "model",
input_example=X.head())`` in a fresh ``KEEL_HOME`` in a temporary folder,
registered as ``bench`` and aliased ``champion``; then ``keel models compile
bench <version> --to onnx --data rows.parquet`` converts it (skl2onnx) and
checks parity on the input example and on the 569 rows of the data set. If
the compilation fails or does not pass parity, the benchmark stops with the
reason and nothing is timed; the parity figures are printed with the results.

The servers, all started before timing and measured in alternating rounds:

* **keel native**: ``keel serve models:/bench@champion --runtime native --port
  P`` with its other defaults (one worker, signature validation and
  prediction logging ON): the package as logged, scikit-learn's ``predict``.
  Measured twice on the same server: ``POST /v2/models/bench/infer`` with an
  Open Inference Protocol v2 JSON body (one input per column, FP64, shape
  [1]): its main line; and ``POST /invocations`` with ``dataframe_split``, for
  reference.
* **keel onnx**: ``keel serve models:/bench@champion --runtime onnx --port P
  --grpc-port G`` on the same home: the compiled form, run by onnxruntime,
  with the same validation and logging. The same two HTTP lines as native,
  same bodies, plus the gRPC comparison below. Both Keel servers must say in
  ``GET /v2/models/bench`` that they serve the runtime asked for, else the
  benchmark stops. After both stop, the rows they wrote to the prediction log
  are counted.
* **floor**: what a careful engineer writes by hand for this one model: a bare
  Starlette app on uvicorn with the same settings ``keel serve`` uses (one
  worker, ``log_level="warning"``, no access log, uvicorn's default loop and
  HTTP parser, which are uvloop and httptools where installed, as here). It
  gets the same v2 request bytes as Keel's main lines, parses them with
  ``orjson`` (a fast JSON parser, and the one Keel itself uses, so the
  comparison is of everything else), builds a one-row float64 array from the
  inputs' data and answers ``{"predictions": [...]}`` from scikit-learn's
  ``model.predict``. No validation, no logging, no metrics. The model object
  is Keel's own, pickled into the temporary folder for the floor process.
* **mlflow**: ``mlflow models serve -m runs:/<run>/model --env-manager local
  --workers 1`` from the MLflow virtualenv (``.venv-mlflow``, because its pins
  clash with Keel's), the same pickled model logged with
  ``mlflow.sklearn.log_model`` into a temporary SQLite tracking store, sent
  ``POST /invocations`` with the same ``dataframe_split`` body as Keel's
  reference lines. It runs as MLflow ships it (uvicorn with its access log; no
  uvloop or httptools unless that virtualenv has them). Skipped, saying why,
  when the interpreter is missing, cannot ``import mlflow``, or the server is
  not up within 120 s; ``--skip-mlflow`` skips it on purpose.

gRPC against HTTP, on the keel onnx server: two more lines, both from a
Python asyncio load generator in a process of its own with ``C`` calls in
flight, so neither protocol gets a faster client than the other, and both
sending the row as one FP64 tensor of shape [1, 30] named ``x``:

* **grpc**: ``ModelInfer`` from tritonclient's asyncio gRPC client
  (``tritonclient.grpc.aio``, the load generator of ``bench/serving_grpc.py``),
  the tensor in ``raw_input_contents``, on one HTTP/2 channel;
* **http (asyncio)**: ``POST /v2/models/bench/infer`` from an aiohttp session
  with ``C`` keep-alive connections, the same tensor as v2 JSON.

Their ratio grpc/http is the protocol's difference. The HTTP lines of the
table above come from another generator (wrk), so compare the gRPC line with
the asyncio HTTP line, not with them. ``--skip-grpc`` leaves both out; they
are skipped, saying why, when grpcio, tritonclient or aiohttp is missing.

Every server runs with ``OMP_NUM_THREADS=1`` (``--omp-threads``; 0 leaves the
library default). scikit-learn walks a HistGradientBoosting model's trees
with OpenMP; for one row the threads gain nothing and spin against each other
and against the load generator: on a 2-core machine with other work on it, a
one-row ``predict`` took 0.9 ms with one thread and 6 ms with two (idle, the
servers lost about 10% of their throughput with the default). The same
setting goes to every server, so it favours none. (onnxruntime keeps a thread
pool of its own, which that variable does not reach; Keel's ONNX flavor sets
it not to spin.)

Before timing, each server/endpoint is asked once for two known rows (one of
each class) and must answer exactly ``model.predict`` of them; otherwise the
benchmark stops.

Ratios printed, with the targets we hold Keel to (informational: nothing
here asserts on timing): keel onnx/floor req/s >= 1.5 and keel onnx/mlflow
req/s >= 10 (its v2 line, and its /invocations line against MLflow's, the
same request body); keel native/floor req/s >= 0.8, keel native p99 / floor
p99 <= 1.5, keel native/mlflow req/s >= 10; and, without a target, keel
onnx/keel native and grpc/http req/s, and the same comparisons in requests
per server CPU-second.

The load generator
------------------
For the HTTP lines of the main table: ``wrk`` when it is on PATH
(``apt-get install wrk``): one thread, ``C`` connections, a Lua script that
POSTs the body, ``--latency`` for the percentiles; its ``Requests/sec`` and
latency distribution lines are parsed. Without wrk, a Python fallback in its
own process: ``C`` threads, each with one keep-alive ``http.client``
connection, timing every request with ``perf_counter``. The fallback is
itself Python under the GIL and shares the machine's cores with the server,
so it reports lower throughput and higher latencies than wrk would; compare
ratios within one run, not across generators. The table says which
generator made each line. Either way the load generator and the server share
the machine: on 2 cores, one for the server's worker and one for the load.

How it runs
-----------
Each server and each Python load generator run in their own process; this
file re-invokes itself with ``--worker`` to prepare the model, to run the
floor app, to log the model into MLflow (under the MLflow interpreter) and to
generate load; ``keel models compile`` and ``keel serve`` run as commands.
All servers stay up while every line is measured once per round, in the same
order each round (``--rounds``, default 3); each line ends when its server
has finished the work its load left it. Medians of the rounds are printed.
Everything lives in one temporary folder, removed at the end (``--keep``
keeps it and prints where). ``KEEL_*`` and ``MLFLOW_*`` variables are not
passed on. The 1-minute load average is printed with the results: on a busy
machine the figures mean little.

Usage::

    python bench/serving.py                        # from the dev venv: .venv/bin/python bench/serving.py
    python bench/serving.py --duration 5 --connections 4 --skip-mlflow --json

The default run takes about six minutes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import pickle
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from _common import Server, clean_env, dig, peer_python, peer_unavailable

RESULT_MARKER = "KEEL_BENCH_RESULT "
MODEL_NAME = "bench"
HOST = "127.0.0.1"
WARMUP_SECONDS = 2.0
READY_TIMEOUT = {"floor": 60.0, "keel": 60.0, "mlflow": 120.0}
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
INVOCATIONS_PATH = "/invocations"
FLOOR_PATH = "/predict"
#: ratio -> (comparison, bound) we hold Keel to; informational, nothing asserts on timing.
TARGETS: dict[str, tuple[str, float]] = {
    "onnx_over_floor_rps": (">=", 1.5),
    "onnx_over_mlflow_rps": (">=", 10.0),
    "onnx_invocations_over_mlflow_rps": (">=", 10.0),
    "keel_over_floor_rps": (">=", 0.8),
    "keel_over_floor_p99": ("<=", 1.5),
    "keel_over_mlflow_rps": (">=", 10.0),
    "keel_invocations_over_mlflow_rps": (">=", 10.0),
}
RATIO_LINES = (
    ("keel onnx/floor req/s (v2)", "onnx_over_floor_rps"),
    ("keel onnx/mlflow req/s (keel v2)", "onnx_over_mlflow_rps"),
    ("keel onnx/mlflow req/s (both /invocations)", "onnx_invocations_over_mlflow_rps"),
    ("keel onnx p99 / floor p99 (v2)", "onnx_over_floor_p99"),
    ("keel onnx/keel native req/s (v2)", "onnx_over_native_rps"),
    ("keel native/floor req/s (v2)", "keel_over_floor_rps"),
    ("keel native p99 / floor p99 (v2)", "keel_over_floor_p99"),
    ("keel native/mlflow req/s (keel v2)", "keel_over_mlflow_rps"),
    ("keel native/mlflow req/s (both /invocations)", "keel_invocations_over_mlflow_rps"),
    ("keel native /invocations / floor req/s", "keel_invocations_over_floor_rps"),
    ("grpc/http req/s (keel onnx, asyncio load)", "grpc_over_http_rps"),
    ("keel onnx/floor req per server CPU-s (v2)", "onnx_over_floor_cpu"),
    ("keel onnx/mlflow req per server CPU-s (keel v2)", "onnx_over_mlflow_cpu"),
    ("keel native/floor req per server CPU-s (v2)", "keel_over_floor_cpu"),
    ("keel native/mlflow req per server CPU-s (keel v2)", "keel_over_mlflow_cpu"),
    ("grpc/http req per server CPU-s (keel onnx)", "grpc_over_http_cpu"),
)
#: Who generated a line's load, as the table names it.
LOADS = {
    "wrk": "wrk",
    "python": "http.client threads",
    "grpc": "tritonclient grpc.aio",
    "aiohttp": "aiohttp",
}

Result = dict[str, Any]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(result: Result) -> None:
    print(RESULT_MARKER + json.dumps(result), flush=True)


def parse_result(stdout: str, what: str) -> Result:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise SystemExit(f"{what} printed no result; its output is above")
    result: Result = json.loads(lines[-1][len(RESULT_MARKER) :])
    return result


# -- worker: the model and the request bodies ---------------------------------------------


def v2_body(columns: Sequence[str], row: Sequence[float]) -> bytes:
    """Open Inference Protocol v2: one FP64 input of shape [1] per column."""
    inputs = [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [float(v)]}
        for c, v in zip(columns, row, strict=True)
    ]
    return json.dumps({"inputs": inputs}).encode()


def tensor_body(row: Sequence[float]) -> bytes:
    """Open Inference Protocol v2: the row as one FP64 tensor ``x`` of shape [1, k].

    The same tensor tritonclient's gRPC client sends in the gRPC line, as JSON.
    """
    doc = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, len(row)],
                "datatype": "FP64",
                "data": [float(v) for v in row],
            }
        ]
    }
    return json.dumps(doc).encode()


def split_body(columns: Sequence[str], row: Sequence[float]) -> bytes:
    """MLflow scoring: ``dataframe_split`` with one row."""
    doc = {"dataframe_split": {"columns": list(columns), "data": [[float(v) for v in row]]}}
    return json.dumps(doc).encode()


def prepare_worker(tmp: Path) -> Result:
    """Fit the model, pickle it, log/register/alias it in a fresh Keel home, write the bodies."""
    import warnings

    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import keel

    warnings.filterwarnings("ignore")
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    with (tmp / "model.pkl").open("wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    # The rows `keel models compile --data` checks parity on, besides the input example.
    x.to_parquet(tmp / "rows.parquet", index=False)

    keel.init(home=tmp / "keel-home")
    keel.set_experiment("bench-serving")
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head())
    version = keel.register_model(info.uri, MODEL_NAME)
    keel.Client().set_alias(MODEL_NAME, "champion", version)

    predictions = model.predict(x)
    columns = list(x.columns)
    # The timed row, and one row of each class for the correctness check.
    check_rows = sorted({int((predictions == label).argmax()) for label in (0, 1)})
    checks = [
        {
            "row": i,
            "expected": predictions[i].item(),
            "v2": v2_body(columns, x.iloc[i].tolist()).decode(),
            "split": split_body(columns, x.iloc[i].tolist()).decode(),
            "tensor": tensor_body(x.iloc[i].tolist()).decode(),
        }
        for i in check_rows
    ]
    (tmp / "v2.json").write_bytes(v2_body(columns, x.iloc[0].tolist()))
    (tmp / "tensor.json").write_bytes(tensor_body(x.iloc[0].tolist()))
    (tmp / "split.json").write_bytes(split_body(columns, x.iloc[0].tolist()))
    (tmp / "checks.json").write_text(json.dumps(checks))
    return {
        "keel_version": keel.__version__,
        "sklearn_version": sklearn.__version__,
        "n_trees": int(model.n_iter_),
        "n_features": len(columns),
        "registered_version": int(version),
        "python": platform.python_version(),
    }


# -- worker: the floor ----------------------------------------------------------------------


def floor_app(model: Any) -> Any:
    """A bare Starlette app: orjson in, one-row float64 array, model.predict, orjson out."""
    import numpy as np
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def predict(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        row = np.array([[item["data"][0] for item in doc["inputs"]]], dtype=np.float64)
        predictions = model.predict(row)
        return Response(
            orjson.dumps({"predictions": predictions.tolist()}), media_type="application/json"
        )

    async def ping(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[Route(FLOOR_PATH, predict, methods=["POST"]), Route("/ping", ping, methods=["GET"])]
    )


def floor_worker(tmp: Path, port: int) -> int:
    import warnings

    import uvicorn

    # The model was fitted on a DataFrame; predicting on an array warns about the
    # missing feature names on every call. The floor is what someone would ship, so
    # that warning is silenced the way they would silence it.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    with (tmp / "model.pkl").open("rb") as fh:
        model = pickle.load(fh)  # our own model, written by the prepare worker
    uvicorn.run(floor_app(model), host=HOST, port=port, access_log=False, log_level="warning")
    return 0


# -- worker: MLflow logs the same model -------------------------------------------------------


def mlflow_log_worker(tmp: Path) -> Result:
    import mlflow
    import mlflow.sklearn

    with (tmp / "model.pkl").open("rb") as fh:
        model = pickle.load(fh)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = mlflow.create_experiment(
        "bench-serving", artifact_location=(tmp / "mlflow-artifacts").as_uri()
    )
    kwargs: dict[str, Any] = {}
    if "skops_trusted_types" in inspect.signature(mlflow.sklearn.log_model).parameters:
        # MLflow 3.17 saves scikit-learn models with skops, which refuses the trees of a
        # HistGradientBoosting model unless their type is named as trusted: it is our own.
        kwargs["skops_trusted_types"] = [
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
        ]
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.sklearn.log_model(model, name="model", **kwargs)
    return {"run_id": run.info.run_id, "version": mlflow.__version__}


# -- worker: the Python load generator ----------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def load_worker(port: int, path: str, body: bytes, connections: int, duration: float) -> Result:
    """``connections`` threads, each one keep-alive connection, for a warm-up then ``duration``."""
    import http.client

    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    start = time.perf_counter()
    measure_from = start + WARMUP_SECONDS
    stop_at = measure_from + duration
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    calls = [0] * connections

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        mine = latencies[k]
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                break
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
            ended = time.perf_counter()
            calls[k] += 1
            if began >= measure_from and ended <= stop_at:
                mine.append(ended - began)
                if not ok:
                    errors[k] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(x for per in latencies for x in per)
    return {
        "requests": len(ordered),
        "seconds": duration,
        "rps": len(ordered) / duration,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "errors": sum(errors),
        "calls": sum(calls),  # warm-up included: what the server's CPU time is divided by
    }


# -- worker: the asyncio load generators of the gRPC comparison -----------------------------------


def async_load_worker(tmp: Path, kind: str, port: int, in_flight: int, duration: float) -> Result:
    """The gRPC line (``bench/serving_grpc.py``'s tritonclient generator) or its HTTP twin."""
    import asyncio

    from serving_grpc import grpc_load

    if kind == "grpc":
        return asyncio.run(grpc_load(tmp, port, in_flight, duration))
    return asyncio.run(aiohttp_load(tmp, port, in_flight, duration))


async def aiohttp_load(tmp: Path, port: int, in_flight: int, duration: float) -> Result:
    """``POST`` the v2 tensor body from one aiohttp session, ``in_flight`` requests at a time.

    The same driver as the gRPC line (``serving_grpc.drive``): only the protocol differs.
    """
    import aiohttp

    from serving_grpc import drive

    checks = json.loads((tmp / "checks.json").read_text())
    body = (tmp / "tensor.json").read_bytes()
    url = f"http://{HOST}:{port}{V2_PATH}"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:
        for check in checks:
            async with http.post(url, data=check["tensor"].encode(), headers=headers) as answer:
                status, doc = answer.status, await answer.read()
            got = read_v2(json.loads(doc)) if status == 200 else None
            if got != check["expected"]:
                raise SystemExit(
                    f"http (aiohttp): row {check['row']} answered {status} {doc[:300]!r}; "
                    f"model.predict gives {check['expected']!r}. Nothing was timed."
                )

        async def call() -> bool:
            try:
                async with http.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status == 200
            except aiohttp.ClientError:
                return False

        return await drive(call, in_flight, duration)


# -- the driver: starting and stopping servers --------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    return clean_env(**extra)


def server_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    """A server's environment: ``child_env`` plus the same OpenMP thread count for every server."""
    env = child_env(**extra)
    if args.omp_threads:
        env["OMP_NUM_THREADS"] = str(args.omp_threads)
    return env


def run_worker_process(python: str, args: list[str], env: dict[str, str], what: str) -> Result:
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"{what} failed (exit code {done.returncode}); see above")
    return parse_result(done.stdout, what)


def post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def check_answers(
    what: str, port: int, path: str, key: str, checks: list[Result], read: Callable[[Any], Any]
) -> None:
    """The server's answer for each known row must equal model.predict of it."""
    for check in checks:
        status, doc = post(port, path, check[key].encode())
        got = read(doc) if status == 200 else None
        if status != 200 or got != check["expected"]:
            raise SystemExit(
                f"{what}: row {check['row']} answered {status} {doc!r}; "
                f"model.predict gives {check['expected']!r}. Nothing was timed."
            )


def read_v2(doc: Any) -> Any:
    return doc["outputs"][0]["data"][0]


def read_predictions(doc: Any) -> Any:
    return doc["predictions"][0]


# -- the driver: generating load -------------------------------------------------------------


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"cannot read the wrk duration {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str, duration: float) -> Result:
    """Requests/sec, the 50% and 99% lines of --latency, non-2xx and socket errors."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise SystemExit(f"could not read wrk's output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {
        "requests": int(total.group(1)),
        "seconds": duration,
        "rps": float(rps.group(1)),
        "p50_ms": _wrk_ms(p50.group(1)),
        "p99_ms": _wrk_ms(p99.group(1)),
        "errors": errors,
    }


def wrk_script(tmp: Path, name: str, body: bytes) -> Path:
    text = body.decode()
    if "]==]" in text:  # pragma: no cover - our bodies are plain JSON
        raise SystemExit("the request body cannot be embedded in a Lua long string")
    script = tmp / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{text}]==]\n"
    )
    return script


def run_wrk(
    wrk: str, tmp: Path, name: str, port: int, path: str, body: bytes, args: argparse.Namespace
) -> Result:
    script = wrk_script(tmp, name, body)
    url = f"http://{HOST}:{port}{path}"

    def once(seconds: float) -> str:
        done = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{args.connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"wrk failed on {url}: {done.stderr or done.stdout}")
        return done.stdout

    warmup = parse_wrk(once(WARMUP_SECONDS), WARMUP_SECONDS)
    output = once(args.duration)
    (tmp / f"{name}-wrk.txt").write_text(output)  # kept with --keep
    result = parse_wrk(output, args.duration)
    result["calls"] = warmup["requests"] + result["requests"]
    return result


def run_python_load(
    tmp: Path, name: str, port: int, path: str, body: bytes, args: argparse.Namespace
) -> Result:
    body_file = tmp / f"{name}.body"
    body_file.write_bytes(body)
    worker_args = [
        "--worker",
        "load",
        "--dir",
        str(tmp),
        "--port",
        str(port),
        "--path",
        path,
        "--body-file",
        str(body_file),
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
    ]
    return run_worker_process(sys.executable, worker_args, child_env(), "the load generator")


def run_async_load(tmp: Path, kind: str, port: int, args: argparse.Namespace) -> Result:
    worker_args = [
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
    return run_worker_process(
        sys.executable, worker_args, child_env(), f"the {kind} load generator"
    )


def measure(tmp: Path, name: str, line: Line, args: argparse.Namespace) -> Result:
    """One line's figures, from the load generator the line names (``http``: wrk or Python).

    Besides the client's view, the server's CPU time (all its processes) from the
    start of the warm-up until it is idle again, per request answered: what a
    request costs the server, which other work on the machine disturbs far less
    than it disturbs requests per second.
    """
    progress(f"  {name}: {WARMUP_SECONDS:g} s warm-up, {args.duration:g} s measured")
    cpu_before = line.server.cpu_seconds()
    if line.load != "http":
        result = run_async_load(tmp, line.load, line.port, args)
        result["load"] = line.load
    else:
        wrk = None if args.python_load else shutil.which("wrk")
        if wrk:
            result = run_wrk(wrk, tmp, name, line.port, line.path, line.body, args)
        else:
            result = run_python_load(tmp, name, line.port, line.path, line.body, args)
        result["load"] = "wrk" if wrk else "python"
    line.server.settle()  # the work its load left it counts too
    cpu_after = line.server.cpu_seconds()
    calls = result.get("calls")
    result["cpu_ms"] = (
        (cpu_after - cpu_before) * 1000 / calls
        if cpu_before is not None and cpu_after is not None and calls
        else None
    )
    result["path"] = line.path
    return result


# -- the driver: the three servers ----------------------------------------------------------------


def keel_base() -> list[str]:
    """How to run the ``keel`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("keel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from keel.cli.main import main; sys.exit(main())"]


def keel_command(port: int, runtime: str, grpc_port: int | None = None) -> list[str]:
    command = [
        *keel_base(),
        "serve",
        f"models:/{MODEL_NAME}@champion",
        "--port",
        str(port),
        "--runtime",
        runtime,
    ]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    return command


def compile_onnx(tmp: Path, version: int) -> Result:
    """``keel models compile bench <version> --to onnx``: its parity report, or stop saying why."""
    progress(f"compiling: keel models compile {MODEL_NAME} {version} --to onnx")
    command = [
        *keel_base(),
        "models",
        "compile",
        MODEL_NAME,
        str(version),
        "--to",
        "onnx",
        "--data",
        str(tmp / "rows.parquet"),
        "--json",
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_env(KEEL_HOME=str(tmp / "keel-home")),
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SystemExit(
            f"keel models compile {MODEL_NAME} {version} --to onnx failed "
            f"(exit code {done.returncode}): {said}. Nothing was timed."
        )
    try:
        recorded = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"keel models compile --json printed no JSON: {done.stdout[-300:]!r}"
        ) from None
    report = recorded.get("report") or {}
    if not recorded.get("passed") or not report.get("passed"):
        raise SystemExit(
            f"the ONNX compilation of {MODEL_NAME} {version} did not pass parity: "
            f"{report.get('reason') or 'no reason given'}. Nothing was timed."
        )
    return {
        "seconds": seconds,
        "package_digest": recorded.get("package_digest"),
        **{
            key: report.get(key)
            for key in (
                "rows",
                "class_agreement",
                "max_abs_diff",
                "within_tolerance",
                "size_bytes",
                "converter",
                "native_ms_per_row",
                "compiled_ms_per_row",
            )
        },
    }


def prediction_rows_logged(home: Path) -> int:
    import pyarrow.parquet as pq

    return sum(
        pq.ParquetFile(f).metadata.num_rows
        for f in (home / "artifacts" / "predictions").rglob("*.parquet")
    )


class Line(NamedTuple):
    """One measured line: a server's endpoint, the body it is sent and who sends it."""

    key: tuple[str, str]  # (server, endpoint) in the results
    label: str
    server: Server  # whose CPU time the line measures
    port: int
    path: str
    body: bytes
    load: str = "http"  # "http" (wrk, else Python threads), "grpc" or "aiohttp"


def start_floor(tmp: Path, checks: list[Result], args: argparse.Namespace) -> Server:
    progress("floor: Starlette + orjson on uvicorn")
    port = free_port()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "floor",
        "--dir",
        str(tmp),
        "--port",
        str(port),
    ]
    server = Server("floor", command, server_env(args), tmp, port)
    problem = server.wait_ready(READY_TIMEOUT["floor"])
    if problem:
        server.stop()
        raise SystemExit(problem)
    check_answers("floor", port, FLOOR_PATH, "v2", checks, read_predictions)
    return server


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def start_keel(
    tmp: Path,
    checks: list[Result],
    args: argparse.Namespace,
    runtime: str,
    grpc_port: int | None = None,
) -> Server:
    """``keel serve --runtime <runtime>``, checked to serve that runtime and to answer right."""
    grpc = f" --grpc-port {grpc_port}" if grpc_port is not None else ""
    progress(
        f"keel {runtime}: keel serve models:/{MODEL_NAME}@champion --runtime {runtime}{grpc} "
        "(validation and prediction logging on)"
    )
    port = free_port()
    home = tmp / "keel-home"
    name = f"keel-{runtime}"
    command = keel_command(port, runtime, grpc_port)
    server = Server(name, command, server_env(args, KEEL_HOME=str(home)), tmp, port)
    problem = server.wait_ready(READY_TIMEOUT["keel"])
    if problem:
        server.stop()
        raise SystemExit(problem)
    metadata = get_json(port, f"/v2/models/{MODEL_NAME}")
    served = (metadata.get("parameters") or {}).get("keel_runtime")
    if served != runtime:
        server.stop()
        raise SystemExit(
            f"keel serve --runtime {runtime} says it serves {served!r} "
            f"(GET /v2/models/{MODEL_NAME}: {metadata!r}). Nothing was timed."
        )
    check_answers(f"{name} v2", port, V2_PATH, "v2", checks, read_v2)
    check_answers(f"{name} /invocations", port, INVOCATIONS_PATH, "split", checks, read_predictions)
    return server


def start_mlflow(
    tmp: Path, python: Path, checks: list[Result], args: argparse.Namespace
) -> tuple[Server | None, str]:
    """The MLflow server and MLflow's version; ``(None, why)`` when it does not come up."""
    progress("mlflow: mlflow models serve --env-manager local --workers 1")
    bin_dir = python.parent
    env = server_env(
        args,
        MLFLOW_TRACKING_URI=f"sqlite:///{(tmp / 'mlflow.db').as_posix()}",
        # `mlflow models serve` starts `uvicorn` by name: it must be MLflow's own.
        PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
    )
    logged = run_worker_process(
        str(python),
        ["--worker", "mlflow-log", "--dir", str(tmp)],
        env,
        "logging the model to MLflow",
    )
    mlflow_cli = bin_dir / "mlflow"
    base = [str(mlflow_cli)] if mlflow_cli.exists() else [str(python), "-m", "mlflow"]
    port = free_port()
    command = [
        *base,
        "models",
        "serve",
        "-m",
        f"runs:/{logged['run_id']}/model",
        "--env-manager",
        "local",
        "--host",
        HOST,
        "-p",
        str(port),
        "--workers",
        "1",
    ]
    server = Server("mlflow", command, env, tmp, port)
    problem = server.wait_ready(READY_TIMEOUT["mlflow"])
    if problem:
        server.stop()
        return None, problem
    check_answers("mlflow /invocations", port, INVOCATIONS_PATH, "split", checks, read_predictions)
    return server, str(logged["version"])


def median_result(rounds: list[Result]) -> Result:
    """The per-round figures and their medians (rps, p50, p99); errors are summed."""

    def med(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]  # None: nothing answered
        return statistics.median(values) if values else None

    return {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "cpu_ms": med("cpu_ms"),
        "errors": sum(r["errors"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "path": rounds[0]["path"],
        "load": rounds[0]["load"],
        "rounds": rounds,
    }


def measure_rounds(tmp: Path, lines: list[Line], args: argparse.Namespace) -> Result:
    """Every line once per round, the servers all up, in the same order each round.

    Alternating spreads the machine's slow spells over every server instead of
    letting one of them take a bad minute whole. Each line ends when its server has
    finished what its load left it (a server that fell behind would otherwise
    charge its backlog to the next line).
    """
    measured: dict[tuple[str, str], list[Result]] = {line.key: [] for line in lines}
    for n in range(args.rounds):
        progress(f"round {n + 1} of {args.rounds}")
        for line in lines:
            name = f"{line.label}-{n + 1}"
            measured[line.key].append(measure(tmp, name, line, args))
    results: Result = {}
    for (server, endpoint), rounds in measured.items():
        results.setdefault(server, {})[endpoint] = median_result(rounds)
    return results


# -- the driver: the report ---------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(results: Result) -> Result:
    floor = results["floor"]["v2"]
    keel = results["keel"]
    onnx = results["keel_onnx"]
    mlflow = (results.get("mlflow") or {}).get("invocations")
    mlflow_rps = mlflow and mlflow["rps"]
    return {
        "onnx_over_floor_rps": ratio(onnx["v2"]["rps"], floor["rps"]),
        "onnx_over_floor_p99": ratio(onnx["v2"]["p99_ms"], floor["p99_ms"]),
        "onnx_over_mlflow_rps": ratio(onnx["v2"]["rps"], mlflow_rps),
        "onnx_invocations_over_mlflow_rps": ratio(onnx["invocations"]["rps"], mlflow_rps),
        "onnx_over_native_rps": ratio(onnx["v2"]["rps"], keel["v2"]["rps"]),
        "keel_over_floor_rps": ratio(keel["v2"]["rps"], floor["rps"]),
        "keel_over_floor_p99": ratio(keel["v2"]["p99_ms"], floor["p99_ms"]),
        "keel_invocations_over_floor_rps": ratio(keel["invocations"]["rps"], floor["rps"]),
        "keel_over_mlflow_rps": ratio(keel["v2"]["rps"], mlflow_rps),
        "keel_invocations_over_mlflow_rps": ratio(keel["invocations"]["rps"], mlflow_rps),
        "grpc_over_http_rps": ratio(dig(onnx, "grpc", "rps"), dig(onnx, "http_asyncio", "rps")),
        # CPU per request: the cheaper server's figure is the smaller, hence other / keel
        "onnx_over_floor_cpu": ratio(floor["cpu_ms"], onnx["v2"]["cpu_ms"]),
        "onnx_over_mlflow_cpu": ratio(mlflow and mlflow["cpu_ms"], onnx["v2"]["cpu_ms"]),
        "keel_over_floor_cpu": ratio(floor["cpu_ms"], keel["v2"]["cpu_ms"]),
        "keel_over_mlflow_cpu": ratio(mlflow and mlflow["cpu_ms"], keel["v2"]["cpu_ms"]),
        "grpc_over_http_cpu": ratio(
            dig(onnx, "http_asyncio", "cpu_ms"), dig(onnx, "grpc", "cpu_ms")
        ),
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def print_table(results: Result, config: Result, skipped: dict[str, str | None]) -> None:
    prep = results["prepare"]
    keel_version = prep["keel_version"]
    native, onnx = results["keel"], results["keel_onnx"]
    mlflow = results.get("mlflow")
    mlflow_label = f"mlflow {mlflow['version']}" if mlflow else "mlflow"
    lines: list[tuple[str, Result | None]] = [
        (f"floor: Starlette + orjson, POST {FLOOR_PATH} (v2 body)", results["floor"]["v2"]),
        (f"keel {keel_version} native: POST {V2_PATH}", native["v2"]),
        (f"keel {keel_version} native: POST /invocations (dataframe_split)", native["invocations"]),
        (f"keel {keel_version} onnx: POST {V2_PATH}", onnx["v2"]),
        (f"keel {keel_version} onnx: POST /invocations (dataframe_split)", onnx["invocations"]),
        (
            f"{mlflow_label}: POST /invocations (dataframe_split)",
            mlflow["invocations"] if mlflow else None,
        ),
        ("keel onnx: gRPC ModelInfer, one [1,30] FP64 tensor", onnx.get("grpc")),
        (f"keel onnx: POST {V2_PATH}, the same tensor", onnx.get("http_asyncio")),
    ]
    compiled = results["compile"]
    print(
        f"Serving one-row requests: HistGradientBoostingClassifier ({prep['n_trees']} trees, "
        f"{prep['n_features']} features, scikit-learn {prep['sklearn_version']}), "
        "one worker per server"
    )
    print(
        f"{config['connections']} connections or calls in flight, {config['duration']:g} s "
        f"measured after {WARMUP_SECONDS:g} s warm-up, medians of {config['rounds']} "
        f"alternating rounds; {config['cpus']} CPUs, Python {prep['python']}, "
        f"OMP_NUM_THREADS={config['omp_threads'] or 'unset'}, "
        f"load average {config['loadavg_before']:.2f} before, {config['loadavg_after']:.2f} after"
    )
    converter = compiled.get("converter") or {}
    print(
        f"onnx: keel models compile --to onnx ({converter.get('name', '?')} "
        f"{converter.get('version', '?')}, {compiled['seconds']:.1f} s) passed parity on "
        f"{compiled['rows']} rows: classes agree on {100 * (compiled['class_agreement'] or 0):.2f}%, "
        f"max |Δp| {compiled['max_abs_diff']:.1e}, {compiled['size_bytes'] / 1024:,.0f} KiB"
    )
    print()
    header = ("server: endpoint", "load", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "errors")
    rows: list[tuple[str, ...]] = [
        (label, "-", "-", "-", "-", "-", "-")
        if r is None
        else (
            label,
            LOADS.get(r["load"], str(r["load"])),
            fmt(r["rps"]),
            fmt(r["p50_ms"], 2),
            fmt(r["p99_ms"], 2),
            fmt(r["cpu_ms"], 3),
            fmt(r["errors"]),
        )
        for label, r in lines
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for n, row in enumerate([header, *rows]):
        print(
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
            + "  ".join(f"{row[i]:>{widths[i]}}" for i in range(2, len(header))).rstrip()
        )
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(header) - 1)))
    print()
    label_width = max(len(label) for label, _ in RATIO_LINES)
    print(f"{'ratio':<{label_width}}  {'value':>6}  target")
    print("-" * (label_width + 24))
    for label, key in RATIO_LINES:
        value = results["ratios"][key]
        target = TARGETS.get(key)
        if target is None:
            print(f"{label:<{label_width}}  {fmt(value, 2):>6}")
            continue
        op, bound = target
        met = value is not None and (value >= bound if op == ">=" else value <= bound)
        status = "-" if value is None else "met" if met else "MISSED"
        print(f"{label:<{label_width}}  {fmt(value, 2):>6}  {op} {bound:<4g} {status}")
    print(
        "CPU ms/req: the server's CPU time (all its processes, its threads included) from the "
        "start of the warm-up until it is idle again, per request it answered."
    )
    print()
    served = sum(
        line["requests"]
        for server in (native, onnx)
        for line in server.values()
        if isinstance(line, dict) and "requests" in line
    )
    print(
        f"The two keel servers logged {results['rows_logged']:,} prediction rows (warm-ups and "
        f"checks included; {served:,} requests were timed)."
    )
    for what, why in skipped.items():
        if why:
            print(f"{what} was skipped: {why}.")
    busy = config["loadavg_before"] > 0.5 * (config["cpus"] or 1)
    if busy:
        print(
            f"WARNING: the 1-minute load average was {config['loadavg_before']:.2f} on "
            f"{config['cpus']} CPUs before the run: other work competed with the servers."
        )


# -- main ------------------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> int:
    tmp = Path(args.dir)
    if args.worker == "prepare":
        emit(prepare_worker(tmp))
    elif args.worker == "floor":
        return floor_worker(tmp, args.port)
    elif args.worker == "mlflow-log":
        emit(mlflow_log_worker(tmp))
    elif args.worker == "load":
        body = Path(args.body_file).read_bytes()
        emit(load_worker(args.port, args.path, body, args.connections, args.duration))
    elif args.worker in ("load-grpc", "load-aiohttp"):
        kind = args.worker.removeprefix("load-")
        emit(async_load_worker(tmp, kind, args.port, args.connections, args.duration))
    return 0


def load_generator_name(args: argparse.Namespace) -> str:
    """The generator of the HTTP lines, as the table's first lines say it."""
    wrk = None if args.python_load else shutil.which("wrk")
    if wrk:
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (version.stdout or version.stderr).strip().splitlines()
        return " ".join(first[0].split()[:2]) if first else "wrk"
    if not args.python_load:
        progress("wrk is not on PATH: using the Python load generator (apt-get install wrk)")
        return "Python threads + http.client (wrk not found)"
    return "Python threads + http.client"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per line (default 10)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="concurrent connections, or gRPC calls in flight (default 8)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip-mlflow", action="store_true", help="do not run MLflow")
    parser.add_argument(
        "--skip-grpc", action="store_true", help="do not measure gRPC against HTTP (asyncio)"
    )
    parser.add_argument(
        "--mlflow-python",
        type=Path,
        default=None,
        help="interpreter with mlflow installed (default .venv-mlflow/bin/python)",
    )
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even when wrk is installed",
    )
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for every server (default 1; 0 leaves the library default)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every line this many times, alternating; medians are reported (default 3)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--worker",
        choices=("prepare", "floor", "mlflow-log", "load", "load-grpc", "load-aiohttp"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--body-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.duration <= 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration must be positive, --connections and --rounds at least 1")

    config: Result = {
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": WARMUP_SECONDS,
        "load_generator": load_generator_name(args),
        "cpus": os.cpu_count(),
        "omp_threads": args.omp_threads or None,
        "loadavg_before": os.getloadavg()[0],
    }

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: Result = {}
    servers: list[Server] = []
    skipped: dict[str, str | None] = {
        "MLflow": "--skip-mlflow" if args.skip_mlflow else None,
        "gRPC": "--skip-grpc" if args.skip_grpc else None,
    }
    if not args.skip_grpc:
        skipped["gRPC"] = peer_unavailable(
            Path(sys.executable), "the dev virtualenv", "grpc, tritonclient.grpc.aio, aiohttp"
        )
        if skipped["gRPC"]:
            progress(f"gRPC skipped: {skipped['gRPC']}")
    try:
        progress("preparing: fitting the model, logging and registering it in a fresh Keel home")
        results["prepare"] = run_worker_process(
            sys.executable, ["--worker", "prepare", "--dir", str(tmp)], child_env(), "prepare"
        )
        results["compile"] = compile_onnx(tmp, results["prepare"]["registered_version"])
        checks: list[Result] = json.loads((tmp / "checks.json").read_text())
        v2, split = (tmp / "v2.json").read_bytes(), (tmp / "split.json").read_bytes()
        floor = start_floor(tmp, checks, args)
        servers.append(floor)
        native = start_keel(tmp, checks, args, "native")
        servers.append(native)
        grpc_port = None if skipped["gRPC"] else free_port()
        onnx = start_keel(tmp, checks, args, "onnx", grpc_port)
        servers.append(onnx)
        lines = [
            Line(("floor", "v2"), "floor", floor, floor.port, FLOOR_PATH, v2),
            Line(("keel", "v2"), "keel-native-v2", native, native.port, V2_PATH, v2),
            Line(
                ("keel", "invocations"),
                "keel-native-invocations",
                native,
                native.port,
                INVOCATIONS_PATH,
                split,
            ),
            Line(("keel_onnx", "v2"), "keel-onnx-v2", onnx, onnx.port, V2_PATH, v2),
            Line(
                ("keel_onnx", "invocations"),
                "keel-onnx-invocations",
                onnx,
                onnx.port,
                INVOCATIONS_PATH,
                split,
            ),
        ]
        mlflow_version = None
        if not args.skip_mlflow:
            python = peer_python(".venv-mlflow", args.mlflow_python)
            skipped["MLflow"] = peer_unavailable(python, ".venv-mlflow", "mlflow, sklearn")
            if skipped["MLflow"] is None:
                assert python is not None
                mlflow, started = start_mlflow(tmp, python, checks, args)
                if mlflow is None:
                    skipped["MLflow"] = started
                else:
                    servers.append(mlflow)
                    mlflow_version = started
                    lines.append(
                        Line(
                            ("mlflow", "invocations"),
                            "mlflow",
                            mlflow,
                            mlflow.port,
                            INVOCATIONS_PATH,
                            split,
                        )
                    )
            if skipped["MLflow"]:
                progress(f"MLflow skipped: {skipped['MLflow']}")
        if grpc_port is not None:
            tensor = (tmp / "tensor.json").read_bytes()
            lines += [
                Line(
                    ("keel_onnx", "grpc"),
                    "keel-onnx-grpc",
                    onnx,
                    grpc_port,
                    "ModelInfer",
                    b"",
                    "grpc",
                ),
                Line(
                    ("keel_onnx", "http_asyncio"),
                    "keel-onnx-aiohttp",
                    onnx,
                    onnx.port,
                    V2_PATH,
                    tensor,
                    "aiohttp",
                ),
            ]
        results.update(measure_rounds(tmp, lines, args))
        if mlflow_version is not None:
            results["mlflow"]["version"] = mlflow_version
        # SIGTERM: each flushes its prediction log on the way out
        native.stop()
        onnx.stop()
        results["rows_logged"] = prediction_rows_logged(tmp / "keel-home")
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    config["loadavg_after"] = os.getloadavg()[0]
    results["ratios"] = ratios(results)
    if args.json:
        print(json.dumps({"config": config, **results, "skipped": skipped}, indent=2, default=str))
    else:
        print_table(results, config, skipped)
    failed = sum(
        line["errors"]
        for server in ("floor", "keel", "keel_onnx", "mlflow")
        for line in (results.get(server) or {}).values()
        if isinstance(line, dict)
    )
    if failed:
        print(
            f"{failed} requests failed during timing; the figures are not comparable.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
