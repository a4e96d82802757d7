"""Serving one-row requests: Keel vs a bare Starlette floor vs ``mlflow models serve``.

What is measured
----------------
One model, one worker process per server, one-row requests from ``C``
concurrent keep-alive connections (default 8) for ``D`` seconds (default 10)
after a 2-second warm-up: requests per second, and the median (p50) and p99
latency seen by the load generator. The model is a scikit-learn
``HistGradientBoostingClassifier(random_state=0)`` fitted on the
breast_cancer data (569 rows, 30 float features); every request carries the
same known row, and every answer must be a 2xx (non-2xx answers and socket
errors are counted and printed, and make the run exit 1).

The servers, one at a time, each started, warmed up, measured and stopped:

* **keel**: ``keel serve models:/bench@champion --port P`` with its defaults
  (one worker, signature validation and prediction logging ON) on a fresh
  ``KEEL_HOME`` in a temporary folder, where the model was logged with
  ``keel.log_model(model, "model", input_example=X.head())``, registered as
  ``bench`` and aliased ``champion``. Measured twice on the same server:
  ``POST /v2/models/bench/infer`` with an Open Inference Protocol v2 JSON body
  (one input per column, FP64, shape [1]): the main line; and
  ``POST /invocations`` with ``dataframe_split``, for reference. After the
  server stops, the rows it wrote to the prediction log are counted.
* **floor**: what a careful engineer writes by hand for this one model: a bare
  Starlette app on uvicorn with the same settings ``keel serve`` uses (one
  worker, ``log_level="warning"``, no access log, uvicorn's default loop and
  HTTP parser, which are uvloop and httptools where installed, as here). It
  gets the same v2 request bytes as Keel's main line, parses them with
  ``orjson`` (a fast JSON parser, and the one Keel itself uses, so the
  comparison is of everything else), builds a one-row float64 array from the
  inputs' data and answers ``{"predictions": [...]}`` from ``model.predict``.
  No validation, no logging, no metrics. The model object is Keel's own,
  pickled into the temporary folder for the floor process.
* **mlflow**: ``mlflow models serve -m runs:/<run>/model --env-manager local
  --workers 1`` from the MLflow virtualenv (``.venv-mlflow``, because its pins
  clash with Keel's), the same pickled model logged with
  ``mlflow.sklearn.log_model`` into a temporary SQLite tracking store, sent
  ``POST /invocations`` with the same ``dataframe_split`` body as Keel's
  reference line. It runs as MLflow ships it (uvicorn with its access log; no
  uvloop or httptools unless that virtualenv has them). Skipped, saying why,
  when the interpreter is missing, cannot ``import mlflow``, or the server is
  not up within 120 s; ``--skip-mlflow`` skips it on purpose.

Every server runs with ``OMP_NUM_THREADS=1`` (``--omp-threads``; 0 leaves the
library default). scikit-learn walks a HistGradientBoosting model's trees
with OpenMP; for one row the threads gain nothing and spin against each other
and against the load generator: on a 2-core machine with other work on it, a
one-row ``predict`` took 0.9 ms with one thread and 6 ms with two (idle, the
servers lost about 10% of their throughput with the default). The same
setting goes to every server, so it favours none.

Before timing, each server/endpoint is asked once for two known rows (one of
each class) and must answer exactly ``model.predict`` of them; otherwise the
benchmark stops.

Ratios printed, with the targets we hold Keel to (informational: nothing
here asserts on timing): keel/floor req/s >= 0.8, keel p99 / floor p99 <= 1.5,
keel/mlflow req/s >= 10 (Keel's v2 line, and its /invocations line against
MLflow's, which is the same request body).

The load generator
------------------
``wrk`` when it is on PATH (``apt-get install wrk``): one thread, ``C``
connections, a Lua script that POSTs the body, ``--latency`` for the
percentiles; its ``Requests/sec`` and latency distribution lines are parsed.
Without wrk, a Python fallback in its own process: ``C`` threads, each with
one keep-alive ``http.client`` connection, timing every request with
``perf_counter``. The fallback is itself Python under the GIL and shares the
machine's cores with the server, so it reports lower throughput and higher
latencies than wrk would; compare ratios within one run, not across
generators. Either way the load generator and the server share the machine:
on 2 cores, one for the server's worker and one for the load.

How it runs
-----------
Each server and the Python load generator run in their own process; this
file re-invokes itself with ``--worker`` to prepare the model, to run the
floor app, to log the model into MLflow (under the MLflow interpreter) and to
generate load. Everything lives in one temporary folder, removed at the end
(``--keep`` keeps it and prints where). ``KEEL_*`` and ``MLFLOW_*`` variables
are not passed on. The 1-minute load average is printed with the results: on
a busy machine the figures mean little.

Usage::

    python bench/serving.py                        # from the dev venv: .venv/bin/python bench/serving.py
    python bench/serving.py --duration 5 --connections 4 --skip-mlflow --json

The default run takes about a minute.
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

from _common import Server, clean_env, peer_python, peer_unavailable

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
    "keel_over_floor_rps": (">=", 0.8),
    "keel_over_floor_p99": ("<=", 1.5),
    "keel_over_mlflow_rps": (">=", 10.0),
    "keel_invocations_over_mlflow_rps": (">=", 10.0),
}
RATIO_LINES = (
    ("keel/floor req/s (v2)", "keel_over_floor_rps"),
    ("keel p99 / floor p99 (v2)", "keel_over_floor_p99"),
    ("keel/mlflow req/s (keel v2)", "keel_over_mlflow_rps"),
    ("keel/mlflow req/s (both /invocations)", "keel_invocations_over_mlflow_rps"),
    ("keel /invocations / floor req/s (reference)", "keel_invocations_over_floor_rps"),
)

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
        }
        for i in check_rows
    ]
    (tmp / "v2.json").write_bytes(v2_body(columns, x.iloc[0].tolist()))
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
    }


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

    once(WARMUP_SECONDS)
    output = once(args.duration)
    (tmp / f"{name}-wrk.txt").write_text(output)  # kept with --keep
    return parse_wrk(output, args.duration)


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


def measure(
    tmp: Path, name: str, port: int, path: str, body: bytes, args: argparse.Namespace
) -> Result:
    progress(f"  {name}: {WARMUP_SECONDS:g} s warm-up, {args.duration:g} s measured")
    wrk = None if args.python_load else shutil.which("wrk")
    if wrk:
        result = run_wrk(wrk, tmp, name, port, path, body, args)
    else:
        result = run_python_load(tmp, name, port, path, body, args)
    result["path"] = path
    return result


# -- the driver: the three servers ----------------------------------------------------------------


def keel_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("keel")
    base = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from keel.cli.main import main; sys.exit(main())"]
    )
    return [*base, "serve", f"models:/{MODEL_NAME}@champion", "--port", str(port)]


def prediction_rows_logged(home: Path) -> int:
    import pyarrow.parquet as pq

    return sum(
        pq.ParquetFile(f).metadata.num_rows
        for f in (home / "artifacts" / "predictions").rglob("*.parquet")
    )


class Line(NamedTuple):
    """One measured line: a server's endpoint and the body it is sent."""

    key: tuple[str, str]  # (server, endpoint) in the results
    label: str
    port: int
    path: str
    body: bytes


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


