"""The edge's lease client against real replicas: one name, several replicas (a headless Service)."""

from __future__ import annotations

from collections import Counter

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.keyring import HeldLease, KeyringClient, LeaseRequest, resolve_all
from tests.pki import session_pki

from .conftest import StartReplica, make_pool
from .test_keyring_service import MODEL, add_keys, eventually

OK = pb.Outcome(http_status=200)


async def test_one_name_spreads_leases_over_every_replica_it_resolves_to(start_replica: StartReplica) -> None:
    replica_a = await start_replica("replica-a")
    replica_b = await start_replica("replica-b")
    token = await make_pool(replica_a)
    await add_keys(replica_a, 4)
    targets = [f"127.0.0.1:{replica_a.server.port}", f"127.0.0.1:{replica_b.server.port}"]

    async def resolver(address: str) -> list[str]:
        assert address == "keyring-headless:50051"
        return list(targets)

    async def b_knows_the_token() -> bool:
        return replica_b.keyring.desk.allocator.find_token(token) is not None

    await eventually(b_knows_the_token, within_s=2)
    client = KeyringClient(
        ["keyring-headless:50051"], resolver=resolver, resolve_every_s=0.05, tls=session_pki().edge.files
    )
    try:
        await eventually(lambda: _granted_once(client, token), within_s=3)  # first resolution done
        granters: Counter[str] = Counter()
        for _ in range(40):
            granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
            granters[granted.lease.lease_id.split(".")[0]] += 1
            await granted.release(OK)
        assert set(granters) == {"replica-a", "replica-b"} and min(granters.values()) >= 10
        assert len(replica_a.keyring.desk.book) == 0 and len(replica_b.keyring.desk.book) == 0  # each release went home

        targets.remove(f"127.0.0.1:{replica_b.server.port}")  # replica b leaves the name

        async def only_a() -> bool:
            leases = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(4)]
            for granted in leases:
                await granted.release(OK)
            return {granted.lease.lease_id.split(".")[0] for granted in leases} == {"replica-a"}

        await eventually(only_a, within_s=3)
    finally:
        await client.close()


async def _granted_once(client: KeyringClient, token: str) -> bool:
    granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
    await granted.release(OK)
    return len(client.replicas.current) == 2


async def test_resolve_all_expands_a_name_and_keeps_what_does_not_resolve() -> None:
    assert await resolve_all("127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert "127.0.0.1:7" in await resolve_all("localhost:7")
    assert await resolve_all("no-such-host.invalid:1") == ["no-such-host.invalid:1"]


async def test_a_replica_going_down_moves_leases_to_the_other(start_replica: StartReplica) -> None:
    replica_a = await start_replica("replica-a")
    replica_b = await start_replica("replica-b")
    token = await make_pool(replica_a)
    await add_keys(replica_a, 2)

    async def b_knows_the_token() -> bool:
        return replica_b.keyring.desk.allocator.find_token(token) is not None

    await eventually(b_knows_the_token, within_s=2)
    client = KeyringClient(
        [f"127.0.0.1:{replica_a.server.port}", f"127.0.0.1:{replica_b.server.port}"],
        timeout_s=2,
        tls=session_pki().edge.files,
    )
    try:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        await granted.release(OK)
        await replica_b.stop()
        granters = set()
        for _ in range(6):
            granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
            granters.add(granted.lease.lease_id.split(".")[0])
            await granted.release(OK)
        assert granters == {"replica-a"}
        assert len(replica_a.keyring.desk.book) == 0
    finally:
        await client.close()


async def test_a_release_nobody_waits_for_still_frees_the_slot_even_when_the_client_closes_at_once(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 3)
    client = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    granter = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    unopened = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    try:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert granted.release(OK, confirm=False) is None  # queued: nothing to wait for
        await eventually(lambda: _no_leases(replica), within_s=2)

        held = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(3)]
        assert len(replica.keyring.desk.book) == 3
        assert all(granted.release(OK, confirm=False) is None for granted in held)
        await client.close()  # right after queueing: close sends what is queued before it ends the stream
        assert len(replica.keyring.desk.book) == 0

        # A client whose stream to that replica is not open cannot send without waiting: the caller is told
        # (it gets the delivering task), and closing the client still delivers it.
        granted = await granter.acquire(LeaseRequest(token_hash=token, model=MODEL))
        moved = HeldLease(unopened.releases, granted.lease, granted.allowed_models, granted.replica, MODEL)
        delivery = moved.release(OK, confirm=False)
        assert delivery is not None
        await unopened.close()
        assert delivery.done() and len(replica.keyring.desk.book) == 0
    finally:
        await client.close()
        await granter.close()
        await unopened.close()


async def test_a_held_lease_ends_once_and_async_with_releases_it_as_cancelled(start_replica: StartReplica) -> None:
    """The one owner of a lease's end (issue 19): a second release sends nothing; leaving ``async with`` releases."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    client = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    try:
        held = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        first = held.release(OK)
        assert held.release(OK) is None and held.release(OK, confirm=False) is None  # nothing sent again
        assert await first and len(replica.keyring.desk.book) == 0
        with pytest.raises(RuntimeError):
            async with await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) as leased:
                assert len(replica.keyring.desk.book) == 1
                raise RuntimeError("the call failed before any answer")
        assert leased.released
        await eventually(lambda: _no_leases(replica), within_s=2)
        async with await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) as answered:
            assert await answered.release(OK)
        assert answered.released and len(replica.keyring.desk.book) == 0
    finally:
        await client.close()


async def test_a_release_takes_the_same_path_whether_or_not_the_request_is_traced(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    client = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("test")
    try:
        with tracer.start_as_current_span("request"):
            assert trace.get_current_span().get_span_context().trace_flags.sampled
            granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
            assert granted.release(OK, confirm=False) is None  # queued, traced or not
            await eventually(lambda: _no_leases(replica), within_s=2)
            granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
            confirmed = granted.release(OK)  # a failover's release: waited for, traced or not
            await confirmed
            assert len(replica.keyring.desk.book) == 0
    finally:
        await client.close()


async def _no_leases(replica: object) -> bool:
    return len(replica.keyring.desk.book) == 0  # type: ignore[attr-defined]
