"""Monitor runs, canary measurements, reference profiles and dataset lookups through any client.

Each test runs on SQLite, PostgreSQL and through a real ``keel server`` (``any_env``).
Through the server, the prediction logs are written under the server's artifact
root (its loopback S3 prefix), the layout the serving processes share with it:
the monitor and the canary measurement run on the server, over those logs. That
root outlives a test, so each test's deployment has a name of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from _support.monitoring import HOUR, T0, Logs, features
from keel.config import Settings
from keel.errors import InvalidInput, NotFound
from keel.serving import Deployments, build_spec


class Constant:
    """A model saved without pickle that answers 0 for every row."""

    def predict(self, data: Any) -> np.ndarray:
        return np.zeros(len(data))

    def keel_save(self, path: Path) -> None:
        (path / "marker").write_text("constant")

    @classmethod
    def keel_load(cls, path: Path) -> Constant:
        return cls()


def _logs_root(settings: Settings, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Where serving processes log for this client: its own root, or the server's."""
    if settings.server_url:
        server = request.getfixturevalue("control_plane")
        return server.artifacts_url, request.getfixturevalue("s3_server")
    return str(settings.artifacts_url), settings.s3_endpoint_url


def _register(train: pd.DataFrame, versions: int = 1) -> None:
    """``churn`` versions 1..n, registered through the client (no reference of their own)."""
    for _ in range(versions):
        with keel.start_run():
            info = keel.log_model(Constant(), "model", input_example=train.head(3))
        keel.register_model(info.uri, "churn")


@dataclass
class Served:
    """A deployment serving ``churn`` v1, and a writer of its prediction logs."""

    deployment: str
    logs: Logs


