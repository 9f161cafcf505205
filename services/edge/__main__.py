"""``python -m services.edge``: serve the edge until SIGTERM/SIGINT (settings from EDGE_* variables)."""

from __future__ import annotations

import asyncio
import signal

from services.common.logs import configure_logging
from services.common.telemetry import configure_tracing

from .app import start_edge
from .config import EdgeSettings


async def serve(settings: EdgeSettings) -> None:
    runner, base_url = await start_edge(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"edge listening on {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    configure_logging("edge")
    configure_tracing("edge")
    settings = EdgeSettings()
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    if settings.uvloop and uvloop is not None:
        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
