"""``keel gateway start`` end to end: a real gateway process, the stand-in upstream, the openai client.

One gateway (and two stand-ins: the main one and a backup provider) serves the
module's tests; each test sends requests with contents or request ids of its
own, so what one test does to the stand-ins' counts or the cache is not seen by
another. Traces are read back from the gateway's artifact root with the
prediction reader.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from _support.cli import keel_environ
from _support.llm import Gateway, Upstream, start_gateway, start_upstream, wait_for_traces
from _support.network import free_port
from keel.client import Client
from keel.config import load_settings
from keel.demo.upstream import embed
from keel.llm.gateway.wire import MAX_BODY_BYTES

SUPPORT_TEMPLATE = [
    {"role": "system", "content": "You answer questions about {{ product }}."},
    {"role": "user", "content": "{{ question }}"},
]


@dataclass
class Stack:
    home: Path
    upstream: Upstream
    backup: Upstream
    gateway: Gateway

    @property
    def traces_root(self) -> str:
        return str(self.home / "artifacts")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.base_url, api_key="unused", max_retries=0)

    def keel(self) -> Client:
        return Client(load_settings(home=self.home))

    def traces(self, *ids: str, partition: str = "gateway") -> dict[str, dict[str, Any]]:
        return wait_for_traces(self.traces_root, partition, list(ids))


def gateway_config(upstream: Upstream, backup: Upstream) -> dict[str, Any]:
    return {
        "name": "gateway",
        "providers": [
            {"name": "local", "base_url": upstream.base_url, "timeout_s": 10, "retries": 2},
            {"name": "backup", "base_url": backup.base_url, "timeout_s": 10, "retries": 0},
            {"name": "slow", "base_url": upstream.base_url, "timeout_s": 0.5, "retries": 0},
            {
                "name": "nowhere",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "timeout_s": 5,
                "retries": 1,
            },
        ],
        "models": [
            {"name": "small", "targets": [{"provider": "local", "model": "stand-in-small"}]},
            {
                "name": "resilient",
                "targets": [
                    {"provider": "local", "model": "stand-in-flaky"},
                    {"provider": "backup", "model": "stand-in-big"},
                ],
            },
            {"name": "sleepy", "targets": [{"provider": "slow", "model": "stand-in-sleepy"}]},
            {"name": "unreachable", "targets": [{"provider": "nowhere", "model": "any"}]},
            {"name": "quiet", "targets": [{"provider": "local", "model": "stand-in-quiet"}]},
            {
                "name": "private",
                "store_bodies": False,
                "targets": [{"provider": "local", "model": "stand-in-small"}],
            },
            {
                "name": "embed",
                "kind": "embedding",
                "targets": [{"provider": "local", "model": "stand-in-embed"}],
            },
        ],
        "prompts": [{"name": "secret", "store_bodies": False}],
        "auth": "none",
        "cache": {"ttl_s": 300, "max_entries": 1000},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("gateway") / ".keel"
    client = Client(load_settings(home=home))
    for name in ("support", "moving", "secret"):
        client.prompts.register(name, template=SUPPORT_TEMPLATE, model="small")
        client.prompts.set_alias(name, "production", 1)
    client.prompts.register(
        "moving", template=[{"role": "user", "content": "v2: {{ question }}"}], model="small"
    )
    models = {
        "stand-in-small": {"rules": {"france": "Paris"}},
        "stand-in-flaky": {"fail_rate": 1.0},
        "stand-in-sleepy": {"latency_ms": 3000},
        "stand-in-quiet": {"usage": False},
        "stand-in-embed": {},
    }
    with (
        start_upstream(models) as upstream,
        start_upstream({"stand-in-big": {"rules": {"france": "Paris (backup)"}}}) as backup,
    ):
        config = home.parent / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(upstream, backup)))
        with start_gateway(config, keel_environ(KEEL_HOME=str(home))) as gateway:
            yield Stack(home, upstream, backup, gateway)


def unique(text: str = "hello") -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def test_chat_completion_is_answered_and_traced_with_upstream_usage(stack: Stack):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    raw = stack.client().chat.completions.with_raw_response.create(
        model="small", messages=messages, extra_headers={"x-request-id": unique("chat")}
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Paris"
    request_id = raw.headers["x-request-id"]
    assert raw.headers["x-keel-cache"] == "miss"
    assert "x-keel-prompt-version" not in raw.headers
    trace = stack.traces(request_id)[request_id]
    assert trace["model"] == "small"
    assert (trace["version"], trace["route"], trace["endpoint"]) == (0, "direct", "chat")
    assert (trace["caller"], trace["team"]) == ("anonymous", None)
    assert (trace["provider"], trace["upstream_model"]) == ("local", "stand-in-small")
    assert (trace["status"], trace["error"], trace["attempts"]) == (200, None, 1)
    # the stand-in's usage: a token per word plus 3 per message; one word answered
    assert (trace["input_tokens"], trace["output_tokens"]) == (6 + 3, 1)
    assert answer.usage is not None and answer.usage.prompt_tokens == trace["input_tokens"]
    assert trace["tokens_estimated"] is False
    assert trace["cache_hit"] is False
    assert json.loads(trace["input.messages"]) == messages
    assert trace["output.text"] == "Paris"
    assert 0 < trace["ttft_ms"] <= trace["latency_ms"]


def test_streamed_chat_relays_the_answer_and_passes_usage_only_when_asked(stack: Stack):
    question = unique("stream me")
    messages = [{"role": "user", "content": question}]
    client = stack.client()
    chunks = list(
        client.chat.completions.create(
            model="small", messages=messages, stream=True, extra_headers={"x-request-id": question}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"You said: {question}"
    assert all(c.usage is None for c in chunks)  # not asked for, so not passed on

    asked = unique("stream with usage")
    with_usage = list(
        client.chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": asked}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": asked},
        )
    )
    usage = with_usage[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4 + 3, 6)

    traces = stack.traces(question, asked)
    # the gateway asked the upstream for usage either way: no trace is estimated
    plain = traces[question]
    assert (plain["input_tokens"], plain["output_tokens"], plain["tokens_estimated"]) == (
        3 + 3,
        5,
        False,
    )
    assert plain["output.text"] == f"You said: {question}"
    assert plain["status"] == 200
    assert 0 < plain["ttft_ms"] <= plain["latency_ms"]
    assert traces[asked]["output_tokens"] == 6


def test_text_completions_embeddings_and_the_model_list(stack: Stack):
    client = stack.client()
    completion = client.completions.create(model="small", prompt="The capital of France is")
    assert completion.choices[0].text == "Paris"

    texts = [unique("first"), unique("second")]
    embedded = client.embeddings.create(model="embed", input=texts)
    assert len(embedded.data) == 2
    for got, text in zip(embedded.data, texts, strict=True):
        assert got.embedding == pytest.approx(embed(text))

    listed = [m.id for m in client.models.list()]
    assert listed[:7] == [
        "small", "resilient", "sleepy", "unreachable", "quiet", "private", "embed",
    ]  # fmt: skip

    with pytest.raises(openai.BadRequestError, match="embedding model; call /v1/embeddings"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "x"}])


def test_prompt_alias_request_renders_the_version_and_records_it(stack: Stack):
    client = stack.client()
    request_id = unique("prompt")
    raw = client.chat.completions.with_raw_response.create(
        model="prompts:/support@production",
        messages=[],  # the openai client needs the argument; a prompt makes the messages
        temperature=0.5,
        extra_body={"variables": {"product": "maps", "question": "Capital of France?"}},
        extra_headers={"x-request-id": request_id},
    )
    assert raw.headers["x-keel-prompt-version"] == "support/1"
    assert raw.parse().choices[0].message.content == "Paris"
    trace = stack.traces(request_id)[request_id]
    assert (trace["model"], trace["version"], trace["route"]) == ("support", 1, "primary")
    assert json.loads(trace["input.messages"]) == [
        {"role": "system", "content": "You answer questions about maps."},
        {"role": "user", "content": "Capital of France?"},
    ]

    direct = client.chat.completions.with_raw_response.create(
        model="prompts:/support/1",
        messages=[],
        extra_body={"variables": {"product": "maps", "question": "hi"}},
    )
    assert direct.headers["x-keel-prompt-version"] == "support/1"
    direct_id = direct.headers["x-request-id"]
    assert stack.traces(direct_id)[direct_id]["route"] == "direct"


def test_a_raw_request_may_declare_the_prompt_version_it_rendered(stack: Stack):
    # what `keel evals run` sends: messages it rendered itself, and which version they came from
    client = stack.client()
    messages = [{"role": "user", "content": "Capital of France?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="small", messages=messages, extra_headers={"x-keel-prompt": "support/1"}
    )
    assert raw.headers["x-keel-prompt-version"] == "support/1"
    declared_id = raw.headers["x-request-id"]
    # a claim that names no version is not one: the request is traced as sent
    plain = client.chat.completions.with_raw_response.create(
        model="small", messages=messages, extra_headers={"x-keel-prompt": "support@production"}
    )
    plain_id = plain.headers["x-request-id"]
    traces = stack.traces(declared_id, plain_id)
    declared, undeclared = traces[declared_id], traces[plain_id]
    assert (declared["model"], declared["version"], declared["route"]) == ("support", 1, "declared")
    assert (undeclared["model"], undeclared["version"], undeclared["route"]) == (
        "small",
        0,
        "direct",
    )


def test_moving_a_prompt_alias_moves_the_requests_without_a_restart(stack: Stack):
    body = {"model": "prompts:/moving@production", "variables": {"product": "x", "question": "q"}}
    url = f"{stack.gateway.base_url}/chat/completions"
    assert httpx.post(url, json=body).headers["x-keel-prompt-version"] == "moving/1"
    stack.keel().prompts.set_alias("moving", "production", 2)
    # the refresher re-resolves the alias every second; no timing is asserted, only the move
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(url, json={**body, "variables": {"question": "q"}})
        if answer.status_code == 200 and answer.headers["x-keel-prompt-version"] == "moving/2":
            break
        assert time.monotonic() < deadline, f"still {answer.headers}: {answer.text}"
        time.sleep(0.2)
    assert answer.json()["choices"][0]["message"]["content"] == "You said: v2: q"


def _error(answer: httpx.Response) -> dict[str, Any]:
    """The error document, checked to be OpenAI's shape."""
    doc = answer.json()
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "code", "param"}
    assert doc["error"]["param"] is None
    return dict(doc["error"])


