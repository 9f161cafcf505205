"""Serving Prometheus metrics: a handler for aiohttp apps, and a small listener for gRPC services."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], web.Response]:
    async def handle(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle  # type: ignore[return-value]


async def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int, healthy: Callable[[], bool]
) -> tuple[web.AppRunner, int]:
    """/metrics and /healthz on their own port (for services whose main port speaks gRPC)."""

    async def health(request: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"status": "ok" if ok else "not ready"}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
