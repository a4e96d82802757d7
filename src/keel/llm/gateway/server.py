"""Starting the gateway: ``keel gateway start --config gateway.yaml``.

:func:`build_app` assembles the app from a config file and the process's Keel
settings (``KEEL_HOME``, ``KEEL_STORE_URL`` or ``KEEL_SERVER_URL``): prompts,
prompt deployments and prices through a ``keel.Client``, traces under
``settings.artifacts_url``, tokens checked by the control plane or the local
store. Everything that can be wrong (the file, a missing key variable, an
unreachable store, a guardrail that cannot load its model) fails here, before
the server binds its port.

Through ``keel server`` (``KEEL_SERVER_URL``) the gateway acts with its own token
(``KEEL_TOKEN``): it reads prompts, prompt deployments and prices (scope ``api``,
role ``viewer``) and, when the config has budgets, adds their spend (role
``editor``, everywhere). A token short of any of these is refused here, with the
server's reason, instead of answering requests from a half-read catalog or losing
spend at every flush. Its traces go to ``settings.artifacts_url``, which must be the
server's own root (``KEEL_ARTIFACTS_URL``) for the server's monitor to read them; a
gateway left on its home's folder says so in its log.

With ``--workers N`` every worker builds its own app, pools, caches and
refresher from the environment (an app does not survive a fork).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError, PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from keel.client import Client
    from keel.config import Settings
    from keel.llm.gateway.config import GatewayConfig

__all__ = ["app_from_env", "build_app", "serve"]

_CONFIG_ENV = "KEEL_GATEWAY_CONFIG"

log = logging.getLogger("keel.gateway")


def price_source(client: Client) -> Any:
    """``Prices(client).table``: what the catalog re-reads with the prompts every second."""
    from keel.llm.prices import Prices

    return Prices(client).table


def budgets_for(config: GatewayConfig, client: Client) -> Any:
    """The config's budgets over spend in the metadata store, started (None: no budgets).

    Starting loads the current periods' spend, so a restarted gateway keeps it.
    """
    if not config.budgets:
        return None
    from keel.llm.budgets import Budgets
    from keel.llm.spend import Spend

    spend = Spend(client)
    spend.check_writable()  # a token that cannot add spend fails the start, not every flush
    return Budgets(config.budgets, spend, teams=config.teams, source=config.name).start()


def _refused(server_url: str, exc: KeelError) -> KeelError:
    """``exc`` (a 401 or 403 on the gateway's own token), saying whose token and what it needs."""
    return type(exc)(
        f"keel server at {server_url} refused the gateway's own token (KEEL_TOKEN): {exc}. "
        "The gateway reads prompts, prompt deployments and prices with it (scope 'api', "
        "role 'viewer'), and adds its budgets' spend (role 'editor', everywhere) when its "
        "config has budgets"
    )


def _check_trace_root(settings: Settings) -> None:
    """Warn when a gateway working through a server traces into its own home's folder."""
    if settings.server_url and settings.artifacts_url == str(settings.home / "artifacts"):
        log.warning(
            "keel: traces go to %s, this process's own folder, where keel server's monitor "
            "does not read them; set KEEL_ARTIFACTS_URL (and KEEL_S3_ENDPOINT_URL) to the "
            "server's artifact root",
            settings.artifacts_url,
        )


def build_app(config_path: str | os.PathLike[str], *, own_process: bool = False) -> Any:
    """The gateway app for the config at ``config_path``, on the process's Keel settings.

    Raises:
        NotFound: no such config file.
        InvalidInput: the config is malformed, or a provider's key variable is not set.
        PermissionDenied, Unauthenticated: through keel server, the gateway's own token
            cannot read the catalog, or cannot add spend when the config has budgets.
        KeelError: the store cannot be read (prompts, deployments, prices).
    """
    from keel.client import Client
    from keel.config import get_settings
    from keel.llm.gateway.app import create_app
    from keel.llm.gateway.config import load_config
    from keel.llm.gateway.guard import warm
    from keel.llm.gateway.routing import Catalog
    from keel.llm.gateway.upstream import Upstreams
    from keel.predictions import TRACES, PredictionLogger

    config = load_config(config_path)
    upstreams = Upstreams(config)
    warm(config)  # a guardrail's model loads now, not on the first request
    settings = get_settings()
    client = Client()
    catalog = Catalog(client, prices=price_source(client))
    try:
        catalog.refresh()  # a store that cannot be read fails the start, not the first request
        budgets = budgets_for(config, client)
    except (PermissionDenied, Unauthenticated) as exc:
        if not settings.server_url:
            raise
        raise _refused(str(settings.server_url), exc) from None
    _check_trace_root(settings)
    authenticator = None
    if config.auth == "tokens":
        from keel.serving.auth import authenticator_for

        authenticator = authenticator_for(settings, lambda: client.store, scope="llm")
    logger = PredictionLogger(
        settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url, dataset=TRACES
    )
    return create_app(
        config,
        upstreams,
        catalog=catalog,
        logger=logger,
        authenticator=authenticator,
        budgets=budgets,
        own_process=own_process,
    )


def app_from_env() -> Any:
    """uvicorn factory for ``--workers N``: each worker builds its app from the environment."""
    path = os.environ.get(_CONFIG_ENV)
    if not path:
        from keel.errors import InvalidInput

        raise InvalidInput(f"{_CONFIG_ENV} is not set; start the gateway with `keel gateway start`")
    return build_app(path, own_process=True)


def serve(
    config_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 4000,
    workers: int = 1,
    access_log: bool = False,
) -> None:
    """Serve the gateway with uvicorn until interrupted (SIGINT/SIGTERM flush the traces)."""
    from keel.asgi import run_uvicorn
    from keel.errors import InvalidInput

    if workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {workers}")
    path = Path(config_path).resolve()
    if workers > 1:  # fail fast on a bad config or a missing key before forking workers
        from keel.llm.gateway.config import load_config
        from keel.llm.gateway.upstream import Upstreams

        Upstreams(load_config(path))
    run_uvicorn(
        lambda: build_app(path, own_process=True),
        "keel.llm.gateway.server:app_from_env",
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        environ={_CONFIG_ENV: str(path)},
    )
