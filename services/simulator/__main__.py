"""`python -m services.simulator [--host H] [--port P]`: run the simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

from services.common.serving import serve_until_stopped

from .app import start_simulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags win over `SIMULATOR_HOST` / `SIMULATOR_PORT`."""
    parser = argparse.ArgumentParser(prog="python -m services.simulator", description="Fake Gemini API upstream.")
    parser.add_argument("--host", default=os.environ.get("SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIMULATOR_PORT", "8090")))
    return parser.parse_args(argv)


async def serve(host: str, port: int) -> None:
    """Start, announce the bound address on stdout, wait for a stop signal, shut down."""
    runner, base_url, _ = await start_simulator(host, port)
    await serve_until_stopped(runner, f"simulator listening on {base_url}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
