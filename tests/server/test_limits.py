"""Request body limits of ``keel server``, on a real server process.

JSON routes take at most ``max_request_bytes`` (``KEEL_MAX_REQUEST_BYTES``); a
body over it gets 413 whether its ``Content-Length`` says so or it arrives
chunked, and the server goes on serving. The blob routes keep their own limit,
``max_upload_bytes``. The default has to hold the largest metrics request the
API allows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from _support.control_plane import ControlPlane, start_control_plane
from keel.artifacts import hash_bytes
from keel.config import Settings, load_settings
from keel.errors import TooLarge
from keel.server.routes.tracking import MAX_POINTS
from keel.tracking.entities import Metric
from keel.tracking.validation import MAX_KEY_LENGTH, MAX_PARAM_LENGTH, MAX_TAG_LENGTH
from keel.transport.http import ERROR_CLASS_HEADER, HttpTransport

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024
_OVER = f"is over the server's limit of {LIMIT} bytes \\(KEEL_MAX_REQUEST_BYTES\\); send smaller"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A server that takes JSON bodies of at most 64 KiB."""
    home = tmp_path_factory.mktemp("limited-server")
    with start_control_plane(home, extra_env={"KEEL_MAX_REQUEST_BYTES": str(LIMIT)}) as started:
        yield started


def _experiment(name: str) -> dict[str, str]:
    return {"name": name}


def test_a_body_whose_length_is_over_the_limit_gets_413_and_the_server_goes_on(
    plane: ControlPlane,
) -> None:
    body = json.dumps({"name": "x" * (2 * LIMIT)}).encode()
    with plane.http() as http:
        refused = http.post(
            "/experiments", content=body, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 413, refused.text
        assert refused.headers[ERROR_CLASS_HEADER] == "TooLarge"
        assert refused.json()["error"].startswith(f"request body of {len(body)} bytes is over")
        # the same connection, then a new one, are served as usual
        assert http.post("/experiments", json=_experiment("after-declared")).status_code == 201
    with plane.http() as http:
        assert http.get("/experiments").status_code == 200


def test_a_chunked_body_that_grows_past_the_limit_gets_413_and_the_server_goes_on(
    plane: ControlPlane,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(8):  # 8 x 16 KiB: twice the limit, with no Content-Length
            yield b"y" * (16 * 1024)
        yield b'"}'

    with plane.http() as http:
        refused = http.post(
            "/experiments", content=chunks(), headers={"content-type": "application/json"}
        )
        assert refused.status_code == 413, refused.text
        message = refused.json()["error"]
        assert message.startswith("request body of at least ")
        assert f"over the server's limit of {LIMIT} bytes" in message
        assert http.post("/experiments", json=_experiment("after-chunked")).status_code == 201
        found = http.get("/experiments/by-name", params={"name": "after-chunked"})
    assert found.status_code == 200 and found.json()["name"] == "after-chunked"


def test_a_body_just_under_the_limit_is_served(plane: ControlPlane) -> None:
    with plane.http() as http:
        experiment = http.post("/experiments", json=_experiment("under-limit")).json()
        run = http.post("/runs", json={"experiment_id": experiment}).json()["id"]
        tags = {f"t{i:03d}": "v" * 500 for i in range(127)}
        body = json.dumps({"tags": tags}).encode()
        assert LIMIT - 2048 < len(body) <= LIMIT
        answer = http.post(
            f"/runs/{run}/tags", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code < 300, answer.text
        assert http.get(f"/runs/{run}").json()["tags"] == tags


def test_a_refused_keyed_post_claims_no_idempotency_key(plane: ControlPlane) -> None:
    key = {"idempotency-key": uuid.uuid4().hex}
    with plane.http() as http:
        big = http.post("/experiments", json=_experiment("k" * (2 * LIMIT)), headers=key)
        assert big.status_code == 413
        # the key is free: the retry with a smaller body runs, it is not a replay or a clash
        small = http.post("/experiments", json=_experiment("keyed-after-413"), headers=key)
    assert small.status_code == 201, small.text
    assert "idempotent-replayed" not in small.headers


def test_blob_uploads_keep_their_own_limit(plane: ControlPlane) -> None:
    data = bytes(range(256)) * (4 * LIMIT // 256)  # four times the JSON limit
    digest = hash_bytes(data)
    with plane.http() as http:
        stored = http.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)
        assert stored.status_code == 201, stored.text
        assert http.get(f"/blobs/objects/{digest[:2]}/{digest[2:]}").content == data


def test_the_client_raises_too_large_with_the_servers_advice(
    plane: ControlPlane, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path, server_url=plane.url, token=plane.admin_token)
    client = keel.Client(transport=HttpTransport(settings))
    run = client.create_run(client.create_experiment("too-many-points"), capture=False).id
    points = [Metric("loss", 0.5, step, 1_700_000_000_000 + step) for step in range(5_000)]
    with pytest.raises(TooLarge, match=_OVER):
        client.log_batch(run, points)
    client.log_batch(run, points[:100])
    assert client.count_metric_points(run) == 100


def test_the_largest_metrics_request_the_api_allows_fits_under_the_default_limit(
    tmp_path: Path,
) -> None:
    # Every field at its widest, encoded as the client's httpx encodes JSON.
    columns = {
        "keys": ["k" * MAX_KEY_LENGTH] * MAX_POINTS,
        "values": [-1.2345678901234567e-300] * MAX_POINTS,
        "steps": [-(2**63)] * MAX_POINTS,
        "timestamps": [-(2**63)] * MAX_POINTS,
    }
    batch = {
        "metrics": columns,
        "params": {f"{i:0{MAX_KEY_LENGTH}d}": "p" * MAX_PARAM_LENGTH for i in range(1_000)},
        "tags": {f"{i:0{MAX_KEY_LENGTH}d}": "t" * MAX_TAG_LENGTH for i in range(1_000)},
    }
    rows = {**columns, "run_ids": ["r" * 32] * MAX_POINTS}
    default = Settings(home=tmp_path).max_request_bytes
    for body in (batch, rows):
        size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        assert size * 1.3 < default, f"{size} bytes leaves too little room under {default}"
