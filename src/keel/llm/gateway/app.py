"""The gateway's ASGI app: an OpenAI-compatible API in front of the configured providers.

Routes: ``POST /v1/chat/completions`` (``stream: true`` answers server-sent
events), ``POST /v1/completions``, ``POST /v1/embeddings``, ``GET /v1/models``
(the gateway's model names, then the ``prompts:/`` URIs its prompt deployments
serve), ``GET /health`` and ``GET /metrics`` (Prometheus).

What every request gets:

- **One trace row**, whatever happens (answered, refused, failed upstream,
  cut off by its caller): :func:`keel.predictions.trace_row` in the ``traces``
  dataset, partitioned by the prompt deployment that routed it, else by the
  gateway's ``name``. It is handed to the trace logger before the answer goes
  out (for a stream, when it ends); the logger queues it without I/O and the
  app closes the logger at shutdown, so SIGTERM loses no row. Bodies
  (``input.messages``, ``output.text``) are left out where the model or the
  prompt says ``store_bodies: false``.
- **OpenAI's error shape** (:mod:`~keel.llm.gateway.wire`), never echoing the
  payload: 400 (malformed body, a missing or extra prompt variable), 401/403
  (token), 404 (unknown model, prompt or alias), 413, 429 (over budget),
  502/503/504 (every upstream target failed: see :mod:`keel.llm.gateway.upstream`). An upstream's own 4xx goes back with its
  status and its message. The gateway keeps serving after any bad request.
- **Guardrails** where the route has them (:mod:`~keel.llm.gateway.guard`):
  input scanners before the cache and the upstream, output scanners on the
  answer; a block is a 400 of type ``guardrail_blocked``, and every verdict is
  in the trace's ``guardrails`` column.
- **Headers**: ``x-request-id`` (the caller's, or a new one), ``x-keel-cache``
  (``hit``/``miss``), ``x-keel-prompt-version`` (``support/3``) for a prompt
  request, and ``x-keel-cost-usd`` when a price covers the answer.

A prompt request names ``"model": "prompts:/support@production"`` and its
``variables``; the gateway renders that version, sends its model and
parameters (the request's own parameters win) and records which version
answered. The prompt's ``model`` is one of the gateway's model names.

The request path reads no database: prompts, deployments and prices come from
a snapshot :class:`~keel.llm.gateway.routing.Catalog` refreshes every second,
and tokens are checked against a short cache (:mod:`keel.serving.auth`). Only a
first lookup (a prompt alias never asked for before, an uncached token) goes to
a worker thread. Tokens come from the upstream's ``usage``; where it gives
none they are estimated (:mod:`keel.llm.gateway.tokens`) and the trace says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from keel.asgi import tune_process
from keel.errors import (
    BackendUnavailable,
    InvalidInput,
    KeelError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from keel.llm.gateway.cache import CachedAnswer, ResponseCache, cache_key
from keel.llm.gateway.guard import (
    GuardrailBlocked,
    RequestGuard,
    blocked_body,
    response_schema,
)
from keel.llm.gateway.metrics import GatewayMetrics
from keel.llm.gateway.tokens import estimate_text
from keel.llm.gateway.upstream import Answer, Upstreams, error_message
from keel.llm.gateway.wire import (
    SENT_FIELD,
    EventRelay,
    check_shape,
    error_body,
    estimate_input,
    new_request_id,
    output_text,
    read_json,
    request_id,
)
from keel.llm.guardrails.base import ScanContext
from keel.predictions.schema import trace_row
from keel.uris import PROMPTS, parse_prompt_uri, scheme_of

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from keel.llm.gateway.config import GatewayConfig, ModelConfig
    from keel.llm.gateway.routing import Catalog
    from keel.serving.auth import Authenticator

__all__ = ["LLM_SCOPE", "GatewayApp", "create_app"]

log = logging.getLogger("keel.gateway")

#: The token scope the gateway's /v1 routes need.
LLM_SCOPE = "llm"
#: Output tokens a budget reserves for a request that sets no ``max_tokens``.
DEFAULT_OUTPUT_RESERVE = 1024
#: The status a trace records for a caller that left before its answer ended (never sent).
CLIENT_GONE = 499

_JSON = "application/json"
_PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
_ANONYMOUS = "anonymous"
_UNKNOWN = "unknown"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(status, message), status_code=status, media_type=_JSON, headers=headers
    )


@dataclass(slots=True)
class _Call:
    """What one request's trace records, filled in as the request goes."""

    endpoint: str
    started: float
    time_ms: int
    partition: str
    request_id: str = ""
    caller: str = _UNKNOWN
    team: str | None = None
    model: str = ""
    version: int = 0
    route: str = "direct"
    gateway_model: ModelConfig | None = None
    provider: str | None = None
    upstream_model: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    ttft_ms: float | None = None
    cache_hit: bool = False
    cost: float | None = None
    store_bodies: bool = False
    sent: Any = None  # the messages, prompt or input sent upstream
    output: str | None = None
    guard: RequestGuard | None = None


