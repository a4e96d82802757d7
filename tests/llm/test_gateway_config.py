"""The gateway's config file: every mistake is refused with the key, what was expected and what
came; ``keel gateway check`` prints the resolved config; ``start`` refuses a missing key variable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.errors import InvalidInput, NotFound
from keel.llm.gateway.config import load_config, parse_config

BASE: dict[str, Any] = {
    "providers": [{"name": "local", "base_url": "http://127.0.0.1:8001/v1"}],
    "models": [{"name": "small", "targets": [{"provider": "local", "model": "stand-in-small"}]}],
}


def config(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(BASE)), **changes}


def test_defaults_fill_in_what_the_file_leaves_out():
    checked = parse_config(config())
    assert (checked.name, checked.auth, checked.cache, checked.store_bodies) == (
        "gateway",
        "tokens",
        None,
        True,
    )
    provider = checked.provider("local")
    assert (provider.timeout_s, provider.retries, provider.api_key_env) == (30.0, 2, None)
    model = checked.model("small")
    assert model is not None and (model.kind, model.store_bodies) == ("chat", True)
    assert checked.model("other") is None


def test_store_bodies_follows_the_gateway_default_and_any_false_wins():
    checked = parse_config(
        config(
            store_bodies=False,
            models=[
                {"name": "a", "targets": [{"provider": "local", "model": "m"}]},
                {
                    "name": "b",
                    "store_bodies": True,
                    "targets": [{"provider": "local", "model": "m"}],
                },
            ],
            prompts=[{"name": "secret", "store_bodies": False}],
        )
    )
    a, b = checked.model("a"), checked.model("b")
    assert a is not None and b is not None
    assert (checked.stores_bodies(a, None), checked.stores_bodies(b, None)) == (False, True)
    assert (checked.stores_bodies(b, "secret"), checked.stores_bodies(b, "other")) == (False, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "blue"}, "the file has unknown key(s) 'colour'; expected some of name,"),
        ({"providers": []}, "providers must be a non-empty list; got an empty list"),
        (
            {"providers": [{"name": "local", "base_url": "ftp://x"}]},
            "providers[0].base_url must be an http(s) URL such as http://127.0.0.1:8001/v1; "
            "got 'ftp://x'",
        ),
        (
            {"providers": [{"name": "local", "base_url": "http://x", "timeout_s": 0}]},
            "providers[0].timeout_s must be a number above 0; got 0",
        ),
        (
            {"providers": [{"name": "local", "base_url": "http://x", "retries": -1}]},
            "providers[0].retries must be a whole number of at least 0; got -1",
        ),
        (
            {"providers": [{"name": "local", "base_url": "http://x", "api_key_env": "sk-abc"}]},
            "providers[0].api_key_env must be the name of an environment variable (the key "
            "itself never goes in the file); got '<hidden>'",
        ),
        (
            {"models": [{"name": "small", "targets": [{"provider": "backup", "model": "m"}]}]},
            "models[0].targets[0].provider must be a declared provider (local); got 'backup'",
        ),
        (
            {
                "models": [
                    {
                        "name": "small",
                        "kind": "image",
                        "targets": [{"provider": "local", "model": "m"}],
                    }
                ]
            },
            "models[0].kind must be one of chat, embedding; got 'image'",
        ),
        (
            {"models": [BASE["models"][0], BASE["models"][0]]},
            "models names 'small' twice; names are unique",
        ),
        ({"auth": "basic"}, "auth must be one of tokens, none; got 'basic'"),
        ({"cache": {"max_entries": 10}}, "cache needs 'ttl_s'"),
        (
            {"budgets": [{"name": "b", "team": "support", "max_usd": 1}]},
            "budget 'b' counts team 'support', which teams does not define",
        ),
        (
            {"budgets": [{"name": "b", "period": "week", "max_usd": 1}]},
            "budgets[0]: budget 'b': period must be one of day, month, total, got 'week'",
        ),
    ],
)
def test_a_malformed_config_is_refused_naming_the_key(changes: dict[str, Any], message: str):
    with pytest.raises(InvalidInput) as refused:
        parse_config(config(**changes), source="gw.yaml")
    assert str(refused.value).startswith("gw.yaml: ")
    assert message in str(refused.value)


def test_load_config_reads_yaml_and_names_a_missing_file(tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(name="edge", auth="none")))
    assert load_config(path).name == "edge"
    with pytest.raises(NotFound, match="no gateway config file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("providers: [unclosed")
    with pytest.raises(InvalidInput, match="is not valid YAML"):
        load_config(path)


def test_gateway_check_prints_the_resolved_config(run_keel, tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    doc = config(auth="none")
    doc["providers"][0]["api_key_env"] = "STAND_IN_KEY"
    path.write_text(yaml.safe_dump(doc))
    shown = run_keel(
        "gateway", "check", "--config", str(path), "--json", env={"STAND_IN_KEY": "s3cret"}
    )
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["providers"][0] == {
        "name": "local",
        "base_url": "http://127.0.0.1:8001/v1",
        "api_key_env": "STAND_IN_KEY",
        "api_key_set": True,
        "timeout_s": 30.0,
        "retries": 2,
    }
    assert "s3cret" not in shown.stdout
    table = run_keel("gateway", "check", "--config", str(path))
    assert table.returncode == 0 and "local/stand-in-small" in table.stdout


def test_gateway_start_refuses_a_key_variable_that_is_not_set(run_keel, tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    doc = config(auth="none")
    doc["providers"][0]["api_key_env"] = "MISSING_KEY_FOR_TEST"
    path.write_text(yaml.safe_dump(doc))
    started = run_keel(
        "gateway",
        "start",
        "--config",
        str(path),
        "--port",
        "9",
        env={"KEEL_HOME": str(tmp_path / ".keel")},
    )
    assert started.returncode == 1
    assert "error: provider 'local' reads its API key from $MISSING_KEY_FOR_TEST" in started.stderr
    assert "Traceback" not in started.stderr
