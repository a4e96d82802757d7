"""The gateway's parts on their own: the response cache, token estimates, the event relay,
the prompt catalog."""

from __future__ import annotations

import json
import time

import pytest

import keel
from keel.client import Client
from keel.errors import InvalidInput, NotFound
from keel.llm.gateway.cache import CachedAnswer, ResponseCache, cache_key
from keel.llm.gateway.routing import Catalog
from keel.llm.gateway.tokens import estimate_messages, estimate_prompt, estimate_text
from keel.llm.gateway.wire import EventRelay
from keel.serving.deployments import Deployments, build_spec


def answer(text: str) -> CachedAnswer:
    return CachedAnswer(text.encode(), "local", "m", 1, 1, False, text)


def test_cache_key_is_the_canonical_request_and_model():
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    same = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}]}
    assert cache_key("chat", "small", body) == cache_key("chat", "small", same)
    assert cache_key("chat", "small", body) != cache_key("chat", "big", body)
    assert cache_key("chat", "small", body) != cache_key("completions", "small", body)
    assert cache_key("chat", "small", body) != cache_key(
        "chat", "small", {**body, "temperature": 1}
    )


def test_cache_keeps_at_most_max_entries_dropping_the_least_recently_used():
    cache = ResponseCache(ttl_s=300, max_entries=2)
    cache.put(b"a", answer("a"))
    cache.put(b"b", answer("b"))
    assert cache.get(b"a") == answer("a")  # a is now the most recently used
    cache.put(b"c", answer("c"))
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert (cache.get(b"a"), cache.get(b"c")) == (answer("a"), answer("c"))
    assert (cache.hits, cache.misses) == (3, 1)


def test_cache_entries_expire_after_their_ttl():
    cache = ResponseCache(ttl_s=0.05, max_entries=10)
    cache.put(b"a", answer("a"))
    time.sleep(0.1)
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_token_estimates_grow_with_the_text_and_frame_chat_messages():
    assert estimate_text("") == 0
    assert estimate_text("hi") == 1
    short, longer = estimate_text("the capital of France"), estimate_text("the capital " * 20)
    assert 0 < short < longer
    one = estimate_messages([{"role": "user", "content": "hello there"}])
    assert one == 3 + 3 + estimate_text("hello there")
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    assert estimate_messages(parts) == one
    assert estimate_prompt(["a b", "c d"]) == 2 * estimate_text("a b")
    assert estimate_prompt(None) == 0


def test_catalog_resolves_aliases_remembers_misses_and_splits_deployments(sqlite_env):
    template = [{"role": "user", "content": "{{ q }}"}]
    keel.prompts.register("support", template=template, model="small")
    keel.prompts.register(
        "support", template=[{"role": "user", "content": "v2 {{ q }}"}], model="small"
    )
    keel.prompts.set_alias("support", "production", 1)
    catalog = Catalog(Client())
    catalog.refresh()

    production = catalog.parse("prompts:/support@production")
    assert catalog.cached(production, "r1") is None  # never asked for: looked up on demand
    resolved = catalog.resolve(production, "r1")
    assert (resolved.version.version, resolved.route, resolved.deployment) == (1, "primary", None)
    hit = catalog.cached(production, "r2")
    assert hit is not None and hit.version.version == 1

    staging = catalog.parse("prompts:/support@staging")
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        catalog.resolve(staging, "r3")
    # remembered until the next refresh: no lookup per request for a name that is not there
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        catalog.cached(staging, "r4")
    keel.prompts.set_alias("support", "staging", 2)
    catalog.refresh()
    assert catalog.resolve(staging, "r5").version.version == 2

    direct = catalog.resolve(catalog.parse("prompts:/support/2"), "r6")
    assert (direct.version.version, direct.route) == (2, "direct")

    Deployments().create(
        "support-llm",
        build_spec("prompts:/support@production", canary=["support/2:50"], kind="prompt"),
    )
    catalog.refresh()
    assert catalog.listed == ("prompts:/support@production",)
    routes = {catalog.cached(production, f"id-{i}").route for i in range(40)}  # type: ignore[union-attr]
    assert routes == {"primary", "canary"}
    pinned = catalog.cached(production, "id-7")
    assert pinned is not None and pinned.deployment == "support-llm"
    assert all(catalog.cached(production, "id-7") == pinned for _ in range(5))

    with pytest.raises(InvalidInput, match="expected prompts:/<name>/<version>"):
        catalog.parse("prompts:/support")


def _event(doc: dict) -> bytes:  # type: ignore[type-arg]
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def test_event_relay_passes_whole_events_and_drops_usage_unless_asked():
    chunks = [
        _event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        _event({"choices": [{"index": 0, "delta": {"content": "Hello"}}]}),
        _event({"choices": [{"index": 0, "delta": {"content": " there"}}]}),
        _event({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(chunks)
    for keep in (False, True):
        relay = EventRelay(keep_usage=keep)
        # the upstream's bytes arrive cut anywhere, even inside an event
        pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
        relayed = b"".join(relay.feed(p) for p in pieces) + relay.rest()
        expected = b"".join(chunks if keep else chunks[:3] + chunks[4:])
        assert relayed == expected
        assert relay.text == "Hello there"
        assert relay.usage == {"prompt_tokens": 4, "completion_tokens": 2}


def test_event_relay_reads_crlf_framing_and_text_completions():
    relay = EventRelay(keep_usage=False)
    out = relay.feed(b'data: {"choices": [{"text": "Par"}]}\r\n\r\ndata: {"choices": [{"te')
    assert out == b'data: {"choices": [{"text": "Par"}]}\n\n'
    assert relay.feed(b'xt": "is"}]}\r\n\r\n') == b'data: {"choices": [{"text": "is"}]}\n\n'
    assert relay.text == "Paris" and relay.usage is None
    assert relay.feed(b"data: not json") == b""
    assert relay.rest() == b"data: not json"
