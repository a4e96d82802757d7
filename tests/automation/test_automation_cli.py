"""``keel policy apply|show|disable`` and ``keel automation status|tick|history`` from a shell."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import yaml

import keel


@pytest.fixture
def cli(served_anywhere, run_keel):
    """``run_keel`` pointed at the test's Keel: its home and store, or its server and token."""
    settings = served_anywhere
    env = (
        {"KEEL_SERVER_URL": settings.server_url, "KEEL_TOKEN": str(settings.token)}
        if settings.server_url
        else {}
    )
    return partial(run_keel, settings=settings, env=env)


def test_apply_show_tick_and_history_from_the_command_line(minimal_policy, tmp_path: Path, cli):
    keel.log_dataset(pd.DataFrame({"x": [1.0]}), name="nothing")  # a trigger's dataset must exist
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(triggers=[{"dataset": {"name": "nothing"}}])))
    dry = cli("policy", "apply", str(path), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["triggers"] == [{"dataset": {"name": "nothing"}}]
    assert json.loads(cli("automation", "status", "--json").stdout) == []  # dry: stored nothing

    applied = cli("policy", "apply", str(path), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["revision"] == 1
    shown = json.loads(cli("policy", "show", "doubler-loop", "--json").stdout)
    assert shown["state"]["state"] == "idle" and shown["policy"]["model"] == "doubler"
    listed = json.loads(cli("policy", "list", "--json").stdout)
    assert [p["name"] for p in listed["automation"]] == ["doubler-loop"]

    ticked = cli("automation", "tick", "--json")
    assert ticked.returncode == 0, ticked.stderr
    assert json.loads(ticked.stdout)[0]["after"] == "idle"  # no version since apply: nothing fires
    assert json.loads(cli("automation", "history", "--json").stdout) == []

    assert cli("policy", "disable", "doubler-loop").returncode == 0
    assert json.loads(cli("automation", "status", "--json").stdout)[0]["enabled"] is False


def test_a_bad_policy_file_is_one_line_naming_the_field(minimal_policy, tmp_path: Path, cli):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(rollout={"canary": {"weight": 150}})))
    result = cli("policy", "apply", str(path))
    assert result.returncode == 1
    assert "policy.rollout.canary.weight: a canary takes 1 to 99 percent" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = cli("policy", "show", "nope")
    assert missing.returncode == 1 and "no automation policy 'nope'" in missing.stderr
