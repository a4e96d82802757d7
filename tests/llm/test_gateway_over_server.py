"""A real ``keel gateway`` whose Keel is a client of a real ``keel server``.

The gateway process gets ``KEEL_SERVER_URL`` and ``KEEL_TOKEN`` (its own user's token)
and the server's artifact root (``KEEL_ARTIFACTS_URL``, a loopback S3 prefix): it reads
prompts, prompt deployments and prices through the server's REST API, checks its
callers' tokens with the server, writes its budgets' spend through the server and its
traces under the server's root, where the server's monitor reads them.

What the gateway's own token needs, and why:

- scope ``api``: every control-plane route asks for it;
- ``read`` (any grant): prompts, aliases, prompt deployments, prices and spend;
- ``write`` (global), only when the config has budgets: spend increments and a
  budget's alert. So the least role is ``viewer`` without budgets and ``editor``
  with them; a token short of either is refused when the gateway starts, with a
  message naming what is missing, never found out request by request.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

import keel
from _support.cli import run_keel
from _support.control_plane import ControlPlane
from _support.llm import Upstream, start_gateway, start_upstream, wait_for_traces
from keel.llm.prices import Prices
from keel.serving import Deployments, build_spec

V1 = [{"role": "user", "content": "v1 {{ question }}"}]
V2 = [{"role": "user", "content": "v2 {{ question }}"}]
#: USD per million tokens of the stand-in's model, set through the server.
INPUT_PRICE, OUTPUT_PRICE = 1000.0, 2000.0
#: The team budget's token limit: far above what the test spends before it probes it.
TEAM_LIMIT = 100_000

pytestmark = pytest.mark.parametrize("any_env", ["server"], indirect=True)


def _config(path: Path, upstream: Upstream, *, budgets: bool = True) -> Path:
    doc: dict[str, Any] = {
        "name": "gateway",
        "providers": [{"name": "local", "base_url": upstream.base_url}],
        "models": [
            {"name": "small", "targets": [{"provider": "local", "model": "stand-in-small"}]}
        ],
        "auth": "tokens",
        "teams": {"support": ["alice"]},
    }
    if budgets:
        doc["budgets"] = [
            {"name": "support-daily", "team": "support", "period": "day", "max_tokens": TEAM_LIMIT}
        ]
    path.write_text(yaml.safe_dump(doc))
    return path


def _gateway_env(server: ControlPlane, token: str, s3_server: str, home: Path) -> dict[str, str]:
    """A gateway process working through ``server``, tracing under the server's own root."""
    return server.environ(
        token,
        KEEL_HOME=str(home),
        KEEL_ARTIFACTS_URL=server.artifacts_url,
        KEEL_S3_ENDPOINT_URL=s3_server,
    )


def _ask(client: openai.OpenAI, request_id: str, **extra: Any) -> Any:
    """A prompt request as the official client sends it; the raw response (headers too)."""
    return client.chat.completions.with_raw_response.create(
        model="prompts:/support@production",
        messages=[],  # the prompt makes the messages
        extra_body={"variables": {"question": "hi"}},
        extra_headers={"x-request-id": request_id},
        **extra,
    )


def _routed(client: openai.OpenAI, request_id: str) -> tuple[str, float]:
    """The prompt version that answered ``request_id`` and the cost the gateway put on it."""
    raw = _ask(client, request_id, max_tokens=5)
    version = raw.headers["x-keel-prompt-version"]
    assert raw.headers["x-request-id"] == request_id
    # the answer comes from the version the header names
    assert raw.parse().choices[0].message.content == f"You said: v{version[-1]} hi"
    return version, float(raw.headers["x-keel-cost-usd"])