def _declared_prompt(request: Request, call: _Call) -> None:
    """Record the prompt version a raw request says it rendered (``x-keel-prompt: NAME/N``).

    ``keel evals run`` renders prompts itself and says which version it sent, so its
    calls are traced under that version. The route is ``declared``: the version is the
    caller's word, not the gateway's rendering, and readers that judge a deployment
    (canaries, monitors) read only its own partition, where no declared row lands.
    """
    value = request.headers.get("x-keel-prompt")
    if not value:
        return
    try:
        declared = parse_prompt_uri(PROMPTS + value)
    except InvalidInput:
        return  # a malformed claim changes nothing: the request is traced as sent
    if declared.version is not None:
        call.model, call.version, call.route = declared.name, declared.version, "declared"


class GatewayApp:
    """The gateway's endpoints over its config, catalog, upstreams and trace logger.

    Args:
        config: the checked gateway configuration.
        upstreams: the providers' pools and the retry/fallback rule.
        catalog: prompts, prompt deployments and prices (None: prompt requests get 404
            and nothing is priced).
        logger: a ``PredictionLogger`` on the ``traces`` dataset, or None to trace nothing.
        authenticator: checks tokens when the config says ``auth: tokens``.
        budgets: a ``keel.llm.budgets.Budgets`` (``reserve``/``settle``), or None.
        own_process: the app is all this process serves (``keel gateway start``).
    """

    def __init__(
        self,
        config: GatewayConfig,
        upstreams: Upstreams,
        *,
        catalog: Catalog | None = None,
        logger: Any = None,
        authenticator: Authenticator | None = None,
        budgets: Any = None,
        own_process: bool = False,
    ) -> None:
        if config.auth == "tokens" and authenticator is None:
            raise InvalidInput(
                "the gateway config says 'auth: tokens' but no token checker was given"
            )
        self.config = config
        self.upstreams = upstreams
        self.catalog = catalog
        self.logger = logger
        self.authenticator = authenticator if config.auth == "tokens" else None
        self.budgets = budgets
        self.own_process = own_process
        self.cache = (
            None
            if config.cache is None
            else ResponseCache(config.cache.ttl_s, config.cache.max_entries)
        )
        self.metrics = GatewayMetrics(config.name, logger)
        self._model_list = [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "keel"}
            for m in config.models
        ]

    # -- the Starlette app ------------------------------------------------------------------

    def build(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
            lifespan=self._lifespan,
        )
        app.state.gateway = self
        return app

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.catalog is not None:
            self.catalog.start()
        if self.own_process:
            tune_process()  # as ``keel serve`` does
        try:
            yield
        finally:
            if self.catalog is not None:
                self.catalog.stop()
            await self.upstreams.close()
            if self.authenticator is not None:
                self.authenticator.close()
            try:
                if self.budgets is not None:
                    self.budgets.close()  # writes the spend not yet in the store
            except Exception:  # the traces must still be flushed below
                log.exception("keel: could not write the last budget spend")
            if self.logger is not None:
                self.logger.close()  # flushes every queued trace

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        return _error(exc.status_code, str(exc.detail))

    # -- endpoints ----------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        return await self.handle(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self.handle(request, "completions")

    async def embeddings(self, request: Request) -> Response:
        return await self.handle(request, "embeddings")

    async def models(self, request: Request) -> Response:
        try:
            await self._authenticate(request, None)
        except KeelError as exc:
            return _error(exc.status_code, str(exc))
        listed = [] if self.catalog is None else self.catalog.listed
        data = self._model_list + [
            {"id": uri, "object": "model", "created": 0, "owned_by": "keel"} for uri in listed
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def health(self, request: Request) -> Response:
        doc: dict[str, Any] = {"status": "ok", "gateway": self.config.name}
        if self.catalog is not None:
            doc["refresh_errors"] = self.catalog.refresh_errors
        return Response(orjson.dumps(doc), media_type=_JSON)

    async def prometheus(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- one request ----------------------------------------------------------------------------

    async def handle(self, request: Request, endpoint: str) -> Response:
        """Answer one /v1 request and trace it, whatever happens."""
        call = _Call(endpoint, time.perf_counter(), time.time_ns() // 1_000_000, self.config.name)
        headers = {"x-keel-cache": "miss"}
        try:
            call.request_id = request_id(request)
            headers["x-request-id"] = call.request_id
            await self._authenticate(request, call)
            body = await read_json(request)
            sent, model, client_usage = await self._plan(body, endpoint, call)
            if not call.version:
                _declared_prompt(request, call)
            if call.version:
                headers["x-keel-prompt-version"] = f"{call.model}/{call.version}"
            stream = bool(sent.get("stream")) and endpoint != "embeddings"
            key = None
            if self.cache is not None and not stream:
                key = cache_key(endpoint, model.name, sent)
                hit = self.cache.get(key)
                if hit is not None:
                    return await self._from_cache(call, hit, headers)
            reservation = self._reserve(call, model, sent)
            try:
                answer = await self.upstreams.send(model, _PATHS[endpoint], sent, stream=stream)
            except BaseException:  # nothing was spent: give the reservation back
                self._settle(reservation, None)
                raise
            call.provider, call.upstream_model = answer.provider, answer.upstream_model
            call.attempts = answer.attempts
            if answer.stream is not None and call.guard is not None and call.guard.holds_streams:
                return await self._held(call, answer, client_usage, headers, reservation)
            if answer.stream is not None:
                return self._streamed(call, answer, client_usage, headers, reservation)
            return await self._answered(call, answer, headers, key, reservation)
        except ClientDisconnect:  # nobody is left to answer; the trace says so
            self._finish(call, CLIENT_GONE, "the caller went away before sending its request")
            return Response(status_code=CLIENT_GONE)
        except KeelError as exc:
            status = exc.status_code
            attempts = getattr(exc, "attempts", None)
            if attempts is not None:  # every upstream target failed
                call.attempts = attempts
                call.provider = getattr(exc, "provider", None)
                call.upstream_model = getattr(exc, "upstream_model", None)
            if call.version:  # the prompt version that refused the request, or failed
                headers["x-keel-prompt-version"] = f"{call.model}/{call.version}"
            self._finish(call, status, str(exc))
            if isinstance(exc, GuardrailBlocked):  # on the request, or on its answer
                refusal = blocked_body(exc)
                return Response(refusal, status_code=status, media_type=_JSON, headers=headers)
            return _error(status, str(exc), headers)
        except Exception:
            log.exception("keel: unexpected error on %s", request.url.path)
            message = "internal error while handling the request; see the gateway's log"
            self._finish(call, 500, message)
            return _error(500, message, headers)

    async def _authenticate(self, request: Request, call: _Call | None) -> None:
        """Who is calling: the token's user (``auth: tokens``) or ``anonymous``."""
        auth = self.authenticator
        if auth is None:
            user = _ANONYMOUS
        else:
            from keel.governance.identity import token_from_header

            secret = token_from_header(request.headers.get("authorization"))
            if not secret:
                raise Unauthenticated(
                    "this gateway needs a Keel token: send 'Authorization: Bearer <token>' "
                    f"(`keel tokens create --user NAME --scope {LLM_SCOPE}` makes one)"
                )
            principal = auth.cached(secret)
            if principal is None:
                principal = await run_in_threadpool(auth.principal, secret)
            if call is not None:
                call.caller = principal.user
            auth.require(principal, LLM_SCOPE)
            user = principal.user
        if call is not None:
            call.caller = user
            call.team = self.config.team_of(user)

    async def _plan(
        self, body: dict[str, Any], endpoint: str, call: _Call
    ) -> tuple[dict[str, Any], ModelConfig, bool]:
        """The body to send upstream, the gateway model to send it to, and whether the
        caller asked for a stream's usage."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                "'model' must name a gateway model or a prompt (prompts:/NAME@ALIAS); "
                "GET /v1/models lists them"
            )
        call.model = name[:256]
        rendered = scheme_of(name) == PROMPTS
        if rendered:  # its variables are guarded as it renders
            sent, model = await self._render(body, endpoint, name, call)
        else:
            if "variables" in body:
                raise InvalidInput(
                    "'variables' go with a prompt model such as prompts:/support@production; "
                    f"model {name[:80]!r} takes the request as it is"
                )
            model = self._model(name, endpoint)
            call.gateway_model = model
            call.store_bodies = model.store_bodies
            sent = body
        check_shape(sent, endpoint)
        if not rendered:
            guard = self._guard(call, model, None, response_schema(sent))
            if guard is not None:
                await guard.check_request(sent, endpoint)
        call.sent = sent.get(SENT_FIELD[endpoint])
        client_usage = False
        if sent.get("stream") and endpoint != "embeddings":
            options = sent.get("stream_options")
            if options is not None and not isinstance(options, dict):
                raise InvalidInput(
                    "'stream_options' must be an object such as {\"include_usage\": true}"
                )
            client_usage = bool((options or {}).get("include_usage"))
            # always ask for usage: the trace needs it; the caller gets it only if it asked
            sent = {**sent, "stream_options": {**(options or {}), "include_usage": True}}
        return sent, model, client_usage

    def _model(self, name: str, endpoint: str) -> ModelConfig:
        model = self.config.model(name)
        if model is None:
            served = ", ".join(m.name for m in self.config.models)
            raise NotFound(
                f"this gateway serves no model {name[:80]!r}; it serves {served} and the "
                "prompts:/ URIs of registered prompts (GET /v1/models)"
            )
        if (model.kind == "embedding") != (endpoint == "embeddings"):
            right = "/v1/embeddings" if model.kind == "embedding" else "/v1/chat/completions"
            raise InvalidInput(f"model {name!r} is a {model.kind} model; call {right}")
        return model

    def _guard(
        self, call: _Call, model: ModelConfig, prompt: str | None, schema: dict[str, Any] | None
    ) -> RequestGuard | None:
        """The request's guardrails (None: its route has none), kept on ``call``."""
        rails = self.config.guardrails_for(model, prompt)
        if rails is None:
            return None
        call.guard = RequestGuard(rails, ScanContext(response_schema=schema))
        return call.guard

    async def _render(
        self, body: dict[str, Any], endpoint: str, uri: str, call: _Call
    ) -> tuple[dict[str, Any], ModelConfig]:
        catalog = self.catalog
        if catalog is None:
            raise NotFound("this gateway serves no prompts (it was started without a store)")
        if endpoint == "embeddings":
            raise InvalidInput("a prompt renders a chat or text request; call /v1/chat/completions")
        parsed = catalog.parse(uri)
        resolved = catalog.cached(parsed, call.request_id)
        if resolved is None:
            try:
                resolved = await run_in_threadpool(catalog.resolve, parsed, call.request_id)
            except PermissionDenied as exc:
                # the store refused the gateway's own token, not the caller: a 403 would
                # blame the caller and keep the fault out of the error rate
                log.error("keel: the gateway's token may not read %s: %s", uri[:256], exc)
                raise BackendUnavailable(
                    f"this gateway may not read {uri[:80]!r} from its store; its operator "
                    "finds why in the gateway's log"
                ) from None
        version = resolved.version
        call.model, call.version, call.route = version.name, version.version, resolved.route
        if resolved.deployment is not None:
            call.partition = resolved.deployment
        variables = body.get("variables", {})
        if not isinstance(variables, dict):
            raise InvalidInput(
                f"'variables' must be an object of the prompt's variables "
                f"({', '.join(version.variables) or 'none'})"
            )
        # clients whose API insists on messages send an empty list: that is no messages
        given = [k for k in ("messages", "prompt") if body.get(k) not in (None, [], "")]
        if given:
            raise InvalidInput(
                f"a prompt request sends 'variables', not {' or '.join(map(repr, given))}: "
                f"{version.uri} makes the {'messages' if endpoint == 'chat' else 'prompt'}"
            )
        try:
            rendered = version.render(**variables)
        except TypeError:  # a variable named like render's own parameter
            raise InvalidInput(f"prompt {version.uri} cannot take these variables") from None
        model = self.config.model(rendered.model)
        if model is None:
            raise NotFound(
                f"prompt {version.uri} is written for model {rendered.model!r}, which this "
                "gateway does not serve; add it under 'models' in the gateway config"
            )
        if model.kind != "chat":
            raise InvalidInput(
                f"prompt {version.uri} names {model.name!r}, an {model.kind} model; a prompt "
                "needs a chat model"
            )
        call.gateway_model = model
        call.store_bodies = self.config.stores_bodies(model, version.name)
        guard = self._guard(call, model, version.name, rendered.response_schema)
        if guard is not None and await guard.check_variables(variables):
            rendered = version.render(**variables)  # again, from the redacted variables
        sent = rendered.request()
        if endpoint == "chat" and "prompt" in sent:  # a text template, asked as a chat
            sent["messages"] = [{"role": "user", "content": sent.pop("prompt")}]
        elif endpoint == "completions" and "messages" in sent:
            raise InvalidInput(f"prompt {version.uri} is a chat prompt; call /v1/chat/completions")
        for key, value in body.items():  # the request's own parameters win
            if key not in ("model", "variables", "messages", "prompt"):
                sent[key] = value
        return sent, model

    # -- answers ----------------------------------------------------------------------------

    async def _answered(
        self,
        call: _Call,
        answer: Answer,
        headers: dict[str, str],
        key: bytes | None,
        reservation: Any,
    ) -> Response:
        if answer.status >= 400:  # the upstream refused this request; another would too
            message = error_message(answer.body, "no message")
            text = f"upstream {answer.provider} refused the request ({answer.status}): {message}"
            self._settle(reservation, None)
            self._finish(call, answer.status, text)
            return _error(answer.status, text, headers)
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self._settle(reservation, None)
            text = (
                f"upstream {answer.provider} answered {answer.status} with a body that is not JSON"
            )
            self._finish(call, 502, text)
            return _error(502, text, headers)
        call.output = output_text(call.endpoint, doc)
        self._count(call, doc.get("usage"))
        self._price(call)
        self._settle(reservation, call)
        # an output block is raised from here: spent, counted and settled, only not sent
        body = await self._guard_answer(call, answer.body, doc)
        if key is not None and self.cache is not None:
            self.cache.put(
                key,
                CachedAnswer(
                    answer.body,
                    answer.provider,
                    answer.upstream_model,
                    call.input_tokens,
                    call.output_tokens,
                    call.estimated,
                    call.output,
                ),
            )
        if call.cost is not None:
            headers["x-keel-cost-usd"] = format(call.cost, ".10g")
        self._finish(call, answer.status, None)
        return Response(body, status_code=answer.status, media_type=_JSON, headers=headers)

    async def _from_cache(
        self, call: _Call, hit: CachedAnswer, headers: dict[str, str]
    ) -> Response:
        call.cache_hit = True
        call.provider, call.upstream_model = hit.provider, hit.upstream_model
        call.input_tokens, call.output_tokens = hit.input_tokens, hit.output_tokens
        call.estimated, call.output = hit.tokens_estimated, hit.output
        call.cost = 0.0  # nothing went upstream, so nothing was spent
        headers["x-keel-cache"] = "hit"
        headers["x-keel-cost-usd"] = "0"
        body = await self._guard_answer(call, hit.body, None)  # the cache keeps raw answers
        self._finish(call, 200, None)
        return Response(body, media_type=_JSON, headers=headers)

    async def _guard_answer(self, call: _Call, body: bytes, doc: dict[str, Any] | None) -> bytes:
        """``body`` after the output guardrails: redacted, or the same bytes.

        Raises:
            GuardrailBlocked: an output scanner blocked the answer.
        """
        if call.guard is None or not call.guard.rails.output:
            return body
        doc = orjson.loads(body) if doc is None else doc
        if not await call.guard.check_answer(doc, call.endpoint, call.sent):
            return body
        call.output = output_text(call.endpoint, doc)
        return orjson.dumps(doc)

    async def _held(
        self,
        call: _Call,
        answer: Answer,
        client_usage: bool,
        headers: dict[str, str],
        reservation: Any,
    ) -> Response:
        """A stream whose output guardrails can block or redact it: read whole, scanned,
        then sent at once (or refused)."""
        import aiohttp

        assert call.guard is not None
        relay = EventRelay(keep_usage=client_usage)
        events: list[bytes] = []
        failed: str | None = None
        try:
            async for chunk in answer.chunks():
                events.append(relay.feed(chunk))
            events.append(relay.rest())
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = f"upstream {answer.provider} broke off the stream ({type(exc).__name__})"
        finally:
            answer.close()
        call.output = relay.text
        self._count(call, relay.usage)
        self._price(call)
        self._settle(reservation, call)
        if failed is not None:
            self._finish(call, 502, failed)
            return _error(502, failed, headers)
        body, call.output = await call.guard.check_events(
            b"".join(events), call.endpoint, call.sent
        )  # a block is raised from here, as for a whole answer
        call.ttft_ms = (time.perf_counter() - call.started) * 1000
        self._finish(call, 200, None)
        return Response(body, media_type="text/event-stream", headers=headers)

    def _streamed(
        self,
        call: _Call,
        answer: Answer,
        client_usage: bool,
        headers: dict[str, str],
        reservation: Any,
    ) -> Response:
        import aiohttp

        state: dict[str, Any] = {"status": 200, "error": None, "done": False}
        relay = EventRelay(keep_usage=client_usage)

        def finish() -> None:
            """Release the upstream, settle and trace: once, however the stream ended."""
            if state["done"]:
                return
            state["done"] = True
            answer.close()
            call.output = relay.text
            self._count(call, relay.usage)
            self._price(call)
            self._settle(reservation, call)
            self._finish(call, state["status"], state["error"])

        async def events() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.chunks():
                    if call.ttft_ms is None:
                        call.ttft_ms = (time.perf_counter() - call.started) * 1000
                    relayed = relay.feed(chunk)
                    if relayed:
                        yield relayed
                    # let the loop notice a caller that left: with the upstream's bytes
                    # already buffered, nothing above has to wait, so nothing would
                    await asyncio.sleep(0)
                rest = relay.rest()
                if rest:
                    yield rest
                if call.guard is not None and call.guard.rails.output:  # flag scanners only
                    await call.guard.check_streamed(relay.text, call.endpoint, call.sent)
            except (aiohttp.ClientError, TimeoutError) as exc:
                state["status"] = 502
                state["error"] = (
                    f"upstream {answer.provider} broke off the stream ({type(exc).__name__})"
                )
                yield b"data: " + error_body(502, state["error"]) + b"\n\n"
            except (GeneratorExit, asyncio.CancelledError):  # the caller went away
                state["status"], state["error"] = CLIENT_GONE, "the caller went away mid-stream"
                raise
            except Exception:
                log.exception("keel: unexpected error relaying a stream")
                state["status"], state["error"] = 500, "internal error while relaying the stream"
            finally:
                finish()

        return _Stream(events(), finish, headers=headers)

    # -- tokens, cost, budgets, traces --------------------------------------------------------

    def _count(self, call: _Call, usage: Any) -> None:
        """Tokens from the upstream's usage, else estimated (and marked so)."""
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            call.input_tokens = usage["prompt_tokens"]
            completion = usage.get("completion_tokens")
            call.output_tokens = completion if isinstance(completion, int) else 0
            return
        call.input_tokens = estimate_input(call.endpoint, call.sent)
        call.output_tokens = estimate_text(call.output or "")
        call.estimated = True

    def _price(self, call: _Call) -> None:
        table = None if self.catalog is None else self.catalog.prices
        if table is None or call.upstream_model is None:
            return
        call.cost = table.cost(
            call.upstream_model, call.input_tokens, call.output_tokens, call.time_ms
        )

    def _reserve(self, call: _Call, model: ModelConfig, sent: dict[str, Any]) -> Any:
        """Hold the request's estimated spend against its budgets, before it goes upstream.

        The estimate is the input's tokens plus ``max_tokens`` (or
        :data:`DEFAULT_OUTPUT_RESERVE`) of output, priced for the first target.

        Raises:
            OverBudget: it would pass a budget (429; nothing is sent upstream).
        """
        if self.budgets is None:
            return None
        limit = sent.get("max_completion_tokens") or sent.get("max_tokens")
        output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_OUTPUT_RESERVE
        if call.endpoint == "embeddings":
            output = 0
        tokens_in = estimate_input(call.endpoint, call.sent)
        usd = 0.0
        table = None if self.catalog is None else self.catalog.prices
        if table is not None:
            usd = table.cost(model.targets[0].model, tokens_in, output, call.time_ms) or 0.0
        # in memory under a lock: no I/O, so it stays on the event loop
        return self.budgets.reserve(call.caller, call.team, tokens_in + output, usd)

    def _settle(self, reservation: Any, call: _Call | None) -> None:
        """Replace a reservation's estimate with what the request spent (``call``), or give
        it back when nothing was spent (``None``)."""
        if reservation is None or self.budgets is None:
            return
        try:
            if call is None:
                self.budgets.release(reservation)
            else:
                tokens = call.input_tokens + call.output_tokens
                self.budgets.settle(reservation, tokens, call.cost or 0.0)
        except Exception:  # the answer is out; a failed settle must not turn it into an error
            log.exception("keel: could not settle a budget reservation")

    def _finish(self, call: _Call, status: int, error: str | None) -> None:
        """Count the request and hand its trace row to the logger (O(1), no I/O)."""
        seconds = time.perf_counter() - call.started
        latency_ms = seconds * 1000
        model = call.gateway_model.name if call.gateway_model is not None else _UNKNOWN
        self.metrics.answered(
            model,
            call.endpoint,
            status,
            seconds,
            ttft=None if call.ttft_ms is None else call.ttft_ms / 1000,
            provider=call.provider,
            attempts=call.attempts,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cost=call.cost,
            cache_hit=None if self.cache is None or status >= 400 else call.cache_hit,
        )
        guard = call.guard
        if guard is not None:
            self.metrics.verdicts(guard.verdicts)
        logger = self.logger
        if logger is None:
            return
        messages = output = None
        # a blocked request keeps no bodies: what tripped the guardrail must not be stored
        if call.store_bodies and (guard is None or not guard.blocked):
            if call.sent is not None:
                messages = orjson.dumps(call.sent).decode()
            output = call.output
        row = trace_row(
            request_id=call.request_id or new_request_id(),
            time_ms=call.time_ms,
            model=call.model,
            version=call.version,
            route=call.route,
            latency_ms=latency_ms,
            caller=call.caller,
            team=call.team,
            endpoint=call.endpoint,
            provider=call.provider,
            upstream_model=call.upstream_model,
            status=status,
            error=error,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            tokens_estimated=call.estimated,
            ttft_ms=latency_ms if call.ttft_ms is None else call.ttft_ms,
            cache_hit=call.cache_hit,
            attempts=call.attempts,
            cost_usd=call.cost,
            messages=messages,
            output=output,
            guardrails=None if guard is None else guard.trace(),
        )
        try:
            logger.log(call.partition, row, 1)
        except Exception:  # never turn an answer into a different failure
            log.exception("keel: could not log the trace of request %s", call.request_id)


class _Stream(StreamingResponse):
    """A streamed answer that always finishes its request, so its trace is written.

    When the caller goes away the server stops iterating (or never starts); closing
    the iterator and then calling ``finish`` (which does its work once) closes the
    upstream and writes the trace at once, not whenever the garbage collector runs.
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        finish: Callable[[], None],
        headers: dict[str, str],
    ) -> None:
        super().__init__(events, headers=headers, media_type="text/event-stream")
        self._events = events
        self._finish_call = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass  # the caller left; the trace records it
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()  # type: ignore[attr-defined]
            self._finish_call()


def create_app(
    config: GatewayConfig,
    upstreams: Upstreams,
    *,
    catalog: Catalog | None = None,
    logger: Any = None,
    authenticator: Authenticator | None = None,
    budgets: Any = None,
    own_process: bool = False,
) -> Starlette:
    """The gateway's ASGI app (see :class:`GatewayApp` for the arguments)."""
    return GatewayApp(
        config,
        upstreams,
        catalog=catalog,
        logger=logger,
        authenticator=authenticator,
        budgets=budgets,
        own_process=own_process,
    ).build()
