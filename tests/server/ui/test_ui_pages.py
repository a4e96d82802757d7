"""The UI's pages over plain HTTP: the login cookie, escaping, and refusals without a session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from _support.cli import keel_command, keel_environ, run_keel
from _support.network import free_port
from keel.config import load_settings
from keel.transport.http import HttpTransport


def _browser(seeded: Any) -> httpx.Client:
    return httpx.Client(base_url=seeded.server.url, timeout=60.0, follow_redirects=False)


@contextmanager
def _logged_in(seeded: Any, token: str) -> Iterator[httpx.Client]:
    with _browser(seeded) as http:
        answer = http.post("/login", data={"token": token, "next": "/experiments"})
        assert answer.status_code == 303, answer.text
        yield http


def test_login_sets_an_httponly_strict_session_cookie(seeded: Any) -> None:
    with _browser(seeded) as http:
        answer = http.post(
            "/login", data={"token": seeded.server.admin_token, "next": "/runs/abc?x=1"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/runs/abc?x=1"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"keel_session={seeded.server.admin_token};")
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert "secure" not in flags  # plain http on loopback: a Secure cookie would be dropped


def test_login_never_redirects_off_the_server(seeded: Any) -> None:
    with _browser(seeded) as http:
        answer = http.post(
            "/login", data={"token": seeded.server.admin_token, "next": "//evil.example/x"}
        )
        assert answer.headers["location"] == "/experiments"


def test_bad_token_rerenders_the_form_with_401_and_the_reason(seeded: Any) -> None:
    with _browser(seeded) as http:
        answer = http.post("/login", data={"token": "keel_not-a-real-token"})
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert '<form method="post" action="/login"' in answer.text
        assert 'class="error"' in answer.text


def test_pages_without_a_session_redirect_to_login(seeded: Any) -> None:
    with _browser(seeded) as http:
        answer = http.get(f"/experiments/{seeded.experiment_id}?filter=x")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
        http.cookies.set("keel_session", "keel_forged")
        assert http.get("/experiments").status_code == 303


def test_chart_json_without_a_session_is_a_401_json(seeded: Any) -> None:
    run_id = seeded.run_ids["fast"]
    with _browser(seeded) as http:
        answer = http.get(f"/ui/api/runs/{run_id}/metrics/loss")
        assert answer.status_code == 401
        assert "token" in answer.json()["error"]


def test_api_ignores_the_session_cookie(seeded: Any) -> None:
    # a cookie the browser sends by itself must not authenticate the REST API
    with _logged_in(seeded, seeded.server.admin_token) as http:
        assert http.get("/experiments").status_code == 200
        assert http.get("/api/v1/experiments").status_code == 401


def test_chart_json_downsamples_to_the_width_and_zooms_exact(seeded: Any) -> None:
    run_id = seeded.run_ids["fast"]
    with _logged_in(seeded, seeded.server.admin_token) as http:
        whole = http.get(f"/ui/api/runs/{run_id}/metrics/loss", params={"width": 100}).json()
        assert whole["points"] == 5_000 and not whole["exact"]
        assert len(whole["steps"]) <= 200
        assert whole["range"] == [0, 4_999]
        zoom = http.get(
            f"/ui/api/runs/{run_id}/metrics/loss", params={"width": 100, "start": 10, "end": 59}
        ).json()
        assert zoom["exact"] and zoom["steps"] == list(range(10, 60))
        assert zoom["range"] == [10, 59]


def test_pages_escape_what_users_logged(seeded: Any, tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path, server_url=seeded.server.url, token=seeded.server.admin_token
    )
    client = keel.Client(transport=HttpTransport(settings))
    experiment_id = client.create_experiment("<b>bold</b>")
    run = client.create_run(experiment_id, "<script>alert(1)</script>", capture=False)
    client.log_params(run.id, {"html": "<img src=x>"})
    client.set_tags(run.id, {"note": "<i>v</i>"})
    with _logged_in(seeded, seeded.server.admin_token) as http:
        for path in (f"/experiments/{experiment_id}", f"/runs/{run.id}", "/experiments"):
            page = http.get(path, params={"columns": "params.html,tags.note,params.<b>bold</b>"})
            assert page.status_code == 200
            assert "<script>alert" not in page.text
            assert "<img src=x>" not in page.text and "<i>v</i>" not in page.text
            assert "<b>bold</b>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in http.get(f"/runs/{run.id}").text
        table = http.get(f"/experiments/{experiment_id}", params={"columns": "params.html"})
        assert "&lt;img src=x&gt;" in table.text


def test_a_bad_filter_shows_the_parser_message_not_a_500(seeded: Any) -> None:
    with _logged_in(seeded, seeded.server.admin_token) as http:
        page = http.get(f"/experiments/{seeded.experiment_id}", params={"filter": "params.lr = "})
        assert page.status_code == 200
        assert 'id="filter-error"' in page.text and "expected" in page.text


def test_a_viewer_sees_the_pages(seeded: Any) -> None:
    token = seeded.server.make_user("vera", "viewer")
    with _logged_in(seeded, token) as http:
        page = http.get(f"/experiments/{seeded.experiment_id}")
        assert page.status_code == 200
        assert "fast" in page.text and "slow" in page.text
        assert http.get(f"/runs/{seeded.run_ids['slow']}").status_code == 200


def test_a_user_without_a_role_gets_a_403_page(seeded: Any) -> None:
    token = seeded.server.make_user("nobody")
    with _logged_in(seeded, token) as http:
        page = http.get(f"/runs/{seeded.run_ids['slow']}")
        assert page.status_code == 403
        assert "lacks permission 'read'" in page.text.replace("&#39;", "'")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_keel_ui_refuses_a_host_other_than_loopback(host: str) -> None:
    done = run_keel("ui", "--host", host, "--port", "1")
    assert done.returncode != 0
    assert "loopback" in done.stderr and done.stderr.count("\n") == 1


def test_keel_ui_serves_the_local_home_without_login(tmp_path: Path) -> None:
    port = free_port()
    env = keel_environ(KEEL_HOME=str(tmp_path / ".keel"))
    with subprocess.Popen(
        keel_command("ui", "--port", str(port)), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            assert f"http://127.0.0.1:{port}/" in process.stdout.readline()
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            page = httpx.get(f"http://127.0.0.1:{port}/experiments")
            assert page.status_code == 200 and "Experiments" in page.text
            assert httpx.get(f"http://127.0.0.1:{port}/login").status_code == 303
        finally:
            process.terminate()
            process.wait(timeout=15)
