"""What a client cannot do to a server: size, missing values, disconnects, the log's columns, ids.

- A request is sized by what it sends: declared shapes are checked against the
  bytes sent and capped (``max_request_elements``) before anything is allocated.
- A missing or infinite value where the signature allows none is a 422 naming the
  column, never the model failing inside (500).
- A client that goes away is neither an error nor a 500.
- Only the signature's inputs reach the model and the prediction log; the rest are
  counted.
- A v2 ``id`` is a string.
"""

from __future__ import annotations

import json
import logging
import socket
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
from keel.predictions import ERRORS, PredictionReader, read_predictions


def _register(name: str, model, example, **kwargs) -> None:
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=example, **kwargs)
    keel.register_model(info.uri, name)


@pytest.fixture
def strict(registered) -> pd.DataFrame:
    """'strict' version 1: scaled logistic regression, which fails on NaN and inf itself."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    _register("strict", model, x.head(3))
    return x


def _v2(frame: pd.DataFrame, **overrides: list) -> dict:
    """One FP64 input per column; ``overrides`` replace a column's data (None is JSON null)."""
    return {
        "inputs": [
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": "FP64",
                "data": overrides.get(c, frame[c].tolist()),
            }
            for c in frame.columns
        ]
    }


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in ``text`` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- size: checked before allocating ----------------------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _binary_bytes_request(count: int, data: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    return header + data, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_declared_shapes_larger_than_the_bytes_sent_are_refused_with_flat_memory(registered):
    port = free_port()
    env = keel_environ(
        registered.settings,
        # Above 50 million: the BYTES request below must be stopped by its bytes, not the cap.
        KEEL_MAX_REQUEST_ELEMENTS="100000000",
    )
    proc = subprocess.Popen(
        keel_command("serve", "models:/cancer@champion", "--port", str(port), "--no-log"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as http:
            good = http.post("/v2/models/cancer/infer", json=_v2(registered.features.head(2)))
            assert good.status_code == 200, good.text
            before = _peak_rss_kib(proc.pid)

            # 50 million BYTES elements declared, one empty string (4 bytes) sent; then
            # 10**12 elements, over the cap.
            answers = []
            for count in (50_000_000, 10**12):
                body, headers = _binary_bytes_request(count, b"\x00\x00\x00\x00")
                answers.append(http.post("/v2/models/cancer/infer", content=body, headers=headers))
            grown_mib = (_peak_rss_kib(proc.pid) - before) / 1024
            assert grown_mib < 100, f"the server's peak memory grew by {grown_mib:.0f} MiB"
            assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
            assert (
                "50000000 BYTES elements, which take at least 200000000 bytes"
                in (answers[0].json()["error"])
            )
            assert "over the limit of 100000000 per request" in answers[1].json()["error"]
            assert http.post(
                "/v2/models/cancer/infer", json=_v2(registered.features.head(1))
            ).is_success
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_requests_over_the_element_cap_get_400_naming_the_setting(registered, serve):
    from keel.serving.app import create_app
    from keel.serving.server import runtime_for_target

    default = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.head(4)  # 4 rows of 30 columns: 120 values
    with httpx.Client(timeout=30) as http:
        # The default cap (10,000,000) applies to what a v2 input declares, sent or not.
        declared = {
            "inputs": [{"name": "x", "shape": [10_000_001], "datatype": "FP64", "data": []}]
        }
        answer = http.post(f"{default.url}/v2/models/cancer/infer", json=declared)
        assert answer.status_code == 400
        assert "over the limit of 10000000 per request" in answer.json()["error"]
        assert "max_request_elements" in answer.json()["error"]
        runtime = runtime_for_target("models:/cancer@champion")
        capped = serve(create_app(runtime, max_request_elements=100))
        assert http.post(f"{capped.url}/v2/models/cancer/infer", json=_v2(rows.head(3))).is_success
        for path, body in (
            ("/v2/models/cancer/infer", _v2(rows)),
            ("/invocations", {"dataframe_split": rows.to_dict(orient="split")}),
            ("/v1/models/cancer:predict", {"instances": rows.to_numpy().tolist()}),
        ):
            answer = http.post(capped.url + path, json=body)
            assert answer.status_code == 400, (path, answer.text)
            assert "over the limit of 100 per request" in answer.json()["error"], path


def test_a_bytes_shape_must_fit_its_binary_data_exactly(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body, headers = _binary_bytes_request(3, b"\x00\x00\x00\x00" * 2)
        answer = http.post("/v2/models/cancer/infer", content=body, headers=headers)
        assert answer.status_code == 400
        assert "3 BYTES elements, which take at least 12 bytes" in answer.json()["error"]
        one = (1).to_bytes(4, "little") + b"a"
        body, headers = _binary_bytes_request(1, one + b"\x00\x00\x00\x00")
        answer = http.post("/v2/models/cancer/infer", content=body, headers=headers)
        assert answer.status_code == 400
        assert "4 bytes left over after the 1 elements" in answer.json()["error"]


# -- missing values: 422 naming the column ----------------------------------------------------


def test_missing_and_infinite_values_get_422_naming_the_column_not_a_model_500(strict, serve):
    server = serve("models:/strict/1", log_predictions=False)
    rows = strict.head(2)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        holey = rows.copy()
        holey.loc[holey.index[1], "mean texture"] = np.nan  # an empty CSV cell
        answer = http.post(
            "/invocations", content=holey.to_csv(index=False), headers={"Content-Type": "text/csv"}
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert "column 'mean texture' has 1 missing value(s)" in error
        assert "the first at row 1" in error and "allow_missing" in error

        infinite = rows.copy()
        infinite.loc[infinite.index[0], "worst area"] = np.inf
        answer = http.post(
            "/invocations",
            content=infinite.to_csv(index=False),
            headers={"Content-Type": "text/csv"},
        )
        assert answer.status_code == 422, answer.text
        assert "column 'worst area' has 1 missing value(s)" in answer.json()["error"]

        answer = http.post(
            "/v2/models/strict/infer", json=_v2(rows.head(1), **{"mean area": [None]})
        )
        assert answer.status_code == 422, answer.text
        assert "column 'mean area' has 1 missing value(s)" in answer.json()["error"]

        assert http.post("/v2/models/strict/infer", json=_v2(rows)).is_success
        metrics = http.get("/metrics").text
        assert _metric(metrics, "keel_errors_total", status="500") == 0
        assert _metric(metrics, "keel_errors_total", status="422") == 3


def test_a_null_in_a_record_is_reported_as_null_not_as_a_string(strict, serve):
    server = serve("models:/strict/1", log_predictions=False)
    record = strict.head(1).to_dict(orient="records")[0]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post(
            "/invocations", json={"dataframe_records": [{**record, "mean radius": None}]}
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert "column 'mean radius'" in error and "null" in error
        assert "string" not in error


def test_columns_logged_with_missing_values_take_them_and_the_others_refuse_them(registered, serve):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    x = registered.features.copy()
    x.loc[x.index[::7], "mean radius"] = np.nan  # trained, and exemplified, with gaps here
    # scikit-learn's tags say this pipeline takes no NaN: the example decides, column by column.
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=5000))
    model.fit(x, registered.models[1].predict(registered.features))
    _register("gappy", model, x.head(3))
    server = serve("models:/gappy/1", log_predictions=False)
    row = registered.features.head(1)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        taken = http.post("/v2/models/gappy/infer", json=_v2(row, **{"mean radius": [None]}))
        assert taken.status_code == 200, taken.text
        assert (
            taken.json()["outputs"][0]["data"]
            == model.predict(row.assign(**{"mean radius": np.nan})).tolist()
        )
        refused = http.post("/v2/models/gappy/infer", json=_v2(row, **{"mean texture": [None]}))
        assert refused.status_code == 422, refused.text
        assert "column 'mean texture' has 1 missing value(s)" in refused.json()["error"]


# -- a client that goes away -----------------------------------------------------------------


def _raw_request(port: int, head: bytes, body: bytes) -> None:
    """Send ``head`` and ``body`` on a fresh connection, then close it without reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)


def test_a_client_that_disconnects_is_not_an_error_nor_a_500(registered, serve, caplog):
    caplog.set_level(logging.INFO)
    server = serve("models:/cancer@champion", log_predictions=True)
    full = json.dumps(_v2(registered.features.head(1))).encode()

    def head(length: int) -> bytes:
        return (
            b"POST /v2/models/cancer/infer HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
        )

    with httpx.Client(base_url=server.url, timeout=30) as http:

        def settled() -> tuple[float, float, float]:
            text = http.get("/metrics").text
            return (
                _metric(text, "keel_client_disconnects_total"),
                _metric(text, "keel_requests_total", status="200"),
                _metric(text, "keel_errors_total", status="500"),
            )

        # Mid-body: the server waits for bytes that never come, then sees the connection go.
        _raw_request(server.port, head(len(full)), full[: len(full) // 2])
        # The whole request, then gone before the answer: answered, or a disconnect.
        _raw_request(server.port, head(len(full)), full)
        deadline = time.monotonic() + 30
        while True:  # the server handles both requests; then the counters say how
            gone, answered, failed = settled()
            if failed or gone + answered >= 2:
                break
            assert time.monotonic() < deadline, "the server never finished the two requests"
            time.sleep(0.05)
        assert failed == 0, "a client disconnect was counted as a 500"
        assert gone >= 1  # the mid-body one at least
        assert http.post(
            "/v2/models/cancer/infer", json=_v2(registered.features.head(1))
        ).is_success
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    server.__exit__()
    reader = PredictionReader(str(registered.settings.artifacts_url))
    assert reader.count("cancer", dataset=ERRORS) == 0


# -- the prediction log holds the signature's inputs only ---------------------------------------


def test_inputs_the_signature_does_not_name_are_counted_and_never_logged(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=True)
    rows = registered.features.head(2)
    extras = {f"input{n}/../../x{n}": n for n in range(3000)}
    records = [{**record, **extras} for record in rows.to_dict(orient="records")]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        answer = http.post("/invocations", json={"dataframe_records": records})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-keel-ignored-inputs"] == "3000"
        assert answer.json()["predictions"] == registered.models[1].predict(rows).tolist()
        plain = http.post("/invocations", json={"dataframe_records": rows.to_dict("records")})
        assert plain.is_success and "x-keel-ignored-inputs" not in plain.headers
        v2 = _v2(rows)
        v2["inputs"].append({"name": "note", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]})
        answer = http.post("/v2/models/cancer/infer", json=v2)
        assert answer.status_code == 200 and answer.headers["x-keel-ignored-inputs"] == "1"
        assert _metric(http.get("/metrics").text, "keel_ignored_inputs_total") == 3001
        documented = http.get("/openapi.json").json()["paths"]["/invocations"]["post"]
        assert "x-keel-ignored-inputs" in documented["responses"]["200"]["headers"]
    server.__exit__()  # a clean shutdown flushes the log
    logged = read_predictions(str(registered.settings.artifacts_url), "cancer")
    inputs = [c for c in logged.column_names if c.startswith("input.")]
    assert inputs == [f"input.{c}" for c in registered.features.columns]
    assert logged.num_rows == 6


# -- ids ------------------------------------------------------------------------------------


def test_a_v2_id_must_be_a_string(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False)
    body = _v2(registered.features.head(1))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for given, kind in (
            (5, "a number"),
            (None, "null"),
            (["a"], "an array"),
            (True, "a boolean"),
        ):
            answer = http.post("/v2/models/cancer/infer", json={"id": given, **body})
            assert answer.status_code == 400, (given, answer.text)
            assert answer.json()["error"] == (
                f'"id" must be a string, got {kind}; send "id": "<request id>"'
            )
        named = http.post("/v2/models/cancer/infer", json={"id": "req-5", **body})
        assert named.status_code == 200 and named.json()["id"] == "req-5"
