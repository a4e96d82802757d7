"""The feature store over HTTP: a real ``keel server`` and a real ``keel features serve``.

Definitions are applied through the http client and versioned and audited by the
server as the token's user; a viewer's token cannot apply; materialization runs on the
client, its watermark lands on the server, and the server's online route reads the
online store both share. The standalone feature server runs as the installed command.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from _support.cli import keel_command, keel_environ
from _support.control_plane import ControlPlane, start_control_plane
from _support.features import (
    MINUTE_MS,
    driver_stats_definitions,
    initial_stats_rows,
    online_store_url,
    write_definitions,
    write_driver_stats,
)
from _support.network import free_port
from keel.config import load_settings
from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.features.remote import RemoteFeatures


def write_defs(folder: Path, description: str = "driver stats") -> Path:
    """The definitions file and its source: drivers 1 and 2 in the TTL, driver 3 past it."""
    stats = folder / "data" / "stats"
    if not stats.exists():
        stats.mkdir(parents=True)
        now = (time.time_ns() // 1_000_000 // MINUTE_MS) * MINUTE_MS
        write_driver_stats(stats / "part-1.parquet", initial_stats_rows(now))
    return write_definitions(folder, driver_stats_definitions(description=description))


@dataclass
class Plane:
    """A server and what its tests share: tokens, the online store, a client on its store."""

    server: ControlPlane
    online_store: str
    editor: str  # alice's token
    viewer: str  # victor's token
    local: keel.Client  # the operator's client on the server's own store

    def client(self, home: Path, token: str) -> keel.Client:
        """A client of the server with ``token``, on the online store the server reads."""
        settings = load_settings(
            home=home, server_url=self.server.url, token=token, online_store=self.online_store
        )
        return keel.Client(settings)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("features-server")
    online = f"sqlite:///{root / 'online' / 'online.db'}"
    home = root / ".keel"
    with start_control_plane(home, extra_env={"KEEL_ONLINE_STORE": online}) as server:
        editor = server.make_user("alice", "editor")
        viewer = server.make_user("victor", "viewer")
        local = keel.Client(
            load_settings(
                home=home,
                store_url=server.store_url,
                artifacts_url=server.artifacts_url,
                user="operator",
            )
        )
        yield Plane(server, online, editor, viewer, local)


@pytest.fixture(scope="module")
def applied(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keel.Client]:
    """The definitions applied once through alice's client, then materialized by it."""
    folder = tmp_path_factory.mktemp("alice")
    client = plane.client(folder / ".keel", plane.editor)
    client.features.apply(write_defs(folder))
    client.features.materialize()
    return folder, client


def test_an_http_client_has_the_remote_features_part(plane: Plane, tmp_path: Path):
    assert isinstance(plane.client(tmp_path / ".keel", plane.viewer).features, RemoteFeatures)


def test_apply_through_the_server_versions_and_audits_as_the_token_user(
    plane: Plane, tmp_path: Path
):
    client = plane.client(tmp_path / ".keel", plane.editor)
    defs = write_defs(tmp_path)
    # a name of this test's own, so the module's other definitions do not interfere
    defs.write_text(defs.read_text().replace('"driver_stats"', '"audited_stats"'))

    first = client.features.apply(defs)

    made = {(d.kind, d.name): d for d in first.created}
    assert set(made) >= {("feature_view", "audited_stats"), ("on_demand_feature_view", "per_km")}
    assert {d.created_by for d in first.changed} == {"alice"}
    assert made["feature_view", "audited_stats"].source_file == str(defs.resolve())
    # what the client reads back is what the server's store holds
    stored = plane.local.features.get("audited_stats")
    assert client.features.get("audited_stats") == stored
    assert stored.version == 1 and stored.created_by == "alice"
    listed = {(d.kind, d.name): d for d in client.features.list()}
    assert listed == {(d.kind, d.name): d for d in plane.local.features.list()}
    assert listed["feature_view", "audited_stats"] == stored
    assert [d.name for d in client.features.list("entity")] == ["driver"]

    defs.write_text(defs.read_text().replace("driver stats", "driver stats, v2"))
    second = client.features.apply(defs)

    assert [(d.name, d.version) for d in second.updated] == [("audited_stats", 2)]
    assert {d.name for d in second.unchanged} >= {"driver", "per_km"}
    history = client.features.history("audited_stats")
    assert history == plane.local.features.history("audited_stats")
    assert [(d.version, d.spec["description"]) for d in history] == [
        (1, "driver stats"),
        (2, "driver stats, v2"),
    ]
    assert client.features.get("audited_stats", 1) == history[0]
    assert client.features.resolve("features:/audited_stats@1") == history[0]
    assert client.features.resolve("features:/per_km").kind == "on_demand_feature_view"
    with plane.server.http() as admin:
        entries = admin.get(
            "/audit", params={"object_type": "feature_view", "object_id": "audited_stats/*"}
        ).json()
    assert sorted((e["object"], e["actor"], e["action"]) for e in entries) == [
        ("feature_view:audited_stats/1", "alice", "feature_view.apply"),
        ("feature_view:audited_stats/2", "alice", "feature_view.apply"),
    ]
    assert all(e["token_id"] is not None for e in entries)


