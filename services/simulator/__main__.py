"""`python -m services.simulator [--host H] [--port P]`: run the simulator until SIGTERM/SIGINT.

Self-contained on purpose: the simulator imports nothing of the services it stands in front of.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"simulator listening on {base_url}", flush=True)  # launchers wait for this line
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
