"""``python -m services.edge``: serve the edge until SIGTERM/SIGINT (settings from EDGE_* variables)."""

from __future__ import annotations

import asyncio

from services.common.logs import configure_logging
from services.common.serving import serve_until_stopped
from services.common.telemetry import configure_tracing

from .app import start_edge
from .config import EdgeSettings


async def serve(settings: EdgeSettings) -> None:
    runner, base_url = await start_edge(settings)
    await serve_until_stopped(runner, f"edge listening on {base_url}")


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
