"""Starting an aiohttp service and running it until SIGTERM or SIGINT, the same way for every service."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from .web import base_url


async def start_app(
    app: web.Application, host: str, port: int, *, shutdown_timeout_s: float, handler_cancellation: bool = False
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one); (runner, base_url). ``runner.cleanup()`` stops it."""
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=handler_cancellation, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, base_url(runner)


async def serve_until_stopped(runner: web.AppRunner, announcement: str) -> None:
    """Announce the started ``runner`` on stdout (launchers wait for that line), then run until signalled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(announcement, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
