"""The LLM gateway: an OpenAI-compatible API in front of configured providers.

``keel gateway start --config gateway.yaml`` serves it (:func:`serve`). It
routes requests for its model names to providers with retries and fallback
(:mod:`~keel.llm.gateway.upstream`), renders prompt requests
(``"model": "prompts:/support@production"``) and splits them by the prompt
deployments' weights (:mod:`~keel.llm.gateway.routing`), runs each route's
guardrails on requests and answers (:mod:`~keel.llm.gateway.guard`), caches
exact repeats (:mod:`~keel.llm.gateway.cache`), and writes one trace row per
request with tokens, latency, time to first token, cost and guardrail verdicts
(:mod:`~keel.llm.gateway.app`), speaking OpenAI's wire format
(:mod:`~keel.llm.gateway.wire`). The file format is
:mod:`~keel.llm.gateway.config`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

_EXPORTS = {
    "Catalog": "keel.llm.gateway.routing",
    "GatewayConfig": "keel.llm.gateway.config",
    "ResponseCache": "keel.llm.gateway.cache",
    "UpstreamFailed": "keel.llm.gateway.upstream",
    "Upstreams": "keel.llm.gateway.upstream",
    "build_app": "keel.llm.gateway.server",
    "create_app": "keel.llm.gateway.app",
    "load_config": "keel.llm.gateway.config",
    "parse_config": "keel.llm.gateway.config",
    "serve": "keel.llm.gateway.server",
}

__all__ = [
    "Catalog",
    "GatewayConfig",
    "ResponseCache",
    "UpstreamFailed",
    "Upstreams",
    "build_app",
    "create_app",
    "load_config",
    "parse_config",
    "serve",
]

if TYPE_CHECKING:
    from keel.llm.gateway.app import create_app
    from keel.llm.gateway.cache import ResponseCache
    from keel.llm.gateway.config import GatewayConfig, load_config, parse_config
    from keel.llm.gateway.routing import Catalog
    from keel.llm.gateway.server import build_app, serve
    from keel.llm.gateway.upstream import UpstreamFailed, Upstreams

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
