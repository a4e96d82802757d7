"""``keel policy apply|show|disable`` and ``keel automation status|tick|history`` from a shell."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

import keel


def test_apply_show_tick_and_history_from_the_command_line(
    served, minimal_policy, tmp_path: Path, run_keel
):
    keel.log_dataset(pd.DataFrame({"x": [1.0]}), name="nothing")  # a trigger's dataset must exist
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(triggers=[{"dataset": {"name": "nothing"}}])))
    dry = run_keel("policy", "apply", str(path), "--dry-run", "--json", settings=served)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["triggers"] == [{"dataset": {"name": "nothing"}}]
    assert (
        json.loads(run_keel("automation", "status", "--json", settings=served).stdout) == []
    )  # dry: stored nothing

    applied = run_keel("policy", "apply", str(path), "--json", settings=served)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["revision"] == 1
    shown = json.loads(run_keel("policy", "show", "doubler-loop", "--json", settings=served).stdout)
    assert shown["state"]["state"] == "idle" and shown["policy"]["model"] == "doubler"
    listed = json.loads(run_keel("policy", "list", "--json", settings=served).stdout)
    assert [p["name"] for p in listed["automation"]] == ["doubler-loop"]

    ticked = run_keel("automation", "tick", "--json", settings=served)
    assert ticked.returncode == 0, ticked.stderr
    assert json.loads(ticked.stdout)[0]["after"] == "idle"  # no version since apply: nothing fires
    assert json.loads(run_keel("automation", "history", "--json", settings=served).stdout) == []

    assert run_keel("policy", "disable", "doubler-loop", settings=served).returncode == 0
    assert (
        json.loads(run_keel("automation", "status", "--json", settings=served).stdout)[0]["enabled"]
        is False
    )


def test_a_bad_policy_file_is_one_line_naming_the_field(
    served, minimal_policy, tmp_path: Path, run_keel
):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(rollout={"canary": {"weight": 150}})))
    result = run_keel("policy", "apply", str(path), settings=served)
    assert result.returncode == 1
    assert "policy.rollout.canary.weight: a canary takes 1 to 99 percent" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = run_keel("policy", "show", "nope", settings=served)
    assert missing.returncode == 1 and "no automation policy 'nope'" in missing.stderr
