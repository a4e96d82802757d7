"""``keel serve --grpc-port``: the v2 protocol over gRPC, beside HTTP on the same process.

Every server here is the installed ``keel serve`` command on free ports. It is
spoken to with tritonclient's gRPC client and with KServe's, each in a child
process, and with Keel's own generated stub here (for the requests those clients
will not send: malformed ones), and over HTTP on the same process for the
answers gRPC must match.

tritonclient's gRPC module and Keel's generated messages register the same
protobuf names (``inference.ModelInferRequest``…) and cannot be imported into one
process; tritonclient therefore only ever runs in a child process, never in the
test process (where another test imports every module of ``keel.serving``).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from _support.cli import keel_command, keel_environ
from _support.network import free_port

grpc = pytest.importorskip("grpc", reason="needs grpcio: pip install 'keel[grpc]'")

pytestmark = pytest.mark.slow

TARGET = "models:/cancer@champion"


class Served:
    """A running ``keel serve --grpc-port``: its HTTP URL and gRPC address."""

    def __init__(self, url: str, address: str, log: Path) -> None:
        self.url = url
        self.address = address
        self.log = log


def _keel_stub(channel: Any) -> Any:
    """Keel's generated client stub on ``channel``."""
    from keel.serving.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    return GRPCInferenceServiceStub(channel)


#: tritonclient's gRPC client, in a child process: ``python -c TRITON address calls.json``;
#: prints what each call gave as one JSON list.
TRITON = r"""
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

address, calls = sys.argv[1], json.loads(open(sys.argv[2]).read())
client = grpcclient.InferenceServerClient(address)

def tensors(call):
    if call.get("columns"):
        out = []
        for name, values in zip(call["columns"], np.array(call["rows"]).T):
            t = grpcclient.InferInput(name, [len(values)], "FP64")
            t.set_data_from_numpy(values.astype(np.float64))
            out.append(t)
        return out
    rows = np.array(call["rows"], dtype=np.float64)
    t = grpcclient.InferInput("x", list(rows.shape), "FP64")
    t.set_data_from_numpy(rows)
    return [t]

results = []
for call in calls:
    try:
        if call["call"] == "health":
            results.append({
                "live": client.is_server_live(),
                "ready": client.is_server_ready(),
                "model_ready": client.is_model_ready(call["model"]),
                "version_ready": client.is_model_ready(call["model"], "1"),
                "server": client.get_server_metadata().name,
            })
        elif call["call"] == "metadata":
            m = client.get_model_metadata(call["model"])
            results.append({
                "name": m.name, "versions": list(m.versions), "platform": m.platform,
                "inputs": [[t.name, t.datatype, list(t.shape)] for t in m.inputs],
                "outputs": [[t.name, t.datatype, list(t.shape)] for t in m.outputs],
            })
        else:
            outputs = [grpcclient.InferRequestedOutput("predict")]
            r = client.infer(
                call["model"], tensors(call), model_version=call.get("version", ""),
                request_id=call.get("id", ""), outputs=outputs,
            )
            out, response = r.get_output("predict"), r.get_response()
            results.append({
                "predict": r.as_numpy("predict").tolist(), "datatype": out.datatype,
                "shape": list(out.shape), "id": response.id, "version": response.model_version,
            })
    except InferenceServerException as exc:
        results.append({"error": str(exc)})
client.close()
print(json.dumps(results))
"""


