"""An edge holds as many streams as its file descriptors allow (issue 23: ten thousand slow streams).

The upstream pool was 1,000 connections: the 1,001st stream waited, its lease held, for one of the first to end
(3,000 streams of 10 s upstream answered in a median of 24 s). Now the pool is EDGE_UPSTREAM_CONNECTION_LIMIT
(10,000) held to what the descriptors allow (two a stream), and the edge raises its soft RLIMIT_NOFILE to the
hard limit at start (a Python process otherwise keeps what it was given, often 1024: ~500 streams). Its
listener keeps EDGE_LISTEN_BACKLOG (2048) connections waiting, not aiohttp's 128, whose overflow in a burst
dropped SYNs (each client retried a second later).
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from services.devstack.etcd_server import free_port
from services.edge import capacity
from services.edge.app import create_app, start_edge
from services.edge.config import EdgeSettings
from services.edge.context import EDGE


def test_the_pool_is_held_to_half_the_descriptors_left() -> None:
    assert capacity.upstream_connections(10_000, 1 << 20) == 10_000
    assert capacity.upstream_connections(10_000, 20_000) == (20_000 - capacity.RESERVED_FDS) // 2
    assert capacity.upstream_connections(10_000, 1024) == (1024 - capacity.RESERVED_FDS) // 2
    assert capacity.upstream_connections(10_000, 10) == 1


def test_the_edge_raises_its_soft_descriptor_limit_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard limit leaves nothing to raise")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    code = "import resource; from services.edge import capacity; capacity.at_start(10_000);" \
        " print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=low_soft_limit, capture_output=True, text=True, check=True, timeout=30
    )
    assert int(done.stdout) == hard


async def test_the_upstream_pool_takes_the_setting_within_the_descriptors() -> None:
    app = create_app(EdgeSettings(keyring_addresses="127.0.0.1:1", shutdown_timeout_s=1.0))  # keyring never asked
    runner = web.AppRunner(app)
    await runner.setup()  # the app's resources: the upstream session among them
    try:
        limit = app[EDGE].upstream.session.connector.limit
        assert limit == capacity.upstream_connections(10_000, capacity.nofile())
        assert limit > 1000 or capacity.nofile() < 2 * 1000 + capacity.RESERVED_FDS
    finally:
        await runner.cleanup()


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) shows a listener's backlog")
async def test_the_listener_keeps_a_burst_waiting() -> None:
    port = free_port()
    runner, _ = await start_edge(EdgeSettings(keyring_addresses="127.0.0.1:1"), host="127.0.0.1", port=port)
    try:
        listed = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True)
        backlog = int(listed.stdout.split()[2])  # a listener's Send-Q: its backlog
    finally:
        await runner.cleanup()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert backlog == min(2048, somaxconn)
