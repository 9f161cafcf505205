"""``python -m services.edge``: serve the edge until SIGTERM/SIGINT (settings from EDGE_* variables)."""

from __future__ import annotations

import asyncio
import signal

from pydantic import ValidationError

from services.common.logs import configure_logging
from services.common.telemetry import configure_tracing
from services.common.tls import TLSConfigError

from . import capacity
from .app import start_edge, stop_edge
from .config import EdgeSettings
from .https import serve_https


async def serve(settings: EdgeSettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down as ``stop_edge`` does (readiness, delay, one drain)."""
    runner, base_url = await start_edge(settings)
    try:
        https_url = await serve_https(runner, settings)
    except BaseException:
        await runner.cleanup()
        raise
    if https_url is not None:
        base_url += f" and {https_url}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"edge listening on {base_url}", flush=True)  # launchers wait for this line
    try:
        await stop.wait()
    except BaseException:
        await runner.cleanup()
        raise
    await stop_edge(runner, settings)


def main() -> None:
    configure_logging("edge")
    configure_tracing("edge")
    try:
        settings = EdgeSettings()
    except ValidationError as invalid:  # one clear line per bad setting, no traceback
        problems = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in invalid.errors())
        raise SystemExit(f"edge: refusing to start: {problems}") from None
    capacity.at_start(settings.upstream_connection_limit)
    try:
        if not settings.uvloop:
            asyncio.run(serve(settings))
            return
        try:
            import uvloop  # optional: EDGE_UVLOOP is off by default (grpc.aio measured slower on it)
        except ImportError:
            raise SystemExit("EDGE_UVLOOP is set but uvloop is not installed: pip install uvloop") from None
        uvloop.run(serve(settings))
    except TLSConfigError as error:  # the https files do not load
        raise SystemExit(f"edge: refusing to start: {error}") from None


if __name__ == "__main__":
    main()
