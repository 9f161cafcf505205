"""Project-bound resources (affinity) through two real keyring replicas on a real etcd, over gRPC with mutual TLS."""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.errors import InvalidLeaseRequest, NoKeyFree, UnknownResource
from services.edge.keyring import Binding, KeyringClient, LeaseRequest
from services.keyring import housekeeping
from services.keyring.grpc_errors import RETRY_AFTER_METADATA
from tests.pki import session_pki

from .conftest import Replica, StartReplica, make_pool
from .test_keyring_metrics import scrape
from .test_keyring_service import add_keys

MODEL = "gemini-3.5-flash"
HOUR_MS = 3600_000
RATE_LIMITED = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=30_000)


async def lease_of(replica: Replica, token: str, key_id: str, all_keys: list[str]) -> pb.Lease:
    """A lease of exactly ``key_id`` (every other key excluded)."""
    others = [k for k in all_keys if k != key_id]
    reply = await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL, exclude_key_ids=others))
    assert reply.lease.key_id == key_id
    return reply.lease


async def bind(replica: Replica, lease: pb.Lease, *names: str, ttl_ms: int = HOUR_MS) -> None:
    bindings = [pb.ResourceBinding(name=name, ttl_ms=ttl_ms) for name in names]
    await replica.lease.Release(
        pb.ReleaseRequest(
            lease_id=lease.lease_id, key_id=lease.key_id, outcome=pb.Outcome(http_status=200), bind=bindings
        )
    )


async def affine(replica: Replica, token: str, *names: str) -> pb.Lease:
    reply = await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL, affinity=names))
    await replica.lease.Release(pb.ReleaseRequest(lease_id=reply.lease.lease_id, key_id=reply.lease.key_id))
    return reply.lease


async def refusal(replica: Replica, token: str, *names: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL, affinity=names))
    return error.value


def lagging_watch(replica: Replica) -> None:
    """Replica's watch never delivers affinity records (as if it lagged forever); direct reads still land."""
    cache = replica.keyring.cache
    real_apply, real_private = cache.apply, cache._apply
    reading = False

    def apply(path: str, value: bytes | None, revision: int) -> None:
        nonlocal reading
        reading = True
        try:
            real_apply(path, value, revision)
        finally:
            reading = False

    def from_watch(path: str, value: bytes | None, revision: int) -> None:
        if "/affinity/" in path and not reading:
            return
        real_private(path, value, revision)

    cache.apply = apply  # type: ignore[method-assign]
    cache._apply = from_watch  # type: ignore[method-assign]


@pytest.fixture
async def two(start_replica: StartReplica) -> tuple[Replica, Replica, str, list[str]]:
    """Replicas a and b, pool main with keys of proj-a (2), proj-b (1); a token's hash; the key ids."""
    a = await start_replica("replica-a")
    b = await start_replica("replica-b")
    token = await make_pool(a)
    keys = await add_keys(a, 2, seed="a", project="proj-a") + await add_keys(a, 1, seed="b", project="proj-b")
    await asyncio.sleep(0.2)  # b's view has the pool, keys and token
    return a, b, token, keys


async def test_a_binding_on_one_replica_routes_an_acquire_on_the_other_at_once(
    two: tuple[Replica, Replica, str, list[str]],
) -> None:
    a, b, token, keys = two
    lagging_watch(b)  # b learns of the record only by reading it on the miss
    await bind(a, await lease_of(a, token, keys[1], keys), "files/abc", "uploads/s-1")
    assert ("main", "files/abc") not in b.keyring.cache.view.affinity
    assert (await affine(b, token, "files/abc")).key_id == keys[1]
    assert ("main", "files/abc") in b.keyring.cache.view.affinity  # read once, now from memory
    assert (await affine(b, token, "files/abc", "uploads/s-1")).key_id == keys[1]
    _, samples = await scrape(a.server.metrics_port)
    assert samples[("keyring_affinity_records", (("pool", "main"),))] == 2