def test_a_body_naming_another_user_is_still_applied_as_the_token_user(
    plane: Plane, tmp_path: Path
):
    from keel.features.loading import load_definitions

    defs = write_defs(tmp_path)
    defs.write_text(defs.read_text().replace('"driver_stats"', '"claimed_stats"'))
    specs = load_definitions(defs).specs()
    with plane.server.http(plane.editor) as http:
        answer = http.post(
            "/features/definitions",
            json={"specs": specs, "source_file": str(defs), "created_by": "mallory"},
        )

    assert answer.status_code == 200, answer.text
    made = [d for d in answer.json()["created"] if d["name"] == "claimed_stats"]
    assert [d["created_by"] for d in made] == ["alice"]
    assert plane.local.features.get("claimed_stats").created_by == "alice"


def test_a_viewer_token_reads_but_cannot_apply_or_record_a_watermark(
    plane: Plane, applied: tuple[Path, keel.Client], tmp_path: Path
):
    folder, _ = applied
    viewer = plane.client(tmp_path / ".keel", plane.viewer)

    with pytest.raises(PermissionDenied, match="user 'victor' lacks permission 'write'"):
        viewer.features.apply(folder / "defs.py")
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.features.set_watermark(
            "driver_stats", "x", view_version=1, last_event_ms=1, last_created_ms=None, rows=1
        )
    with plane.server.http(plane.viewer) as http:
        answer = http.post("/features/definitions", json={"specs": [], "source_file": None})
    assert answer.status_code == 403
    assert list(answer.json()) == ["error"]
    assert viewer.features.get("driver_stats").name == "driver_stats"
    with plane.server.http("") as anonymous:
        assert anonymous.get("/features/definitions").status_code == 401


