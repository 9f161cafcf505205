"""The admin service's aiohttp application: REST API, console, and the resources it owns.

The keyring channels are opened and closed by ``cleanup_ctx`` (inside the
event loop); the service itself keeps no state but the failed-login counters
(``auth.LoginThrottle``): ended console sessions live in keyring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from services.common.metrics_http import metrics_response
from services.common.serving import start_app

from . import api, auth, bodies, openapi
from .config import AdminSettings
from .errors import MAX_BODY, ApiError, error_response, error_shape, json_response
from .keyring_client import KeyringAdmin
from .observability import AdminMetrics, observe

STATIC_DIR: Final = Path(__file__).parent / "static"
_INJECTED_KEYRING: Final = web.AppKey("injected_keyring", KeyringAdmin)
METRICS: Final = web.AppKey("metrics", AdminMetrics)
_CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: AdminSettings, keyring: KeyringAdmin | None = None) -> web.Application:
    """The admin app; pass ``keyring`` to use a client you own (it is then not closed here)."""
    metrics = AdminMetrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[observe(metrics), security_headers, error_shape, auth.authenticate],
    )
    app[api.SETTINGS] = settings
    app[METRICS] = metrics
    app[MAX_BODY] = settings.max_body_bytes
    app[bodies.BODY_TIMEOUT] = settings.body_timeout_s
    app[bodies.LARGE] = bodies.BodyLimit(settings.max_body_bytes, settings.max_json_elements)
    app[auth.AUTHENTICATOR] = auth.Authenticator(
        settings.admin_accounts,
        settings.session_ttl_s,
        settings.cookie_secure,
        auth.LoginThrottle(settings.login_max_failures, settings.login_window_s),
        settings.trusted_proxy_networks,
    )
    if keyring is not None:
        app[_INJECTED_KEYRING] = keyring
    app.cleanup_ctx.append(_keyring_channels)
    _add_routes(app.router)
    return app


async def _keyring_channels(app: web.Application) -> AsyncIterator[None]:
    injected = app.get(_INJECTED_KEYRING)
    settings = app[api.SETTINGS]
    client = injected or KeyringAdmin(
        settings.keyring_address_list,
        settings.keyring_timeout_s,
        tls=settings.keyring_tls(),
        server_name=settings.keyring_tls_server_name,
    )
    app[auth.KEYRING] = client
    try:
        yield
    finally:
        if injected is None:
            await client.close()


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Headers only (never bodies): the console may not be framed, sniffed or fed foreign scripts."""
    response = await handler(request)
    for name, value in _CONSOLE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: at least one keyring replica reports AdminService SERVING."""
    if await request.app[auth.KEYRING].ready():
        return json_response({"status": "ready"})
    return error_response(ApiError(503, "no keyring replica is serving"))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (no secrets in it: route patterns and counts only)."""
    return metrics_response(request.app[METRICS].registry)


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.spec(), headers={"Cache-Control": "no-cache"})


async def console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz, allow_head=True)
    router.add_get("/readyz", readyz, allow_head=True)
    router.add_get("/metrics", metrics)
    router.add_get("/openapi.json", openapi_json)
    router.add_get("/", console)
    router.add_static("/static/", STATIC_DIR, append_version=False)
    router.add_post("/api/login", auth.login)
    router.add_post("/api/logout", auth.logout)
    router.add_get("/api/session", auth.session)
    api.add_routes(router)


async def start_admin(
    settings: AdminSettings, keyring: KeyringAdmin | None = None, host: str | None = None, port: int | None = None
) -> tuple[web.AppRunner, str]:
    """Serve the admin app (tests: port 0) and return (runner, base_url); ``await runner.cleanup()`` stops it."""
    return await start_app(
        create_app(settings, keyring),
        host if host is not None else settings.host,
        settings.port if port is None else port,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        head_timeout_s=settings.head_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
    )
