"""Serving Prometheus metrics: a response for aiohttp apps, and a small listener for gRPC services."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_response(registry: CollectorRegistry) -> web.Response:
    """The Prometheus text exposition of ``registry``."""
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int, healthy: Callable[[], bool]
) -> tuple[web.AppRunner, int]:
    """/metrics and /healthz on their own port (for services whose main port speaks gRPC)."""

    async def health(request: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"status": "ok" if ok else "not ready"}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(registry)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
