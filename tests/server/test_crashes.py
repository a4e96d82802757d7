"""A killed server or a dropped connection loses nothing and makes nothing twice.

Every test runs a real ``keel server`` process. Uploads are streamed while the
server is killed with SIGKILL; retries go through the same ``Idempotency-Key``,
as keel's http transport sends them, and one of them goes through a TCP proxy
that forwards the request but drops the connection before the answer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import blake3
import httpx
import pytest

from _support.cli import keel_command, keel_environ
from _support.control_plane import ControlPlane, start_control_plane
from _support.network import free_port
from keel.config import Settings
from keel.governance.client import IdentityClient
from keel.server.idempotency import REPLAYED_HEADER
from keel.transport.http import HttpTransport

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlPlane]:
    """A server of this test's own: the test kills it."""
    with start_control_plane(tmp_path / "server") as plane:
        yield plane


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One server for the tests that leave it running (each uses its own names)."""
    with start_control_plane(tmp_path_factory.mktemp("shared-server")) as plane:
        yield plane


def _routes(plane: ControlPlane) -> dict[str, set[str]]:
    with plane.http() as http:
        paths = http.get("/openapi.json").json()["paths"]
    return {path: {m.upper() for m in methods} for path, methods in paths.items()}


def _users(plane: ControlPlane) -> list[str]:
    with plane.http() as http:
        return [u["name"] for u in http.get("/users").json()]


# -- idempotency keys ------------------------------------------------------------


def test_retried_create_with_the_same_key_makes_one_user_and_the_same_answer(
    shared: ControlPlane,
) -> None:
    key = {"idempotency-key": uuid.uuid4().hex}
    with shared.http() as http:
        first = http.post("/users", json={"name": "carol", "roles": ["viewer"]}, headers=key)
        second = http.post("/users", json={"name": "carol", "roles": ["viewer"]}, headers=key)
        # without the key, the same create is a second create, which the store refuses
        third = http.post("/users", json={"name": "carol", "roles": ["viewer"]})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert REPLAYED_HEADER not in first.headers
    assert second.headers[REPLAYED_HEADER] == "true"
    assert third.status_code == 409, third.text
    assert _users(shared).count("carol") == 1


def test_concurrent_requests_with_one_key_create_once(shared: ControlPlane) -> None:
    key = {"idempotency-key": uuid.uuid4().hex}
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def create() -> None:
        with shared.http() as http:
            answer = http.post("/users", json={"name": "dave"}, headers=key)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    # each one either replays the single create or is told the key is in progress
    assert set(statuses) <= {201, 409}, [a.text for a in answers]
    assert statuses.count(201) >= 1
    made = [a.json() for a in answers if a.status_code == 201]
    assert all(m == made[0] for m in made)
    for refused in (a for a in answers if a.status_code == 409):
        assert "in progress" in refused.json()["error"]
    assert _users(shared).count("dave") == 1


def test_a_key_reused_on_another_route_is_refused(shared: ControlPlane) -> None:
    key = {"idempotency-key": uuid.uuid4().hex}
    with shared.http() as http:
        assert http.post("/users", json={"name": "erin"}, headers=key).status_code == 201
        other = http.post("/roles", json={"user": "erin", "role": "editor"}, headers=key)
        roles = http.get("/roles").json()
    assert other.status_code == 400
    assert "was used for POST /api/v1/users" in other.json()["error"]
    assert "editor" not in roles.get("erin", [])


def test_keys_are_per_user(shared: ControlPlane) -> None:
    second_admin = shared.make_user("root2", "admin")
    key = {"idempotency-key": "shared-key"}
    with shared.http() as http:
        assert http.post("/users", json={"name": "fay"}, headers=key).status_code == 201
    with shared.http(second_admin) as http:
        answer = http.post("/users", json={"name": "gus"}, headers=key)
    assert answer.status_code == 201
    assert REPLAYED_HEADER not in answer.headers
    assert {"fay", "gus"} <= set(_users(shared))


def test_failed_create_frees_its_key_for_the_retry(shared: ControlPlane) -> None:
    key = {"idempotency-key": uuid.uuid4().hex}
    with shared.http() as http:
        refused = http.post("/tokens", json={"user": "nobody-yet"}, headers=key)
        assert refused.status_code in (400, 404), refused.text
        assert http.post("/users", json={"name": "nobody-yet"}).status_code == 201
        made = http.post("/tokens", json={"user": "nobody-yet"}, headers=key)
    assert made.status_code == 201, made.text
    assert made.json()["token"]


def test_replayed_token_create_never_shows_the_secret_again(shared: ControlPlane) -> None:
    shared.make_user("hal", "viewer")
    key = {"idempotency-key": uuid.uuid4().hex}
    with shared.http() as http:
        first = http.post("/tokens", json={"user": "hal"}, headers=key)
        second = http.post("/tokens", json={"user": "hal"}, headers=key)
        tokens = http.get("/tokens", params={"user": "hal"}).json()
    assert first.status_code == 201
    assert second.status_code == 409
    assert first.json()["id"] in second.json()["error"]
    assert first.json()["token"] not in second.text
    assert len(tokens) == 2  # make_user's and the one this test made: not a third
    stored = (shared.home / "keel.db").read_bytes()
    assert first.json()["token"].encode() not in stored


def test_malformed_key_is_refused_before_the_route_runs(shared: ControlPlane) -> None:
    with shared.http() as http:
        answer = http.post("/users", json={"name": "ivy"}, headers={"idempotency-key": "x" * 200})
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["error"]
    assert "ivy" not in _users(shared)


# -- a dropped connection, retried by keel's client ----------------------------------


class DroppingProxy:
    """A TCP proxy that forwards everything, except that it drops the first POST's answer.

    The request reaches the server and the server answers it; the proxy waits for
    the answer's first bytes, then closes the client's side without passing them on.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections = 0
        self.dropped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"drop": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                if data.startswith(b"POST ") and not self.dropped.is_set():
                    state["drop"] = True
                upstream.sendall(data)
        except OSError:
            pass

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := upstream.recv(65536):
                if state["drop"]:
                    self.dropped.set()
                    break
                client.sendall(data)
        except OSError:
            pass
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_client_retry_after_a_dropped_answer_creates_nothing_twice(
    shared: ControlPlane, tmp_path: Path
) -> None:
    port = int(shared.url.rsplit(":", 1)[1])
    proxy = DroppingProxy(port)
    try:
        settings = Settings(
            home=tmp_path / "client",
            server_url=f"http://127.0.0.1:{proxy.port}",
            token=shared.admin_token,
        )
        transport = HttpTransport(settings)
        try:
            made = IdentityClient(transport=transport).create_user("judy", ["editor"])
        finally:
            transport.close()
    finally:
        proxy.close()
    assert proxy.dropped.is_set()  # the first attempt's answer never reached the client
    assert proxy.connections >= 2  # and the client came back for it
    assert made["name"] == "judy"
    assert _users(shared).count("judy") == 1