async def test_the_edge_client_binds_confirmed_and_leases_by_affinity(
    two: tuple[Replica, Replica, str, list[str]],
) -> None:
    a, b, token, keys = two
    tls = session_pki().edge.files
    on_a, on_b = KeyringClient([a.address], tls=tls), KeyringClient([b.address], tls=tls)
    try:
        granted = await on_a.acquire(LeaseRequest(token_hash=token, model=MODEL), [keys[0], keys[1]])  # proj-b's key
        confirmed = granted.release(
            pb.Outcome(http_status=200), confirm=False, bind=[Binding("cachedContents/c", 3600)]
        )
        assert confirmed is not None and await confirmed
        for _ in range(3):  # at once, on the other replica, over the lease stream
            leased = await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, affinity=("cachedContents/c",)))
            assert leased.lease.key_id == keys[2]
            assert await leased.release(pb.Outcome(http_status=200))
        with pytest.raises(UnknownResource) as unknown:  # translated once, in the keyring package
            await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, affinity=("cachedContents/nobody",)))
        assert unknown.value.reason == "NOT_FOUND" and unknown.value.http_status == 404
        # A list call that has covered proj-a and proj-b has nothing left.
        with pytest.raises(NoKeyFree):
            await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, exclude_projects=("proj-a", "proj-b")))
        in_b = await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, exclude_projects=("proj-a",)))
        assert in_b.lease.project == "proj-b"
        in_a = await on_a.acquire(LeaseRequest(token_hash=token, model=MODEL), [keys[1], keys[2]])
        assert await in_a.release(pb.Outcome(http_status=200), bind=[Binding("files/x", 60)])
        with pytest.raises(InvalidLeaseRequest):  # proj-a's file and proj-b's cache: no key serves both
            await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, affinity=("files/x", "cachedContents/c")))
        deleted = await on_b.acquire(LeaseRequest(token_hash=token, model=MODEL, affinity=("cachedContents/c",)))
        assert await deleted.release(pb.Outcome(http_status=200), unbind=["cachedContents/c"])
        with pytest.raises(UnknownResource):
            await on_a.acquire(LeaseRequest(token_hash=token, model=MODEL, affinity=("cachedContents/c",)))
        other = await on_a.acquire(LeaseRequest(token_hash=token, model=MODEL))
        refused = other.release(pb.Outcome(http_status=200), bind=[Binding("files/has space", 60)])
        assert not await refused  # keyring refused the binding: the caller knows
        assert a.keyring.desk.leases_in_flight == 0
    finally:
        await on_a.close()
        await on_b.close()


async def test_refusals_not_found_invalid_and_exhausted(
    two: tuple[Replica, Replica, str, list[str]],
) -> None:
    a, b, token, keys = two
    other_token = await make_pool(a, "other")
    [other_key] = await add_keys(a, 1, pool="other", seed="o", project="proj-o")
    await bind(a, await lease_of(a, token, keys[0], keys), "files/a")
    await bind(a, await lease_of(a, token, keys[2], keys), "files/b")
    await bind(a, await lease_of(a, other_token, other_key, [other_key]), "files/theirs")
    assert (await refusal(b, token, "files/none")).code() is grpc.StatusCode.NOT_FOUND
    assert (await refusal(b, token, "files/theirs")).code() is grpc.StatusCode.NOT_FOUND  # another pool's
    assert (await refusal(b, token, "files/a", "files/b")).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (await refusal(b, token, "")).code() is grpc.StatusCode.INVALID_ARGUMENT
    # proj-a cools for the model: calls naming its file wait, never another project's key.
    lease = (await b.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL, affinity=("files/a",)))).lease
    await b.lease.Release(pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, outcome=RATE_LIMITED))
    exhausted = await refusal(b, token, "files/a")
    assert exhausted.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    delay_ms = int(dict(exhausted.trailing_metadata() or ())[RETRY_AFTER_METADATA])
    assert 25_000 < delay_ms <= 30_000
    assert (await affine(b, token, "files/b")).key_id == keys[2]
    # Bad bindings: refused, the lease still given back.
    lease = await lease_of(a, token, keys[2], keys)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await bind(a, lease, "files/has space")
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert a.keyring.desk.leases_in_flight == 0


async def test_expired_bindings_are_not_found_then_collected(
    two: tuple[Replica, Replica, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, token, keys = two
    monkeypatch.setattr(housekeeping, "COOLDOWN_GC_INTERVAL_S", 0.2)
    await bind(a, await lease_of(a, token, keys[0], keys), "batches/short", ttl_ms=500)
    await bind(a, await lease_of(a, token, keys[0], keys), "batches/long", ttl_ms=HOUR_MS)
    assert (await affine(b, token, "batches/short")).key_id == keys[0]
    store = a.store
    path = a.keyring.cache.layout.affinity("main", "batches/short")
    stored = await store.get(path)
    assert stored is not None and orjson.loads(stored.value)["project"] == "proj-a"
    await asyncio.sleep(0.6)  # past the short binding's 0.5 s
    assert (await refusal(b, token, "batches/short")).code() is grpc.StatusCode.NOT_FOUND  # expired, not yet collected
    deadline = time.monotonic() + 5
    while await store.get(path) is not None:
        assert time.monotonic() < deadline, "the expired record was never collected"
        await asyncio.sleep(0.1)
    assert await store.get(a.keyring.cache.layout.affinity("main", "batches/long")) is not None
    assert (await affine(b, token, "batches/long")).key_id == keys[0]
