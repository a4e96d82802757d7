"""A stand-in for an OpenAI-compatible LLM server, for the demo, the tests and the benchmark.

It is **not a language model**. It answers deterministically, so that a gateway,
an evaluation or a canary can be shown and tested without a provider:

- a chat or text completion answers with the reply of the first *rule* whose
  text appears in the last user message (or the prompt), else ``"You said: …"``;
- usage counts words: a prompt token per word of every message plus 3 per
  message, a completion token per word of the reply (a model may be told to
  report no usage at all);
- ``stream: true`` sends one server-sent event per word, then the usage when
  ``stream_options.include_usage`` asks for it, then ``[DONE]``;
- embeddings are unit vectors drawn from the text's BLAKE3 digest.

Each model can be told to be slow (``latency_ms``) or to fail (``fail_rate``, as
a share of requests, spread evenly and deterministically, answered with
``fail_status``), at start or at run time with ``POST /control``. ``GET /stats``
counts the requests each model received, so a test can see what reached it.

Run one with ``python -m keel.demo.upstream --port 8001`` (``--help`` for the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Behaviour", "StandIn", "build_app", "main"]

EMBEDDING_DIM = 16


@dataclass(frozen=True)
class Behaviour:
    """How one stand-in model answers.

    Attributes:
        latency_ms: time before the answer (before the first chunk when streaming).
        fail_rate: share of requests answered with ``fail_status`` (0 to 1).
        fail_status: the HTTP status of a failure.
        usage: report token usage (a real server may not).
        rules: ``(text, reply)``: a request whose last user message contains ``text``
            gets ``reply``; the first match wins.
    """

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    usage: bool = True
    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Behaviour:
        known = {"latency_ms", "fail_rate", "fail_status", "usage", "rules"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown behaviour keys {unknown}; expected some of {sorted(known)}")
        values = dict(doc)
        if "rules" in values:
            values["rules"] = tuple((str(k), str(v)) for k, v in dict(values["rules"]).items())
        return cls(**values)


@dataclass
class StandIn:
    """The stand-in's state: each model's behaviour and what it was asked."""

    models: dict[str, Behaviour] = field(default_factory=lambda: {"stand-in": Behaviour()})
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def behaviour(self, model: str) -> Behaviour | None:
        return self.models.get(model)

    def admit(self, model: str) -> bool:
        """Count a request; True if it should fail (every 1/fail_rate-th, deterministically)."""
        behaviour = self.models[model]
        with self.lock:
            n = self.counts.get(model, 0)
            self.counts[model] = n + 1
            rate = behaviour.fail_rate
            fail = rate > 0 and math.floor((n + 1) * rate) > math.floor(n * rate)
            if fail:
                self.failures[model] = self.failures.get(model, 0) + 1
        return fail


def reply_for(behaviour: Behaviour, text: str) -> str:
    """The stand-in's answer to ``text``."""
    lowered = text.lower()
    for needle, reply in behaviour.rules:
        if needle.lower() in lowered:
            return reply
    return f"You said: {text}"


def count_words(text: str) -> int:
    return len(text.split())


def embed(text: str) -> list[float]:
    """A deterministic unit vector for ``text`` (no meaning: equal texts, equal vectors)."""
    raw = np.frombuffer(blake3.blake3(text.encode()).digest(length=EMBEDDING_DIM * 4), np.uint32)
    vector = raw.astype(np.float64) / np.iinfo(np.uint32).max - 0.5
    return [float(x) for x in vector / np.linalg.norm(vector)]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": kind, "code": None, "param": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts: keep the text ones
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _prompt_tokens(messages: Sequence[Any]) -> int:
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        words += count_words(content) if isinstance(content, str) else 0
    return words + 3 * len(messages)


