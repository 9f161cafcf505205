"""aiohttp application of the Gemini simulator, plus a helper to run it in tests."""

from __future__ import annotations

import ssl

from aiohttp import web

from . import (
    caches_api,
    control,
    files_api,
    interactions_api,
    jobs,
    kinds_api,
    live,
    live_interactions,
    native,
    openai_compat,
)
from .pipeline import SIMULATOR_STATE, unknown_path
from .state import SimulatorState

__all__ = ["SIMULATOR_STATE", "add_tls_listener", "create_app", "start_simulator"]


def create_app(state: SimulatorState | None = None) -> web.Application:
    """Build the simulator app; pass a `state` to script it from the same process."""
    app = web.Application()
    app[SIMULATOR_STATE] = state if state is not None else SimulatorState()
    native.add_routes(app)
    openai_compat.add_routes(app)
    files_api.add_routes(app)
    caches_api.add_routes(app)
    jobs.add_routes(app)
    kinds_api.add_routes(app)  # before the interactions': interactions/{id}/auth_tokens is a kind of the table
    interactions_api.add_routes(app)
    live.add_routes(app)
    live_interactions.add_routes(app)
    control.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", unknown_path)  # last: every other path is recorded, then 404
    return app


# Connections waiting to be accepted (bench/stream_scale_bench.py opens thousands at once).
LISTEN_BACKLOG = 4096


def format_base_url(host: str, port: int) -> str:
    """`http://host:port`, bracketing IPv6 literals."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    state: SimulatorState | None = None,
    *,
    shutdown_timeout: float = 2.0,
) -> tuple[web.AppRunner, str, SimulatorState]:
    """Serve a simulator on `host` (a free port by default) and return
    (runner, base_url, state); call `await runner.cleanup()` to stop it.

    Handlers are cancelled when their client disconnects, so a scripted
    delay never outlives the caller (and never stalls `cleanup()`).
    """
    app = create_app(state)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    # Google's front ends do not drop a burst of connections: the kernel's own cap (somaxconn), not aiohttp's 128.
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
    await site.start()
    bound_port: int = runner.addresses[0][1]  # the site's server sockets, port 0 resolved
    return runner, format_base_url(host, bound_port), app[SIMULATOR_STATE]


async def add_tls_listener(runner: web.AppRunner, host: str, port: int, cert_file: str, key_file: str) -> str:
    """Serve the started simulator over TLS too, on `port` (0: a free one), and return its `https://` base URL.

    The official Python client opens Live sessions with `wss://` only, whatever its base URL says, so a test of it
    needs a TLS listener; the plain one keeps serving everything else.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    bound_port: int = runner.addresses[-1][1]  # the site just started is the last one
    return format_base_url(host, bound_port).replace("http://", "https://", 1)