def triton(address: str, calls: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Make ``calls`` with tritonclient's gRPC client in a child process; what each gave."""
    if importlib.util.find_spec("tritonclient.grpc") is None:  # looks without importing it
        pytest.skip("needs tritonclient[grpc]")
    spec = tmp_path / "calls.json"
    spec.write_text(json.dumps(calls))
    done = subprocess.run(
        [sys.executable, "-c", TRITON, address, str(spec)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@contextmanager
def keel_serve(settings: Any, target: str, log: Path, *extra: str) -> Iterator[Served]:
    """``keel serve TARGET --grpc-port …`` until the block ends (SIGTERM flushes the logs)."""
    port = free_port()
    grpc_port = free_port()
    while grpc_port == port:
        grpc_port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            keel_command(
                "serve", target, "--port", str(port), "--grpc-port", str(grpc_port), *extra
            ),
            env=keel_environ(settings),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url, address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the server did not start: {log.read_text()}"
            time.sleep(0.1)
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield Served(url, address, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _v2_json(frame: Any, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ],
    }


def test_tritonclient_grpc_gets_the_answers_and_metadata_http_gives(registered, tmp_path):
    rows = registered.features.iloc[:25]
    expected = registered.models[1].predict(rows).tolist()
    matrix = rows.to_numpy().tolist()
    with keel_serve(registered.settings, TARGET, tmp_path / "serve.log") as served:
        health, meta, by_matrix, by_column, pinned = triton(
            served.address,
            [
                {"call": "health", "model": "cancer"},
                {"call": "metadata", "model": "cancer"},
                {"call": "infer", "model": "cancer", "rows": matrix, "id": "g-1"},
                {"call": "infer", "model": "cancer", "rows": matrix, "columns": list(rows.columns)},
                {"call": "infer", "model": "cancer", "rows": matrix, "version": "1"},
            ],
            tmp_path,
        )
        http_meta = httpx.get(f"{served.url}/v2/models/cancer").json()
        http = httpx.post(f"{served.url}/v2/models/cancer/infer", json=_v2_json(rows, "h-1"))
        assert http.status_code == 200, http.text
        metrics = httpx.get(f"{served.url}/metrics").text
    assert health == {
        "live": True,
        "ready": True,
        "model_ready": True,
        "version_ready": True,
        "server": "keel",
    }
    assert meta == {
        "name": http_meta["name"],
        "versions": http_meta["versions"],
        "platform": http_meta["platform"],
        "inputs": [[t["name"], t["datatype"], t["shape"]] for t in http_meta["inputs"]],
        "outputs": [[t["name"], t["datatype"], t["shape"]] for t in http_meta["outputs"]],
    }
    http_output = http.json()["outputs"][0]
    assert http_output["data"] == expected
    for answer in (by_matrix, by_column, pinned):
        assert answer["predict"] == expected
        assert (answer["datatype"], answer["shape"], answer["version"]) == (
            http_output["datatype"],
            http_output["shape"],
            "1",
        )
    assert by_matrix["id"] == "g-1"
    assert pinned["id"]  # a request without an id gets one, as over HTTP
    counted = 'keel_requests_total{{deployment="cancer",protocol="grpc",route="{}",status="200",version="1"}} {}'
    assert counted.format("primary", "2.0") in metrics
    assert counted.format("pinned", "1.0") in metrics


def _shadow_outcomes(url: str) -> dict[str, float]:
    metrics = httpx.get(f"{url}/metrics").text
    found = re.findall(
        r'keel_shadow_predictions_total\{deployment="[^"]+",outcome="(\w+)"\} (\S+)', metrics
    )
    return {outcome: float(count) for outcome, count in found}


def test_grpc_follows_the_canary_split_of_http_shadows_and_logs_a_row_per_answer(
    registered, tmp_path
):
    from keel.predictions import PredictionReader
    from keel.serving import Deployments, build_spec

    spec = build_spec("cancer@champion", canary=["cancer/2:30"], shadow="cancer/2")
    Deployments().create("cancer-live", spec)
    row = registered.features.iloc[:1]
    ids = [f"g-{n}" for n in range(60)]
    calls = [
        {"call": "infer", "model": "cancer-live", "rows": row.to_numpy().tolist(), "id": i}
        for i in ids
    ]
    with keel_serve(registered.settings, "cancer-live", tmp_path / "serve.log") as served:
        answers = triton(served.address, calls, tmp_path)
        answered = {a["id"]: a["version"] for a in answers}
        assert list(answered) == ids
        for request_id, answer in zip(ids, answers, strict=True):
            model = registered.models[int(answer["version"])]
            assert answer["predict"] == model.predict(row).tolist()
            # the same request id routes the same way over HTTP
            http = httpx.post(
                f"{served.url}/v2/models/cancer-live/infer", json=_v2_json(row, request_id)
            )
            assert http.json()["model_version"] == answer["version"]
        assert set(answered.values()) == {"1", "2"}
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'protocol="grpc",route="canary",status="200",version="2"' in metrics
        deadline = time.monotonic() + 60  # every request's shadow has an outcome
        while sum((outcomes := _shadow_outcomes(served.url)).values()) < 2 * len(ids):
            assert time.monotonic() < deadline, outcomes
            time.sleep(0.1)
    assert outcomes.get("ok", 0) > 0 and "failed" not in outcomes, outcomes
    # stopped: the server flushed its prediction log
    table = PredictionReader(str(registered.settings.artifacts_url)).read(
        "cancer-live", columns=["request_id", "version", "route"]
    )
    logged = collections.defaultdict(list)
    for record in table.to_pylist():
        logged[record["request_id"]].append((str(record["version"]), record["route"]))
    for request_id, version in answered.items():
        route = "primary" if version == "1" else "canary"
        served_rows = [r for r in logged[request_id] if r[1] != "shadow"]
        # one row from gRPC and one from HTTP, routed alike; shadow rows from version 2
        assert served_rows == [(version, route), (version, route)], request_id
        assert {r for r in logged[request_id] if r[1] == "shadow"} <= {("2", "shadow")}
    shadow_rows = sum(r[1] == "shadow" for rows in logged.values() for r in rows)
    assert shadow_rows == outcomes["ok"]


def _request(rows: Any, **overrides: Any) -> Any:
    """A well-formed ModelInferRequest of ``rows`` (one FP64 [N, 30] tensor, raw), then changed."""
    from keel.serving.grpc import grpc_predict_v2_pb2 as pb

    array = rows.to_numpy(dtype=np.float64)
    request = pb.ModelInferRequest(model_name="cancer", id="ok")
    tensor = request.inputs.add(name="x", datatype="FP64", shape=list(array.shape))
    request.raw_input_contents.append(array.astype("<f8").tobytes())
    for field, value in overrides.items():
        if field == "tensor":
            value(tensor, request)
        else:
            setattr(request, field, value)
    return request


def _typed(values: list[float], field: str = "fp64_contents", datatype: str = "FP64") -> Callable:
    def change(tensor: Any, request: Any) -> None:
        del request.raw_input_contents[:]
        tensor.datatype = datatype
        tensor.shape[:] = [1, 30]
        getattr(tensor.contents, field).extend(values)

    return change


def _set(**fields: Any) -> Callable:
    def change(tensor: Any, request: Any) -> None:
        for name, value in fields.items():
            if name == "shape":
                tensor.shape[:] = value
            elif name == "raw":
                del request.raw_input_contents[:]
                request.raw_input_contents.extend(value)
            else:
                setattr(tensor, name, value)

    return change


def test_malformed_requests_get_invalid_argument_and_the_next_request_is_answered(
    registered, tmp_path
):
    rows = registered.features.iloc[:2]
    row = rows.iloc[0].tolist()
    expected = registered.models[1].predict(rows).tolist()
    raw_one_row = np.asarray([row], dtype="<f8").tobytes()
    cases: list[tuple[str, Any, str, str]] = [
        (
            "no inputs",
            _request(rows, tensor=lambda tensor, request: request.ClearField("inputs")),
            "INVALID_ARGUMENT",
            "needs inputs",
        ),
        (
            "datatype",
            _request(rows, tensor=_set(datatype="FLOAT")),
            "INVALID_ARGUMENT",
            "datatype 'FLOAT'; expected one of",
        ),
        (
            "no name",
            _request(rows, tensor=_set(name="")),
            "INVALID_ARGUMENT",
            r"inputs\[0\] needs a string name",
        ),
        (
            "negative shape",
            _request(rows, tensor=_set(shape=[-2, 30])),
            "INVALID_ARGUMENT",
            "shape: a list of non-negative integers",
        ),
        (
            "shape vs bytes",
            _request(rows, tensor=_set(shape=[3, 30])),
            "INVALID_ARGUMENT",
            r"shape \[3, 30\] of FP64 needs 720 bytes, got 480",
        ),
        (
            "wrong width",
            _request(rows, tensor=_set(shape=[4, 15])),
            "INVALID_ARGUMENT",
            r"has shape \[4, 15\]; expected one input per column",
        ),
        (
            "raw count",
            _request(rows, tensor=_set(raw=[raw_one_row, raw_one_row])),
            "INVALID_ARGUMENT",
            "raw_input_contents has 2 buffers for 1 inputs",
        ),
        (
            "typed count",
            _request(rows, tensor=_typed(row[:29])),
            "INVALID_ARGUMENT",
            r"shape \[1, 30\] holds 30 values but data has 29",
        ),
        (
            "typed field",
            _request(rows, tensor=_typed(row, field="fp32_contents")),
            "INVALID_ARGUMENT",
            "its values go in contents.fp64_contents, got contents.fp32_contents",
        ),
        (
            "FP16 typed",
            _request(rows, tensor=_typed(row, datatype="FP16")),
            "INVALID_ARGUMENT",
            "FP16, which has no contents field; send it in raw_input_contents",
        ),
        (
            "BYTES shorter than its shape",
            _request(rows, tensor=_set(datatype="BYTES", shape=[2], raw=[b"\x09\x00\x00\x00ab"])),
            "INVALID_ARGUMENT",
            r"2 BYTES elements, which take at least 8 bytes .* but its binary data has 6 bytes",
        ),
        (
            "BYTES length past the end",
            _request(rows, tensor=_set(datatype="BYTES", shape=[1], raw=[b"\x09\x00\x00\x00ab"])),
            "INVALID_ARGUMENT",
            "binary BYTES data ends early",
        ),
        (
            "not the signature",
            _request(
                rows,
                tensor=_set(
                    datatype="BYTES",
                    shape=[1, 30],
                    raw=[b"".join(b"\x01\x00\x00\x00a" for _ in range(30))],
                ),
            ),
            "INVALID_ARGUMENT",
            "column 'mean radius'",
        ),
        (
            "request id",
            _request(rows, id="\x01bad"),
            "INVALID_ARGUMENT",
            "a request id must be 1 to 256 printable ASCII characters",
        ),
        (
            "too many elements",
            _request(rows, tensor=_set(shape=[1 << 40, 30])),
            "INVALID_ARGUMENT",
            "over the limit of",
        ),
        (
            "unknown model",
            _request(rows, model_name="nope"),
            "NOT_FOUND",
            "unknown model 'nope'; this server serves 'cancer'",
        ),
        (
            "unknown version",
            _request(rows, model_version="7"),
            "NOT_FOUND",
            r"version 7 of 'cancer' is not served here; served: \[1\]",
        ),
    ]
    with keel_serve(registered.settings, TARGET, tmp_path / "serve.log") as served:
        with grpc.insecure_channel(served.address) as channel:
            stub = _keel_stub(channel)
            garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            calls = [(label, lambda r=r: stub.ModelInfer(r), c, m) for label, r, c, m in cases]
            calls.append(
                (
                    "not protobuf",
                    lambda: garbage(b"\xff\xff\xff\xff not a message"),
                    "INVALID_ARGUMENT",
                    "not a valid inference.ModelInferRequest message",
                )
            )
            for label, call, code, match in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == getattr(grpc.StatusCode, code), (
                    label,
                    refused.value.details(),
                )
                assert re.search(match, refused.value.details()), (label, refused.value.details())
                # the server keeps serving, on the same channel
                answer = stub.ModelInfer(_request(rows))
                got = np.frombuffer(answer.raw_output_contents[0], dtype="<i8").tolist()
                assert got == expected, label
            typed = stub.ModelInfer(_request(rows.iloc[:1], tensor=_typed(row)))
            assert np.frombuffer(typed.raw_output_contents[0], dtype="<i8").tolist() == expected[:1]
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'keel_errors_total{deployment="cancer",status="400"}' in metrics
        assert 'keel_errors_total{deployment="cancer",status="404"} 2.0' in metrics
        assert 'status="500"' not in metrics
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_grpc_needs_a_predict_token_when_serving_with_auth(registered, tmp_path):
    from keel.errors import Conflict
    from keel.governance.client import IdentityClient
    from keel.serving.grpc import grpc_predict_v2_pb2 as pb

    identity = IdentityClient()
    try:
        identity.create_user("alice")
    except Conflict:
        pass
    predict = identity.create_token("alice", scopes=["predict"])["token"]
    feedback_only = identity.create_token("alice", scopes=["feedback"])["token"]
    rows = registered.features.iloc[:3]
    with (
        keel_serve(registered.settings, TARGET, tmp_path / "serve.log", "--auth") as served,
        grpc.insecure_channel(served.address) as channel,
    ):
        stub = _keel_stub(channel)
        # health stays open
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        for metadata, code, message in (
            ((), "UNAUTHENTICATED", "needs a token"),
            ((("authorization", "Bearer keel_" + "x" * 43),), "UNAUTHENTICATED", "token"),
            ((("authorization", f"Bearer {feedback_only}"),), "PERMISSION_DENIED", "predict"),
        ):
            for call in (
                lambda m=metadata: stub.ModelInfer(_request(rows), metadata=m),
                lambda m=metadata: stub.ModelMetadata(
                    pb.ModelMetadataRequest(name="cancer"), metadata=m
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == getattr(grpc.StatusCode, code)
                assert message in refused.value.details()
                assert predict not in refused.value.details()
        answer = stub.ModelInfer(_request(rows), metadata=(("authorization", f"Bearer {predict}"),))
        got = np.frombuffer(answer.raw_output_contents[0], dtype="<i8").tolist()
        assert got == registered.models[1].predict(rows).tolist()
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'keel_errors_total{deployment="cancer",status="401"} 4.0' in metrics
        assert 'keel_errors_total{deployment="cancer",status="403"} 2.0' in metrics


def test_grpc_port_refusals_are_one_line_before_any_model_loads(registered, run_keel):
    settings = registered.settings
    port = free_port()
    several = run_keel(
        "serve",
        TARGET,
        "--port",
        str(port),
        "--workers",
        "2",
        "--grpc-port",
        str(free_port()),
        settings=settings,
    )
    assert several.returncode != 0
    assert "--grpc-port serves from one process, beside its HTTP server; it needs --workers 1" in (
        several.stdout + several.stderr
    )
    same = run_keel(
        "serve", TARGET, "--port", str(port), "--grpc-port", str(port), settings=settings
    )
    assert same.returncode != 0
    assert f"other than --port {port}, got {port}" in same.stdout + same.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        refused = run_keel(
            "serve", TARGET, "--port", str(port), "--grpc-port", str(busy), settings=settings
        )
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert f"--grpc-port {busy}: cannot listen on 127.0.0.1" in output
    assert "Traceback" not in output


KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"
KSERVE_GRPC_CLIENT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

address, model = sys.argv[1], sys.argv[2]
rows, columns = np.array(json.loads(sys.argv[3])), json.loads(sys.argv[4])

async def main():
    client = InferenceGRPCClient(address, timeout=30)
    out = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    # lists of values: KServe sends them as typed contents (fp64_contents)
    by_column = [
        InferInput(name=c, shape=[len(rows)], datatype="FP64", data=rows[:, j].tolist())
        for j, c in enumerate(columns)
    ]
    answer = await client.infer(InferRequest(model_name=model, infer_inputs=by_column, request_id="k-1"))
    out["typed"], out["id"] = answer.outputs[0].as_numpy().tolist(), answer.id
    tensor = InferInput(name="x", shape=list(rows.shape), datatype="FP64")
    tensor.set_data_from_numpy(rows, binary_data=True)  # raw_input_contents
    answer = await client.infer(InferRequest(model_name=model, infer_inputs=[tensor]))
    out["raw"] = answer.outputs[0].as_numpy().tolist()
    await client.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.skipif(
    not KSERVE_PYTHON.exists(),
    reason="KServe's client lives in .venv-kserve; `make test` (or `make .venv-kserve/.installed`) builds it",
)
def test_kserve_grpc_client_sends_typed_and_raw_contents(registered, tmp_path):
    rows = registered.features.iloc[:6]
    with keel_serve(registered.settings, TARGET, tmp_path / "serve.log") as served:
        done = subprocess.run(
            [
                str(KSERVE_PYTHON),
                "-c",
                KSERVE_GRPC_CLIENT,
                served.address,
                "cancer",
                json.dumps(rows.to_numpy().tolist()),
                json.dumps(list(rows.columns)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    expected = registered.models[1].predict(rows).tolist()
    assert out == {
        "live": True,
        "ready": True,
        "model_ready": True,
        "typed": expected,
        "id": "k-1",
        "raw": expected,
    }
