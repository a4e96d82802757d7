"""Calls to an OpenAI-compatible endpoint: many requests, a bounded pool, one answer each.

An evaluation renders each case locally and sends the request body to a base
URL that speaks OpenAI's API (a Keel gateway, or any upstream: vLLM, Ollama,
OpenAI): chat templates to ``{base}/chat/completions``, text templates to
``{base}/completions``. Each request carries ``x-keel-prompt: NAME/VERSION``
so a Keel gateway traces it under that prompt version.

Guarantees:

- exactly one :class:`Answer` per call, in the calls' order; a call that fails
  (refused connection, timeout, an HTTP error, a body that is not a completion)
  is an answer with ``error`` set and no ``output``, never a missing row;
- at most ``concurrency`` requests are in flight at once;
- the key is sent as ``Authorization: Bearer`` and never appears in an answer,
  an error or a log.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from keel.errors import InvalidInput

__all__ = ["GATEWAY_KEY_ENV", "GATEWAY_URL_ENV", "Answer", "Call", "Gateway"]

#: The environment variable naming the default base URL (``--gateway``).
GATEWAY_URL_ENV = "KEEL_GATEWAY_URL"
#: The environment variable holding the default bearer token (``--key``).
GATEWAY_KEY_ENV = "KEEL_GATEWAY_KEY"
#: Header naming the prompt version a request renders, for a gateway's traces.
PROMPT_HEADER = "x-keel-prompt"
#: Header in which a Keel gateway reports what a request cost.
COST_HEADER = "x-keel-cost-usd"

#: Called with (calls done, calls in all) as answers arrive.
Progress = Callable[[int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One request: an OpenAI request body and the prompt version it renders.

    Attributes:
        body: a chat (``messages``) or completions (``prompt``) request body.
        prompt: ``NAME/VERSION``, sent as ``x-keel-prompt``.
    """

    body: dict[str, Any]
    prompt: str


@dataclass(frozen=True)
class Answer:
    """What one call gave: the output text, or the error that stopped it.

    Token counts come from the response's ``usage`` (``None`` where it gives
    none); the cost from the ``x-keel-cost-usd`` header a Keel gateway sends.
    """

    output: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Gateway:
    """An OpenAI-compatible base URL and how to call it.

    Args:
        base_url: e.g. ``http://127.0.0.1:4000/v1`` (what an OpenAI client takes as
            ``base_url``); default ``$KEEL_GATEWAY_URL``.
        key: the bearer token; default ``$KEEL_GATEWAY_KEY`` (none if unset).
        concurrency: requests in flight at once.
        timeout_s: seconds one request may take.

    Raises:
        InvalidInput: no URL given or set, a URL that is not http(s), or a
            concurrency or timeout below 1 / 0.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
    ) -> None:
        url = base_url or os.environ.get(GATEWAY_URL_ENV)
        if not url:
            raise InvalidInput(
                "no gateway to send the prompts to: pass --gateway URL (an OpenAI-compatible "
                f"base URL such as http://127.0.0.1:4000/v1) or set {GATEWAY_URL_ENV}"
            )
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(
                f"the gateway must be an http(s) base URL such as http://127.0.0.1:4000/v1, "
                f"got {url!r}"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if not timeout_s > 0:
            raise InvalidInput(f"the timeout must be a positive number of seconds, got {timeout_s}")
        self.base_url = url.rstrip("/")
        self.key = key if key is not None else os.environ.get(GATEWAY_KEY_ENV) or None
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"Gateway({self.base_url!r}, concurrency={self.concurrency})"

    def call_all(self, calls: Sequence[Call], progress: Progress | None = None) -> list[Answer]:
        """Send every call, ``concurrency`` at a time; one answer per call, in order."""
        if not calls:
            return []
        return run_coroutine(lambda: self._call_all(calls, progress))

    async def _call_all(self, calls: Sequence[Call], progress: Progress | None) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(calls)
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        pending = iter(range(len(calls)))
        done = 0
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=self.timeout_s,
            limits=limits,
            # plain http has no certificates to check; loading the CA bundle costs ~0.2 s
            verify=self.base_url.startswith("https://"),
        ) as http:

            async def worker() -> None:
                nonlocal done
                # each worker takes the next call when it is free: at most `concurrency` in flight
                for i in pending:
                    answers[i] = await _one(http, calls[i])
                    done += 1
                    if progress is not None:
                        progress(done, len(calls))

            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(calls)))))
        return [a if a is not None else Answer(error="not sent") for a in answers]


async def _one(http: httpx.AsyncClient, call: Call) -> Answer:
    path = "/chat/completions" if "messages" in call.body else "/completions"
    started = time.perf_counter()
    try:
        response = await http.post(path, json=call.body, headers={PROMPT_HEADER: call.prompt})
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Answer(error=f"{type(exc).__name__}: {exc}".rstrip(": "), latency_ms=latency)
    latency = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        return Answer(
            error=f"HTTP {response.status_code}: {_error_message(response)}", latency_ms=latency
        )
    try:
        doc = response.json()
        output = _output_text(doc)
    except (ValueError, LookupError, TypeError) as exc:
        return Answer(
            error=f"the answer is not a completion ({type(exc).__name__}: {exc})",
            latency_ms=latency,
        )
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    return Answer(
        output=output,
        latency_ms=latency,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        total_tokens=_count(usage.get("total_tokens")),
        cost_usd=_cost(response.headers.get(COST_HEADER)),
    )


def _output_text(doc: Any) -> str:
    """The first choice's text (a chat message's content, or a completion's text)."""
    choice = doc["choices"][0]
    if "message" in choice:
        message = choice["message"]
        content = message.get("content")
        if content is None and message.get("tool_calls"):
            # a tool-calling answer: its calls are the output to score
            return json.dumps(message["tool_calls"], sort_keys=True)
        if not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not text")
        return content
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}")
    return text


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        doc = response.json()
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    except ValueError:
        pass
    return response.text[:200] or response.reason_phrase


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cost(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    Inside a running event loop (a notebook, an async server) ``asyncio.run``
    refuses, so the coroutine runs on a thread of its own there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
