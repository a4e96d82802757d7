"""RAG indexes through a real ``keel server`` (PostgreSQL and loopback S3 behind it): the client
builds and queries, the server registers, checks permissions and moves aliases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import keel
from keel.artifacts import hash_bytes
from keel.errors import ApprovalRequired, NotFound

DOCS = {
    "rollback.md": "Rolling back\nRun keel deploy rollback NAME to restore the previous revision.\n",
    "tokens.md": "API tokens\nA token expires after ninety days and is then refused.\n",
    "drift.md": "Drift\nThe Kolmogorov-Smirnov test compares live and reference distributions.\n",
}

pytestmark = pytest.mark.parametrize("any_env", ["server"], indirect=True)


def add_docs(tmp_path: Path, docs: dict[str, str]) -> str:
    folder = tmp_path / "docs"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for rel, text in docs.items():
        (folder / rel).write_text(text)
    return keel.data.add(folder, "docs").uri


def test_build_query_and_rebuild_through_the_server(any_env, tmp_path, as_user):
    bob = as_user("bob")
    built = bob.rag.build(
        "kb", source=add_docs(tmp_path, DOCS), chunker="lines:1", embedder="local-minilm"
    )
    assert (built.version.uri, built.chunks, built.embedded) == ("rag:/kb/1", 6, 6)
    assert built.version.created_by == "bob"  # the token's user, as the server saw it
    index = bob.rag.load("rag:/kb/1")
    [hit] = index.query("When does an API token stop working?", k=1)
    assert hit.path == "tokens.md"
    # the table is this client's cache, filled from the blobs the server holds
    assert (any_env.home / "cache" / "rag" / f"{built.key}.lance").is_dir()
    changed = {**DOCS, "tokens.md": DOCS["tokens.md"] + "Revoke one with keel tokens revoke.\n"}
    again = bob.rag.build(
        "kb", source=add_docs(tmp_path, changed), chunker="lines:1", embedder="local-minilm"
    )
    assert (again.version.version, again.embedded, again.reused) == (2, 1, 6)
    same = bob.rag.build("kb", source="docs@2", chunker="lines:1", embedder="local-minilm")
    assert (same.version.version, same.embedded) == (2, 0)
    assert [v.version for v in keel.Client().rag.versions("kb")] == [1, 2]
    assert [i.name for i in keel.Client().rag.list()] == ["kb"]


def test_a_protected_alias_needs_an_approval_through_the_server(any_env, tmp_path, as_user):
    bob, alice = as_user("bob"), as_user("alice")
    version = bob.rag.build(
        "kb", source=add_docs(tmp_path, DOCS), chunker="lines:1", embedder="local-minilm"
    ).version.version
    governor = keel.Client()  # the admin
    governor.grant_role("alice", "approver")
    governor.set_alias_policy("production", approvals=1, role="approver")
    with pytest.raises(ApprovalRequired, match=r"needs 1 approval\(s\) from role 'approver'"):
        bob.rag.set_alias("kb", "production", version)
    alice.rag.approve("kb", version, "production", comment="recall checked")
    bob.rag.set_alias("kb", "production", version, comment="launch")
    assert bob.rag.get_alias("kb", "production") == version
    assert bob.rag.load("rag:/kb@production").query("roll back", k=1)[0].path == "rollback.md"
    [move] = bob.rag.alias_history("kb", "production")
    assert (move.to_version, move.actor, move.comment) == (version, "bob", "launch")
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        bob.rag.load("kb@staging")


def test_the_server_refuses_what_is_not_an_index_document(any_env, control_plane):
    # stored by a client through the blob routes, as a build stores a document
    blob = keel.Client().transport.artifacts.put_json({"format": "keel-rag-index/1", "key": "x"})
    with control_plane.http(any_env.token) as http:
        answer = http.post("/rag/kb/versions", json={"digest": blob.digest})
        assert answer.status_code == 400
        assert "is not a keel-rag-index/1 document" in answer.json()["error"]
        answer = http.post("/rag/kb/versions", json={"digest": hash_bytes(b"never stored")})
        assert answer.status_code == 404
        assert "does not hold index document" in answer.json()["error"]
        assert http.get("/rag/kb").status_code == 404  # nothing was registered
    with control_plane.http(control_plane.make_user("vera", "viewer")) as http:
        answer = http.post("/rag/kb/versions", json={"digest": blob.digest})
        assert answer.status_code == 403
        assert "write" in answer.json()["error"]
