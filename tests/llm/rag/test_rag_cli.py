"""``keel rag …`` end to end: build, query, list, versions, aliases and approvals, errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

DOCS = {
    "rollback.md": "Rolling back\nRun keel deploy rollback NAME to restore the previous revision.\n",
    "tokens.md": "API tokens\nA token expires after ninety days and is then refused.\n",
    "logo.png": "\x00binary",
}


@pytest.fixture
def cli(sqlite_env, run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args, user="bob")``: ``keel *args`` on the test's home, as ``user``."""

    def run(*args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
        return run_keel(*args, settings=sqlite_env, env={"KEEL_USER": user})

    return run


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow  # about twenty keel processes, two of which load the embedding model
def test_build_query_alias_and_approve_from_the_command_line(cli, tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for rel, text in DOCS.items():
        (folder / rel).write_text(text)
    _ok(cli("data", "add", str(folder), "--name", "docs"))
    build = ["rag", "build", "--name", "kb", "--source", "datasets:/docs@1", "--chunker"]
    built = json.loads(_ok(cli(*build, "lines:1", "--embedder", "local-minilm", "--json")).stdout)
    assert (built["uri"], built["chunks"], built["embedded"], built["skipped"]) == (
        "rag:/kb/1",
        4,
        4,
        1,
    )
    again = _ok(cli(*build, "lines:1", "--embedder", "local-minilm")).stdout
    assert "rag:/kb/1" in again and "0 embedded, 4 reused: cache hit rate 100.0%" in again

    hits = json.loads(
        _ok(cli("rag", "query", "rag:/kb/1", "When do tokens expire?", "-k", "2", "--json")).stdout
    )
    assert len(hits) == 2 and hits[0]["path"] == "tokens.md"
    listed = json.loads(_ok(cli("rag", "list", "--json")).stdout)
    assert [(i["name"], i["latest_version"]) for i in listed] == [("kb", 1)]
    [version] = json.loads(_ok(cli("rag", "versions", "kb", "--json")).stdout)
    assert (version["source"], version["chunker"], version["embedder"]) == (
        "datasets:/docs@1",
        "lines:1",
        "local-minilm",
    )
    shown = json.loads(_ok(cli("rag", "show", "rag:/kb/1", "--json")).stdout)
    assert shown["document"]["key"] == built["key"]

    _ok(cli("roles", "grant", "alice", "approver"))
    _ok(cli("policy", "protect", "production", "--approvals", "1", "--role", "approver"))
    refused = _error(cli("rag", "alias", "set", "kb", "production", "1"))
    assert "needs 1 approval(s) from role 'approver'" in refused
    _ok(cli("rag", "approve", "kb", "1", "--for", "production", user="alice"))
    moved = _ok(cli("rag", "alias", "set", "kb", "production", "1", "--comment", "launch"))
    assert "kb@production: unset → version 1" in moved.stdout
    got = json.loads(_ok(cli("rag", "alias", "get", "kb", "production", "--json")).stdout)
    assert got["version"] == 1
    [move] = json.loads(_ok(cli("rag", "alias", "history", "kb", "--json")).stdout)
    assert (move["to_version"], move["comment"]) == (1, "launch")

    assert "k must be a whole number from 1 to 1000" in _error(
        cli("rag", "query", "kb@production", "roll back", "-k", "0")
    )
    assert "unknown embedder 'ada-2'" in _error(cli(*build, "lines:1", "--embedder", "ada-2"))
    assert "no alias 'staging'" in _error(cli("rag", "query", "kb@staging", "roll back"))
