"""The edge's aiohttp application: routes, and the resources it owns (``cleanup_ctx``).

One ``aiohttp.ClientSession`` per process (one upstream connection pool),
created and closed with the app, and one ``KeyringClient``. Bodies pass
through untouched: the session does not decompress (``auto_decompress=False``)
and middlewares never touch bodies: ``observe`` (metrics, the server span)
wraps ``answer_in_dialect`` (the dialect decided once, every error answered
in it), which wraps the route's handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from services.common.metrics_http import metrics_response
from services.common.serving import start_app

from . import capacity, live, wire
from .config import EdgeSettings
from .context import EDGE, Edge
from .dialects import gemini, openai
from .errors import answer_in_dialect
from .keyring import KeyringClient
from .observability import EdgeMetrics, observe
from .resources import generic, kinds, uploads
from .routing import DIALECT, EITHER, GEMINI, OPENAI, Handler, add_route
from .shutdown import Drain
from .upstream import Upstream

log = logging.getLogger(__name__)

SETTINGS: Final = web.AppKey("settings", EdgeSettings)
_INJECTED_KEYRING: Final = web.AppKey("injected_keyring", KeyringClient)
METRICS: Final = web.AppKey("metrics", EdgeMetrics)
DRAIN: Final = web.AppKey("drain", Drain)
# What runner.cleanup() still gives a request after the drain (stop_edge's one wait): a last cut-off.
CLEANUP_CUTOFF_S: Final = 1.0


def create_app(settings: EdgeSettings, keyring_client: KeyringClient | None = None) -> web.Application:
    """The edge app; pass ``keyring_client`` to use one you own (not closed here: releases in flight stay its own)."""
    metrics = EdgeMetrics(settings.max_model_labels)
    drain = Drain()
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[drain.middleware, observe(metrics), answer_in_dialect]
    )
    app[SETTINGS] = settings
    app[DRAIN] = drain
    app[METRICS] = metrics
    if keyring_client is not None:
        app[_INJECTED_KEYRING] = keyring_client
    app.cleanup_ctx.append(_resources)
    _add_routes(app)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    injected = app.get(_INJECTED_KEYRING)
    keyring = injected or KeyringClient(
        settings.keyring_address_list,
        settings.keyring_timeout_s,
        tls=settings.keyring_tls(),
        server_name=settings.keyring_tls_server_name,
        token_check_ttl_s=settings.token_check_ttl_s,
        token_check_entries=settings.token_check_entries,
        keepalive_s=settings.keyring_keepalive_s,
        keepalive_timeout_s=settings.keyring_keepalive_timeout_s,
        max_owed_releases=settings.keyring_max_owed_releases,
        hedge_delay_s=settings.keyring_hedge_delay_s,
        max_hedge_delay_s=settings.keyring_max_hedge_delay_s,
        max_reconnect_backoff_s=settings.keyring_max_reconnect_backoff_s,
        handover_after_s=settings.keyring_handover_after_s,
        release_window_s=settings.keyring_release_window_s,
        credits=settings.keyring_credits,
        credit_idle_s=settings.keyring_credit_idle_s,
        credit_release_window_s=settings.keyring_credit_release_window_s,
    )
    # As many upstream connections as the setting says and the descriptors allow (two a stream: capacity.py).
    limit = capacity.upstream_connections(settings.upstream_connection_limit, capacity.nofile())
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )
    app[EDGE] = Edge(settings, app[METRICS], keyring, Upstream(settings, session))
    app[METRICS].releases_owed.set_function(keyring.owed_releases)
    app[METRICS].releases_unconfirmed.set_function(keyring.unconfirmed_releases)
    app[METRICS].watch_replicas(keyring.replica_states, lambda: keyring.hedged)
    try:
        yield
    finally:
        await session.close()
        if injected is None:
            await keyring.close()  # releases still in flight are delivered first


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this process's metrics."""
    return metrics_response(request.app[METRICS].registry)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: at least one keyring replica serves, and the edge is not shutting down."""
    if request.app[DRAIN].leaving:
        return web.json_response({"status": "shutting down"}, status=503)
    if await request.app[EDGE].keyring.ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "keyring unreachable"}, status=503)


def _either(openai_handler: Handler, gemini_handler: Handler) -> Handler:
    """A route both dialects claim: the handler of the dialect decided for the request."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request[DIALECT] == GEMINI:
            return await gemini_handler(request)
        return await openai_handler(request)

    return handler


