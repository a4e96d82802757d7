"""``keel serve --runtime``: a version whose compilation passed parity is served by it under
``auto`` with the same answers as native on every protocol, the metadata says which runtime
serves it and why, and a runtime that cannot be honoured fails at start with one line."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from _support.cli import keel_command, keel_environ
from _support.network import free_port
from _support.serving import Registered

ROWS = 100


def _compile(name: str, version: int, to: str = "onnx") -> None:
    pytest.importorskip("skl2onnx")
    from keel.models.compile import compile_version

    compile_version(name, version, to=to)


def _answers(url: str, model: str, rows: pd.DataFrame) -> dict[str, list]:
    """The classes the server answers for ``rows`` on v2 (columns and one tensor),
    /invocations and KServe v1."""
    columns = {
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
    }
    tensor = {
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.to_numpy().ravel().tolist(),
            }
        ]
    }
    split = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    instances = {"instances": rows.to_dict(orient="records")}
    out: dict[str, list] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for key, body in (("v2 columns", columns), ("v2 tensor", tensor)):
            answer = http.post(f"/v2/models/{model}/infer", json=body)
            assert answer.status_code == 200, answer.text
            out[key] = answer.json()["outputs"][0]["data"]
        answer = http.post("/invocations", json=split)
        assert answer.status_code == 200, answer.text
        out["invocations"] = answer.json()["predictions"]
        answer = http.post(f"/v1/models/{model}:predict", json=instances)
        assert answer.status_code == 200, answer.text
        out["v1"] = answer.json()["predictions"]
    return out


def _metadata(url: str, model: str) -> dict:
    answer = httpx.get(f"{url}/v2/models/{model}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.slow
def test_auto_serves_the_compiled_onnx_form_with_the_native_answers(registered, serve):
    _compile("cancer", 1)
    server = serve("models:/cancer@champion", log_predictions=False)  # runtime: auto
    handle = server.app.state.runtime.table.primary
    assert (handle.runtime, handle.model.flavor) == ("onnx", "onnx")
    meta = _metadata(server.url, "cancer")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["parameters"]["keel_runtime"] == "onnx"
    assert meta["parameters"]["keel_runtime_reason"].startswith(
        "compiled onnx passed parity (max |Δp| "
    )
    # the same signature as the native version: clients send what they always sent
    assert [i["name"] for i in meta["inputs"]] == list(registered.features.columns)

    rows = registered.features.sample(ROWS, random_state=0)
    native = registered.models[1]
    expected = native.predict(rows).tolist()
    for protocol, got in _answers(server.url, "cancer", rows).items():
        assert got == expected, protocol
    # what answered those requests gives the native probabilities within 1e-5
    np.testing.assert_allclose(
        handle.model.predict_proba(rows), native.predict_proba(rows), rtol=0, atol=1e-5
    )


@pytest.mark.slow
def test_runtime_native_serves_the_native_package_of_a_compiled_version(registered, serve):
    _compile("cancer", 1)
    server = serve("models:/cancer@champion", log_predictions=False, runtime="native")
    meta = _metadata(server.url, "cancer")
    assert meta["platform"] == "keel-sklearn"
    assert meta["parameters"] == {
        "keel_runtime": "native",
        "keel_runtime_reason": "native runtime requested",
    }
    rows = registered.features.head(ROWS)
    assert _answers(server.url, "cancer", rows)["v2 columns"] == (
        registered.models[1].predict(rows).tolist()
    )


@pytest.mark.slow
def test_a_deployment_serves_each_version_with_its_own_runtime(registered, serve):
    _compile("cancer", 2)
    from keel.serving import Deployments, build_spec

    deployments = Deployments()
    spec = build_spec("cancer@champion", ["cancer/2:50"])
    deployments.create("cancer-api", spec)
    server = serve("cancer-api", log_predictions=False)
    served = {h.version: h.runtime for _, _, h in server.app.state.runtime.table.routes}
    assert served == {1: "native", 2: "onnx"}
    for version, platform in ((1, "keel-sklearn"), (2, "onnxruntime_onnx")):
        answer = httpx.get(f"{server.url}/v2/models/cancer-api/versions/{version}", timeout=30)
        assert answer.json()["platform"] == platform
    rows = registered.features.head(20)
    for version in (1, 2):
        answer = httpx.post(
            f"{server.url}/v2/models/cancer-api/versions/{version}/infer",
            json={
                "inputs": [
                    {"name": c, "shape": [20], "datatype": "FP64", "data": rows[c].tolist()}
                    for c in rows.columns
                ]
            },
            timeout=30,
        )
        assert answer.json()["outputs"][0]["data"] == (
            registered.models[version].predict(rows).tolist()
        )


def _precise_model() -> tuple[pd.DataFrame, object]:
    """``precise`` v1: inputs 1e8 + k that float32 (what ONNX is fed) cannot tell apart."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = pd.DataFrame({"x": 1e8 + np.arange(400, dtype=np.float64)})
    y = (np.arange(400) >= 200).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(10), reference_data=x)
    keel.register_model(info.uri, "precise")
    return x, model


