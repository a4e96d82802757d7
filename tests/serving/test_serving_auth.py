"""`keel serve --auth`: tokens with the predict and feedback scopes, on real server processes.

Every server here is the installed ``keel serve`` command on a free port. Tokens
are real: made in the same store the server reads, or through a real ``keel
server`` for the control-plane case. What a refused request may not do (log a
prediction, store a label) is read back from the artifact root after the
server has stopped and flushed its logs.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.cli import keel_command, keel_environ
from _support.network import free_port

pytestmark = pytest.mark.slow

TARGET = "models:/cancer@champion"
INFER = "/v2/models/cancer/infer"
FEEDBACK = "/v2/models/cancer/feedback"
#: The cache bound of keel.serving.auth plus the control plane's own, with room to spare.
REVOCATION_BOUND_SECONDS = 15.0


@contextmanager
def keel_serve(env: dict[str, str], *extra: str, port: int | None = None) -> Iterator[str]:
    """``keel serve TARGET --auth …`` until the block ends (SIGTERM: the logs are flushed)."""
    port = port or free_port()
    proc = subprocess.Popen(
        keel_command("serve", TARGET, "--port", str(port), *extra),
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
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _v2(frame: Any, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ],
    }


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _basic(token: str, user: str = "anyone") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def _token(user: str, *scopes: str) -> dict[str, Any]:
    """A real token of ``user`` (created if absent) in this process's store."""
    from keel.errors import Conflict
    from keel.governance.client import IdentityClient

    identity = IdentityClient()
    try:
        identity.create_user(user)
    except Conflict:
        pass
    return identity.create_token(user, scopes=list(scopes))


def _labels(settings: Any) -> list[tuple[str, Any]]:
    from keel.predictions import PredictionReader

    rows = PredictionReader(settings.artifacts_url).feedback("cancer").to_pylist()
    return sorted((r["request_id"], r["label_num"]) for r in rows)


def _predicted_ids(settings: Any) -> list[str]:
    from keel.predictions import PredictionReader

    table = PredictionReader(settings.artifacts_url).read("cancer", columns=["request_id"])
    return sorted(set(table.column("request_id").to_pylist()))


def test_no_token_or_a_bad_one_gets_401_and_nothing_is_stored_but_health_stays_open(registered):
    settings = registered.settings
    rows = registered.features.head(2)
    valid = _token("alice", "predict", "feedback")["token"]
    label = {"ids": ["r-bad"], "labels": [1]}
    bad_headers: list[dict[str, str]] = [
        {},
        _bearer("keel_" + "x" * 43),  # well formed, unknown
        _bearer("not-a-keel-token"),
        _basic("keel_" + "y" * 43),
        {"authorization": "Basic !!!"},
        {"authorization": f"Token {valid}"},  # a good secret under a scheme nobody speaks
    ]
    with keel_serve(keel_environ(settings), "--auth") as url, httpx.Client(base_url=url) as http:
        for n, headers in enumerate(bad_headers):
            answers = [
                http.post(INFER, json=_v2(rows, f"r-bad-{n}"), headers=headers),
                http.post("/invocations", json={"dataframe_split": {}}, headers=headers),
                http.post("/v1/models/cancer:predict", json={"instances": []}, headers=headers),
                http.get("/v2/models/cancer", headers=headers),
                http.post(FEEDBACK, json=label, headers=headers),
            ]
            assert [a.status_code for a in answers] == [401] * 5, [a.text for a in answers]
            for answer in answers:
                assert set(answer.json()) == {"error"}
                assert valid not in answer.text
        assert "needs a token" in http.post(FEEDBACK, json=label).json()["error"]
        assert "unsupported authorization scheme 'token'" in answers[0].json()["error"]

        # health, readiness and metrics stay open; the refusals are counted
        for path in ("/health", "/ping", "/v2/health/live", "/v2/health/ready", "/v2"):
            assert http.get(path).status_code == 200, path
        assert http.get("/v2/models/cancer/ready").status_code == 200
        assert http.get("/v1/models/cancer").status_code == 200
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        refusals = 5 * len(bad_headers) + 1
        assert f'keel_errors_total{{deployment="cancer",status="401"}} {refusals}.0' in metrics.text
    # Stopped: every queued prediction is on disk, so absence means nothing was logged.
    assert _labels(settings) == []
    assert _predicted_ids(settings) == []
    assert not list((Path(settings.artifacts_url) / "feedback").rglob("*.parquet"))


def test_scopes_decide_predict_and_feedback(registered):
    settings = registered.settings
    rows = registered.features.head(3)
    predict_only = _token("alice", "predict")["token"]
    feedback_only = _token("bob", "feedback")["token"]
    with keel_serve(keel_environ(settings), "--auth") as url, httpx.Client(base_url=url) as http:
        ok = http.post(INFER, json=_v2(rows, "r-1"), headers=_bearer(predict_only))
        assert ok.status_code == 200, ok.text
        by_basic = http.post(INFER, json=_v2(rows, "r-2"), headers=_basic(predict_only, "alice"))
        assert by_basic.status_code == 200, by_basic.text
        meta = http.get("/v2/models/cancer", headers=_bearer(predict_only))
        assert meta.status_code == 200

        refused = http.post(
            FEEDBACK, json={"ids": ["r-1"], "labels": [1]}, headers=_bearer(predict_only)
        )
        assert refused.status_code == 403
        assert "needs scope 'feedback'" in refused.json()["error"]
        assert "alice" in refused.json()["error"]

        stored = http.post(
            FEEDBACK, json={"ids": ["r-2"], "labels": [0]}, headers=_bearer(feedback_only)
        )
        assert stored.status_code == 200, stored.text
        assert stored.json() == {"accepted": 1}
        no_predict = http.post(INFER, json=_v2(rows, "r-3"), headers=_basic(feedback_only))
        assert no_predict.status_code == 403
        assert "needs scope 'predict'" in no_predict.json()["error"]
    assert _labels(settings) == [("r-2", 0.0)]
    assert _predicted_ids(settings) == ["r-1", "r-2"]