def build_app(state: StandIn | None = None) -> Starlette:
    """The stand-in's ASGI app over ``state`` (default: one model named ``stand-in``)."""
    standin = state or StandIn()

    async def parse(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None, _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return None, _error(400, "the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or standin.behaviour(model) is None:
            return None, _error(404, f"the stand-in has no model {model!r}", "not_found_error")
        return body, None

    async def answer(model: str) -> Response | None:
        behaviour = standin.models[model]
        fail = standin.admit(model)
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        if fail:
            return _error(behaviour.fail_status, "the stand-in was told to fail", "server_error")
        return None

    async def chat(request: Request) -> Response:
        body, problem = await parse(request)
        if problem is not None:
            return problem
        assert body is not None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        model = body["model"]
        failure = await answer(model)
        if failure is not None:
            return failure
        behaviour = standin.models[model]
        reply = reply_for(behaviour, _last_user_text(messages))
        usage = _usage(behaviour, _prompt_tokens(messages), count_words(reply))
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return _stream(ident, model, reply, usage if include else None)
        return _json(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                **({"usage": usage} if usage else {}),
            }
        )

    async def completions(request: Request) -> Response:
        body, problem = await parse(request)
        if problem is not None:
            return problem
        assert body is not None
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return _error(400, "prompt must be a string")
        model = body["model"]
        failure = await answer(model)
        if failure is not None:
            return failure
        behaviour = standin.models[model]
        reply = reply_for(behaviour, prompt)
        usage = _usage(behaviour, count_words(prompt), count_words(reply))
        return _json(
            {
                "id": f"cmpl-{uuid.uuid4().hex[:12]}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": reply, "finish_reason": "stop"}],
                **({"usage": usage} if usage else {}),
            }
        )

    async def embeddings(request: Request) -> Response:
        body, problem = await parse(request)
        if problem is not None:
            return problem
        assert body is not None
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "input must be a string or a list of strings")
        model = body["model"]
        failure = await answer(model)
        if failure is not None:
            return failure
        tokens = sum(count_words(t) for t in texts)
        return _json(
            {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed(t)}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: Request) -> Response:
        return _json(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "stand-in"}
                    for name in sorted(standin.models)
                ],
            }
        )

    async def control(request: Request) -> Response:
        """``{"model": NAME, ...behaviour}`` replaces what is given of that model's behaviour."""
        try:
            doc = orjson.loads(await request.body())
            name = doc.pop("model")
            current = standin.models.get(name, Behaviour())
            changed = Behaviour.from_dict({**_behaviour_dict(current), **doc})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return _error(400, f"control takes {{'model': NAME, ...behaviour}}: {exc}")
        with standin.lock:
            standin.models[name] = changed
        return _json({"model": name, **_behaviour_dict(changed)})

    async def stats(request: Request) -> Response:
        with standin.lock:
            return _json({"requests": dict(standin.counts), "failures": dict(standin.failures)})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/control", control, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


def _behaviour_dict(b: Behaviour) -> dict[str, Any]:
    return {
        "latency_ms": b.latency_ms,
        "fail_rate": b.fail_rate,
        "fail_status": b.fail_status,
        "usage": b.usage,
        "rules": dict(b.rules),
    }


def _usage(behaviour: Behaviour, prompt: int, completion: int) -> dict[str, int] | None:
    if not behaviour.usage:
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _stream(ident: str, model: str, reply: str, usage: dict[str, int] | None) -> Response:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        doc = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""}, None)
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield chunk({"content": word if i == 0 else " " + word}, None)
            await asyncio.sleep(0)
        yield chunk({}, "stop")
        if usage is not None:
            doc = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            yield b"data: " + orjson.dumps(doc) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m keel.demo.upstream``: serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m keel.demo.upstream",
        description="A deterministic OpenAI-compatible stand-in (not a language model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--models",
        default='{"stand-in": {}}',
        help='JSON: model name to behaviour, e.g. \'{"small": {"latency_ms": 20}}\'',
    )
    args = parser.parse_args(argv)
    try:
        docs = orjson.loads(args.models)
        models = {name: Behaviour.from_dict(doc) for name, doc in docs.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        parser.error(f"--models must map model names to behaviours: {exc}")
    from keel.asgi import run_uvicorn

    app = build_app(StandIn(models=models))
    run_uvicorn(lambda: app, "", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
