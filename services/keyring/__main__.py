"""python -m services.keyring: run one keyring replica (settings from KEYRING_* variables)."""

from __future__ import annotations

import asyncio

from services.common.logs import configure_logging
from services.common.telemetry import configure_tracing

from .config import KeyringSettings
from .server import run


def main() -> None:
    configure_logging("keyring")
    configure_tracing("keyring")
    asyncio.run(run(KeyringSettings()))


if __name__ == "__main__":
    main()
