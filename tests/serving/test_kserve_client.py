"""KServe's own Python client against a real Keel server: v2 (JSON and binary) and v1.

KServe pins pandas < 3, which clashes with Keel's development environment, so
its client runs in a virtualenv of its own (``make test`` builds
``.venv-kserve``) as a subprocess talking HTTP to the server this test starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = (
    REPO / ".venv-kserve" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
)

CLIENT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, model, rows = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
columns = json.loads(sys.argv[4])

async def main():
    out = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as v2:
        out["live"] = await v2.is_server_live(url)
        out["ready"] = await v2.is_server_ready(url)
        out["model_ready"] = await v2.is_model_ready(url, model)
        by_column = [
            InferInput(name=c, shape=[len(rows)], datatype="FP64", data=rows[:, j].tolist())
            for j, c in enumerate(columns)
        ]
        answer = await v2.infer(url, InferRequest(model_name=model, infer_inputs=by_column, request_id="k-1"), model_name=model)
        out["v2_json"] = answer.outputs[0].as_numpy().tolist()
        out["v2_id"] = answer.id
        tensor = InferInput(name="x", shape=list(rows.shape), datatype="FP64")
        tensor.set_data_from_numpy(rows, binary_data=True)
        answer = await v2.infer(url, InferRequest(model_name=model, infer_inputs=[tensor]), model_name=model)
        out["v2_binary"] = answer.outputs[0].as_numpy().tolist()
    async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as v1:
        out["v1_ready"] = await v1.is_model_ready(url, model)
        answer = await v1.infer(url, {"instances": rows.tolist()}, model_name=model)
        out["v1"] = answer["predictions"]
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.skipif(
    not KSERVE_PYTHON.exists(),
    reason="KServe's client lives in .venv-kserve; `make test` (or `make .venv-kserve/.installed`) builds it",
)
def test_kserve_rest_client_speaks_v2_json_binary_and_v1(registered, serve):
    server = serve("models:/cancer@champion", log_predictions=False)
    rows = registered.features.iloc[:6]
    done = subprocess.run(
        [
            str(KSERVE_PYTHON),
            "-c",
            CLIENT,
            server.url,
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
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected = registered.models[1].predict(rows).tolist()
    assert got["live"] and got["ready"] and got["model_ready"] and got["v1_ready"]
    assert got["v2_id"] == "k-1"
    np.testing.assert_array_equal(got["v2_json"], expected)
    np.testing.assert_array_equal(got["v2_binary"], expected)
    assert got["v1"] == expected
