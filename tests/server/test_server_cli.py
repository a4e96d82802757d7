"""``keel server``, ``keel users``, ``keel tokens`` and ``keel roles`` as users run them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from _support.cli import keel_command, keel_environ
from _support.network import free_port


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_server_refuses_to_start_with_auth_on_and_no_admin(tmp_path: Path, run_keel):
    store = f"sqlite:///{tmp_path / 'empty.db'}"
    result = run_keel("server", "start", "--port", str(free_port()), "--store", store, timeout=60)
    line = _one_error_line(result)
    assert "auth is on and there is no admin" in line and "keel server init-admin" in line


def test_init_admin_prints_a_token_once_and_refuses_a_second_time(tmp_path: Path, run_keel):
    store = f"sqlite:///{tmp_path / 'keel.db'}"
    first = run_keel("server", "init-admin", "--store", store, "--json")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["user"] == "admin" and made["token"].startswith("keel_")
    second = run_keel("server", "init-admin", "--store", store, "--name", "mallory")
    assert "an admin exists already" in _one_error_line(second)
    assert made["token"] not in second.stdout + second.stderr


def test_no_auth_refuses_a_non_loopback_host(tmp_path: Path, run_keel):
    result = run_keel(
        "server", "start", "--no-auth", "--host", "0.0.0.0", "--port", str(free_port()),
        "--store", f"sqlite:///{tmp_path / 'keel.db'}", timeout=60,
    )  # fmt: skip
    assert "--no-auth serves only on loopback" in _one_error_line(result)


def test_no_auth_on_loopback_warns_loudly_and_acts_as_admin(tmp_path: Path):
    port = free_port()
    log = tmp_path / "server.err"
    args = ["server", "start", "--no-auth", "--port", str(port)]
    args += ["--store", f"sqlite:///{tmp_path / 'keel.db'}"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            keel_command(*args),
            env=keel_environ(KEEL_HOME=str(tmp_path / ".keel")),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        whoami = httpx.get(f"http://127.0.0.1:{port}/api/v1/whoami").json()
        assert whoami["roles"] == ["admin"] and whoami["token_id"] is None
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "WARNING: keel server runs WITHOUT AUTHENTICATION (--no-auth)" in log.read_text()


def test_roles_grant_revoke_and_list_on_the_local_store(tmp_path: Path, run_keel):
    env = {"KEEL_HOME": str(tmp_path / ".keel"), "KEEL_USER": "ann"}
    assert run_keel("init", env=env).returncode == 0
    for args in (
        ("roles", "grant", "ann", "admin"),
        ("roles", "grant", "ed", "editor", "--experiment", "churn"),
        ("roles", "grant", "ed", "editor", "--model", "fraud"),
        ("roles", "grant", "mo", "editor", "--alias", "fraud@staging"),
    ):
        result = run_keel(*args, env=env)
        assert result.returncode == 0, result.stderr
    again = run_keel("roles", "grant", "ed", "editor", "--model", "fraud", env=env)
    assert "ed already had role 'editor' on model 'fraud'" in again.stdout
    listed = json.loads(run_keel("roles", "list", "--json", env=env).stdout)
    assert listed == {
        "ann": ["admin"],
        "ed": ["editor on experiment churn", "editor on model fraud"],
        "mo": ["editor on alias fraud@staging"],
    }
    revoked = run_keel("roles", "revoke", "ed", "editor", "--model", "fraud", env=env)
    assert (
        revoked.returncode == 0 and "no longer has role 'editor' on model 'fraud'" in revoked.stdout
    )
    missing = run_keel("roles", "revoke", "ed", "editor", "--model", "fraud", env=env)
    assert "does not have role 'editor on model fraud'" in _one_error_line(missing)
    refused = run_keel("roles", "grant", "eve", "admin", env={**env, "KEEL_USER": "eve"})
    assert "needs role 'admin'" in _one_error_line(refused)


def test_roles_grant_takes_one_scope_and_checks_it(tmp_path: Path, run_keel):
    env = {"KEEL_HOME": str(tmp_path / ".keel")}
    both = run_keel("roles", "grant", "ed", "editor", "--model", "a", "--experiment", "b", env=env)
    assert "give at most one of --experiment, --model and --alias" in _one_error_line(both)
    bad_alias = run_keel("roles", "grant", "ed", "editor", "--alias", "fraud", env=env)
    assert "an alias scope is MODEL@ALIAS" in _one_error_line(bad_alias)
