"""The tracking API through ``keel server``: every call a user makes, on a real server process.

Round trips run on the three modes (``any_env``: SQLite, PostgreSQL, a server on
PostgreSQL and loopback S3), so a remote answer is held to what the local client
answers. Permissions and tampering need the server itself: they use the shared
test server or one of their own with a local artifact folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

import keel
from _support.control_plane import ControlPlane, start_control_plane
from keel.artifacts import ArtifactStore
from keel.config import Settings, load_settings
from keel.errors import Conflict, IntegrityError, InvalidInput, NotFound, PermissionDenied
from keel.tracking.entities import Metric
from keel.tracking.remote import RemoteTracking
from keel.transport.http import HttpTransport


def _client_of(url: str, token: str, home: Path) -> keel.Client:
    """A second client of the server at ``url`` acting with ``token``."""
    settings = load_settings(home=home, server_url=url, token=token)
    return keel.Client(transport=HttpTransport(settings))


# -- round trips on every mode ---------------------------------------------------------


def test_client_is_remote_only_on_the_server_mode(any_env: Settings) -> None:
    client = keel.Client()
    assert isinstance(client.tracking, RemoteTracking) == bool(any_env.server_url)


def test_experiments_round_trip(any_env: Settings) -> None:
    client = keel.Client()
    made = client.create_experiment("churn")
    assert client.get_experiment(made).name == "churn"
    assert client.get_experiment_by_name("churn").id == made  # type: ignore[union-attr]
    assert client.get_experiment_by_name("absent") is None
    assert client.get_or_create_experiment("churn").id == made
    other = client.get_or_create_experiment("fraud")
    assert other.id != made
    assert [e.name for e in client.list_experiments()] == ["churn", "fraud"]
    assert client.resolve_experiment("churn").id == made
    assert client.resolve_experiment(other.id).name == "fraud"
    assert client.resolve_experiment(str(other.id)).name == "fraud"
    with pytest.raises(Conflict, match="already exists"):
        client.create_experiment("churn")
    with pytest.raises(NotFound, match="churn"):  # the error names the closest experiment
        client.resolve_experiment("chrun")
    with pytest.raises(NotFound, match="no experiment with id 9999"):
        client.get_experiment(9999)
    client.create_run(made, "a", capture=False)
    client.create_run(made, "b", capture=False)
    assert client.experiment_run_counts() == {made: 2}


def test_runs_round_trip_with_tags_parent_status_and_seeds(any_env: Settings) -> None:
    client = keel.Client()
    exp = client.create_experiment("runs")
    parent = client.create_run(exp, "parent", tags={"stage": "dev", "n": 3}, capture=False)
    child = client.create_run(exp, "child", parent_id=parent.id, seeds={"numpy": 7})
    assert child.parent_id == parent.id and child.status == "RUNNING"
    assert client.get_run_info(child.id) == child
    assert client.get_run(parent.id).tags == {"n": "3", "stage": "dev"}
    assert client.resolve_run_id(child.id[:8]) == child.id
    with pytest.raises(InvalidInput, match="too short"):
        client.resolve_run_id(child.id[:3])
    client.record_seeds(child.id, {"torch": 1})
    assert client.get_environment(child.id)["seeds"] == {"numpy": 7, "torch": 1}
    client.set_terminated(child.id, "FAILED", end_time=child.start_time + 5)
    ended = client.get_run_info(child.id)
    assert (ended.status, ended.end_time) == ("FAILED", child.start_time + 5)
    client.set_terminated(parent.id)  # the end time is the store side's clock
    assert client.get_run_info(parent.id).end_time >= parent.start_time  # type: ignore[operator]
    assert client.set_running(child.id).status == "RUNNING"
    with pytest.raises(InvalidInput, match="status must be one of"):
        client.set_terminated(child.id, "DONE")
    with pytest.raises(NotFound, match="no run with id"):
        client.get_run("0" * 32)
    with pytest.raises(NotFound):
        client.create_run(exp, "orphan", parent_id="f" * 32, capture=False)


def test_a_run_records_the_environment_of_the_process_that_runs_it(
    any_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platform
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print('train')\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)

    client = keel.Client()
    experiment = client.create_experiment("env")
    run = client.create_run(experiment)
    environment = client.get_environment(run.id)

    # over the server too, these are this process's facts, not the server's
    assert environment["git_commit"] == head
    assert environment["python_version"] == platform.python_version()
    assert any(d.startswith("pytest==") for d in environment["distributions"])
    bare = client.create_run(experiment, capture=False)
    assert client.get_environment(bare.id)["git_commit"] is None


def test_params_and_tags_round_trip(any_env: Settings) -> None:
    client = keel.Client()
    run = client.create_run(client.create_experiment("p"), capture=False).id
    client.log_param(run, "lr", 0.01)
    client.log_params(run, {"depth": 8, "model": "rf", "flag": True})
    client.log_params(run, {"lr": 0.01})  # the same value again is fine
    with pytest.raises(Conflict, match="write-once"):
        client.log_param(run, "lr", 0.1)
    client.set_tag(run, "stage", "dev")
    client.set_tags(run, {"stage": "prod", "owner": "ann"})
    client.delete_tag(run, "owner")
    with pytest.raises(NotFound, match="no tag 'owner'"):
        client.delete_tag(run, "owner")
    got = client.get_run(run)
    assert got.params == {"depth": "8", "flag": "True", "lr": "0.01", "model": "rf"}
    assert got.tags == {"stage": "prod"}
    with pytest.raises(NotFound, match="no run with id"):
        client.log_params("e" * 32, {"a": 1})


def test_metrics_keep_nan_and_infinities(any_env: Settings) -> None:
    client = keel.Client()
    run = client.create_run(client.create_experiment("m"), capture=False).id
    client.log_metric(run, "nan", math.nan, step=0)
    client.log_metric(run, "up", math.inf, step=1, timestamp=10)
    client.log_metric(run, "down", -math.inf, step=2, timestamp=20)
    client.log_metric(run, "plain", 0.25, step=3, timestamp=30)
    metrics = client.get_run(run).metrics
    assert math.isnan(metrics["nan"])
    assert metrics["up"] == math.inf and metrics["down"] == -math.inf and metrics["plain"] == 0.25
    assert client.get_metric_history(run, "down") == [Metric("down", -math.inf, 2, 20)]
    with pytest.raises(InvalidInput, match="must be a number"):
        client.log_metric(run, "bad", "0.5")


def test_a_thousand_point_batch_round_trips_with_its_params_and_tags(any_env: Settings) -> None:
    client = keel.Client()
    run = client.create_run(client.create_experiment("batch"), capture=False).id
    points = [Metric("loss", 1.0 / (i + 1), i, 1_700_000_000_000 + i) for i in range(1000)]
    points[500] = Metric("loss", math.nan, 500, 1_700_000_000_500)
    client.log_batch(run, points, params={"epochs": 1000}, tags={"kind": "sweep"})
    history = client.get_metric_history(run, "loss")
    assert len(history) == 1000 and client.count_metric_points(run) == 1000
    assert [p.step for p in history] == list(range(1000))
    assert math.isnan(history[500].value) and history[999].value == pytest.approx(1e-3)
    got = client.get_run(run)
    assert got.metrics == {"loss": pytest.approx(1e-3)}
    assert (got.params, got.tags) == ({"epochs": "1000"}, {"kind": "sweep"})


def test_buffered_rows_of_several_runs_are_written_in_one_call(any_env: Settings) -> None:
    client = keel.Client()
    exp = client.create_experiment("rows")
    a, b = (client.create_run(exp, capture=False).id for _ in range(2))
    rows = [(a if i % 2 else b, "x", i, 1_000 + i, float(i)) for i in range(200)]
    client.write_metric_rows(rows)
    assert client.count_metric_points(a) == client.count_metric_points(b) == 100
    assert client.get_run(a).metrics == {"x": 199.0}
    assert client.count_metric_points() == 200
    with pytest.raises(NotFound):
        client.write_metric_rows([("d" * 32, "x", 0, 0, 1.0)])


def test_search_filters_orders_and_pages(any_env: Settings) -> None:
    client = keel.Client()
    exp = client.create_experiment("search")
    other = client.create_experiment("elsewhere")
    ids = []
    for i in range(7):
        run = client.create_run(exp, f"r{i}", capture=False).id
        client.log_batch(run, [Metric("acc", i / 10, 0, 1)], params={"i": i})
        ids.append(run)
    stray = client.create_run(other, "stray", capture=False).id
    client.log_metric(stray, "acc", 0.99)

    page = client.search_runs([exp], "metrics.acc >= 0.3", order_by="metrics.acc DESC")
    assert [r.id for r in page] == ids[3:][::-1] and page.next_page_token is None
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs([exp], None, ["params.i ASC"], max_results=3, page_token=token)
        seen += [r.id for r in page]
        token = page.next_page_token
        if token is None:
            break
    assert seen == ids
    assert {r.id for r in client.search_runs(None, "metrics.acc > 0.95")} == {stray}
    frame = client.search_runs_frame([exp], "params.i = '2'")
    assert list(frame["run_id"]) == [ids[2]] and frame["metrics.acc"].iloc[0] == 0.2
    assert str(frame["start_time"].dtype) == "datetime64[ms, UTC]"
    with pytest.raises(InvalidInput, match="max_results"):
        client.search_runs([exp], max_results=0)
    with pytest.raises(InvalidInput):
        client.search_runs([exp], "metrics.acc >>> 1")
    with pytest.raises(InvalidInput):
        client.search_runs([exp], page_token="not-a-token")


def test_artifacts_up_list_and_down(any_env: Settings, tmp_path: Path) -> None:
    client = keel.Client()
    run = client.create_run(client.create_experiment("art"), capture=False).id
    folder = tmp_path / "out"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "roc.txt").write_text("roc")
    (folder / "model.bin").write_bytes(bytes(range(256)) * 64)
    single = tmp_path / "notes.md"
    single.write_text("# notes")
    client.log_artifacts(run, folder, "outputs")
    entry = client.log_artifact(run, single)
    client.log_dict(run, {"a": [1, 2]}, "config.json")
    listed = [e.path for e in client.list_artifacts(run)]
    assert listed == ["config.json", "notes.md", "outputs/model.bin", "outputs/plots/roc.txt"]
    assert [e.path for e in client.list_artifacts(run, "outputs/plots")] == [
        "outputs/plots/roc.txt"
    ]
    assert entry.size == len("# notes")
    got = client.download_artifacts(run, "outputs", tmp_path / "back")
    assert (got / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()
    assert (got / "plots" / "roc.txt").read_text() == "roc"
    assert client.download_artifacts(run, "notes.md", tmp_path / "one").read_text() == "# notes"
    assert client.load_dict(run, "config.json") == {"a": [1, 2]}
    with pytest.raises(NotFound, match="no artifact"):
        client.download_artifacts(run, "absent", tmp_path / "none")
    with pytest.raises(InvalidInput):
        client.log_artifact(run, single, "../escape")


# -- the server only ---------------------------------------------------------------------

#: Runs a test on ``any_env``'s server mode only (permissions are the server's).
server_only = pytest.mark.parametrize("any_env", ["server"], indirect=True)


@pytest.fixture
def viewer_setup(control_plane: ControlPlane, any_env: Settings, tmp_path: Path):
    assert any_env.server_url
    admin = keel.Client()
    exp = admin.create_experiment("guarded")
    run = admin.create_run(exp, "r", capture=False).id
    token = control_plane.make_user("vera", "viewer")
    return control_plane, admin, exp, run, _client_of(control_plane.url, token, tmp_path / "v")


@server_only
def test_a_viewer_reads_but_every_write_is_refused_naming_the_permission(viewer_setup) -> None:
    _, admin, exp, run, viewer = viewer_setup
    admin.log_metric(run, "acc", 0.5)
    assert viewer.get_run(run).metrics == {"acc": 0.5}
    assert [r.id for r in viewer.search_runs([exp])] == [run]
    writes = [
        lambda: viewer.create_experiment("mine"),
        lambda: viewer.get_or_create_experiment("guarded"),
        lambda: viewer.create_run(exp, capture=False),
        lambda: viewer.log_param(run, "a", 1),
        lambda: viewer.set_tag(run, "a", "b"),
        lambda: viewer.log_metric(run, "acc", 0.9),
        lambda: viewer.write_metric_rows([(run, "acc", 1, 1, 0.9)]),
        lambda: viewer.set_terminated(run),
        lambda: viewer.log_dict(run, {"a": 1}, "x.json"),
    ]
    for write in writes:
        with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
            write()
    assert admin.get_run(run).params == {} and admin.get_run_info(run).status == "RUNNING"


@server_only
def test_a_scoped_editor_sees_and_writes_only_their_experiment(viewer_setup, tmp_path) -> None:
    server, admin, exp, run, _ = viewer_setup
    theirs = admin.create_experiment("theirs")
    own_run = admin.create_run(theirs, capture=False).id
    token = server.make_user("ed")
    with server.http() as http:
        answer = http.post(
            "/roles",
            json={
                "user": "ed",
                "role": "editor",
                "scope_kind": "experiment",
                "scope_name": "theirs",
            },
        )
        assert answer.status_code == 200, answer.text
    ed = _client_of(server.url, token, tmp_path / "ed")
    ed.log_metric(own_run, "acc", 0.7)
    assert [e.name for e in ed.list_experiments()] == ["theirs"]
    assert [r.id for r in ed.search_runs()] == [own_run]
    assert ed.experiment_run_counts() == {theirs: 1}
    with pytest.raises(PermissionDenied, match="on experiment 'guarded'"):
        ed.get_run(run)
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        ed.log_metric(run, "acc", 0.1)
    with pytest.raises(PermissionDenied, match="lacks permission 'read'"):
        ed.search_runs([exp])


@server_only
def test_a_predict_only_token_lists_no_experiments_even_with_a_scoped_viewer_grant(
    viewer_setup, tmp_path
) -> None:
    server = viewer_setup[0]
    token = server.make_user("scorer", scopes=["predict"])
    with server.http() as http:
        body = {"user": "scorer", "role": "viewer", "scope_kind": "experiment"}
        answer = http.post("/roles", json={**body, "scope_name": "guarded"})
        assert answer.status_code == 200, answer.text
    scorer = _client_of(server.url, token, tmp_path / "scorer")
    for listing in (scorer.list_experiments, scorer.experiment_run_counts, scorer.search_runs):
        with pytest.raises(PermissionDenied, match="scope 'api'"):
            listing()


@server_only
def test_a_token_without_a_role_is_refused_before_any_lookup(viewer_setup, tmp_path) -> None:
    server, _, _, run, _ = viewer_setup
    nobody = _client_of(server.url, server.make_user("nobody"), tmp_path / "n")
    for call in (
        lambda: nobody.get_run(run),
        lambda: nobody.get_run("0" * 32),  # a 403, not a 404 that says the id is free
        lambda: nobody.list_experiments(),
        lambda: nobody.resolve_experiment("nothing"),
    ):
        with pytest.raises(PermissionDenied, match="lacks permission 'read'"):
            call()


@server_only
def test_bad_batch_bodies_are_refused_with_what_was_expected(viewer_setup) -> None:
    server, _, _, run, _ = viewer_setup
    with server.http() as http:
        uneven = {"metrics": {"keys": ["a", "b"], "values": [1], "steps": [0], "timestamps": [0]}}
        answer = http.post(f"/runs/{run}/batch", json=uneven)
        assert answer.status_code == 400 and "same length" in answer.json()["error"]
        text = {"metrics": {"keys": ["a"], "values": ["high"], "steps": [0], "timestamps": [0]}}
        answer = http.post(f"/runs/{run}/batch", json=text)
        assert answer.status_code == 400 and "'high'" in answer.json()["error"]
        forged = {"entries": [{"path": "x.bin", "digest": "ab" * 32, "size": 3}]}
        answer = http.post(f"/runs/{run}/artifacts", json=forged)
        assert answer.status_code == 400 and "does not hold" in answer.json()["error"]


def test_a_tampered_object_fails_its_digest_on_download(tmp_path: Path) -> None:
    with start_control_plane(tmp_path / "srv") as server:
        client = _client_of(server.url, server.admin_token, tmp_path / "client")
        run = client.create_run(client.create_experiment("t"), capture=False).id
        src = tmp_path / "weights.bin"
        src.write_bytes(b"original weights" * 100)
        entry = client.log_artifact(run, src)
        back = client.download_artifacts(run, "weights.bin", tmp_path / "ok")
        assert back.read_bytes() == src.read_bytes()
        stored = Path(server.artifacts_url) / ArtifactStore.key(entry.digest)
        stored.write_bytes(b"tampered weights" * 100)
        with pytest.raises(IntegrityError):
            client.download_artifacts(run, "weights.bin", tmp_path / "bad")
        assert not (tmp_path / "bad" / "weights.bin").exists()
        with httpx.Client(base_url=server.url) as http:
            assert http.get(f"/api/v1/runs/{run}").status_code == 401