# Project-bound resources not (yet) rows of ``resources.kinds``, Gemini's dialect, under every version
# (google-genai calls /v1 by default). Each handler parses the raw path against its strict pattern
# (``wire.resource_path``).
RESOURCE_ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("POST", "/upload/{version}/files", uploads.upload),
)

# Every route the edge answers, with the dialect it speaks (see ``routing``). The kinds of the table
# (``resources.kinds``) first: ``models/{model}/operations/{id}`` is theirs, not a model's.
ROUTES: Final[tuple[tuple[str, str, str, Handler], ...]] = (
    *((method, path, GEMINI, generic.serve) for method, path in kinds.routes()),
    *(("POST", path, GEMINI, uploads.upload_to) for path in kinds.upload_routes()),
    *(
        (method, path.replace("{version}", version), GEMINI, handler)
        for method, path, handler in RESOURCE_ROUTES
        for version in wire.VERSIONS
    ),
    ("POST", "/v1/chat/completions", OPENAI, openai.chat_completions),
    ("POST", "/v1/embeddings", OPENAI, openai.embeddings),
    # Claimed by both dialects: the way the caller authenticates decides.
    ("GET", "/v1/models", EITHER, _either(openai.list_models, gemini.list_models)),
    ("GET", "/v1/models/{tail:.+}", EITHER, _either(openai.get_model, gemini.get_model)),
    ("POST", "/v1/models/{tail:.+}", GEMINI, gemini.model_action),
    *(
        route
        for version in ("v1beta", "v1alpha")
        for route in (
            ("GET", f"/{version}/models", GEMINI, gemini.list_models),
            ("GET", f"/{version}/models/{{tail:.+}}", GEMINI, gemini.get_model),
            ("POST", f"/{version}/models/{{tail:.+}}", GEMINI, gemini.model_action),
        )
    ),
)


def _add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics)
    for method, path, dialect, handler in ROUTES:
        add_route(app, method, path, handler, dialect)
    live.add_routes(app, app[METRICS])


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
    return await start_app(
        create_app(settings, keyring_client),
        host if host is not None else settings.host,
        settings.port if port is None else port,
        shutdown_timeout_s=CLEANUP_CUTOFF_S,  # the drain is stop_edge's (EDGE_SHUTDOWN_TIMEOUT_S), in one wait
        handler_cancellation=True,
        # Bounded resources (dialects.read_body): no request head slower than this, no body ever decompressed.
        head_timeout_s=settings.head_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        auto_decompress=False,
        reuse_port=settings.reuse_port,
        backlog=settings.listen_backlog,
    )


async def stop_edge(runner: web.AppRunner, settings: EdgeSettings) -> None:
    """Shut down as Kubernetes expects (docs/configuration.md "Shutting down"): readiness first, the listener, a drain.

    1. /readyz answers 503 at once, while the listener keeps accepting for
       ``shutdown_delay_s`` (the Service and the ingress stop routing here meanwhile);
    2. the listener closes, idle kept-alive connections with it;
    3. requests in flight (long streams) get ``shutdown_timeout_s`` to finish, one
       wait that ends as soon as none is left; what remains is then cut.
    """
    app = runner.app
    drain = app[DRAIN]
    drain.leaving = True
    log.info(
        "shutting down: not ready, accepting for %.1f s, then draining for up to %.1f s",
        settings.shutdown_delay_s,
        settings.shutdown_timeout_s,
    )
    await asyncio.sleep(settings.shutdown_delay_s)
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle connections closed now; busy ones after their answer
    live.go_away(app, settings.shutdown_timeout_s)  # Live sessions: goAway now, closed before the drain's end
    if not await drain.idle(settings.shutdown_timeout_s):
        log.warning("shutdown grace over: %d requests still in flight are cut", drain.in_flight)
        await drain.cut(CLEANUP_CUTOFF_S)
    await runner.cleanup()
