"""``python -m services.admin``: serve the admin API and console until SIGTERM/SIGINT (ADMIN_* settings)."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.common.logs import configure_logging
from services.common.telemetry import configure_tracing

from .app import start_admin
from .config import AdminSettings


async def serve(settings: AdminSettings) -> None:
    runner, base_url = await start_admin(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"admin listening on {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    configure_logging("admin")
    configure_tracing("admin")
    try:
        settings = AdminSettings()
    except ValidationError as error:
        # Pydantic's own text would echo the offending input (possibly a token): show only the messages.
        messages = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors(include_input=False))
        sys.exit(f"admin: bad settings: {messages}")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
