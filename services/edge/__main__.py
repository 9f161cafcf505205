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
    if not settings.uvloop:
        asyncio.run(serve(settings))
        return
    try:
        import uvloop  # optional: EDGE_UVLOOP is off by default (grpc.aio measured slower on it)
    except ImportError:
        raise SystemExit("EDGE_UVLOOP is set but uvloop is not installed: pip install uvloop") from None
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
