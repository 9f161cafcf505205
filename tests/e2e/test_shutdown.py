"""Graceful shutdowns through real processes (issue 13, finding 7): ``python -m services.keyring`` and
``python -m services.edge`` started as their containers start them, stopped by SIGTERM.

- A keyring replica drops its membership in etcd as soon as it starts draining (its peers take the whole
  of each split budget at once), not after its grace, while an open lease stream keeps it draining.
- An edge answers /readyz with 503 at once, keeps accepting for EDGE_SHUTDOWN_DELAY_S, then drains the
  streams in flight for EDGE_SHUTDOWN_TIMEOUT_S in one wait: a stream shorter than the grace finishes, a
  longer one is cut when the grace is over, and the process is gone about delay + grace after SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.etcd_server import EtcdServer, free_port
from services.keyring.codec import Layout
from services.simulator import SimulatorState, start_simulator
from tests.conftest import etcd_admin_client
from tests.integration.conftest import Replica, StartReplica, make_pool
from tests.integration.test_keyring_service import add_keys
from tests.pki import channel as tls_channel
from tests.pki import session_pki

pytestmark = pytest.mark.etcd
MODEL = "gemini-3.5-flash"


class Process:
    """A service started here with its log; only this process is ever signalled."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", module], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_for_line(self, text: str, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while text not in self.log.read_text(errors="replace"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {text!r} (exit {self.popen.poll()}):\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def exited(self, within_s: float) -> float:
        """Seconds until the process exited (fails after ``within_s``)."""
        started = time.monotonic()
        while self.popen.poll() is None:
            if time.monotonic() - started > within_s:
                pytest.fail(f"still running after {within_s} s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


async def test_a_draining_keyring_replica_leaves_the_membership_at_once(
    etcd_server: EtcdServer, store_prefix: str, kek: str, processes: list[Process], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **session_pki().environment(),
        "KEYRING_KEK": kek,
        "KEYRING_PREFIX": store_prefix,
        "KEYRING_ETCD_ENDPOINT": etcd_server.endpoint,
        "KEYRING_HOST": "127.0.0.1",
        "KEYRING_PORT": str(port),
        "KEYRING_METRICS_PORT": "-1",
        "KEYRING_REPLICA_ID": "draining-replica",
        "KEYRING_MEMBERSHIP_TTL_S": "30",  # far longer than the test: only a revoke removes it in time
        "KEYRING_SHUTDOWN_GRACE_S": "20",
    }
    replica = Process("services.keyring", env, tmp_path / "keyring.log")
    processes.append(replica)
    await replica.wait_for_line("keyring listening")
    member = Layout(store_prefix).member("draining-replica").encode()
    async with etcd_admin_client(etcd_server) as etcd:
        assert await etcd.get(member) is not None

        # A lease stream in flight keeps the replica draining (up to its 20 s grace).
        channel = tls_channel(f"127.0.0.1:{port}", session_pki().edge)
        stream = pb_grpc.LeaseServiceStub(channel).LeaseStream()
        token_check = pb.LeaseCall(id=1, check_token=pb.CheckTokenRequest(token_hash="0" * 64))
        await stream.write(pb.LeaseStreamRequest(calls=[token_check]))
        await stream.read()  # the stream is open and answered

        replica.popen.send_signal(signal.SIGTERM)
        started = time.monotonic()
        while await etcd.get(member) is not None:
            assert time.monotonic() - started < 3, "the membership outlived the start of the drain"
            await asyncio.sleep(0.05)
        assert replica.popen.poll() is None  # still draining: the stream is open
        await stream.done_writing()
        await channel.close()
        assert await replica.exited(within_s=10) < 10  # the last RPC ended: no need to wait out the grace


async def _edge(
    replica: Replica, sim_url: str, delay_s: float, grace_s: float, processes: list[Process], log: Path
) -> tuple[Process, str]:
    port = free_port()
    env = {
        **session_pki().environment(),
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(port),
        "EDGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "EDGE_KEYRING_ADDRESSES": replica.address,
        "EDGE_UPSTREAM_BASE_URL": sim_url,
        "EDGE_SHUTDOWN_DELAY_S": str(delay_s),
        "EDGE_SHUTDOWN_TIMEOUT_S": str(grace_s),
    }
    edge = Process("services.edge", env, log)
    processes.append(edge)
    await edge.wait_for_line("edge listening")
    return edge, f"http://127.0.0.1:{port}"


async def _stream(http: aiohttp.ClientSession, url: str, token: str, first: asyncio.Event) -> tuple[int, bool]:
    """Read a streamed answer; (events read, whether it ended properly)."""
    events = 0
    try:
        async with http.post(
            f"{url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": token},
            json={"contents": [{"role": "user", "parts": [{"text": "a long answer please"}]}]},
        ) as response:
            assert response.status == 200
            async for line in response.content:
                if line.startswith(b"data:"):
                    events += 1
                    first.set()
    except aiohttp.ClientPayloadError:
        return events, False
    return events, True


@pytest.mark.parametrize(
    ("chunks", "grace_s", "finishes"),
    [
        pytest.param(8, 8.0, True, id="a stream shorter than the grace finishes, and the edge leaves then"),
        pytest.param(60, 3.0, False, id="a stream longer than the grace is cut after delay + grace, once"),
    ],
)
async def test_an_edge_drains_streams_for_its_grace_after_readiness_fails(
    start_replica: StartReplica,
    processes: list[Process],
    tmp_path: Path,
    chunks: int,
    grace_s: float,
    finishes: bool,
) -> None:
    chunk_delay_s, delay_s = 0.25, 1.0  # the short stream outlasts the delay (1.75 s left): only the drain ends it
    replica = await start_replica("replica-a")
    await make_pool(replica, allowed_models=[MODEL])
    created = await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="shutdown"))
    await add_keys(replica, 2)
    sim_runner, sim_url, _ = await start_simulator(
        state=SimulatorState(default_chunks=chunks, default_chunk_delay_s=chunk_delay_s)
    )
    edge, url = await _edge(replica, sim_url, delay_s, grace_s, processes, tmp_path / "edge.log")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/readyz") as ready:
                assert ready.status == 200
            first = asyncio.Event()
            streaming = asyncio.create_task(_stream(http, url, created.token, first))
            await asyncio.wait_for(first.wait(), 10)
            edge.popen.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.2)
            async with http.get(f"{url}/readyz") as ready:
                assert ready.status == 503  # the Service stops routing here...
            async with http.get(f"{url}/healthz") as alive:
                assert alive.status == 200  # ...while the listener still accepts
            events, ended = await streaming
            gone_after = time.monotonic() - signalled + await edge.exited(within_s=delay_s + 2 * grace_s + 10)
    finally:
        await sim_runner.cleanup()
    if finishes:
        assert ended and events >= chunks - 1, (events, ended)  # the whole answer (the simulator may merge one)
        stream_left = (chunks - 1) * chunk_delay_s
        assert gone_after < max(stream_left, delay_s) + 2.5, f"the edge lingered: {gone_after:.1f} s\n{edge.tail()}"
    else:
        assert not ended and 0 < events < chunks
        # One wait: delay + grace, then what is left is cut at once (its lease released) and the process closes;
        # never delay + 2 x grace, nor aiohttp's cut-off waited twice after the grace (2 s more, as it did before).
        assert delay_s + grace_s - 0.3 < gone_after < delay_s + grace_s + 1.5, f"{gone_after:.1f} s\n{edge.tail()}"
