"""A prompt deployment splits a prompt alias's traffic in a real gateway; rollback takes it back.

On each metadata store: the gateway finds the deployment whose primary route follows
``support@production``, sends requests to its versions by weight (a request id always
to the same one), traces each under the deployment's name with its route, and follows
``keel deploy`` changes (a canary added, then rolled back) without a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import yaml

import keel
from _support.cli import keel_environ
from _support.llm import start_gateway, start_upstream, wait_for_traces
from keel.serving.deployments import Deployments, build_spec

V1 = [{"role": "user", "content": "v1 {{ question }}"}]
V2 = [{"role": "user", "content": "v2 {{ question }}"}]


def _version(url: str, request_id: str) -> str:
    answer = httpx.post(
        f"{url}/chat/completions",
        json={"model": "prompts:/support@production", "variables": {"question": "hi"}},
        headers={"x-request-id": request_id},
    )
    assert answer.status_code == 200, answer.text
    # the answer comes from the version the header names
    reply = answer.json()["choices"][0]["message"]["content"]
    version = answer.headers["x-keel-prompt-version"]
    assert reply == f"You said: v{version[-1]} hi"
    return version


def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"the gateway never {what}"
        time.sleep(0.2)


def test_prompt_canary_splits_traffic_pins_request_ids_and_rolls_back(keel_env, tmp_path: Path):
    keel.prompts.register("support", template=V1, model="small")
    keel.prompts.register("support", template=V2, model="small")
    keel.prompts.set_alias("support", "production", 1)
    deployments = Deployments()
    deployments.create("support-llm", build_spec("prompts:/support@production", kind="prompt"))

    with start_upstream({"stand-in-small": {}}) as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": "gateway",
                    "providers": [{"name": "local", "base_url": upstream.base_url}],
                    "models": [
                        {
                            "name": "small",
                            "targets": [{"provider": "local", "model": "stand-in-small"}],
                        }
                    ],
                    "auth": "none",
                }
            )
        )
        with start_gateway(config, keel_environ(keel_env)) as gateway:
            url = gateway.base_url
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            assert "prompts:/support@production" in [m.id for m in client.models.list()]
            assert {_version(url, f"before-{i}") for i in range(20)} == {"support/1"}

            deployments.update("support-llm", canary=["support/2:50"])
            probes = (f"probe-{n}" for n in range(1_000_000))
            _until(
                lambda: any(_version(url, next(probes)) == "support/2" for _ in range(10)),
                "sent a request to the canary",
            )
            ids = [f"split-{i}" for i in range(40)]
            routed = {i: _version(url, i) for i in ids}
            assert set(routed.values()) == {"support/1", "support/2"}
            # the same request id goes to the same version, every time
            assert {i: _version(url, i) for i in ids} == routed

            traces = wait_for_traces(keel_env.artifacts_url, "support-llm", ids)
            for request_id, version in routed.items():
                row = traces[request_id]
                assert f"{row['model']}/{row['version']}" == version
                assert row["route"] == ("primary" if version == "support/1" else "canary")

            deployments.rollback("support-llm")
            _until(
                lambda: {_version(url, i) for i in ids} == {"support/1"},
                "took the canary's traffic back",
            )
