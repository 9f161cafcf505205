"""An edge out of file descriptors blames no key (issue 23: streams at the process's limits).

Every stream holds two descriptors in the edge. When none is left for an upstream connection (EMFILE), the
connect failure was mapped like a refused connection: keyring cooled the key, the edge tried the next key (same
failure, cooled too) and answered 502, so an edge at its limit took healthy keys out of the pool. Now it answers
503 (try again shortly) at once: no other key tried, nothing cooled, nothing sent upstream. A real edge process
whose RLIMIT_NOFILE (soft and hard, lowered once it serves) leaves one descriptor once idle client connections
hold the rest: the request's own connection.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.etcd_server import free_port
from services.simulator.app import start_simulator
from tests.integration.conftest import StartReplica, make_pool
from tests.integration.test_keyring_service import add_keys
from tests.pki import session_pki

pytestmark = pytest.mark.etcd
MODEL = "gemini-3.5-flash"
NOFILE = 256  # the edge's descriptor table once started: what it holds, then idle clients, then one request


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def until(check: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {within_s} s")
        await asyncio.sleep(0.02)


async def settled_fds(pid: int) -> int:
    """The process's open descriptors once the count holds for 50 ms (connections being accepted or closed)."""
    while True:
        before = open_fds(pid)
        await asyncio.sleep(0.05)
        if open_fds(pid) == before:
            return before


async def hold_all_but_one(pid: int, port: int, idle: list[asyncio.StreamWriter]) -> None:
    """Idle client connections until the edge has exactly one descriptor left."""
    deadline = time.monotonic() + 20
    while (held := await settled_fds(pid)) != NOFILE - 1:
        if time.monotonic() > deadline:
            pytest.fail(f"the edge holds {held} descriptors, not {NOFILE - 1}")
        for _ in range(NOFILE - 1 - held):
            idle.append((await asyncio.open_connection("127.0.0.1", port))[1])
        if held > NOFILE - 1:
            idle.pop().close()  # one too many (a connection closed meanwhile): the edge closes its end


async def test_an_edge_out_of_descriptors_answers_503_and_cools_no_key(
    start_replica: StartReplica, tmp_path: Path
) -> None:
    replica = await start_replica()
    await make_pool(replica, allowed_models=[MODEL])
    token = (await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="fds"))).token
    await add_keys(replica, 2)
    sim_runner, sim_url, sim = await start_simulator()
    port = free_port()
    env = {
        **os.environ,
        **session_pki().environment(),
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(port),
        "EDGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "EDGE_KEYRING_ADDRESSES": replica.address,
        "EDGE_UPSTREAM_BASE_URL": sim_url,
    }
    log = tmp_path / "edge.log"
    with log.open("wb") as out:
        edge = subprocess.Popen([sys.executable, "-m", "services.edge"], env=env, stdout=out, stderr=subprocess.STDOUT)
    idle: list[asyncio.StreamWriter] = []
    try:
        await until(lambda: "edge listening" in log.read_text(errors="replace") or edge.poll() is not None, "started")
        assert edge.poll() is None, log.read_text()
        resource.prlimit(edge.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))  # not preexec_fn: grpc forbids fork
        url = f"http://127.0.0.1:{port}"
        headers = {"x-goog-api-key": token, "Content-Type": "application/json"}
        body = b'{"contents": [{"parts": [{"text": "hello"}]}]}'
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(f"{url}/readyz") as ready:  # the lease stream to keyring is open
                assert ready.status == 200, log.read_text()
            await hold_all_but_one(edge.pid, port, idle)  # the request's own connection takes the last one
            path = f"/v1beta/models/{MODEL}:generateContent"
            call = http.post(url + path, data=body, headers=headers, timeout=timeout)
            async with call as reply:
                status, answer = reply.status, await reply.json()
        assert (status, answer["error"]["status"]) == (503, "UNAVAILABLE"), (answer, log.read_text()[-2000:])
        await until(lambda: replica.keyring.desk.leases_in_flight == 0, "released")
        assert not replica.keyring.cache.view.cooldowns  # no key blamed for the edge's own limit
        assert sum(sim.counts().values()) == 0  # nothing reached the upstream
    finally:
        for writer in idle:
            writer.close()
        if edge.poll() is None:
            edge.kill()
            edge.wait(5)
        await sim_runner.cleanup()
