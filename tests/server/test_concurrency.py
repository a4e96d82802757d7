"""Eight client processes against one ``keel server``: no point lost, no number twice.

The clients are real processes using Keel's Python API with ``KEEL_SERVER_URL``
and their own token; they wait at a gate file so that they start together.
The server runs two workers on SQLite, so writes race both across processes
and inside the database's locking.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.control_plane import ControlPlane, start_control_plane
from keel.client import Client
from keel.config import Settings
from keel.transport.http import HttpTransport

pytestmark = pytest.mark.slow

CLIENTS = 8
STEPS = 200

_GATE = """
import pathlib, sys, time
gate = pathlib.Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.01)
"""

_LOG_METRICS = (
    _GATE
    + """
import json
import keel
from keel.tracking.entities import Metric
worker, shared, steps = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = keel.Client()
experiment = client.tracking.get_or_create_experiment("concurrency").id
own = client.tracking.create_run(experiment, capture=False).run_id
for start in range(0, steps, 50):
    batch = range(start, min(start + 50, steps))
    # its own run: two metrics per step
    client.tracking.log_batch(
        own,
        [Metric("loss", worker + s / 1000, s, 1_000 + s) for s in batch]
        + [Metric("step_seen", float(s), s, 1_000 + s) for s in batch],
    )
    # one run that every worker shares, each with its own key
    client.tracking.log_batch(
        shared, [Metric(f"worker{worker}", float(s), s, 1_000 + s) for s in batch]
    )
client.tracking.set_terminated(own)
print(json.dumps({"run_id": own}), flush=True)
"""
)

_REGISTER = (
    _GATE
    + """
import json
import keel
worker = int(sys.argv[2])
client = keel.Client()
experiment = client.tracking.get_or_create_experiment("registrations").id
run = client.tracking.create_run(experiment, capture=False).run_id
weights = pathlib.Path(f"weights-{worker}.bin")
weights.write_bytes(worker.to_bytes(8, "big") * 1000)
client.tracking.log_artifact(run, weights, "model")
made = client.registry.create_model_version("shared-model", f"runs:/{run}/model")
print(json.dumps({"version": made.version, "run_id": run}), flush=True)
"""
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with start_control_plane(tmp_path_factory.mktemp("concurrency"), workers=2) as plane:
        yield plane


@pytest.fixture
def client(server: ControlPlane, tmp_path: Path) -> Iterator[Client]:
    settings = Settings(home=tmp_path / "reader", server_url=server.url, token=server.admin_token)
    transport = HttpTransport(settings)
    yield Client(transport=transport)
    transport.close()


def _served(server: ControlPlane, *paths: str) -> None:
    with server.http() as http:
        routes = http.get("/openapi.json").json()["paths"]
    missing = [p for p in paths if "post" not in routes.get(p, {})]
    if missing:
        pytest.skip(f"the server does not serve POST {', '.join(missing)} yet")


def _run_together(
    server: ControlPlane, tmp_path: Path, script: str, *args: str
) -> list[dict[str, object]]:
    """Start CLIENTS processes held at a gate, open it, and collect each one's JSON line."""
    token = server.make_user(f"writer-{tmp_path.name}", "editor")
    gate = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(gate), str(worker), *args],
            env=server.environ(token),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(CLIENTS)
    ]
    gate.touch()
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        answers.append(json.loads(out.strip().splitlines()[-1]))
    return answers


def test_eight_processes_log_metrics_through_one_server_without_losing_a_point(
    server: ControlPlane, client: Client, tmp_path: Path
) -> None:
    _served(server, "/api/v1/runs", "/api/v1/runs/{run_id}/batch")
    tracking = client.tracking
    experiment = tracking.get_or_create_experiment("concurrency-shared").id
    shared = tracking.create_run(experiment, capture=False).run_id

    answers = _run_together(server, tmp_path, _LOG_METRICS, shared, str(STEPS))

    runs = [str(a["run_id"]) for a in answers]
    assert len(set(runs)) == CLIENTS
    for worker, run_id in enumerate(runs):
        assert tracking.count_metric_points(run_id) == 2 * STEPS
        loss = tracking.get_metric_history(run_id, "loss")
        assert [m.step for m in loss] == list(range(STEPS))
        assert [m.value for m in loss] == pytest.approx([worker + s / 1000 for s in range(STEPS)])
    assert tracking.count_metric_points(shared) == CLIENTS * STEPS
    for worker in range(CLIENTS):
        history = tracking.get_metric_history(shared, f"worker{worker}")
        assert [m.step for m in history] == list(range(STEPS))  # each point once, none lost


def test_eight_processes_registering_one_model_get_versions_one_to_eight(
    server: ControlPlane, client: Client, tmp_path: Path
) -> None:
    _served(
        server,
        "/api/v1/models/{name}/versions",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}/artifacts",
    )

    answers = _run_together(server, tmp_path, _REGISTER)

    assert sorted(int(str(a["version"])) for a in answers) == list(range(1, CLIENTS + 1))
    versions = client.registry.list_model_versions("shared-model")
    by_number = {v.version: v.source for v in versions}
    assert sorted(by_number) == list(range(1, CLIENTS + 1))
    for answer in answers:
        assert by_number[int(str(answer["version"]))] == f"runs:/{answer['run_id']}/model"
