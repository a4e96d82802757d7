"""Prediction logs from a real `keel serve` process: rows logged equal 2xx responses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import keel


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(settings, target: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_HOME=str(settings.home), KEEL_STORE_URL=settings.store_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli.main", "serve", target, "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not become ready")


def _body(frame, request_id: str) -> dict:
    return {
        "id": request_id,
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ],
    }


@pytest.mark.slow
def test_sigterm_under_load_loses_no_logged_prediction(registered):
    from keel.predictions import read_predictions

    settings = registered.settings
    proc, url = _start_server(settings, "models:/cancer@champion")
    ok: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    frames = [registered.features.iloc[n % 50 : n % 50 + 1 + n % 3] for n in range(64)]

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                request_id = f"w{worker}-{n}"
                frame = frames[n % len(frames)]
                try:
                    answer = http.post("/v2/models/cancer/infer", json=_body(frame, request_id))
                except httpx.HTTPError:
                    return  # the server is going away
                if answer.status_code == 200:
                    with lock:
                        ok.append((request_id, len(frame)))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    deadline = time.time() + 120
    while len(ok) < 600 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # in the middle of the load
    proc.wait(timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), proc.stderr.read() if proc.stderr else ""
    assert len(ok) >= 300  # a loaded machine may be slow; what matters is what follows

    table = read_predictions(
        settings.artifacts_url, "cancer", columns=["request_id", "row", "version"]
    )
    logged = table.column("request_id").to_pylist()
    answered_rows = sum(n for _, n in ok)
    assert len(logged) == answered_rows  # not one row lost, none duplicated
    assert set(logged) == {request_id for request_id, _ in ok}
    assert set(table.column("version").to_pylist()) == {1}


def test_feedback_is_stored_beside_the_logs(registered, serve):
    from keel.predictions import PredictionReader, read_predictions

    server = serve("models:/cancer@champion", log_predictions=True)
    rows = registered.features.iloc[:2]
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/v2/models/cancer/infer", json=_body(rows, "req-1")).status_code == 200
        answer = http.post(
            "/v2/models/cancer/feedback",
            json={"ids": ["req-1", "req-1"], "labels": [1, 0], "rows": [0, 1]},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": 2}
        bad = http.post("/v2/models/cancer/feedback", json={"ids": ["a"], "labels": []})
        assert bad.status_code == 400 and "as many labels as ids" in bad.json()["error"]
        metrics = http.get("/metrics").text
    server.__exit__()  # shutdown flushes the queue
    feedback = PredictionReader(registered.settings.artifacts_url).feedback("cancer").to_pylist()
    assert sorted((f["request_id"], f["row"], f["label_num"]) for f in feedback) == [
        ("req-1", 0, 1.0),
        ("req-1", 1, 0.0),
    ]
    logged = read_predictions(registered.settings.artifacts_url, "cancer").to_pylist()
    assert [(r["request_id"], r["row"], r["route"]) for r in logged] == [
        ("req-1", 0, "primary"),
        ("req-1", 1, "primary"),
    ]
    assert logged[0]["input.mean radius"] == rows["mean radius"].iloc[0]
    assert logged[0]["output.prediction"] == registered.models[1].predict(rows)[0]
    assert "keel_prediction_log_queue_rows" in metrics


def test_shadow_predictions_are_logged_with_their_route(registered, serve):
    from keel.predictions import read_predictions
    from keel.serving import Deployments, build_spec

    Deployments().create("shadowed", build_spec("cancer/1", shadow="cancer/2"))
    server = serve("shadowed", log_predictions=True)
    rows = registered.features.iloc[:3]
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v2/models/shadowed/infer", json=_body(rows, "s-1"))
        assert answer.json()["outputs"][0]["data"] == registered.models[1].predict(rows).tolist()
    time.sleep(0.3)
    server.__exit__()
    logged = read_predictions(registered.settings.artifacts_url, "shadowed").to_pylist()
    by_route = {(r["route"], r["version"]) for r in logged}
    assert by_route == {("primary", 1), ("shadow", 2)}
    shadow_out = [
        r["output.prediction"]
        for r in sorted(logged, key=lambda r: r["row"])
        if r["route"] == "shadow"
    ]
    assert shadow_out == registered.models[2].predict(rows).tolist()


def test_keel_serve_cli_rejects_an_unknown_deployment(registered, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_HOME=str(registered.settings.home))
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "serve", "nope", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no deployment named 'nope'" in done.stderr
    assert keel.Client().list_registered_models()[0].name == "cancer"


@pytest.mark.slow
def test_several_workers_serve_and_each_logs_its_own_rows(registered):
    from keel.predictions import read_predictions

    settings = registered.settings
    proc, url = _start_server(settings, "models:/cancer@champion", "--workers", "2")
    rows = registered.features.iloc[:2]
    expected = registered.models[1].predict(rows).tolist()
    answered: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for n in range(40):  # a new connection each time, so the workers share the load
            request_id = f"w{worker}-{n}"
            answer = httpx.post(f"{url}/v2/models/cancer/infer", json=_body(rows, request_id))
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == expected
            with lock:
                answered.append(request_id)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert len(answered) == 320

    table = read_predictions(settings.artifacts_url, "cancer", columns=["request_id"])
    assert sorted(table.column("request_id").to_pylist()) == sorted(answered * 2)
    files = list((Path(settings.artifacts_url) / "predictions").rglob("*.parquet"))
    writers = {f.name.split("-")[2] for f in files}  # part-<ms>-<pid>-<id>.parquet
    assert len(writers) >= 2, f"one process wrote every file: {sorted(writers)}"