# -- SIGKILL mid-upload --------------------------------------------------------------


@contextmanager
def _restarted(plane: ControlPlane) -> Iterator[ControlPlane]:
    """The same store and artifacts served again by a new process (its admin exists)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "server", "start", "--port", str(port), "--store", plane.store_url,
        "--artifacts", plane.artifacts_url,
    ]  # fmt: skip
    log = plane.home / "server-restarted.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            keel_command(*args),
            env=keel_environ(KEEL_HOME=str(plane.home)),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"restarted server never became ready: {log.read_text()}")
        yield ControlPlane(
            url, plane.admin_token, process, plane.home, plane.store_url, plane.artifacts_url
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_sigkill_mid_upload_leaves_no_object_and_the_upload_succeeds_after_restart(
    server: ControlPlane,
) -> None:
    chunk, chunks = 1 << 16, 128  # 8 MiB, killed after a quarter of it
    data = os.urandom(chunk * chunks)
    digest = blake3.blake3(data).hexdigest()
    key = f"objects/{digest[:2]}/{digest[2:]}"
    artifacts = Path(server.artifacts_url)
    before = set(_files_under(artifacts))
    sent_quarter = threading.Event()
    killed = threading.Event()
    outcome: dict[str, object] = {}

    def body() -> Iterator[bytes]:
        for index in range(chunks):
            if index == chunks // 4:
                sent_quarter.set()
                killed.wait(timeout=60)  # the rest is never sent before the kill
            yield data[index * chunk : (index + 1) * chunk]

    def upload() -> None:
        try:
            with server.http() as http:
                outcome["status"] = http.put(f"/blobs/{key}", content=body()).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert sent_quarter.wait(timeout=60)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    killed.set()
    uploader.join(timeout=60)

    assert "status" not in outcome, outcome  # the upload never got an answer
    assert not (artifacts / key).exists()
    for path in set(_files_under(artifacts)) - before:
        assert "objects" not in path.relative_to(artifacts).parts, f"partial object {path}"

    with _restarted(server) as again, again.http() as http:
        assert http.head(f"/blobs/{key}").status_code == 404
        stored = http.put(f"/blobs/{key}", content=data)
        assert stored.status_code == 201, stored.text
        assert stored.json() == {"digest": digest, "size": len(data)}
        fetched = http.get(f"/blobs/{key}")
    assert fetched.status_code == 200
    assert blake3.blake3(fetched.content).hexdigest() == digest
    assert blake3.blake3((artifacts / key).read_bytes()).hexdigest() == digest


# -- SIGKILL during model-version registrations --------------------------------------


_REGISTER = """
import itertools, json, pathlib
import keel
client = keel.Client()
experiment = client.tracking.get_or_create_experiment("crashes").id
for n in itertools.count():
    run = client.tracking.create_run(experiment, capture=False).run_id
    weights = pathlib.Path(f"weights-{n}.bin")
    weights.write_bytes(n.to_bytes(8, "big") * 1000)
    client.tracking.log_artifact(run, weights, "model")
    made = client.registry.create_model_version("crashy", f"runs:/{run}/model")
    print(json.dumps({"version": made.version, "source": made.source}), flush=True)
