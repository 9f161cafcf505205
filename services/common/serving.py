"""Running an aiohttp service until SIGTERM or SIGINT, the same way for every service."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


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
