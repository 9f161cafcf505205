"""Issue 13, findings 1 and 2, through a real etcd process stopped or killed under two real keyring replicas.

Each test starts its own etcd (TLS, client certificates), so stopping it
leaves the session's etcd alone. The edge's own ``KeyringClient`` leases and
releases, as the edge does.

1. etcd stopped (SIGSTOP): a 429 release is answered at once, and its
   cooldown holds on the deciding replica and on the other one within a
   fraction of a second (the edge reports the outcome to every replica).
2. etcd killed and restarted: what was decided meanwhile is in etcd after,
   and a replica started after the recovery sees it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import orjson
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.etcd_server import EtcdServer, free_port
from services.edge.keyring import KeyringClient, LeaseRequest
from services.keyring import write_behind
from services.keyring.config import KeyringSettings
from services.keyring.server import KeyringServer, create_server
from services.keyring.store import EtcdStore
from tests.conftest import ETCD_ARGS
from tests.pki import channel as tls_channel
from tests.pki import session_pki

from .conftest import Replica, make_pool
from .test_keyring_service import add_keys, eventually

MODEL = "gemini-3.5-flash"
PREFIX = "/outage/"
RATE_LIMITED = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=60_000)

Start = Callable[[str], Awaitable[Replica]]


@pytest.fixture
async def etcd(tmp_path: object) -> AsyncIterator[EtcdServer]:
    """An etcd of this test only, on fixed ports and a kept data dir (so it can be restarted as it was)."""
    server = EtcdServer(
        data_dir=f"{tmp_path}/etcd",
        port=free_port(),
        peer_port=free_port(),
        tls=session_pki().etcd.files,
        extra_args=list(ETCD_ARGS),
    )
    await server.astart()
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)
        await server.astop()


@pytest.fixture
async def start(etcd: EtcdServer, kek: str) -> AsyncIterator[Start]:
    """Keyring replicas on this test's etcd (short etcd timeouts: an outage shows within a second)."""
    running: list[Replica] = []

    async def start_one(replica_id: str) -> Replica:
        settings = KeyringSettings(
            kek=kek,
            prefix=PREFIX,
            etcd_endpoint=etcd.endpoint,
            etcd_timeout_s=1.0,
            replica_id=replica_id,
            membership_ttl_s=3,
            janitor_interval_s=0.05,
            metrics_port=0,
            metrics_host="127.0.0.1",
        )
        store = await EtcdStore.open(etcd.endpoint, tls=session_pki().etcd_client.files, timeout_s=1.0)
        server = create_server(settings, store, host="127.0.0.1", port=0)
        await server.start()
        replica = await _wrap(server, store)
        running.append(replica)
        return replica

    yield start_one
    for replica in running:
        if not replica.stopped:
            await replica.stop()


async def _wrap(server: KeyringServer, store: EtcdStore) -> Replica:
    pki = session_pki()
    address = f"127.0.0.1:{server.port}"
    channel, admin_channel = tls_channel(address, pki.edge), tls_channel(address, pki.admin)
    return Replica(
        server,
        store,
        channel,
        pb_grpc.LeaseServiceStub(channel),
        pb_grpc.AdminServiceStub(admin_channel),
        admin_channel,
    )


async def refused(replica: Replica, token: str) -> bool:
    try:
        lease = (await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))).lease
    except grpc.aio.AioRpcError as error:
        return error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await replica.lease.Release(pb.ReleaseRequest(lease_id=lease.lease_id, outcome=pb.Outcome(http_status=200)))
    return False


async def cooled_on(replica_a: Replica, replica_b: Replica, token: str) -> None:
    """Both replicas refuse the key within half a second of the release."""

    async def both() -> bool:
        return await refused(replica_a, token) and await refused(replica_b, token)

    await eventually(both, within_s=0.5)


async def two_replicas(start: Start) -> tuple[Replica, Replica, str, KeyringClient]:
    """Two replicas sharing one pool of one key (project proj-a), both aware of it; an edge client of both."""
    replica_a, replica_b = await start("replica-a"), await start("replica-b")
    token = await make_pool(replica_a)
    await add_keys(replica_a, 1, project="proj-a")

    async def b_sees_the_key() -> bool:
        view = replica_b.keyring.cache.view
        return bool(view.keys) and replica_b.keyring.desk.allocator.find_token(token) is not None

    await eventually(b_sees_the_key, within_s=3)
    client = KeyringClient([replica_a.address, replica_b.address], timeout_s=5, tls=session_pki().edge.files)
    for _ in range(2):  # a stream to each replica (round robin), as a busy edge has
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert await granted.release(pb.Outcome(http_status=200))
    return replica_a, replica_b, token, client


async def stored_cooldown(etcd: EtcdServer) -> dict[str, object] | None:
    store = await EtcdStore.open(etcd.endpoint, tls=session_pki().etcd_client.files, timeout_s=2.0)
    try:
        entry = await store.get(f"{PREFIX}cooldowns/project/proj-a/{MODEL}")
    finally:
        await store.close()
    return orjson.loads(entry.value) if entry is not None else None


async def test_with_etcd_stopped_a_429_release_is_answered_at_once_and_cools_the_key_on_both_replicas(
    etcd: EtcdServer, start: Start
) -> None:
    replica_a, replica_b, token, client = await two_replicas(start)
    try:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGSTOP)
        started = time.monotonic()
        assert await asyncio.wait_for(granted.release(RATE_LIMITED), timeout=1.0)
        answered_s = time.monotonic() - started
        assert answered_s < 0.5, f"the release waited {answered_s:.2f} s"
        await cooled_on(replica_a, replica_b, token)
        os.kill(etcd.pid, signal.SIGCONT)

        async def persisted() -> bool:
            return await stored_cooldown(etcd) is not None

        await eventually(persisted, within_s=10, every_s=0.2)
    finally:
        await client.close()


async def test_what_is_decided_while_etcd_is_down_is_in_etcd_after_it_restarts(
    etcd: EtcdServer, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write-behind's retries back off to 0.5 s at most (2 s by default): written within 0.5 s of etcd's return,
    # not up to 2 s; still retried, and still only once etcd is back.
    monkeypatch.setattr(write_behind, "RETRY_MAX_S", 0.5)
    replica_a, replica_b, token, client = await two_replicas(start)
    try:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGKILL)
        await etcd.astop()  # reaps it; the data dir is kept
        assert await asyncio.wait_for(granted.release(RATE_LIMITED), timeout=1.0)
        await cooled_on(replica_a, replica_b, token)
        await asyncio.sleep(1.0)  # decisions wait for etcd, retried
        await etcd.astart()

        async def persisted() -> bool:
            return await stored_cooldown(etcd) is not None

        await eventually(persisted, within_s=15, every_s=0.2)
        cooldown = await stored_cooldown(etcd)
        assert cooldown is not None and cooldown["strikes"] == 1  # judged by both replicas: one strike
        late = await start("replica-c")
        assert await refused(late, token)
    finally:
        await client.close()
