"""Requests in flight and whether the edge is leaving: what its shutdown waits for (``app.stop_edge``)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler


class Drain:
    """Counts the requests in flight (a middleware, outermost); ``leaving`` makes readiness fail."""

    def __init__(self) -> None:
        self.leaving = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
