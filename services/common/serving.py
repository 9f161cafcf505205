"""Starting an aiohttp service and running it until SIGTERM or SIGINT, the same way for every service."""

from __future__ import annotations

import asyncio
import signal
import ssl
from typing import Any

from aiohttp import web

from .head_timeout import HeadTimeoutRunner
from .web import base_url


async def start_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout_s: float,
    handler_cancellation: bool = False,
    head_timeout_s: float | None = None,
    keepalive_timeout_s: float | None = None,
    auto_decompress: bool = True,
    reuse_port: bool = False,
    backlog: int = 128,
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one); (runner, base_url). ``runner.cleanup()`` stops it.

    ``head_timeout_s``: close a connection whose request head is not complete in time (``head_timeout``);
    ``keepalive_timeout_s``: close an idle kept-alive connection; ``auto_decompress=False``: request bodies
    are never decompressed by the server (a handler sees them as sent); ``reuse_port``: SO_REUSEPORT, so
    several processes serve one port (the kernel spreads connections over them); ``backlog``: connections
    the kernel keeps waiting to be accepted (past it a client's SYN is dropped and retried a second later;
    capped by net.core.somaxconn).
    """
    options: dict[str, Any] = {"auto_decompress": auto_decompress}
    if keepalive_timeout_s is not None:
        options["keepalive_timeout"] = keepalive_timeout_s
    common: dict[str, Any] = {
        "access_log": None,
        "handler_cancellation": handler_cancellation,
        "shutdown_timeout": shutdown_timeout_s,
    }
    if head_timeout_s is not None:
        runner: web.AppRunner = HeadTimeoutRunner(app, head_timeout_s=head_timeout_s, **common, **options)
    else:
        runner = web.AppRunner(app, **common, **options)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=backlog).start()
    return runner, base_url(runner)


async def add_tls_site(
    runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext, reuse_port: bool = False, backlog: int = 128
) -> str:
    """Serve a started ``runner``'s app over TLS too, on ``port`` (0: any free one); the ``https://`` base URL.

    One app, one runner, two listeners: whatever stops the runner (``cleanup``, a site's ``stop``) stops both.
    """
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=reuse_port or None, backlog=backlog)
    await site.start()
    shown, bound = runner.addresses[-1][:2]  # the site just started is the last one
    shown = "127.0.0.1" if shown in ("0.0.0.0", "") else shown
    return f"https://[{shown}]:{bound}" if ":" in shown else f"https://{shown}:{bound}"


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
