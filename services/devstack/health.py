"""Waiting for a gRPC service's standard health check to say SERVING (launchers, benchmarks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import TLSFiles, channel_credentials


def open_channel(address: str, tls: TLSFiles | None) -> grpc.aio.Channel:
    """A channel to keyring: mutual TLS with ``tls`` (a client certificate), plaintext with None."""
    if tls is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, channel_credentials(tls))


async def wait_until_serving(
    address: str,
    deadline_s: float = 30.0,
    still_alive: Callable[[], None] = lambda: None,
    *,
    tls: TLSFiles | None,
) -> None:
    """Poll ``address`` until it is SERVING; ``still_alive`` may raise to give up early (the process died).

    ``tls``: a client certificate the server's CA signed (None: the server runs plaintext).
    """
    started = time.monotonic()
    async with open_channel(address, tls) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - started < deadline_s:
            still_alive()
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} did not report SERVING within {deadline_s} s")
