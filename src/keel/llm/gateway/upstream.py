"""Sending a request upstream: pooled connections, retries with backoff, fallback across targets.

Each provider has one ``aiohttp.ClientSession`` (a pool of keep-alive
connections) for the life of the gateway. aiohttp rather than httpx on this
path because its HTTP parser is C: measured against the stand-in, an httpx
round trip cost about 1 ms of CPU and an aiohttp one about 0.25 ms, and the
gateway's whole budget is 1 ms (httpx stays Keel's client of ``keel server``).

A gateway model lists targets in fallback order; :meth:`Upstreams.send` tries
them in turn:

- an attempt that fails to connect, times out (``timeout_s``: a whole
  non-streamed answer, a streamed one's headers, then each read), or is
  answered 429 or 5xx is retried up to the provider's ``retries`` times,
  waiting 0.1 s, 0.2 s, 0.4 s … between attempts; then the next target is
  tried at once;
- any other answer ends the search: a 2xx is the answer, and a 4xx is the
  upstream refusing *this request* (a bad parameter, a context too long), which
  another target would refuse too, so it goes back to the caller;
- when every target failed, :class:`UpstreamFailed` says what each one did,
  with 504 if the last failure was a timeout, 503 if nothing could be reached,
  else 502.

A streamed request is retried and falls back the same way up to the moment the
upstream answers 200; from then on the caller is receiving it, so nothing is
retried. The caller's own ``Authorization`` never goes upstream: a provider
gets only its own key, read from the environment when the gateway starts.
Sessions are made on first use, inside the serving event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import BackendUnavailable, InvalidInput

if TYPE_CHECKING:
    import aiohttp

    from keel.llm.gateway.config import GatewayConfig, ModelConfig, ProviderConfig

__all__ = ["Answer", "UpstreamFailed", "Upstreams"]

#: The first wait before a retry; each later one doubles it.
BACKOFF_S = 0.1
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_EVENTS = "text/event-stream"
_STREAM_HEADERS = {"accept": _EVENTS}


class UpstreamFailed(BackendUnavailable):
    """Every target of a gateway model failed after its retries.

    Attributes:
        status_code: 504 (the last failure was a timeout), 503 (nothing could be
            reached) or 502 (an upstream answered 429 or 5xx, or broke the protocol).
        attempts: requests sent upstream, retries and fallbacks included.
        provider: the last provider tried; ``upstream_model`` its model.
    """

    def __init__(
        self, message: str, status: int, attempts: int, provider: str, upstream_model: str
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.attempts = attempts
        self.provider = provider
        self.upstream_model = upstream_model


@dataclass
class Answer:
    """What an upstream answered, and where.

    ``body`` holds a whole answer (always, unless streaming succeeded); ``stream`` is
    the open response of a streamed 200, whose bytes the caller reads
    (:meth:`Answer.chunks`) and then releases (:meth:`Answer.close`). A ``status`` of
    4xx is the upstream refusing the request; it was not retried.
    """

    status: int
    body: bytes
    provider: str
    upstream_model: str
    attempts: int
    stream: aiohttp.ClientResponse | None = None

    def chunks(self) -> AsyncIterator[bytes]:
        """The streamed body's bytes as they arrive."""
        assert self.stream is not None
        return self.stream.content.iter_any()

    def close(self) -> None:
        """Give a streamed answer's connection back (or drop it if the stream broke off)."""
        if self.stream is None:
            return
        if self.stream.content.at_eof():
            self.stream.release()  # read to the end: the connection can be reused
        else:
            self.stream.close()