@pytest.fixture
def churn(any_env: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Served:
    """``churn`` v1 and v2, a new deployment serving v1, and a writer of its prediction logs."""
    _register(features(50, seed=0), versions=2)
    deployment = f"churn-{uuid.uuid4().hex[:8]}"
    Deployments().create(deployment, build_spec("churn/1"))
    root, endpoint = _logs_root(any_env, request)
    return Served(deployment, Logs(root, tmp_path / "spill", endpoint=endpoint))


def test_a_monitor_run_compares_the_logs_where_the_store_is_with_a_reference_set_here(churn):
    from keel.monitoring import (
        get_reference,
        monitor_history,
        reference_info,
        run_monitor,
        set_reference,
    )

    train = features(2_000, seed=1)
    set_reference("churn", 1, train, predict=False)
    info = reference_info("churn", 1)
    assert info is not None and info["source"] == "set" and info["rows"] == 2_000
    assert info["created_by"] == keel.Client().transport.user  # the token's user on a server
    reference = get_reference("churn", 1)
    assert reference is not None
    assert {"input.age", "input.income", "input.plan"} <= set(reference.columns)

    churn.logs.write(churn.deployment, features(600, seed=2, shift=2.0), T0)
    result = run_monitor(churn.deployment, window="1h", end=T0 + HOUR)
    assert result.rows == 600
    assert result.versions["churn/1"]["reference"] is True
    assert "input.age" in result.drifted_columns
    assert result.share_drifted is not None and result.share_drifted > 0
    assert (result.window_start, result.window_end) == (T0, T0 + HOUR)
    [stored] = monitor_history(churn.deployment)
    assert (stored.id, stored.rows, stored.drifted_columns) == (
        result.id,
        600,
        result.drifted_columns,
    )
    report = result.report()
    assert report is not None and report.columns["input.age"].drifted

    # A version without a reference is not compared, and the alert names the command.
    assert reference_info("churn", 2) is None and get_reference("churn", 2) is None
    with pytest.raises(NotFound):
        reference_info("churn", 9)


def test_a_monitor_over_an_unknown_deployment_or_a_bad_window_is_refused_as_locally(churn):
    from keel.monitoring import run_monitor

    with pytest.raises(NotFound, match="no deployment named 'gone'"):
        run_monitor("gone", window="1h")
    with pytest.raises(InvalidInput, match="deployment name"):
        run_monitor("a/b", window="1h")
    with pytest.raises(InvalidInput, match="window"):
        run_monitor(churn.deployment, window="soon")


def test_a_canary_is_measured_from_the_logs_where_the_store_is(churn):
    from keel.automation import measure_canary
    from keel.predictions import ERRORS, PredictionLogger

    start = T0
    with (
        PredictionLogger(
            churn.logs.root, s3_endpoint_url=churn.logs.endpoint, flush_interval=0.05
        ) as log,
        PredictionLogger(
            churn.logs.root,
            s3_endpoint_url=churn.logs.endpoint,
            dataset=ERRORS,
            flush_interval=0.05,
        ) as errors,
    ):
        for version, route, count, latency in ((1, "primary", 40, 10.0), (2, "canary", 25, 30.0)):
            log.log(
                churn.deployment,
                {
                    "request_id": [f"{route}-{n}" for n in range(count)],
                    "time": [start + n for n in range(count)],
                    "model": ["churn"] * count,
                    "version": [version] * count,
                    "route": [route] * count,
                    "latency_ms": [latency] * count,
                    "row": [0] * count,
                    "output.prediction": np.full(count, float(version)),
                },
                count,
            )
        errors.log(
            churn.deployment,
            {
                "request_id": ["failed-0", "failed-1"],
                "time": [start, start + 1],
                "model": ["churn", "churn"],
                "version": [2, 2],
                "route": ["canary", "canary"],
                "latency_ms": [1.0, 1.0],
                "row": [0, 0],
                "status": [500, 500],
                "error": ["boom", "boom"],
            },
            2,
        )
    metrics = measure_canary(churn.deployment, 2, start, client=keel.Client())
    assert (metrics.canary_requests, metrics.primary_requests) == (25, 40)
    assert metrics.canary_errors == 2
    assert metrics.canary_p99_ms == pytest.approx(30.0)
    assert metrics.primary_p99_ms == pytest.approx(10.0)
    assert metrics.prediction_drift == pytest.approx(1.0)  # disjoint predictions
    later = measure_canary(churn.deployment, 2, start + HOUR, client=keel.Client())
    assert (later.canary_requests, later.primary_requests, later.canary_errors) == (0, 0, 0)


def test_ensure_reference_takes_the_training_datasets_profile_once(any_env):
    from keel.monitoring import reference_info
    from keel.monitoring.reference import ensure_reference

    train = features(300, seed=3)
    with keel.start_run():
        keel.log_dataset(train, name="churn-train")
        info = keel.log_model(Constant(), "model", input_example=train.head(3))
    keel.register_model(info.uri, "churn")
    ensured = ensure_reference("churn", 1)
    assert ensured is not None and ensured["source"] == "dataset"
    assert ensured["dataset"] == "datasets:/churn-train@1" and ensured["rows"] == 300
    again = ensure_reference("churn", 1)  # it has one now: nothing new is stored
    assert again is not None and again["digest"] == ensured["digest"]
    assert reference_info("churn", 1) == again
    with pytest.raises(NotFound):
        ensure_reference("nobody", 1)


def test_latest_dataset_versions_are_read_through_the_client(any_env):
    from keel.automation.triggers import latest_dataset_versions

    keel.log_dataset(pd.DataFrame({"x": [1.0]}), name="fresh")
    keel.log_dataset(pd.DataFrame({"x": [2.0]}), name="fresh")
    found = latest_dataset_versions(["fresh", "never-logged"], client=keel.Client())
    assert found == {"fresh": 2}


# -- through the server only ---------------------------------------------------------------

server_only = pytest.mark.parametrize("any_env", ["server"], indirect=True)


@server_only
def test_sinks_of_this_process_cannot_reach_a_monitor_run_on_the_server(churn):
    from keel.monitoring import WebhookSink, run_monitor

    with pytest.raises(InvalidInput, match="sinks are objects of this process"):
        run_monitor(churn.deployment, window="1h", sinks=[WebhookSink("http://127.0.0.1:9/hook")])


@server_only
def test_a_reference_that_is_not_a_profile_is_refused_with_what_was_expected(churn, control_plane):
    with control_plane.http() as admin:
        answer = admin.post("/models/churn/versions/1/reference", json={"profile": {"rows": 3}})
    assert answer.status_code == 400
    assert "expected a reference profile" in answer.json()["error"]


@server_only
def test_who_may_run_monitors_measure_canaries_and_set_references(churn, control_plane):
    from keel.monitoring import profile as build_profile

    reader = control_plane.make_user("mon-viewer", "viewer")
    other = control_plane.make_user("mon-other")
    owner = control_plane.make_user("mon-owner")
    with control_plane.http() as admin:
        for user, model in (("mon-other", "fraud"), ("mon-owner", "churn")):
            body = {"user": user, "role": "editor", "scope_kind": "model", "scope_name": model}
            assert admin.post("/roles", json=body).status_code == 200
    run = {"window": "1h", "end": T0 + HOUR}
    profile = {"profile": build_profile(features(50, seed=4)).to_dict()}
    with control_plane.http(reader) as http:
        canary = http.get(
            f"/deployments/{churn.deployment}/canary", params={"version": 2, "since": 0}
        )
        assert canary.status_code == 200 and canary.json()["canary_requests"] == 0
        assert http.get("/models/churn/versions/1/reference").json() is None
        refused = http.post(f"/deployments/{churn.deployment}/monitor-runs", json=run)
        assert refused.status_code == 403 and "lacks permission 'write'" in refused.json()["error"]
        refused = http.post("/models/churn/versions/1/reference", json=profile)
        assert refused.status_code == 403
    with control_plane.http(other) as http:  # an editor of another model
        refused = http.post(f"/deployments/{churn.deployment}/monitor-runs", json=run)
        assert refused.status_code == 403 and "on model 'churn'" in refused.json()["error"]
        refused = http.post("/models/churn/versions/1/reference/ensure")
        assert refused.status_code == 403 and "on model 'churn'" in refused.json()["error"]
    with control_plane.http(owner) as http:  # the model's editor, as a controller runs
        ran = http.post(f"/deployments/{churn.deployment}/monitor-runs", json=run)
        assert ran.status_code == 200, ran.text
        assert ran.json()["rows"] == 0 and ran.json()["window_end"] == T0 + HOUR
        stored = http.post("/models/churn/versions/1/reference", json=profile)
        assert stored.status_code == 200, stored.text
        info = http.get("/models/churn/versions/1/reference").json()
        assert info["digest"] == stored.json()["digest"] and info["created_by"] == "mon-owner"