def _traces(
    server: ControlPlane, s3_server: str, partition: str, request_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The trace rows of ``request_ids`` under the server's root, once all are written."""
    return wait_for_traces(server.artifacts_url, partition, request_ids, s3_endpoint_url=s3_server)


def _budget_status(server: ControlPlane, config: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``keel llm budgets status --json`` as the admin, through the server."""
    answer = run_keel(
        "llm", "budgets", "status", "--config", str(config), "--json", env=server.environ()
    )
    assert answer.returncode == 0, answer.stderr
    return {(r["budget"], r["subject"]): r for r in json.loads(answer.stdout)}


def _until_stored(server: ControlPlane, config: Path, tokens: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = _budget_status(server, config)[("support-daily", "support")]
        if status["tokens"] == tokens:
            return status
        assert time.monotonic() < deadline, f"stored spend {status} never reached {tokens} tokens"
        time.sleep(0.5)


def _prompt_deployment(*, deploy: bool = True) -> str:
    """``support`` v1 (production) and v2, a prompt deployment canarying v2 at 50%, and a
    price for the stand-in's model: all set through the server, as its admin."""
    keel.prompts.register("support", template=V1, model="small")
    keel.prompts.register("support", template=V2, model="small")
    keel.prompts.set_alias("support", "production", 1)
    # the server's artifact root outlives a test: a name of its own keeps its traces apart
    name = f"support-{uuid.uuid4().hex[:8]}"
    if deploy:
        spec = build_spec("support@production", ["support/2:50"], kind="prompt")
        Deployments().create(name, spec)
    Prices(keel.Client()).set(
        "stand-in-small", input_per_million=INPUT_PRICE, output_per_million=OUTPUT_PRICE
    )
    return name


def test_a_gateway_working_through_keel_server_splits_prices_budgets_and_is_monitored(
    any_env, control_plane: ControlPlane, s3_server: str, tmp_path: Path
):
    deployment = _prompt_deployment()
    gateway_token = control_plane.make_user("gateway", "editor", scopes=["api"])
    alice = control_plane.make_user("alice", scopes=["llm"])
    env = _gateway_env(control_plane, gateway_token, s3_server, tmp_path / "gateway-home")

    with start_upstream({"stand-in-small": {}}) as upstream:
        config = _config(tmp_path / "gateway.yaml", upstream)
        with start_gateway(config, env) as gateway:
            client = openai.OpenAI(base_url=gateway.base_url, api_key=alice, max_retries=0)
            assert "prompts:/support@production" in [m.id for m in client.models.list()]
            ids = [f"split-{i}" for i in range(40)]
            answered = {i: _routed(client, i) for i in ids}
            versions = {i: version for i, (version, _) in answered.items()}
            assert set(versions.values()) == {"support/1", "support/2"}
            # the same request id goes to the same version, every time
            assert {i: _routed(client, i)[0] for i in ids} == versions
            traces = _traces(control_plane, s3_server, deployment, ids)

            for request_id, (version, cost) in answered.items():
                row = traces[request_id]
                assert f"{row['model']}/{row['version']}" == version
                assert row["route"] == ("primary" if version == "support/1" else "canary")
                assert (row["caller"], row["team"], row["status"]) == ("alice", "support", 200)
                assert (row["provider"], row["upstream_model"]) == ("local", "stand-in-small")
                # the stand-in's usage: 2 words + 3 for the message in, 4 words out
                assert (row["input_tokens"], row["output_tokens"]) == (5, 4)
                assert not row["tokens_estimated"]
                # priced from the server's table, as the header said
                assert row["cost_usd"] == pytest.approx((5 * INPUT_PRICE + 4 * OUTPUT_PRICE) / 1e6)
                assert row["cost_usd"] == pytest.approx(cost)

            # 80 requests of 9 tokens each, counted for the team and stored by the server
            spent = _until_stored(control_plane, config, 80 * 9)
            assert spent["usd"] == pytest.approx(80 * 0.013)
            assert spent["max_tokens"] == TEAM_LIMIT
            # SIGTERM flushes the traces and the last spend (uvicorn may exit by the signal)
            assert gateway.stop() in (0, -signal.SIGTERM), gateway.output()

        # a new gateway process starts from the spend the server stored
        with start_gateway(config, env) as restarted:
            client = openai.OpenAI(base_url=restarted.base_url, api_key=alice, max_retries=0)
            before = upstream.requests("stand-in-small")
            # its estimate alone fits the limit; with what was spent before, it does not
            with pytest.raises(
                openai.RateLimitError, match="budget 'support-daily' of team"
            ) as over:
                _ask(client, "over", max_tokens=TEAM_LIMIT - 80 * 9)
            assert "720 tokens spent" in str(over.value)
            assert upstream.requests("stand-in-small") == before  # nothing went upstream
            refused = _traces(control_plane, s3_server, deployment, ["over"])["over"]
            assert (refused["status"], refused["caller"]) == (429, "alice")

    # the server's monitor reads the traces the gateway wrote under its root
    run = run_keel("monitor", "run", deployment, "--json", env=control_plane.environ())
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)["llm"]
    overall = figures["overall"]
    assert (overall["requests"], overall["answered"], overall["over_budget"]) == (81, 80, 1)
    assert (overall["errors"], overall["error_rate"]) == (0, 0.0)
    assert (overall["input_tokens"], overall["output_tokens"]) == (80 * 5, 80 * 4)
    # every answer cost what its trace says; the 429 cost nothing
    assert overall["cost_usd"] == pytest.approx(80 * traces["split-0"]["cost_usd"])
    assert overall["cost_per_request"] == pytest.approx(0.013)
    by_version = {label: stats["answered"] for label, stats in figures["versions"].items()}
    canaried = 2 * sum(v == "support/2" for v in versions.values())
    assert by_version == {"support/1": 80 - canaried, "support/2": canaried}


def _refused_start(config: Path, env: dict[str, str]) -> str:
    """What ``keel gateway start`` printed when it exited instead of serving."""
    with (
        pytest.raises(RuntimeError, match="keel gateway exited with 1") as failed,
        start_gateway(config, env, timeout=60),
    ):
        pass
    return " ".join(str(failed.value).split())  # the console may wrap the line


def _only_on_model(server: ControlPlane, user: str, role: str, model: str) -> None:
    with server.http() as http:
        answer = http.post(
            "/roles", json={"user": user, "role": role, "scope_kind": "model", "scope_name": model}
        )
        assert answer.status_code == 200, answer.text


def test_the_gateway_needs_role_viewer_without_budgets_and_editor_with_them(
    any_env, control_plane: ControlPlane, s3_server: str, tmp_path: Path
):
    _prompt_deployment()
    viewer = control_plane.make_user("gateway", "viewer", scopes=["api"])
    alice = control_plane.make_user("alice", scopes=["llm"])
    env = _gateway_env(control_plane, viewer, s3_server, tmp_path / "gateway-home")
    with start_upstream({"stand-in-small": {}}) as upstream:
        plain = _config(tmp_path / "plain.yaml", upstream, budgets=False)
        with start_gateway(plain, env) as gateway:
            client = openai.OpenAI(base_url=gateway.base_url, api_key=alice, max_retries=0)
            assert _routed(client, "as-viewer")[1] == pytest.approx(0.013)

        # budgets add spend through the server: a viewer's token is refused at the start,
        # before any request could be let through a budget whose spend is never stored
        before = upstream.requests()
        refused = _refused_start(_config(tmp_path / "budgeted.yaml", upstream), env)
        assert upstream.requests() == before
    assert (
        f"keel server at {control_plane.url} refused the gateway's own token (KEEL_TOKEN): "
        "user 'gateway' lacks permission 'write' (roles: viewer)"
    ) in refused
    assert "adds its budgets' spend (role 'editor', everywhere)" in refused


def test_a_gateway_token_without_scope_api_is_refused_at_the_start(
    any_env, control_plane: ControlPlane, s3_server: str, tmp_path: Path
):
    _prompt_deployment()
    llm_only = control_plane.make_user("gateway", "editor", scopes=["llm"])
    env = _gateway_env(control_plane, llm_only, s3_server, tmp_path / "gateway-home")
    with start_upstream({"stand-in-small": {}}) as upstream:
        refused = _refused_start(_config(tmp_path / "gateway.yaml", upstream), env)
    assert "refused the gateway's own token (KEEL_TOKEN)" in refused
    assert "the control-plane API needs scope 'api'" in refused


def test_a_gateway_that_may_not_read_a_deployments_prompt_is_refused_at_the_start(
    any_env, control_plane: ControlPlane, s3_server: str, tmp_path: Path
):
    _prompt_deployment()
    token = control_plane.make_user("gateway", scopes=["api"])
    # it may read somewhere (deployments, prices), but not the prompt the canary splits
    _only_on_model(control_plane, "gateway", "viewer", "other")
    env = _gateway_env(control_plane, token, s3_server, tmp_path / "gateway-home")
    with start_upstream({"stand-in-small": {}}) as upstream:
        refused = _refused_start(_config(tmp_path / "gateway.yaml", upstream, budgets=False), env)
    assert "user 'gateway' lacks permission 'read' on model 'support'" in refused


def test_a_prompt_the_gateway_may_not_read_answers_503_and_its_log_says_why(
    any_env, control_plane: ControlPlane, s3_server: str, tmp_path: Path
):
    _prompt_deployment(deploy=False)
    token = control_plane.make_user("gateway", scopes=["api"])
    _only_on_model(control_plane, "gateway", "viewer", "other")
    alice = control_plane.make_user("alice", scopes=["llm"])
    env = _gateway_env(control_plane, token, s3_server, tmp_path / "gateway-home")
    with (
        start_upstream({"stand-in-small": {}}) as upstream,
        start_gateway(_config(tmp_path / "gateway.yaml", upstream, budgets=False), env) as gw,
    ):
        client = openai.OpenAI(base_url=gw.base_url, api_key=alice, max_retries=0)
        # not the caller's 403: the gateway's own token is short, and it is an outage
        with pytest.raises(openai.InternalServerError, match="may not read") as failed:
            _ask(client, "unreadable")
        assert failed.value.status_code == 503
        assert "lacks permission" not in str(failed.value)  # the reason stays inside
        assert upstream.requests() == 0
        assert client.models.list().data  # and it keeps serving
        assert (
            "the gateway's token may not read prompts:/support@production: "
            "user 'gateway' lacks permission 'read' on model 'support'"
        ) in gw.output()


def test_a_gateway_tracing_into_its_own_folder_says_the_server_will_not_see_them(
    any_env, control_plane: ControlPlane, tmp_path: Path
):
    viewer = control_plane.make_user("gateway", "viewer", scopes=["api"])
    home = tmp_path / "gateway-home"
    env = control_plane.environ(viewer, KEEL_HOME=str(home))  # no KEEL_ARTIFACTS_URL
    with (
        start_upstream({"stand-in-small": {}}) as upstream,
        start_gateway(_config(tmp_path / "gateway.yaml", upstream, budgets=False), env) as gw,
    ):
        logged = " ".join(gw.output().split())
    assert f"traces go to {home.resolve() / 'artifacts'}, this process's own folder" in logged
    assert "set KEEL_ARTIFACTS_URL (and KEEL_S3_ENDPOINT_URL) to the server's" in logged
