"""Dataset versions through ``keel server``: bytes over the blob routes, rows over the data routes.

The public API's round trips run on the three modes in ``tests/data``; these tests
need the server itself: who may read and write datasets, what the server refuses
to register, run inputs recorded over HTTP, and ``keel data`` as a client.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import keel
import keel.data as kd
from _support.control_plane import ControlPlane
from keel.config import Settings, load_settings
from keel.data.client import NewVersion
from keel.data.remote import RemoteData
from keel.data.snapshot import DataContext
from keel.errors import NotFound, PermissionDenied

#: Runs a test on ``any_env``'s server mode only (permissions are the server's).
server_only = pytest.mark.parametrize("any_env", ["server"], indirect=True)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _as(server: ControlPlane, token: str, home: Path) -> Settings:
    """Settings of another client of ``server`` acting with ``token`` (this process keeps its own)."""
    return load_settings(home=home, server_url=server.url, token=token)


def test_the_catalog_is_remote_only_on_the_server_mode(any_env: Settings) -> None:
    assert isinstance(DataContext().catalog, RemoteData) == bool(any_env.server_url)


@server_only
def test_an_add_stores_bytes_and_rows_on_the_server_not_in_the_local_home(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path
) -> None:
    payload = os.urandom(400_000)  # stored as an object of its own, not packed
    tree = _tree(tmp_path / "raw", {"a.txt": b"alpha", "big.bin": payload})
    version = kd.add(tree)
    assert (version.name, version.version, version.files) == ("raw", 1, 2)
    assert version.created_by == keel.Client().user  # the token's user, as the server says
    assert not (any_env.home / "keel.db").exists()
    # another client of the server, in another home, sees the version and gets the bytes
    other = load_settings(
        home=tmp_path / "other", server_url=control_plane.url, token=any_env.token
    )
    assert kd.get("raw@1", settings=other).digest == version.digest
    kd.checkout("raw@1", tmp_path / "restore", settings=other)
    assert (tmp_path / "restore" / "big.bin").read_bytes() == payload


@server_only
def test_run_inputs_are_recorded_through_the_server(any_env: Settings, tmp_path: Path) -> None:
    client = keel.Client()
    run = client.create_run(client.create_experiment("train"), capture=False)
    version = kd.add(_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    catalog = DataContext().catalog
    assert catalog.record_input(run.id, "raw", "load_dataset").uri == "datasets:/raw@1"
    again = NewVersion("raw", version.digest, "folder", 1, 5, run_id=run.id, input_context="add")
    assert catalog.register_version(again) == (version, False)  # same content: no new number
    assert [v.uri for v in kd.run_inputs(run.id)] == ["datasets:/raw@1"]
    with pytest.raises(NotFound, match="no run with id"):
        catalog.record_input("f" * 32, "raw", "load_dataset")


@server_only
def test_the_server_refuses_a_version_whose_bytes_it_does_not_hold(
    any_env: Settings, control_plane: ControlPlane
) -> None:
    body = {"name": "ghost", "digest": "ab" * 32, "kind": "folder", "files": 1, "nbytes": 1}
    with control_plane.http(any_env.token) as http:
        answer = http.post("/datasets/versions", json=body)
        assert answer.status_code == 404, answer.text
        assert "does not hold object" in answer.json()["error"]
        assert http.post("/datasets/versions", json={**body, "kind": "x"}).status_code == 400
        bad = http.post("/datasets/versions", json={**body, "digest": "../etc"})
        assert bad.status_code == 400 and list(bad.json()) == ["error"]
        assert http.get("/datasets").json() == []


@server_only
def test_a_viewer_reads_and_checks_out_datasets_but_adding_is_refused(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path
) -> None:
    kd.add(_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    keel.log_dataset(pd.DataFrame({"x": [1.0, 2.0]}), name="table")
    viewer = _as(control_plane, control_plane.make_user("vic", "viewer"), tmp_path / "v")
    assert [v.name for v in kd.list_datasets(settings=viewer)] == ["raw", "table"]
    assert [v.version for v in kd.list_versions("raw", settings=viewer)] == [1]
    assert kd.get_profile("table@1", settings=viewer)["columns"]["x"]["mean"] == 1.5  # type: ignore[index]
    kd.checkout("raw@1", tmp_path / "out", settings=viewer)
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"alpha"
    edited = _tree(tmp_path / "raw", {"a.txt": b"beta"})
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        kd.add(edited, settings=viewer)
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        keel.log_dataset(pd.DataFrame({"x": [3.0]}), name="table", settings=viewer)
    assert [v.version for v in kd.list_versions("raw")] == [1]


@server_only
def test_an_experiment_scoped_editor_uploads_bytes_but_cannot_number_a_version(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path
) -> None:
    kd.add(_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    token = control_plane.make_user("ed")
    with control_plane.http() as http:
        grant = {"user": "ed", "role": "editor", "scope_kind": "experiment", "scope_name": "e"}
        assert http.post("/roles", json=grant).status_code == 200
    editor = _as(control_plane, token, tmp_path / "ed")
    assert kd.get("raw", settings=editor).version == 1  # read somewhere is enough to read
    with pytest.raises(PermissionDenied, match=r"lacks permission 'write' \(roles: editor on"):
        kd.add(_tree(tmp_path / "mine", {"b.txt": b"b"}), settings=editor)
    assert [v.name for v in kd.list_datasets()] == ["raw"]


@server_only
def test_a_token_without_a_role_cannot_even_read_datasets(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path
) -> None:
    kd.add(_tree(tmp_path / "raw", {"a.txt": b"alpha"}))
    nobody = _as(control_plane, control_plane.make_user("nobody"), tmp_path / "n")
    for call in (
        lambda: kd.list_datasets(settings=nobody),
        lambda: kd.get("raw", settings=nobody),
        lambda: kd.get("nothing", settings=nobody),  # a 403, not a 404 that says it is free
    ):
        with pytest.raises(PermissionDenied, match="lacks permission 'read'"):
            call()


@server_only
def test_keel_data_add_list_show_checkout_through_a_server(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path, run_keel
) -> None:
    _tree(tmp_path / "raw", {"a.csv": b"x\n1\n", "b.csv": b"x\n2\n"})
    server = ("--server", control_plane.url)
    env = {"KEEL_TOKEN": str(any_env.token)}

    def ok(*args: str) -> str:
        result = run_keel(*server, "data", *args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    added = json.loads(ok("add", "raw", "--json"))
    assert (added["uri"], added["files"]) == ("datasets:/raw@1", 2)
    assert kd.get("raw@1").digest == added["digest"]  # this process, through the same server
    (tmp_path / "raw" / "b.csv").write_bytes(b"x\n22\n")
    ok("add", "raw")
    listed = json.loads(ok("list", "--json"))
    assert [(v["name"], v["version"]) for v in listed] == [("raw", 2)]
    shown = json.loads(ok("show", "raw@1", "--json"))
    assert shown["digest"] == added["digest"]
    ok("checkout", "raw@1", "old")
    assert (tmp_path / "old" / "b.csv").read_bytes() == b"x\n2\n"
    viewer = control_plane.make_user("vee", "viewer")
    refused = run_keel(*server, "data", "add", "raw", cwd=tmp_path, env={"KEEL_TOKEN": viewer})
    assert refused.returncode == 1 and "lacks permission 'write'" in refused.stderr