@pytest.mark.slow
def test_auto_serves_native_when_the_compilation_failed_parity_and_says_why(sqlite_env, serve):
    pytest.importorskip("skops")
    from keel.errors import InvalidInput

    x, model = _precise_model()
    with pytest.raises(InvalidInput, match="parity failed"):
        _compile("precise", 1)
    assert keel.Client().registry.compiled("precise", 1, "onnx") is None
    server = serve("models:/precise/1", log_predictions=False)
    meta = _metadata(server.url, "precise")
    assert meta["platform"] == "keel-sklearn"
    assert meta["parameters"]["keel_runtime"] == "native"
    assert meta["parameters"]["keel_runtime_reason"].startswith(
        "onnx compilation of v1 failed parity: "
    )
    rows = x.iloc[190:210]
    answer = httpx.post(
        f"{server.url}/invocations",
        json={"dataframe_split": {"columns": ["x"], "data": rows.to_numpy().tolist()}},
        timeout=30,
    )
    assert answer.json() == {"predictions": model.predict(rows).tolist()}  # type: ignore[attr-defined]


@pytest.mark.slow
def test_keel_serve_says_which_runtime_serves_each_version(registered: Registered, tmp_path: Path):
    _compile("cancer", 1)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            keel_command("serve", "models:/cancer@champion", "--port", str(port), "--no-log"),
            env=keel_environ(registered.settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert _metadata(url, "cancer")["parameters"]["keel_runtime"] == "onnx"
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert any(
        line.startswith("cancer/1 served by onnx: compiled onnx passed parity (max |Δp| ")
        for line in lines
    ), lines


@pytest.mark.slow
def test_runtime_onnx_on_an_uncompiled_version_fails_at_start_with_one_line(
    registered: Registered, run_keel
):
    # A server that did not refuse would run until the timeout fails the test.
    done = run_keel(
        "serve", "models:/cancer@champion", "--port", str(free_port()), "--runtime", "onnx",
        settings=registered.settings,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "no onnx compilation that passed parity" in lines[0]
    assert "`keel models compile cancer 1 --to onnx`" in lines[0]


def test_an_unknown_runtime_is_refused_before_anything_loads(registered: Registered, run_keel):
    done = run_keel(
        "serve", "models:/cancer@champion", "--port", str(free_port()), "--runtime", "gpu",
        settings=registered.settings,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--runtime must be one of native, auto, onnx, treelite, got 'gpu'" in done.stderr


def test_workers_build_their_app_with_the_runtime_asked_for(
    registered: Registered, monkeypatch: pytest.MonkeyPatch
):
    from keel.serving.server import app_from_env

    monkeypatch.setenv("KEEL_SERVE_TARGET", "models:/cancer@champion")
    monkeypatch.setenv("KEEL_SERVE_LOG_PREDICTIONS", "0")
    monkeypatch.setenv("KEEL_SERVE_RUNTIME", "native")
    assert app_from_env().state.runtime.runtime == "native"
    monkeypatch.setenv("KEEL_SERVE_RUNTIME", "onnx")
    from keel.errors import NotFound

    with pytest.raises(NotFound, match="keel models compile cancer 1 --to onnx"):
        app_from_env().state.runtime.table  # noqa: B018
