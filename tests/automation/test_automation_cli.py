"""``keel policy apply|show|disable`` and ``keel automation status|tick|history`` from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

import keel


def _keel(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_HOME=str(settings.home), KEEL_STORE_URL=settings.store_url)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_apply_show_tick_and_history_from_the_command_line(served, minimal_policy, tmp_path: Path):
    keel.log_dataset(pd.DataFrame({"x": [1.0]}), name="nothing")  # a trigger's dataset must exist
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(triggers=[{"dataset": {"name": "nothing"}}])))
    dry = _keel(served, "policy", "apply", str(path), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["triggers"] == [{"dataset": {"name": "nothing"}}]
    assert (
        json.loads(_keel(served, "automation", "status", "--json").stdout) == []
    )  # dry: stored nothing

    applied = _keel(served, "policy", "apply", str(path), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["revision"] == 1
    shown = json.loads(_keel(served, "policy", "show", "doubler-loop", "--json").stdout)
    assert shown["state"]["state"] == "idle" and shown["policy"]["model"] == "doubler"
    listed = json.loads(_keel(served, "policy", "list", "--json").stdout)
    assert [p["name"] for p in listed["automation"]] == ["doubler-loop"]

    ticked = _keel(served, "automation", "tick", "--json")
    assert ticked.returncode == 0, ticked.stderr
    assert json.loads(ticked.stdout)[0]["after"] == "idle"  # no version since apply: nothing fires
    assert json.loads(_keel(served, "automation", "history", "--json").stdout) == []

    assert _keel(served, "policy", "disable", "doubler-loop").returncode == 0
    assert json.loads(_keel(served, "automation", "status", "--json").stdout)[0]["enabled"] is False


def test_a_bad_policy_file_is_one_line_naming_the_field(served, minimal_policy, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(minimal_policy(rollout={"canary": {"weight": 150}})))
    result = _keel(served, "policy", "apply", str(path))
    assert result.returncode == 1
    assert "policy.rollout.canary.weight: a canary takes 1 to 99 percent" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = _keel(served, "policy", "show", "nope")
    assert missing.returncode == 1 and "no automation policy 'nope'" in missing.stderr
