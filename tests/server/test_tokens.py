"""API tokens against a real ``keel server``: 401 for every bad token, Basic auth, hash-only storage."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _support.control_plane import ControlPlane, start_control_plane


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with start_control_plane(tmp_path_factory.mktemp("tokens") / ".keel") as running:
        yield running


def _assert_401(answer: httpx.Response, secret: str | None = None) -> str:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert list(body) == ["error"]
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    if secret:
        assert secret not in answer.text  # never echoed
    return str(body["error"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "this server needs a token"),
        ("Bearer not-a-keel-token", "malformed token"),
        ("Bearer keel_" + "A" * 43, "unknown token"),
        ("Basic !!!not base64!!!", "malformed Basic credentials"),
        ("Token abc", "unsupported authorization scheme"),
    ],
    ids=["missing", "malformed", "unknown", "malformed-basic", "other-scheme"],
)
def test_missing_malformed_and_unknown_tokens_get_401(
    server: ControlPlane, header: str | None, expected: str
):
    headers = {"authorization": header} if header else {}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers) as http:
        assert expected in _assert_401(http.get("/whoami"))
        # a write is refused before any permission check, and creates nothing
        _assert_401(http.post("/users", json={"name": "intruder"}))
    with server.http() as admin:
        assert "intruder" not in [u["name"] for u in admin.get("/users").json()]


def test_an_expired_token_gets_401_even_when_its_principal_was_cached(
    server: ControlPlane, run_keel
):
    server.make_user("erin", "viewer")
    made = run_keel(
        "tokens", "create", "--user", "erin", "--expires", "2s", "--json",
        env={"KEEL_SERVER_URL": server.url, "KEEL_TOKEN": server.admin_token},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    with server.http(token["token"]) as http:
        first = http.get("/whoami")
        if int(time.time() * 1000) < token["expires_at"]:  # used in time: it worked, and is cached
            assert first.status_code == 200 and first.json()["user"] == "erin"
        while int(time.time() * 1000) <= token["expires_at"] + 50:
            time.sleep(0.1)
        message = _assert_401(http.get("/whoami"), token["token"])
    assert message == f"token {token['id']} has expired; create a new one"


def test_a_revoked_token_gets_401_at_once(server: ControlPlane, run_keel):
    secret = server.make_user("rita", "editor")
    with server.http(secret) as http:
        whoami = http.get("/whoami").json()
        assert whoami["user"] == "rita"
        revoked = run_keel(
            "tokens", "revoke", whoami["token_id"],
            env={"KEEL_SERVER_URL": server.url, "KEEL_TOKEN": server.admin_token},
        )  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        message = _assert_401(http.get("/whoami"), secret)
    assert message == f"token {whoami['token_id']} was revoked; create a new one"


def test_basic_auth_with_the_token_as_password_works(server: ControlPlane):
    secret = server.make_user("basil", "viewer")
    with httpx.Client(base_url=f"{server.url}/api/v1", auth=("anything", secret)) as http:
        assert http.get("/whoami").json()["user"] == "basil"
    with httpx.Client(base_url=f"{server.url}/api/v1", auth=("basil", "keel_wrong")) as http:
        assert "unknown token" in _assert_401(http.get("/whoami"))
    raw = base64.b64encode(b"basil:").decode()  # no password at all
    with httpx.Client(
        base_url=f"{server.url}/api/v1", headers={"authorization": f"Basic {raw}"}
    ) as http:
        assert "needs a token" in _assert_401(http.get("/whoami"))


def test_a_token_is_stored_only_as_its_sha256(server: ControlPlane):
    from sqlalchemy import create_engine, text

    secret = server.make_user("hana", "viewer")
    engine = create_engine(server.store_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT digest FROM api_tokens WHERE user_name = 'hana'")).all()
    engine.dispose()
    assert [r.digest for r in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert re.fullmatch(r"[0-9a-f]{64}", rows[0].digest)
    # nor anywhere else the server writes: its database (and write-ahead log) and its log
    needle = secret.removeprefix("keel_").encode()
    for path in Path(server.home).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


def test_tokens_carry_at_least_128_random_bits(server: ControlPlane):
    server.make_user("tess", "viewer")
    secrets = []
    with server.http() as admin:
        for _ in range(20):
            secrets.append(admin.post("/tokens", json={"user": "tess"}).json()["token"])
    assert len(set(secrets)) == 20
    for secret in secrets:
        body = secret.removeprefix("keel_")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 128


def test_tokens_create_prints_the_secret_once_and_list_never_does(server: ControlPlane, run_keel):
    env = {"KEEL_SERVER_URL": server.url, "KEEL_TOKEN": server.admin_token}
    server.make_user("lola", "viewer")
    made = run_keel("tokens", "create", "--user", "lola", "--scope", "predict", env=env)
    assert made.returncode == 0, made.stderr
    [secret] = re.findall(r"keel_[A-Za-z0-9_\-]{43}", made.stdout)
    assert "shown once" in made.stdout
    with server.http(secret) as http:
        assert http.get("/whoami").json()["scopes"] == ["predict"]
    listed = run_keel("tokens", "list", "--user", "lola", env=env)
    listed_json = run_keel("tokens", "list", "--json", env=env)
    assert listed.returncode == 0 and listed_json.returncode == 0
    for output in (listed.stdout, listed_json.stdout):
        assert secret not in output and "keel_" not in output
    tokens = json.loads(listed_json.stdout)
    assert tokens and all("token" not in t for t in tokens)
    assert {"id", "user", "scopes", "expires_at", "revoked_at", "active"} <= set(tokens[0])