def test_bad_requests_get_openai_errors_and_the_gateway_keeps_serving(stack: Stack):
    url = f"{stack.gateway.base_url}/chat/completions"
    client = stack.client()
    secret = "do-not-echo-" + uuid.uuid4().hex
    ids = []

    def post(**kwargs: Any) -> httpx.Response:
        ids.append(unique("bad"))
        return httpx.post(url, headers={"x-request-id": ids[-1]}, **kwargs)

    not_json = post(content=b'{"model": "small", "messages": [' + secret.encode())
    assert not_json.status_code == 400
    assert "not JSON" in _error(not_json)["message"]
    assert secret not in not_json.text

    no_messages = post(json={"model": "small", "note": secret})
    assert no_messages.status_code == 400
    assert "'messages' must be a non-empty list" in _error(no_messages)["message"]
    assert secret not in no_messages.text

    not_object = post(json=[1, 2])
    assert not_object.status_code == 400 and "JSON object" in _error(not_object)["message"]

    with pytest.raises(openai.NotFoundError, match="serves no model 'gpt-9'") as unknown:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.status_code == 404

    with pytest.raises(openai.NotFoundError, match="prompt 'support' has no alias 'staging'"):
        client.chat.completions.create(
            model="prompts:/support@staging", messages=[], extra_body={"variables": {}}
        )
    with pytest.raises(openai.NotFoundError, match="no prompt named 'nothing'"):
        client.chat.completions.create(model="prompts:/nothing@production", messages=[])

    missing = post(json={"model": "prompts:/support@production", "variables": {"product": "x"}})
    assert missing.status_code == 400
    assert "needs variable(s) 'question'" in _error(missing)["message"]
    extra = post(
        json={
            "model": "prompts:/support@production",
            "variables": {"product": "x", "question": "y", "tone": secret},
        }
    )
    assert extra.status_code == 400 and "has no variable(s) 'tone'" in _error(extra)["message"]
    assert secret not in extra.text

    with pytest.raises(openai.BadRequestError, match=r"expected prompts:/<name>/<version> or"):
        client.chat.completions.create(model="prompts:/support", messages=[])

    no_route = httpx.post(f"{stack.gateway.base_url}/chat/completion", json={})
    assert no_route.status_code == 404 and "no route" in _error(no_route)["message"]
    wrong_method = httpx.get(url)
    assert (
        wrong_method.status_code == 405 and "GET is not allowed" in _error(wrong_method)["message"]
    )
    too_large = post(content=b" " * (MAX_BODY_BYTES + 1))
    assert too_large.status_code == 413
    assert _error(too_large)["code"] == "request_too_large"

    # still serving, on a new connection and on the openai client's pooled one
    answer = client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "France?"}]
    )
    assert answer.choices[0].message.content == "Paris"

    traces = stack.traces(*ids)
    assert [traces[i]["status"] for i in ids] == [400, 400, 400, 400, 400, 413]
    assert traces[ids[2]]["model"] == ""  # a body without a model names none
    assert traces[ids[3]]["error"].startswith("prompt prompts:/support/1 needs variable")
    assert all(secret not in (t["error"] or "") for t in traces.values())