def start_keel(tmp: Path, checks: list[Result], args: argparse.Namespace) -> Server:
    progress("keel: keel serve models:/bench@champion (validation and prediction logging on)")
    port = free_port()
    home = tmp / "keel-home"
    server = Server("keel", keel_command(port), server_env(args, KEEL_HOME=str(home)), tmp, port)
    problem = server.wait_ready(READY_TIMEOUT["keel"])
    if problem:
        server.stop()
        raise SystemExit(problem)
    check_answers("keel v2", port, V2_PATH, "v2", checks, read_v2)
    check_answers("keel /invocations", port, INVOCATIONS_PATH, "split", checks, read_predictions)
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
    return {
        "rps": statistics.median(r["rps"] for r in rounds),
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "path": rounds[0]["path"],
        "rounds": rounds,
    }


def measure_rounds(tmp: Path, lines: list[Line], args: argparse.Namespace) -> Result:
    """Every line once per round, the servers all up, in the same order each round.

    Alternating spreads the machine's slow spells over every server instead of
    letting one of them take a bad minute whole.
    """
    measured: dict[tuple[str, str], list[Result]] = {line.key: [] for line in lines}
    for n in range(args.rounds):
        progress(f"round {n + 1} of {args.rounds}")
        for line in lines:
            name = f"{line.label}-{n + 1}"
            measured[line.key].append(measure(tmp, name, line.port, line.path, line.body, args))
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
    mlflow = (results.get("mlflow") or {}).get("invocations")
    return {
        "keel_over_floor_rps": ratio(keel["v2"]["rps"], floor["rps"]),
        "keel_over_floor_p99": ratio(keel["v2"]["p99_ms"], floor["p99_ms"]),
        "keel_invocations_over_floor_rps": ratio(keel["invocations"]["rps"], floor["rps"]),
        "keel_over_mlflow_rps": ratio(keel["v2"]["rps"], mlflow and mlflow["rps"]),
        "keel_invocations_over_mlflow_rps": ratio(
            keel["invocations"]["rps"], mlflow and mlflow["rps"]
        ),
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def print_table(results: Result, config: Result, skipped: str | None) -> None:
    prep = results["prepare"]
    keel_version = prep["keel_version"]
    lines: list[tuple[str, Result | None]] = [
        (f"floor: Starlette + orjson, POST {FLOOR_PATH} (v2 body)", results["floor"]["v2"]),
        (f"keel {keel_version}: POST {V2_PATH}", results["keel"]["v2"]),
        (
            f"keel {keel_version}: POST /invocations (dataframe_split)",
            results["keel"]["invocations"],
        ),
    ]
    mlflow = results.get("mlflow")
    mlflow_label = f"mlflow {mlflow['version']}" if mlflow else "mlflow"
    lines.append(
        (
            f"{mlflow_label}: POST /invocations (dataframe_split)",
            mlflow["invocations"] if mlflow else None,
        )
    )
    print(
        f"Serving one-row requests: HistGradientBoostingClassifier ({prep['n_trees']} trees, "
        f"{prep['n_features']} features, scikit-learn {prep['sklearn_version']}), "
        "one worker per server"
    )
    print(
        f"{config['connections']} keep-alive connections, {config['duration']:g} s measured "
        f"after {WARMUP_SECONDS:g} s warm-up, medians of {config['rounds']} alternating rounds; "
        f"load: {config['load_generator']}; "
        f"{config['cpus']} CPUs, Python {prep['python']}, "
        f"OMP_NUM_THREADS={config['omp_threads'] or 'unset'}, "
        f"load average {config['loadavg_before']:.2f} before, {config['loadavg_after']:.2f} after"
    )
    print()
    header = ("server: endpoint", "req/s", "p50 ms", "p99 ms", "errors")
    rows = [
        (
            label,
            fmt(r and r["rps"]),
            fmt(r and r["p50_ms"], 2),
            fmt(r and r["p99_ms"], 2),
            fmt(r and r["errors"]),
        )
        for label, r in lines
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    for n, row in enumerate([header, *rows]):
        print(
            f"{row[0]:<{widths[0]}}  "
            + "  ".join(f"{row[i]:>{widths[i]}}" for i in range(1, 5)).rstrip()
        )
        if n == 0:
            print("-" * (sum(widths) + 8))
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
    print()
    keel = results["keel"]
    served = keel["v2"]["requests"] + keel["invocations"]["requests"]
    print(
        f"Keel logged {keel['rows_logged']:,} prediction rows (warm-ups and checks included; "
        f"{served:,} requests were timed)."
    )
    if skipped:
        print(f"MLflow was skipped: {skipped}.")
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per line (default 10)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="concurrent connections (default 8)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip-mlflow", action="store_true", help="do not run MLflow")
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
        "--worker", choices=("prepare", "floor", "mlflow-log", "load"), help=argparse.SUPPRESS
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

    wrk = None if args.python_load else shutil.which("wrk")
    if wrk:
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (version.stdout or version.stderr).strip().splitlines()
        load_generator = " ".join(first[0].split()[:2]) if first else "wrk"
    else:
        load_generator = "Python threads + http.client"
        if not args.python_load:
            load_generator += " (wrk not found)"
            progress("wrk is not on PATH: using the Python load generator (apt-get install wrk)")
    config: Result = {
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": WARMUP_SECONDS,
        "load_generator": load_generator,
        "cpus": os.cpu_count(),
        "omp_threads": args.omp_threads or None,
        "loadavg_before": os.getloadavg()[0],
    }

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: Result = {}
    servers: list[Server] = []
    skipped: str | None = "--skip-mlflow" if args.skip_mlflow else None
    try:
        progress("preparing: fitting the model, logging and registering it in a fresh Keel home")
        results["prepare"] = run_worker_process(
            sys.executable, ["--worker", "prepare", "--dir", str(tmp)], child_env(), "prepare"
        )
        checks: list[Result] = json.loads((tmp / "checks.json").read_text())
        v2, split = (tmp / "v2.json").read_bytes(), (tmp / "split.json").read_bytes()
        floor = start_floor(tmp, checks, args)
        servers.append(floor)
        keel = start_keel(tmp, checks, args)
        servers.append(keel)
        lines = [
            Line(("floor", "v2"), "floor", floor.port, FLOOR_PATH, v2),
            Line(("keel", "v2"), "keel-v2", keel.port, V2_PATH, v2),
            Line(("keel", "invocations"), "keel-invocations", keel.port, INVOCATIONS_PATH, split),
        ]
        mlflow_version = None
        if not args.skip_mlflow:
            python = peer_python(".venv-mlflow", args.mlflow_python)
            skipped = peer_unavailable(python, ".venv-mlflow", "mlflow, sklearn")
            if skipped is None:
                assert python is not None
                mlflow, started = start_mlflow(tmp, python, checks, args)
                if mlflow is None:
                    skipped = started
                else:
                    servers.append(mlflow)
                    mlflow_version = started
                    lines.append(
                        Line(
                            ("mlflow", "invocations"),
                            "mlflow",
                            mlflow.port,
                            INVOCATIONS_PATH,
                            split,
                        )
                    )
            if skipped:
                progress(f"MLflow skipped: {skipped}")
        results.update(measure_rounds(tmp, lines, args))
        if mlflow_version is not None:
            results["mlflow"]["version"] = mlflow_version
        keel.stop()  # SIGTERM: the prediction log is flushed on the way out
        results["keel"]["rows_logged"] = prediction_rows_logged(tmp / "keel-home")
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
        print(
            json.dumps(
                {"config": config, **results, "mlflow_skipped": skipped}, indent=2, default=str
            )
        )
    else:
        print_table(results, config, skipped)
    lines = [results["floor"]["v2"], results["keel"]["v2"], results["keel"]["invocations"]]
    if results.get("mlflow"):
        lines.append(results["mlflow"]["invocations"])
    failed = sum(line["errors"] for line in lines)
    if failed:
        print(
            f"{failed} requests failed during timing; the figures are not comparable.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
