"""SIGTERM right after a burst of requests: the gateway exits cleanly and every trace is on disk.

The trace logger writes in the background about once a second, so the last
requests' rows are still queued when the signal arrives; the app's shutdown
closes the logger, which writes them. Answered, streamed and refused requests
alike each have their row.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from _support.cli import keel_environ
from _support.llm import start_gateway, start_upstream
from keel.predictions import TRACES, PredictionReader


def test_sigterm_right_after_requests_loses_no_trace(sqlite_env, tmp_path: Path):
    with start_upstream({"stand-in-small": {}}) as upstream:
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
                }
            )
        )
        with start_gateway(config, keel_environ(sqlite_env)) as gateway:
            url = f"{gateway.base_url}/chat/completions"

            def send(n: int) -> tuple[str, int]:
                request_id = f"burst-{n}"
                body = {
                    "model": "small" if n % 5 else "no-such-model",
                    "messages": [{"role": "user", "content": f"request {n}"}],
                    "stream": n % 3 == 0,
                }
                answer = httpx.post(url, json=body, headers={"x-request-id": request_id})
                return request_id, answer.status_code

            with ThreadPoolExecutor(8) as pool:
                sent = dict(pool.map(send, range(60)))
            # uvicorn shuts down gracefully, then exits by the signal it caught
            assert gateway.stop(signal.SIGTERM) in (0, -signal.SIGTERM), gateway.output()

    table = PredictionReader(sqlite_env.artifacts_url).read("gateway", dataset=TRACES)
    traced = dict(zip(table["request_id"].to_pylist(), table["status"].to_pylist(), strict=True))
    assert len(table) == 60
    assert traced == sent
    assert sorted(set(sent.values())) == [200, 404]
