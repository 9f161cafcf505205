"""``python -m services.admin``: serve the admin API and console until SIGTERM/SIGINT (ADMIN_* settings)."""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError

from services.common.logs import configure_logging
from services.common.serving import serve_until_stopped
from services.common.telemetry import configure_tracing

from .app import start_admin
from .config import AdminSettings


async def serve(settings: AdminSettings) -> None:
    runner, base_url = await start_admin(settings)
    await serve_until_stopped(runner, f"admin listening on {base_url}")


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