"""


def test_sigkill_during_registrations_leaves_no_half_version(
    server: ControlPlane, tmp_path: Path
) -> None:
    routes = _routes(server)
    needed = ["/api/v1/models/{name}/versions", "/api/v1/runs", "/api/v1/runs/{run_id}/artifacts"]
    missing = [path for path in needed if "POST" not in routes.get(path, set())]
    if missing:
        pytest.skip(f"the server does not serve POST {', '.join(missing)} yet")
    registering = subprocess.Popen(
        [sys.executable, "-c", _REGISTER],
        env=server.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert registering.stdout is not None
    answered = []
    for _ in range(3):
        line = registering.stdout.readline()
        assert line, registering.stderr.read() if registering.stderr else ""
        answered.append(json.loads(line))
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    registering.wait(timeout=120)
    answered += [json.loads(line) for line in registering.stdout.read().splitlines()]

    with _restarted(server) as again, again.http() as http:
        versions = http.get("/models/crashy/versions").json()
        for version in versions:
            # a version is whole: its pinned package resolves and lists its file
            resolved = http.get(
                "/registry/resolve", params={"uri": f"models:/crashy/{version['version']}"}
            )
            assert resolved.status_code == 200, resolved.text
    numbers = sorted(v["version"] for v in versions)
    assert {a["version"] for a in answered} <= set(numbers)
    assert numbers == list(range(1, len(numbers) + 1))  # numbered without gaps
    assert len({v["source"] for v in versions}) == len(versions)  # no source twice
