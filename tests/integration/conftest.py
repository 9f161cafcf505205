"""Fixtures that run real keyring replicas on the session's real etcd, with mutual TLS.

A replica's ``lease`` stub presents the edge's certificate and its ``admin``
stub admin's, as the services do (``tests/pki.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.etcd_server import EtcdServer
from services.edge.keyring.transport import LeaseStream
from services.keyring.config import KeyringSettings
from services.keyring.sealing import generate_kek
from services.keyring.server import KeyringServer, create_server
from services.keyring.store import EtcdStore
from tests.conftest import open_store
from tests.pki import channel as tls_channel
from tests.pki import session_pki


@dataclass
class Replica:
    server: KeyringServer
    store: EtcdStore
    channel: grpc.aio.Channel
    lease: pb_grpc.LeaseServiceStub
    admin: pb_grpc.AdminServiceStub
    admin_channel: grpc.aio.Channel
    stopped: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def keyring(self):  # type: ignore[no-untyped-def]
        return self.server.keyring

    async def stop(self) -> None:
        self.stopped = True
        await self.channel.close()
        await self.admin_channel.close()
        await self.server.stop(grace_s=1)
        await self.store.close()


StartReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
def kek() -> str:
    return generate_kek()


@pytest.fixture
async def start_replica(etcd_server: EtcdServer, store_prefix: str, kek: str) -> AsyncIterator[StartReplica]:
    """Start keyring replicas on 127.0.0.1:0 sharing the test's etcd prefix; all stopped at the end."""
    running: list[Replica] = []

    async def start(replica_id: str = "replica-a", **overrides: object) -> Replica:
        settings = KeyringSettings(
            kek=kek,
            prefix=store_prefix,
            etcd_endpoint=etcd_server.endpoint,
            replica_id=replica_id,
            membership_ttl_s=overrides.pop("membership_ttl_s", 3),
            janitor_interval_s=overrides.pop("janitor_interval_s", 0.05),
            metrics_port=overrides.pop("metrics_port", 0),
            metrics_host="127.0.0.1",
            **overrides,
        )
        store = await open_store(etcd_server)
        server = create_server(settings, store, host="127.0.0.1", port=0)
        await server.start()
        pki = session_pki()
        channel = tls_channel(f"127.0.0.1:{server.port}", pki.edge)
        admin_channel = tls_channel(f"127.0.0.1:{server.port}", pki.admin)
        replica = Replica(
            server,
            store,
            channel,
            pb_grpc.LeaseServiceStub(channel),
            pb_grpc.AdminServiceStub(admin_channel),
            admin_channel,
        )
        running.append(replica)
        return replica

    yield start
    for replica in running:
        if not replica.stopped:
            await replica.stop()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def make_pool(replica: Replica, name: str = "main", **pool_fields: object) -> str:
    """Create a pool and a client token for it; returns the token's hash."""
    await replica.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=name, **pool_fields)))
    created = await replica.admin.CreateToken(pb.CreateTokenRequest(pool=name, name="tests"))
    return token_hash(created.token)


def record_lease_messages(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each message the edge's lease streams send from now on, as its calls' kinds ("acquire", "credit" for an
    acquire asked ahead of need, "release"...)."""
    messages: list[list[str]] = []
    batches = LeaseStream._batches.__func__  # type: ignore[attr-defined]

    def kind(call: pb.LeaseCall) -> str:
        which = str(call.WhichOneof("call"))
        return "credit" if which == "acquire" and call.acquire.credit else which

    async def recording(cls: type[LeaseStream], queue: object) -> AsyncIterator[pb.LeaseStreamRequest]:
        async for batch in batches(cls, queue):
            messages.append([kind(call) for call in batch.calls])
            yield batch

    monkeypatch.setattr(LeaseStream, "_batches", classmethod(recording))
    return messages