def test_a_failing_provider_is_retried_then_the_next_target_answers(stack: Stack):
    flaky, big = stack.upstream.requests("stand-in-flaky"), stack.backup.requests("stand-in-big")
    request_id = unique("fallback")
    answer = stack.client().chat.completions.create(
        model="resilient",
        messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-request-id": request_id},
    )
    assert answer.choices[0].message.content == "Paris (backup)"
    # local has retries: 2, so three attempts failed before the backup answered
    assert stack.upstream.requests("stand-in-flaky") - flaky == 3
    assert stack.backup.requests("stand-in-big") - big == 1
    trace = stack.traces(request_id)[request_id]
    assert (trace["provider"], trace["upstream_model"], trace["attempts"]) == (
        "backup",
        "stand-in-big",
        4,
    )
    assert trace["status"] == 200


def test_an_upstream_timeout_is_a_504_and_no_reachable_upstream_a_503(stack: Stack):
    client = stack.client()
    request_id = unique("timeout")
    with pytest.raises(openai.InternalServerError, match=r"timed out after 0\.5 s") as timed_out:
        client.chat.completions.create(
            model="sleepy",
            messages=[{"role": "user", "content": "slow"}],
            extra_headers={"x-request-id": request_id},
        )
    assert timed_out.value.status_code == 504
    body = timed_out.value.body
    assert isinstance(body, dict) and body["type"] == "api_error"
    assert body["code"] == "upstream_timeout"

    with pytest.raises(openai.InternalServerError, match="cannot connect") as refused:
        client.chat.completions.create(
            model="unreachable", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 503

    trace = stack.traces(request_id)[request_id]
    assert (trace["status"], trace["provider"], trace["attempts"]) == (504, "slow", 1)
    assert "every target of model 'sleepy' failed" in trace["error"]


def test_an_identical_request_is_answered_from_the_cache(stack: Stack):
    client = stack.client()
    messages = [{"role": "user", "content": unique("cache me")}]
    before = stack.upstream.requests("stand-in-small")
    first = client.chat.completions.with_raw_response.create(model="small", messages=messages)
    second = client.chat.completions.with_raw_response.create(model="small", messages=messages)
    assert stack.upstream.requests("stand-in-small") - before == 1
    assert (first.headers["x-keel-cache"], second.headers["x-keel-cache"]) == ("miss", "hit")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = client.chat.completions.with_raw_response.create(
        model="small", messages=messages, temperature=0.1
    )
    assert other.headers["x-keel-cache"] == "miss"  # another parameter, another request
    hit_id = second.headers["x-request-id"]
    trace = stack.traces(hit_id)[hit_id]
    assert (trace["cache_hit"], trace["cost_usd"], trace["attempts"]) == (True, 0.0, 0)
    assert trace["input_tokens"] > 0


def test_store_bodies_false_keeps_messages_and_output_out_of_the_traces(stack: Stack):
    client = stack.client()
    private = client.chat.completions.with_raw_response.create(
        model="private", messages=[{"role": "user", "content": unique("my secret")}]
    )
    prompt = client.chat.completions.with_raw_response.create(
        model="prompts:/secret@production",
        messages=[],
        extra_body={"variables": {"product": "p", "question": unique("a secret")}},
    )
    shown = client.chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": unique("not secret")}]
    )
    ids = [r.headers["x-request-id"] for r in (private, prompt, shown)]
    traces = stack.traces(*ids)
    for hidden in ids[:2]:
        assert traces[hidden].get("input.messages") is None
        assert traces[hidden].get("output.text") is None
        assert traces[hidden]["status"] == 200 and traces[hidden]["output_tokens"] > 0
    assert traces[ids[2]]["input.messages"] is not None
    assert traces[ids[2]]["output.text"].startswith("You said: not secret")


