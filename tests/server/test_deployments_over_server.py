"""Deployments, monitor results and alerts through a real ``keel server``; ``keel serve`` on it.

The server runs on PostgreSQL with loopback S3 (the ``server`` case of ``any_env``).
The serving process is the installed ``keel serve`` with only ``KEEL_SERVER_URL`` and
``KEEL_TOKEN`` (and a home of its own): it reads the deployment and loads the model
through the server, and follows a rollback made through the server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from _support.cli import keel_command
from _support.network import free_port
from keel.config import Settings
from keel.errors import InvalidInput, PermissionDenied
from keel.serving import Deployments, build_spec
from keel.serving.remote import RemoteDeployments

pytestmark = pytest.mark.parametrize("any_env", ["server"], indirect=True)


def _register_two_versions(settings: Settings, tmp_path: Path) -> Any:
    """Two versions of ``cancer`` (different predictions on the same rows); returns the rows.

    The packages are written by ``keel.log_model`` in a local home, then logged and
    registered through the server with the client API, as a training job would.
    """
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    folders = []
    keel.init(home=tmp_path / "packaging")
    for version, flip in ((1, False), (2, True)):
        # version 2 learns the flipped labels, so which version answered shows in the output
        model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, 1 - y if flip else y)
        with keel.start_run() as run:
            keel.log_model(model, "model", input_example=x.head(3))
        folder = tmp_path / f"package-{version}"
        keel.Client().download_artifacts(run.id, "model", folder)
        folders.append(folder)
    keel.init(home=settings.home, server_url=settings.server_url, token=settings.token)
    client = keel.Client()
    experiment = client.get_or_create_experiment("training")
    for version, folder in enumerate(folders, start=1):
        run_id = client.create_run(experiment.id, capture=False).id
        client.log_artifacts(run_id, folder, artifact_path="model")
        assert client.create_model_version("cancer", f"runs:/{run_id}/model").version == version
    return x


@pytest.fixture
def served(any_env, tmp_path: Path, control_plane) -> Iterator[tuple[Callable[[], str], Path]]:
    """Start ``keel serve cancer-api`` as a process that knows only the server and a token."""
    processes: list[subprocess.Popen[bytes]] = []
    home = tmp_path / "serve-home"

    def start() -> str:
        port = free_port()
        env = control_plane.environ(control_plane.admin_token, KEEL_HOME=str(home))
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            keel_command("serve", "cancer-api", "--port", str(port)),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"keel serve did not start: {(tmp_path / 'serve.log').read_text()}")

    yield start, home
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _infer(url: str, rows) -> tuple[int, list]:  # type: ignore[no-untyped-def]
    body = {
        "inputs": [
            {"name": str(c), "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
    }
    answer = httpx.post(f"{url}/v2/models/cancer-api/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    return int(doc["model_version"]), doc["outputs"][0]["data"]


def test_keel_serve_takes_its_store_through_the_server_and_follows_a_rollback(
    any_env, served, tmp_path
):
    start, home = served
    rows = _register_two_versions(any_env, tmp_path).head(20)
    deployments = Deployments()
    assert isinstance(deployments, RemoteDeployments)
    deployments.create("cancer-api", build_spec("cancer/1"))
    changed = deployments.update("cancer-api", model="cancer/2", comment="try v2")
    assert (changed.revision, changed.previous, changed.spec.primary.ref) == (2, 1, "2")

    url = start()
    version, outputs_v2 = _infer(url, rows)
    assert version == 2
    # the serving process opened no database of its own
    assert not list(home.rglob("*.db"))

    back = deployments.rollback("cancer-api")
    assert (back.revision, back.spec.primary.ref, back.comment) == (
        3,
        "1",
        "rollback to revision 1",
    )
    deadline = time.monotonic() + 60
    while (answer := _infer(url, rows))[0] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    version, outputs_v1 = answer
    assert version == 1
    assert outputs_v1 != outputs_v2  # the other model answers, not only another label
    assert [d.revision for d in deployments.history("cancer-api")] == [1, 2, 3]


def test_deployment_reads_and_writes_match_the_local_api(any_env, tmp_path):
    _register_two_versions(any_env, tmp_path)
    keel.Client().set_alias("cancer", "champion", 1)
    deployments = Deployments()
    made = deployments.create("cancer-api", build_spec("cancer@champion", canary=["cancer/2:10"]))
    assert made.created_by == "admin"
    assert deployments.get("cancer-api") == deployments.get("cancer-api", 1)
    assert [d.name for d in deployments.all()] == ["cancer-api"]
    with pytest.raises(InvalidInput, match="has no earlier spec to roll back to"):
        deployments.rollback("cancer-api")
    with pytest.raises(keel.errors.Conflict, match="moved past revision 5"):
        deployments.set_spec("cancer-api", build_spec("cancer/1"), expected_revision=5)
    with pytest.raises(keel.errors.NotFound, match="no deployment named 'nope'"):
        deployments.get("nope")
    with pytest.raises(InvalidInput, match="call it without conn"):
        deployments.set_spec("cancer-api", build_spec("cancer/1"), conn=object())  # type: ignore[arg-type]


def test_declared_features_and_skew_settings_survive_the_server(any_env, tmp_path):
    from keel.monitoring import configure_monitor, get_monitor_settings

    _register_two_versions(any_env, tmp_path)
    defs = tmp_path / "defs.py"
    defs.write_text(
        "from keel.features import Entity, FeatureView, Field, FileSource\n"
        "patient = Entity('patient', join_keys=['patient_id'])\n"
        "scans = FeatureView('scans', entities=[patient], source=FileSource('scans'),\n"
        "                    timestamp_field='ts', features=[Field('radius'), Field('area')])\n"
    )
    keel.Client().features.apply(defs)
    deployments = Deployments()
    with pytest.raises(InvalidInput, match="no feature 'volume'"):
        deployments.create("cancer-api", build_spec("cancer/1", features="scans:volume"))
    made = deployments.create(
        "cancer-api", build_spec("cancer/1", features="scans:radius,scans:area")
    )
    assert made.spec.features == ("scans:radius", "scans:area")
    assert deployments.get("cancer-api").spec.features == ("scans:radius", "scans:area")
    changed = configure_monitor("cancer-api", skew_rate=0.1, skew_sample=50)
    assert (changed.skew_rate, changed.skew_sample) == (0.1, 50)
    assert get_monitor_settings("cancer-api") == changed


def test_monitor_settings_results_and_alerts_go_through_the_server(any_env, tmp_path):
    from keel.monitoring import (
        configure_monitor,
        get_monitor_settings,
        list_alerts,
        monitor_history,
    )
    from keel.monitoring.part import monitoring_part
    from keel.monitoring.remote import RemoteMonitoring

    _register_two_versions(any_env, tmp_path)
    Deployments().create("cancer-api", build_spec("cancer/1"))
    assert isinstance(monitoring_part(keel.Client()), RemoteMonitoring)
    changed = configure_monitor("cancer-api", drift_share=0.4, columns=["age"], window=600)
    assert (changed.revision, changed.drift_share, changed.columns, changed.window) == (
        1,
        0.4,
        ("age",),
        "600s",
    )
    assert get_monitor_settings("cancer-api") == changed
    with pytest.raises(keel.errors.Conflict, match="changed since revision 0"):
        configure_monitor("cancer-api", expected_revision=0, drift_share=0.5)
    with pytest.raises(InvalidInput, match="unknown monitor setting"):
        configure_monitor("cancer-api", drift=0.5)
    assert monitor_history("cancer-api") == []
    assert list_alerts("cancer-api") == []
    with pytest.raises(keel.errors.NotFound, match="no deployment named 'gone'"):
        monitor_history("gone")


def test_deployment_and_monitor_permissions_are_enforced(any_env, control_plane, tmp_path):
    _register_two_versions(any_env, tmp_path)
    Deployments().create("cancer-api", build_spec("cancer/1"))
    viewer = control_plane.make_user("vera", "viewer")
    spec = build_spec("cancer/2").to_dict()
    with control_plane.http(viewer) as http:
        assert http.get("/deployments").status_code == 200
        assert http.get("/deployments/cancer-api/revisions").json()[0]["revision"] == 1
        assert http.get("/alerts").json() == []
        for answer in (
            http.post("/deployments", json={"name": "mine", "spec": spec}),
            http.put("/deployments/cancer-api/spec", json={"spec": spec}),
            http.post("/deployments/cancer-api/rollback", json={}),
            http.put("/deployments/cancer-api/monitor-settings", json={"drift_share": 0.4}),
        ):
            assert answer.status_code == 403, answer.text
            assert "lacks permission 'write'" in answer.json()["error"]

    # an editor of another model may not deploy cancer, nor take over a cancer deployment
    with control_plane.http() as admin:
        assert admin.post("/users", json={"name": "otto"}).status_code == 201
        grant = {"user": "otto", "role": "editor", "scope_kind": "model", "scope_name": "other"}
        assert admin.post("/roles", json=grant).status_code == 200
        otto = admin.post("/tokens", json={"user": "otto"}).json()["token"]
        grant = {"user": "otto", "role": "editor", "scope_kind": "model", "scope_name": "cancer"}
    with control_plane.http(otto) as http:
        answer = http.post("/deployments", json={"name": "mine", "spec": spec})
        assert answer.status_code == 403
        assert "lacks permission 'write' on model 'cancer'" in answer.json()["error"]
    with control_plane.http() as admin:
        assert admin.post("/roles", json=grant).status_code == 200
    with control_plane.http(otto) as http:
        answer = http.put("/deployments/cancer-api/spec", json={"spec": spec})
        assert answer.status_code == 200, answer.text
        assert answer.json()["created_by"] == "otto"
    # a shell command for alerts runs wherever monitors run: admins only
    with control_plane.http(control_plane.make_user("eddie", "editor")) as http:
        answer = http.put("/deployments/cancer-api/monitor-settings", json={"command": "true"})
        assert answer.status_code == 403
        assert "lacks permission 'admin'" in answer.json()["error"]
        answer = http.put("/deployments/cancer-api/monitor-settings", json={"drift_share": 0.4})
        assert answer.status_code == 200, answer.text

    keel.init(home=any_env.home, server_url=control_plane.url, token=viewer)
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        Deployments().rollback("cancer-api")