def test_a_revoked_token_stops_working_within_the_cache_time(registered):
    from keel.governance.client import IdentityClient

    rows = registered.features.head(1)
    made = _token("carol", "predict")
    headers = _bearer(made["token"])
    env = keel_environ(registered.settings)
    with keel_serve(env, "--auth") as url, httpx.Client(base_url=url) as http:
        assert http.post(INFER, json=_v2(rows, "r-0"), headers=headers).status_code == 200
        IdentityClient().revoke_token(made["id"])
        deadline = time.monotonic() + REVOCATION_BOUND_SECONDS
        while True:
            answer = http.post(INFER, json=_v2(rows, "r-1"), headers=headers)
            if answer.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status_code == 401, "the revoked token kept working past the bound"
        assert f"token {made['id']} was revoked" in answer.json()["error"]


def test_metrics_port_serves_metrics_apart_from_the_models(registered):
    metrics_port = free_port()
    env = keel_environ(registered.settings)
    extra = ("--auth", "--no-log", "--metrics-port", str(metrics_port))
    with keel_serve(env, *extra) as url, httpx.Client(base_url=url) as http:
        assert http.post(INFER, json={}).status_code == 401
        assert http.get("/metrics").status_code == 404
        apart = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert apart.status_code == 200
        assert 'keel_errors_total{deployment="cancer",status="401"} 1.0' in apart.text


def test_metrics_port_is_refused_with_several_workers(registered, run_keel):
    args = ("serve", TARGET, "--port", str(free_port()), "--workers", "2", "--metrics-port", "9")
    refused = run_keel(*args, settings=registered.settings)
    assert refused.returncode != 0
    assert "--metrics-port serves one process's metrics; it needs --workers 1" in (
        refused.stdout + refused.stderr
    )


def test_auth_carries_into_every_worker(registered):
    rows = registered.features.head(1)
    token = _token("dave", "predict")["token"]
    env = keel_environ(registered.settings)
    with (
        keel_serve(env, "--auth", "--no-log", "--workers", "2") as url,
        httpx.Client(base_url=url) as http,
    ):
        # new connections, so both workers are likely to answer some
        for n in range(8):
            anonymous = httpx.post(f"{url}{INFER}", json=_v2(rows, f"a-{n}"))
            assert anonymous.status_code == 401
        assert http.post(INFER, json=_v2(rows, "r-0"), headers=_bearer(token)).is_success


def test_tokens_are_checked_by_the_control_plane(registered, tmp_path):
    """``keel serve --auth`` with KEEL_SERVER_URL: the server's tokens, not the local table."""
    from _support.control_plane import start_control_plane

    settings = registered.settings
    rows = registered.features.head(2)
    # The control plane runs on the store and artifacts the model was registered in.
    with start_control_plane(
        tmp_path / "cp", store_url=settings.store_url, artifacts_url=settings.artifacts_url
    ) as cp:
        serving_token = cp.make_user("serving", "viewer", scopes=["api"])
        predictor = cp.make_user("paula", scopes=["predict"])
        labeller = cp.make_user("lena", scopes=["feedback"])
        # the server holds the metadata; the home only takes this process's prediction logs
        env = cp.environ(serving_token, KEEL_HOME=str(settings.home))
        with keel_serve(env, "--auth") as url, httpx.Client(base_url=url) as http:
            assert http.post(FEEDBACK, json={"ids": ["x"], "labels": [1]}).status_code == 401
            unknown = http.post(INFER, json=_v2(rows, "r-0"), headers=_bearer("keel_" + "z" * 43))
            assert unknown.status_code == 401
            assert "unknown token" in unknown.json()["error"]

            ok = http.post(INFER, json=_v2(rows, "r-1"), headers=_bearer(predictor))
            assert ok.status_code == 200, ok.text
            denied = http.post(
                FEEDBACK, json={"ids": ["r-1"], "labels": [1]}, headers=_basic(predictor)
            )
            assert denied.status_code == 403
            assert "'paula'" in denied.json()["error"]
            labelled = http.post(
                FEEDBACK, json={"ids": ["r-1"], "labels": [1]}, headers=_bearer(labeller)
            )
            assert labelled.status_code == 200, labelled.text

            # revoked at the control plane: refused here within both caches' time
            with cp.http() as admin:
                token_id = next(
                    t["id"] for t in admin.get("/tokens", params={"user": "paula"}).json()
                )
                assert admin.delete(f"/tokens/{token_id}").status_code == 200
            deadline = time.monotonic() + REVOCATION_BOUND_SECONDS
            while True:
                answer = http.post(INFER, json=_v2(rows, "r-2"), headers=_bearer(predictor))
                if answer.status_code != 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert answer.status_code == 401, answer.text
    assert _labels(settings) == [("r-1", 1.0)]
