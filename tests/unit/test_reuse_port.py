"""EDGE_REUSE_PORT: several edge processes serve one port (SO_REUSEPORT), one per core (issue 23).

Two edge apps on one loopback port: with the setting both bind and both answer; without it the second cannot bind.
"""

from __future__ import annotations

import aiohttp
import pytest

from services.devstack.etcd_server import free_port
from services.edge.app import start_edge
from services.edge.config import EdgeSettings


def settings(reuse_port: bool) -> EdgeSettings:
    return EdgeSettings(  # the keyring identity's files: from the tests' EDGE_KEYRING_TLS_* (tests/conftest.py)
        reuse_port=reuse_port,
        keyring_addresses="127.0.0.1:1",  # never asked: /healthz answers from the process
        public_base_url="http://127.0.0.1:1",
        shutdown_timeout_s=1.0,
    )


async def test_two_edges_share_one_port_with_reuse_port_and_not_without() -> None:
    port = free_port()
    first, url = await start_edge(settings(reuse_port=True), host="127.0.0.1", port=port)
    try:
        second, _ = await start_edge(settings(reuse_port=True), host="127.0.0.1", port=port)
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(4):
                    async with http.get(f"{url}/healthz") as reply:
                        assert reply.status == 200
        finally:
            await second.cleanup()
        with pytest.raises(OSError):
            third, _ = await start_edge(settings(reuse_port=False), host="127.0.0.1", port=port)
            await third.cleanup()
    finally:
        await first.cleanup()
