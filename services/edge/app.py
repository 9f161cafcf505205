"""The edge's aiohttp application: routes, and the resources it owns (``cleanup_ctx``).

One ``aiohttp.ClientSession`` per process (one upstream connection pool),
created and closed with the app, and one ``KeyringClient``. Bodies pass
through untouched: the session does not decompress (``auto_decompress=False``)
and middlewares only reshape error answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from services.common.metrics_http import metrics_response

from .config import EdgeSettings
from .dialects import gemini, openai
from .errors import error_shape
from .forwarding import EDGE, Edge
from .keyring_client import KeyringClient
from .observability import EdgeMetrics, observe

log = logging.getLogger(__name__)

SETTINGS: Final = web.AppKey("settings", EdgeSettings)
_INJECTED_KEYRING: Final = web.AppKey("injected_keyring", KeyringClient)
METRICS: Final = web.AppKey("metrics", EdgeMetrics)


def create_app(settings: EdgeSettings, keyring_client: KeyringClient | None = None) -> web.Application:
    """The edge app; pass ``keyring_client`` to use one you own (it is then not closed here)."""
    metrics = EdgeMetrics()
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[observe(metrics), error_shape])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    if keyring_client is not None:
        app[_INJECTED_KEYRING] = keyring_client
    app.cleanup_ctx.append(_resources)
    _add_routes(app.router)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    injected = app.get(_INJECTED_KEYRING)
    keyring = injected or KeyringClient(settings.keyring_address_list, settings.keyring_timeout_s)
    connector = aiohttp.TCPConnector(limit=settings.upstream_connection_limit, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )
    edge = Edge(settings, session, keyring, app[METRICS])
    app[EDGE] = edge
    try:
        yield
    finally:
        await edge.drain()
        await session.close()
        if injected is None:
            await keyring.close()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this process's metrics."""
    return metrics_response(request.app[METRICS].registry)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: at least one keyring replica serves."""
    if await request.app[EDGE].keyring.ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "keyring unreachable"}, status=503)


def _add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz, allow_head=True)
    router.add_get("/readyz", readyz, allow_head=True)
    router.add_get("/metrics", metrics)
    # OpenAI's dialect.
    router.add_post("/v1/chat/completions", openai.chat_completions)
    router.add_post("/v1/embeddings", openai.embeddings)
    # Claimed by both dialects: the way the caller authenticates decides.
    router.add_get("/v1/models", gemini.v1_models, allow_head=False)
    router.add_get("/v1/models/{tail:.+}", gemini.v1_model, allow_head=False)
    router.add_post("/v1/models/{tail:.+}", gemini.model_action)
    # Gemini's dialect.
    router.add_get("/v1beta/models", gemini.list_models, allow_head=False)
    router.add_get("/v1beta/models/{tail:.+}", gemini.get_model, allow_head=False)
    router.add_post("/v1beta/models/{tail:.+}", gemini.model_action)


async def start_edge(
    settings: EdgeSettings,
    keyring_client: KeyringClient | None = None,
    host: str | None = None,
    port: int | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve the edge (tests: port 0) and return (runner, base_url); ``await runner.cleanup()`` stops it.

    Handlers are cancelled when their client goes away, so a cut stream
    releases its lease at once rather than at the next upstream chunk.
    """
    app = create_app(settings, keyring_client)
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=settings.shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host if host is not None else settings.host, settings.port if port is None else port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
    base = f"http://[{shown}]:{bound_port}" if ":" in shown else f"http://{shown}:{bound_port}"
    return runner, base
