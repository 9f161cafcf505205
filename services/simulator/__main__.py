"""`python -m services.simulator [--host H] [--port P]`: run the simulator until SIGTERM/SIGINT.

Self-contained on purpose: the simulator imports nothing of the services it stands in front of.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

from .app import add_tls_listener, start_simulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags win over `SIMULATOR_HOST` / `SIMULATOR_PORT`."""
    parser = argparse.ArgumentParser(prog="python -m services.simulator", description="Fake Gemini API upstream.")
    parser.add_argument("--host", default=os.environ.get("SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIMULATOR_PORT", "8090")))
    # A TLS listener too (the Python client's Live sessions are wss:// only), when a certificate and key are given.
    parser.add_argument("--tls-port", type=int, default=int(os.environ.get("SIMULATOR_TLS_PORT", "8493")))
    parser.add_argument("--tls-cert-file", default=os.environ.get("SIMULATOR_TLS_CERT_FILE", ""))
    parser.add_argument("--tls-key-file", default=os.environ.get("SIMULATOR_TLS_KEY_FILE", ""))
    args = parser.parse_args(argv)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls-cert-file and --tls-key-file go together")
    return args


async def serve(host: str, port: int, tls: tuple[int, str, str] | None = None) -> None:
    """Start, announce the bound address(es) on stdout, wait for a stop signal, shut down."""
    runner, base_url, _ = await start_simulator(host, port)
    if tls is not None:
        base_url += f" (TLS: {await add_tls_listener(runner, host, *tls)})"
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
    tls = (args.tls_port, args.tls_cert_file, args.tls_key_file) if args.tls_cert_file else None
    asyncio.run(serve(args.host, args.port, tls))


if __name__ == "__main__":
    main()
