"""CheckToken through a real keyring replica on a real etcd (mutual TLS), and the edge client's cache of it.

Keyring answers from memory with the lookup Acquire uses: the pool for a
usable token, UNAUTHENTICATED for an unknown or revoked one and for a stored
(keyed) hash presented as it is, on the unary RPC and on the lease stream.
The edge's client remembers accepted hashes for a TTL (bounded), never refusals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.errors import InvalidLeaseRequest, TokenRejected
from services.edge.keyring import KeyringClient
from services.keyring.store import EtcdStore
from tests.pki import session_pki

from .conftest import Replica, StartReplica, make_pool, token_hash
from .test_keyring_service import add_keys, eventually
from .test_secrets_at_rest import stored

UNKNOWN = token_hash("kr-no-such-token-anywhere")
CODES = {code.value[0]: code for code in grpc.StatusCode}


async def check(replica: Replica, presented: str) -> grpc.StatusCode | str:
    """The unary CheckToken's answer: the pool, or the status code of the refusal."""
    try:
        return (await replica.lease.CheckToken(pb.CheckTokenRequest(token_hash=presented))).pool
    except grpc.aio.AioRpcError as error:
        return error.code()


async def stream_checks(replica: Replica, *presented: str) -> list[grpc.StatusCode | str]:
    """The same checks batched on one lease stream, answered in order of the calls' ids."""

    async def batches() -> AsyncIterator[pb.LeaseStreamRequest]:
        checks = [pb.CheckTokenRequest(token_hash=h) for h in presented]
        yield pb.LeaseStreamRequest(calls=[pb.LeaseCall(id=i + 1, check_token=c) for i, c in enumerate(checks)])

    answers: dict[int, grpc.StatusCode | str] = {}
    async for reply in replica.lease.LeaseStream(batches()):
        for result in reply.results:
            if result.HasField("error"):
                answers[result.id] = CODES[result.error.code]
            else:
                assert result.HasField("check_token")
                answers[result.id] = result.check_token.pool
    return [answers[i + 1] for i in range(len(presented))]


async def test_check_token_accepts_what_acquire_would_and_refuses_the_rest(
    start_replica: StartReplica, etcd_store: EtcdStore, store_prefix: str
) -> None:
    replica = await start_replica()
    presented = await make_pool(replica)
    await add_keys(replica, 1)
    [record] = await stored(etcd_store, store_prefix, "tokens")
    keyed = str(record["token_hash"])
    assert keyed != presented
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert await check(replica, presented) == "main"
    assert await check(replica, UNKNOWN) is unauthenticated
    assert await check(replica, keyed) is unauthenticated  # a hash read from etcd authenticates nobody
    assert await check(replica, "ab" * 10) is grpc.StatusCode.INVALID_ARGUMENT
    assert await stream_checks(replica, presented, UNKNOWN, keyed, presented) == [
        "main",
        unauthenticated,
        unauthenticated,
        "main",
    ]

    await replica.admin.RevokeToken(pb.RevokeTokenRequest(token_id=str(record["token_id"])))

    async def refused() -> bool:
        return await check(replica, presented) is unauthenticated

    await eventually(refused, within_s=3)
    assert await stream_checks(replica, presented) == [unauthenticated]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(client: KeyringClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The token hashes this client asks keyring about (one entry per round trip)."""
    asked: list[str] = []
    real = client._check_remote

    async def counting(token_hash: str) -> None:
        asked.append(token_hash)
        await real(token_hash)

    monkeypatch.setattr(client, "_check_remote", counting)
    return asked


async def test_the_client_remembers_accepted_tokens_for_the_ttl_and_never_refusals(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = await start_replica()
    good = await make_pool(replica)
    clock = Clock()
    client = KeyringClient(
        [f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files, token_check_ttl_s=30, clock=clock
    )
    asked = counted(client, monkeypatch)
    try:
        await client.check_token(good)
        await client.check_token(good)
        assert asked == [good]  # the second check found it remembered: no round trip
        for _ in range(2):
            with pytest.raises(TokenRejected):
                await client.check_token(UNKNOWN)
        assert asked == [good, UNKNOWN, UNKNOWN]  # refusals are asked every time
        clock.now += 29
        await client.check_token(good)
        assert len(asked) == 3
        clock.now += 2  # past the TTL: asked again, and refused once revoked
        [info] = (await replica.admin.ListTokens(pb.ListTokensRequest(pool="main"))).tokens
        await replica.admin.RevokeToken(pb.RevokeTokenRequest(token_id=info.token_id))

        async def refused() -> bool:
            clock.now += 31  # an acceptance seen before the revocation reached the view is not remembered
            try:
                await client.check_token(good)
            except TokenRejected:
                return True
            return False

        await eventually(refused, within_s=3)
        assert asked[3] == good
    finally:
        await client.close()


async def test_the_clients_memory_is_bounded_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    client = KeyringClient(["127.0.0.1:1"], tls=None, token_check_entries=2)
    asked: list[str] = []

    async def accept(token_hash: str) -> None:  # keyring accepts every token
        asked.append(token_hash)

    monkeypatch.setattr(client, "_check_remote", accept)
    for name in ("a", "b", "c", "c", "b", "a"):
        await client.check_token(name * 64)
    assert asked == ["a" * 64, "b" * 64, "c" * 64, "a" * 64]  # "a" was forgotten first, when "c" came
    assert len(client._accepted) == 2
    off = KeyringClient(["127.0.0.1:1"], tls=None, token_check_ttl_s=0)
    monkeypatch.setattr(off, "_check_remote", accept)
    asked.clear()
    for _ in range(3):
        await off.check_token("a" * 64)
    assert len(asked) == 3 and not off._accepted
    await client.close()
    await off.close()


async def test_a_keyring_that_predates_check_token_leaves_the_check_to_acquire(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older keyring reads the call as an empty Acquire (INVALID_ARGUMENT): the request goes on, unremembered."""
    client = KeyringClient(["127.0.0.1:1"], tls=None)
    asked: list[str] = []

    async def older_keyring(token_hash: str) -> None:
        asked.append(token_hash)
        raise InvalidLeaseRequest("token_hash must be the SHA-256 hex digest of the client token")

    monkeypatch.setattr(client, "_check_remote", older_keyring)
    await client.check_token("a" * 64)
    await client.check_token("a" * 64)
    assert len(asked) == 2 and not client._accepted
    await client.close()
