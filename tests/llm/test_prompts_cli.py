"""``keel prompts …`` end to end: register from a file, render, alias, approve, diff."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import keel

PROMPT_V1 = """\
model: gpt-4o-mini
parameters: {temperature: 0.2, max_tokens: 300}
description: first cut
messages:
  - role: system
    content: You answer questions about {{ product }}. Be brief.
  - role: user
    content: "{{ question }}"
"""


@pytest.fixture
def cli(keel_env, run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args, user="bob")``: ``keel *args`` on the test's home, as ``user`` (``KEEL_USER``)."""

    def run(*args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
        return run_keel(*args, settings=keel_env, env={"KEEL_USER": user})

    return run


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def test_register_render_protect_approve_promote_and_diff(cli, tmp_path: Path):
    v1 = tmp_path / "support.yaml"
    v1.write_text(PROMPT_V1)
    registered = json.loads(
        _ok(cli("prompts", "register", "support", "--file", str(v1), "--json")).stdout
    )
    assert (registered["version"], registered["variables"]) == (1, ["product", "question"])
    v2 = tmp_path / "support.json"
    v2.write_text(
        json.dumps(
            {
                "model": "gpt-4o",
                "parameters": {"temperature": 0.2},
                "messages": [
                    {"role": "system", "content": "You answer questions about {{ product }}."},
                    {"role": "user", "content": "{{ question }}"},
                ],
            }
        )
    )
    assert (
        "Registered prompts:/support/2"
        in _ok(cli("prompts", "register", "support", "-f", str(v2))).stdout
    )
    again = _ok(cli("prompts", "register", "support", "-f", str(v2)))
    assert "already holds this prompt" in again.stdout

    listed = json.loads(_ok(cli("prompts", "list", "--json")).stdout)
    assert [(p["name"], p["latest_version"]) for p in listed] == [("support", 2)]
    versions = json.loads(_ok(cli("prompts", "versions", "support", "--json")).stdout)
    assert [(v["version"], v["model"]) for v in versions] == [(1, "gpt-4o-mini"), (2, "gpt-4o")]
    assert json.loads(_ok(cli("models", "list", "--json")).stdout) == []  # a prompt is no model

    _ok(cli("roles", "grant", "alice", "approver", user="ann"))
    _ok(cli("policy", "protect", "production", "--approvals", "1", user="ann"))
    refused = cli("prompts", "alias", "set", "support", "production", "1")
    assert refused.returncode == 1
    assert "keel prompts approve support 1 --for production" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    _ok(cli("prompts", "approve", "support", "1", "--for", "production", user="alice"))
    moved = _ok(cli("prompts", "alias", "set", "support", "production", "1", "--comment", "go"))
    assert "support@production: unset → version 1" in moved.stdout
    history = json.loads(_ok(cli("prompts", "alias", "history", "support", "--json")).stdout)
    assert [(h["alias"], h["to_version"], h["actor"]) for h in history] == [
        ("production", 1, "bob")
    ]

    shown = json.loads(_ok(cli("prompts", "show", "prompts:/support@production", "--json")).stdout)
    assert (shown["version"], shown["aliases"], shown["description"]) == (
        1,
        ["production"],
        "first cut",
    )
    rendered = _ok(
        cli(
            "prompts", "render", "prompts:/support@production",
            "--var", "product=Keel", "--var", "question=What is a=b?", "--json",
        )
    )  # fmt: skip
    body = json.loads(rendered.stdout)
    assert body["messages"][1] == {"role": "user", "content": "What is a=b?"}
    assert (body["model"], body["temperature"]) == ("gpt-4o-mini", 0.2)
    missing = cli("prompts", "render", "prompts:/support/1", "--var", "product=Keel")
    assert missing.returncode == 1 and "'question'" in missing.stderr

    diff = _ok(cli("prompts", "diff", "support", "1", "2")).stdout
    assert "-You answer questions about {{ product }}. Be brief." in diff
    assert "+You answer questions about {{ product }}." in diff
    assert '+  "model": "gpt-4o",' in diff


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: m\nmessages: [\n", "is not valid YAML/JSON"),
        ("model: m\ntemplate: hi\nmesages: []\n", "unknown key(s) 'mesages'"),
        ("template: hi {{ who }}\n", "needs a 'model'"),
        ("model: m\ntemplate: hi {{ who\n", "outside a placeholder"),
        ("- just a list\n", "must hold an object"),
    ],
)
def test_a_bad_prompt_file_is_one_clear_line(cli, tmp_path: Path, content: str, message: str):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = cli("prompts", "register", "support", "--file", str(bad))
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert keel.prompts.list() == []  # nothing was registered


def test_a_missing_prompt_file_and_an_unknown_prompt_say_so(cli, tmp_path: Path):
    keel.prompts.register("support", template="Hi {{ name }}", model="gpt-4o-mini")
    result = cli("prompts", "register", "support", "--file", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "no prompt file" in result.stderr
    unknown = cli("prompts", "show", "prompts:/nope@production")
    assert unknown.returncode == 1 and "no prompt named 'nope'" in unknown.stderr
