"""Admin metrics: API requests by route and status, and changes by kind.

The route label is the route's pattern ("/api/keys/{key_id}"), never the
path itself, so ids do not multiply the series.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NOT_CHANGES = frozenset({"/api/login", "/api/logout"})


class AdminMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "admin_requests_total", "Admin API requests.", ["route", "status"], registry=self.registry
        )
        self.changes = Counter(
            "admin_changes_total", "Successful changes through the admin API, by kind.", ["kind"],
            registry=self.registry,
        )


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def observe(metrics: AdminMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            route = route_of(request)
            if route.startswith("/api/"):
                metrics.requests.labels(route, str(status)).inc()
                if request.method != "GET" and 200 <= status < 300 and route not in _NOT_CHANGES:
                    metrics.changes.labels(f"{request.method} {route}").inc()

    return middleware
