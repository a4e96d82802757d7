"""``auth: tokens``: the gateway takes Keel tokens with scope ``llm``, checked by the serving
authenticator in the local store; the token's user is the trace's caller, their team its team."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import yaml

from _support.cli import keel_environ
from _support.llm import start_gateway, start_upstream, wait_for_traces
from keel.governance.client import IdentityClient


def test_tokens_with_scope_llm_are_required_and_name_the_caller(sqlite_env, tmp_path: Path):
    identity = IdentityClient()
    identity.create_user("alice")
    llm_token = identity.create_token("alice", scopes=["llm"])["token"]
    api_token = identity.create_token("alice", scopes=["api"])["token"]

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
                    "teams": {"support": ["alice", "bob"]},
                }
            )
        )
        with start_gateway(config, keel_environ(sqlite_env)) as gateway:
            url = gateway.base_url
            body = {"model": "small", "messages": [{"role": "user", "content": "France?"}]}
            before = upstream.requests()

            anonymous = httpx.post(f"{url}/chat/completions", json=body)
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["type"] == "authentication_error"
            assert "scope llm" in anonymous.json()["error"]["message"]
            assert httpx.get(f"{url}/models").status_code == 401

            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(
                    base_url=url, api_key="keel_not-a-token", max_retries=0
                ).chat.completions.create(**body)
            with pytest.raises(openai.PermissionDeniedError, match="needs scope 'llm'"):
                openai.OpenAI(
                    base_url=url, api_key=api_token, max_retries=0
                ).chat.completions.create(**body)
            assert upstream.requests() == before  # nothing refused went upstream

            client = openai.OpenAI(base_url=url, api_key=llm_token, max_retries=0)
            raw = client.chat.completions.with_raw_response.create(**body)
            assert raw.parse().choices[0].message.content == "Paris"
            assert [m.id for m in client.models.list()] == ["small"]
            assert httpx.get(f"{gateway.url}/health").status_code == 200  # open

            request_id = raw.headers["x-request-id"]
            trace = wait_for_traces(sqlite_env.artifacts_url, "gateway", [request_id])[request_id]
            assert (trace["caller"], trace["team"]) == ("alice", "support")