def test_a_retried_watermark_record_counts_once(plane: Plane):
    store = "sqlite:///elsewhere/online.db"
    body = {"view": "retried", "store": store, "view_version": 1, "last_event_ms": 5,
            "last_created_ms": None, "rows": 3}  # fmt: skip
    with plane.server.http(plane.editor) as http:
        for _ in range(2):  # the same key: a retry after a dropped answer
            answer = http.post("/features/watermarks", json=body, headers={"idempotency-key": "k1"})
            assert answer.status_code == 200, answer.text
        mark = plane.local.features.watermark("retried", store)
        assert mark is not None and (mark.rows_written, mark.runs) == (3, 1)

        later = {**body, "last_event_ms": 4}  # an older time never moves the mark back
        answer = http.post("/features/watermarks", json=later, headers={"idempotency-key": "k2"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["rows_written"], answer.json()["runs"]) == (6, 2)
    assert answer.json()["last_event_ms"] == 5


def test_materialize_on_the_client_then_read_online_through_the_server(
    plane: Plane, applied: tuple[Path, keel.Client], tmp_path: Path
):
    _, alice = applied
    # the client's materialization recorded its watermark on the server, as alice
    mark = plane.local.features.watermark("driver_stats", plane.online_store)
    assert mark is not None
    assert (mark.rows_written, mark.runs, mark.view_version) == (2, 1, 1)
    assert alice.features.watermark("driver_stats", plane.online_store) == mark
    assert alice.features.watermarks() == plane.local.features.watermarks()

    viewer = plane.client(tmp_path / ".keel", plane.viewer)
    got = viewer.features.get_online_features(
        [{"driver_id": 1, "km": 2.0}, {"driver_id": 2, "km": 5.0}, {"driver_id": 3, "km": 1.0}],
        ["driver_stats:conv_rate", "driver_stats:trips", "per_km:rate_per_km"],
    )

    assert got.to_dict() == {
        "driver_id": [1, 2, 3],
        "conv_rate": [0.2, 0.5, None],
        "trips": [2, 5, None],
        "rate_per_km": [0.1, 0.1, None],
    }
    assert got.feature_columns == ["conv_rate", "trips", "rate_per_km"]
    stamps = got.event_ms["driver_stats"]
    assert stamps[0] is not None and stamps[1] is not None and stamps[2] is None
    # the same values as a read of the shared store in this process
    here = viewer.features.get_online_features(
        [{"driver_id": 1}, {"driver_id": 2}], ["driver_stats:conv_rate"], store=plane.online_store
    )
    assert here.to_dict() == {"driver_id": [1, 2], "conv_rate": [0.2, 0.5]}

    frame = pd.DataFrame({"driver_id": [2, 1]})
    assert viewer.features.get_online_features(frame, ["driver_stats:trips"]).to_dict() == {
        "driver_id": [2, 1],
        "trips": [5, 2],
    }
    numpy_keys = [{"driver_id": np.int64(2)}]
    got = viewer.features.get_online_features(numpy_keys, ["driver_stats:trips"])
    assert got.to_dict() == {"driver_id": [2], "trips": [5]}

    full = viewer.features.get_online_features(
        [{"driver_id": "2"}], ["driver_stats:conv_rate"], full_feature_names=True
    )
    assert full.to_dict() == {"driver_id": ["2"], "driver_stats__conv_rate": [0.5]}


def test_a_training_set_through_the_server_records_its_views_as_the_runs_inputs(
    plane: Plane, applied: tuple[Path, keel.Client], tmp_path: Path
):
    _, alice = applied
    experiment = alice.get_or_create_experiment("training")
    run_id = alice.create_run(experiment.id, capture=False).id
    entity = pd.DataFrame(
        {
            "driver_id": [1, 2],
            "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "km": [2.0, 5.0],
        }
    )
    alice.features.get_historical_features(
        entity, ["driver_stats:conv_rate", "per_km:rate_per_km"], run_id=run_id
    )
    graph = plane.local.lineage.upstream(f"runs:/{run_id}")
    view = alice.features.get("driver_stats")
    on_demand = alice.features.get("per_km", kind="on_demand_feature_view")
    assert {e.src for e in graph.edges if e.relation == "input"} == {
        f"features:/driver_stats@{view.version}",  # the versions the join read, wherever
        f"features:/per_km@{on_demand.version}",  # earlier tests left them
    }
    with pytest.raises(NotFound, match="no run"):
        alice.features.record_inputs("0" * 32, [view])
    with pytest.raises(PermissionDenied):
        plane.client(tmp_path / ".keel", plane.viewer).features.record_inputs(run_id, [view])


def test_bad_online_reads_answer_4xx_and_the_server_keeps_serving(
    plane: Plane, applied: tuple[Path, keel.Client], tmp_path: Path
):
    viewer = plane.client(tmp_path / ".keel", plane.viewer)
    with pytest.raises(
        InvalidInput, match="feature view 'driver_stats' needs join key 'driver_id'"
    ):
        viewer.features.get_online_features([{"driver": 1}], ["driver_stats:conv_rate"])
    with pytest.raises(InvalidInput, match="has no feature 'speed'; it has"):
        viewer.features.get_online_features([{"driver_id": 1}], ["driver_stats:speed"])
    with pytest.raises(NotFound, match="unknown feature view 'drivr_stats'"):
        viewer.features.get_online_features([{"driver_id": 1}], ["drivr_stats:conv_rate"])

    with plane.server.http(plane.viewer) as http:
        cases = [
            ({"features": ["driver_stats:conv_rate"]}, "entity_rows"),
            ({"features": [], "entity_rows": [{"driver_id": 1}]}, "features"),
            (
                {"features": ["conv_rate"], "entity_rows": [{"driver_id": 1}]},
                "such as driver_stats:conv_rate",
            ),
            (
                {
                    "features": ["driver_stats:conv_rate"],
                    "entities": {"driver_id": [1, 2], "x": [1]},
                },
                "one length",
            ),
        ]
        for body, message in cases:
            answer = http.post("/features/online", json=body)
            assert answer.status_code == 400, answer.text
            assert list(answer.json()) == ["error"] and message in answer.json()["error"]
        columnar = http.post(
            "/features/online",
            json={"features": ["driver_stats:trips"], "entities": {"driver_id": [2, 1]}},
        )
        assert columnar.status_code == 200, columnar.text
        assert columnar.json()["features"] == {"driver_id": [2, 1], "trips": [5, 2]}


def start_feature_server(home: Path, store: str, port: int) -> subprocess.Popen[bytes]:
    """``keel features serve`` on ``port``, ready to answer (its output in home/serve.log)."""
    log = home / "serve.log"
    env = keel_environ(KEEL_HOME=str(home))
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            keel_command("features", "serve", "--port", str(port), "--store", store),
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keel features serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"keel features serve did not answer: {log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An online store URL of each backend (Redis: a key prefix of this test's own, dropped after)."""
    with online_store_url(request.param, tmp_path / "online.db") as url:
        yield url


@pytest.mark.slow
def test_keel_features_serve_answers_online_reads_over_http(tmp_path: Path, online_store: str):
    home = tmp_path / ".keel"
    keel.init(home=home)
    client = keel.Client()
    store = online_store
    client.features.apply(write_defs(tmp_path))
    client.features.materialize(store=store)
    port = free_port()
    process = start_feature_server(home, store, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            ours = http.post(
                "/features/online",
                json={
                    "entity_rows": [{"driver_id": 1, "km": 4.0}, {"driver_id": 3, "km": 1.0}],
                    "features": ["driver_stats:conv_rate", "per_km:rate_per_km"],
                },
            )
            assert ours.status_code == 200, ours.text
            doc = ours.json()
            assert doc["features"] == {
                "driver_id": [1, 3],
                "conv_rate": [0.2, None],
                "rate_per_km": [0.05, None],
            }
            assert doc["feature_columns"] == ["conv_rate", "rate_per_km"]
            assert doc["event_ms"]["driver_stats"][1] is None
            assert isinstance(doc["event_ms"]["driver_stats"][0], int)

            feast = http.post(
                "/get-online-features",
                json={"features": ["driver_stats:trips"], "entities": {"driver_id": [2, 3]}},
            )
            assert feast.status_code == 200, feast.text
            assert feast.json()["metadata"] == {"feature_names": ["driver_id", "trips"]}
            keys, trips = feast.json()["results"]
            assert keys["values"] == [2, 3]
            assert (trips["values"], trips["statuses"]) == ([5, None], ["PRESENT", "NOT_FOUND"])
            assert trips["event_timestamps"][0].endswith("Z")

            missing_key = http.post(
                "/features/online",
                json={"entity_rows": [{"id": 1}], "features": ["driver_stats:conv_rate"]},
            )
            assert missing_key.status_code == 400
            assert missing_key.json() == {
                "error": "feature view 'driver_stats' needs join key 'driver_id'; "
                "the rows have ['id']"
            }
            unknown = http.post(
                "/features/online",
                json={"entity_rows": [{"driver_id": 1}], "features": ["driver_stats:speed"]},
            )
            assert unknown.status_code == 400
            assert "feature view 'driver_stats' has no feature 'speed'" in unknown.json()["error"]
            no_view = http.post(
                "/features/online",
                json={"entity_rows": [{"driver_id": 1}], "features": ["nope:speed"]},
            )
            assert no_view.status_code == 404 and list(no_view.json()) == ["error"]
            not_json = http.post("/features/online", content=b"{", headers={"content-type": "x"})
            assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]

            # still serving, and counting what it served
            again = http.post(
                "/features/online",
                json={"entity_rows": [{"driver_id": 2}], "features": ["driver_stats:conv_rate"]},
            )
            assert again.json()["features"]["conv_rate"] == [0.5]
            assert http.get("/health").json()["status"] == "ok"
            metrics = http.get("/metrics").text
            assert 'keel_feature_requests_total{route="/features/online",status="400"} 3.0' in (
                metrics
            )
    finally:
        stop(process)
    # uvicorn shuts down cleanly, then exits by the signal it caught (as keel serve does)
    log = (home / "serve.log").read_text()
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "Traceback" not in log
    assert log.startswith(f"Feature server on http://127.0.0.1:{port}")


def test_serve_refuses_a_port_in_use_and_a_store_url_that_is_not_one(sqlite_env, tmp_path: Path):
    import socket

    from keel.features.server import serve

    announced: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"cannot listen on 127.0.0.1:{port} .*--port"):
            serve("127.0.0.1", port, store=f"sqlite:///{tmp_path / 'online.db'}")
    with pytest.raises(InvalidInput, match="online store URL must be sqlite:///"):
        serve("127.0.0.1", 0, store="ftp://example.org/online", announce=announced.append)
    assert announced == []  # nothing was announced for a server that never started