class _Failure(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(what)
        self.status = status
        self.what = what


class Upstreams:
    """The providers' connection pools, and the retry and fallback rule.

    Args:
        config: the gateway's configuration (providers and their keys, read now).

    Raises:
        InvalidInput: a provider's key variable is not set, or aiohttp is not installed.
    """

    def __init__(self, config: GatewayConfig) -> None:
        try:
            import aiohttp  # noqa: F401 - checked now, not at the first request
        except ImportError:
            raise InvalidInput(
                "the LLM gateway sends its upstream requests with aiohttp, which is not "
                "installed: pip install 'aiohttp>=3.9'"
            ) from None
        self.config = config
        self.keys = {p.name: p.api_key() for p in config.providers}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._urls: dict[tuple[str, str], Any] = {}

    def _url(self, provider: ProviderConfig, path: str) -> Any:
        """The endpoint's URL, parsed once (``yarl.URL``, which aiohttp takes as it is)."""
        url = self._urls.get((provider.name, path))
        if url is None:
            from yarl import URL

            url = self._urls[(provider.name, path)] = URL(f"{provider.base_url}/{path}")
        return url

    def _session(self, provider: ProviderConfig) -> aiohttp.ClientSession:
        session = self._sessions.get(provider.name)
        if session is None:
            import aiohttp

            headers = dict(_JSON_HEADERS)
            key = self.keys.get(provider.name)
            if key:
                headers["authorization"] = f"Bearer {key}"
            session = self._sessions[provider.name] = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=min(provider.timeout_s, 10.0),
                    sock_read=provider.timeout_s,
                ),
                connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=30.0),
            )
        return session

    async def close(self) -> None:
        """Close every pool (at shutdown)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def send(
        self, model: ModelConfig, path: str, body: dict[str, Any], *, stream: bool = False
    ) -> Answer:
        """``body`` to ``model``'s targets in order, each retried, until one answers.

        Args:
            model: the gateway model (its targets, in fallback order).
            path: the endpoint under the provider's base URL (``chat/completions`` …).
            body: the request; each target's ``model`` replaces the body's.
            stream: leave a 200 answer open for the caller to read (``Answer.stream``).

        Raises:
            UpstreamFailed: every target failed after its retries.
        """
        attempts = 0
        last = ""
        failures: list[str] = []
        status = 502
        target = model.targets[0]
        for target in model.targets:
            provider = self.config.provider(target.provider)
            session = self._session(provider)
            payload = orjson.dumps({**body, "model": target.model})
            for attempt in range(provider.retries + 1):
                if attempt:
                    await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
                attempts += 1
                try:
                    answer = await self._attempt(
                        session, provider, self._url(provider, path), payload, stream
                    )
                except _Failure as failure:
                    status, last = failure.status, failure.what
                    continue
                answer.provider, answer.upstream_model = provider.name, target.model
                answer.attempts = attempts
                return answer
            failures.append(
                f"{provider.name}/{target.model}: {last} "
                f"({provider.retries + 1} attempt{'s' if provider.retries else ''})"
            )
        raise UpstreamFailed(
            f"every target of model {model.name!r} failed: {'; '.join(failures)}",
            status,
            attempts,
            target.provider,
            target.model,
        )

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        provider: ProviderConfig,
        url: Any,
        payload: bytes,
        stream: bool,
    ) -> Answer:
        import aiohttp

        response = None
        try:
            async with asyncio.timeout(provider.timeout_s):
                response = await session.post(
                    url, data=payload, headers=_STREAM_HEADERS if stream else None
                )
                if stream and response.status == 200 and response.content_type == _EVENTS:
                    return Answer(200, b"", provider.name, "", 0, stream=response)
                body = await response.read()
        except TimeoutError:
            raise _Failure(504, f"timed out after {provider.timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise _Failure(503, f"cannot connect ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise _Failure(502, f"broke off ({type(exc).__name__})") from None
        finally:  # a whole answer (or one that would not stream) frees its connection
            if response is not None and (
                not stream or response.status != 200 or response.content_type != _EVENTS
            ):
                response.release()
        if response.status == 429 or response.status >= 500:
            raise _Failure(502, f"answered {response.status}")
        return Answer(response.status, body, provider.name, "", 0)


def error_message(body: bytes, default: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else ``default`` (never the body)."""
    try:
        doc = orjson.loads(body)
        message = doc["error"]["message"] if isinstance(doc.get("error"), dict) else doc["error"]
    except Exception:  # not the OpenAI shape: say what we can without echoing it
        return default
    return str(message)[:300] if isinstance(message, str) else default
