"""Cost and budgets through a real gateway: each answer is priced from the price table in
force, and the request that would cross a budget gets 429 without reaching the upstream."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import yaml

from _support.cli import keel_environ
from _support.llm import start_gateway, start_upstream, wait_for_traces
from keel.client import Client
from keel.llm.prices import Prices


def test_answers_are_priced_and_the_request_crossing_a_budget_gets_429(sqlite_env, tmp_path: Path):
    Prices(Client()).set("stand-in-small", input_per_million=1000.0, output_per_million=2000.0)
    with start_upstream({"stand-in-small": {"rules": {"france": "Paris"}}}) as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": [{"name": "local", "base_url": upstream.base_url}],
                    "models": [
                        {
                            "name": "small",
                            "targets": [{"provider": "local", "model": "stand-in-small"}],
                        }
                    ],
                    "auth": "none",
                    "budgets": [{"name": "tiny", "period": "day", "max_tokens": 100}],
                }
            )
        )
        with start_gateway(config, keel_environ(sqlite_env)) as gateway:
            client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
            messages = [{"role": "user", "content": "Capital of France?"}]
            raw = client.chat.completions.with_raw_response.create(
                model="small", messages=messages, max_tokens=5
            )
            # the stand-in's usage: 3 words + 3 for the message in, 1 word out
            assert float(raw.headers["x-keel-cost-usd"]) == pytest.approx((6 * 1000 + 2000) / 1e6)
            answered = raw.headers["x-request-id"]

            before = upstream.requests("stand-in-small")
            with pytest.raises(
                openai.RateLimitError, match="budget 'tiny' of caller 'anonymous'"
            ) as over:
                client.chat.completions.create(
                    model="small",
                    messages=messages,
                    max_tokens=500,
                    extra_headers={"x-request-id": "too-much"},
                )
            assert over.value.status_code == 429
            assert "limit of 100 tokens per day" in str(over.value)
            assert "resets at" in str(over.value)
            assert upstream.requests("stand-in-small") == before  # nothing went upstream

            traces = wait_for_traces(sqlite_env.artifacts_url, "gateway", [answered, "too-much"])
    assert traces[answered]["cost_usd"] == pytest.approx(0.008)
    assert (traces[answered]["input_tokens"], traces[answered]["output_tokens"]) == (6, 1)
    refused = traces["too-much"]
    assert (refused["status"], refused["attempts"], refused["provider"]) == (429, 0, None)
    assert refused["error"].startswith("budget 'tiny'")
