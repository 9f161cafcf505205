"""Requests in flight and whether the edge is leaving: what its shutdown waits for (``app.stop_edge``)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler


class Drain:
    """Counts the requests in flight (a middleware, outermost); ``leaving`` makes readiness fail."""

    def __init__(self) -> None:
        self.leaving = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._handlers: set[asyncio.Task[object]] = set()  # the tasks serving the requests in flight

    @property
    def in_flight(self) -> int:
        return len(self._handlers)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]  # a handler runs in one
        self._handlers.add(task)
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self._handlers.discard(task)
            if not self._handlers:
                self._idle.set()

    async def cut(self, timeout_s: float) -> None:
        """The grace is over: cancel what is still in flight, and wait (bounded) until each has released its lease.

        aiohttp's own shutdown would first wait its cut-off for them, then cancel and wait again.
        """
        handlers = [task for task in self._handlers if not task.done()]
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=timeout_s)

    async def idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