def test_tokens_are_estimated_when_the_upstream_reports_no_usage(stack: Stack):
    request_id = unique("quiet")
    answer = stack.client().chat.completions.create(
        model="quiet",
        messages=[{"role": "user", "content": "Say something about the weather please"}],
        extra_headers={"x-request-id": request_id},
    )
    assert answer.usage is None
    trace = stack.traces(request_id)[request_id]
    assert trace["tokens_estimated"] is True
    assert trace["input_tokens"] > 0 and trace["output_tokens"] > 0


def test_health_and_prometheus_metrics(stack: Stack):
    health = httpx.get(f"{stack.gateway.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    stack.client().chat.completions.create(
        model="small", messages=[{"role": "user", "content": unique("metrics")}]
    )
    metrics = httpx.get(f"{stack.gateway.url}/metrics").text
    assert (
        'keel_gateway_requests_total{endpoint="chat",gateway="gateway",model="small",status="200"}'
        in metrics
    )
    assert "keel_gateway_request_latency_seconds_bucket" in metrics


def test_a_caller_leaving_mid_stream_is_traced_as_gone(stack: Stack):
    request_id = unique("leaves")
    # the stand-in streams its reply a word at a time: a long question makes a long stream
    question = " ".join(["word"] * 100_000)
    body = {"model": "small", "messages": [{"role": "user", "content": question}], "stream": True}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST",
            f"{stack.gateway.base_url}/chat/completions",
            json=body,
            headers={"x-request-id": request_id},
        ) as answer,
    ):
        assert answer.status_code == 200
        first = next(answer.iter_lines())
        assert first.startswith("data: ")
    trace = stack.traces(request_id)[request_id]
    assert trace["status"] == 499
    assert trace["error"] == "the caller went away mid-stream"
    # the stream stopped there: what was relayed is counted (estimated: usage comes last)
    assert trace["tokens_estimated"] is True
    assert trace["output_tokens"] < 100_000
    # and the gateway goes on serving
    assert stack.client().models.list().data
