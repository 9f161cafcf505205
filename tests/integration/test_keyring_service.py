"""Keyring over gRPC on a real etcd: leasing, the outcome policy, replicas, restarts, bad input."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.etcd_server import EtcdServer
from services.devstack.fake_keys import fake_gemini_key
from services.edge.keyring import KeyringClient, LeaseRequest
from services.keyring.grpc_errors import RETRY_AFTER_METADATA
from tests.conftest import etcd_admin_client, open_store
from tests.pki import channel as tls_channel
from tests.pki import session_pki, sync_channel

from .conftest import Replica, StartReplica, make_pool

MODEL = "gemini-3.5-flash"
OTHER_MODEL = "gemini-3.1-pro-preview"

# A 403 whose ErrorInfo blames the key's consumer (what Google sends for a suspended key).
SUSPENDED = pb.Outcome(http_status=403, error_status="PERMISSION_DENIED", error_reason="CONSUMER_SUSPENDED")


async def add_keys(replica: Replica, count: int, pool: str = "main", seed: str = "k", **fields: object) -> list[str]:
    secrets = [fake_gemini_key(f"{seed}{i}") for i in range(count)]
    reply = await replica.admin.AddKeys(
        pb.AddKeysRequest(pool=pool, keys=[pb.KeyInput(secret=s, **fields) for s in secrets])
    )
    assert reply.added == count
    return [result.key_id for result in reply.results]


async def acquire(replica: Replica, token: str, model: str = MODEL, exclude: tuple[str, ...] = ()) -> pb.Lease:
    reply = await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=model, exclude_key_ids=exclude))
    return reply.lease


async def release(replica: Replica, lease: pb.Lease, outcome: pb.Outcome | None = None) -> bool:
    reply = await replica.lease.Release(
        pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, outcome=outcome or pb.Outcome(http_status=200))
    )
    return reply.known


async def refused(replica: Replica, token: str, model: str = MODEL) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await acquire(replica, token, model)
    return error.value


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float, every_s: float = 0.02) -> float:
    """Poll until ``check`` holds; returns how long it took. Fails after the deadline."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within_s:
            pytest.fail(f"condition not met within {within_s} s")
        await asyncio.sleep(every_s)
    return time.monotonic() - started


def retry_after_from(error: grpc.aio.AioRpcError) -> float | None:
    """Client side: the RetryInfo delay of a RESOURCE_EXHAUSTED status, in seconds."""
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToMilliseconds() / 1000
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA:
            return int(value) / 1000
    return None


async def key_info(replica: Replica, key_id: str) -> pb.KeyInfo:
    return await replica.admin.GetKey(pb.GetKeyRequest(key_id=key_id))


RATE_LIMITED = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=30_000)


async def test_lease_release_round_trip(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    [key_id] = await add_keys(replica, 1)
    lease = await acquire(replica, token)
    assert lease.key_id == key_id and lease.secret == fake_gemini_key("k0") and lease.pool == "main"
    assert lease.expires_at_ms > time.time() * 1000
    assert await release(replica, lease) is True
    assert await release(replica, lease) is False  # a second release is not ours any more


async def test_stream_variant_batches_acquire_and_release(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    await add_keys(replica, 3)
    call = replica.lease.LeaseStream()
    acquire_call = pb.AcquireRequest(token_hash=token, model=MODEL)
    await call.write(
        pb.LeaseStreamRequest(
            calls=[pb.LeaseCall(id=1, acquire=acquire_call), pb.LeaseCall(id=2, acquire=acquire_call)]
        )
    )
    granted = {result.id: result for result in (await call.read()).results}
    assert set(granted) == {1, 2} and granted[1].acquire.lease.key_id != granted[2].acquire.lease.key_id
    bad = pb.AcquireRequest(token_hash="0" * 64, model=MODEL)
    release = pb.ReleaseRequest(lease_id=granted[1].acquire.lease.lease_id)
    await call.write(
        pb.LeaseStreamRequest(calls=[pb.LeaseCall(id=3, release=release), pb.LeaseCall(id=4, acquire=bad)])
    )
    results = {result.id: result for result in (await call.read()).results}
    assert results[3].release.known
    assert results[4].error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    # A release whose outcome must be written answers on its own, after the write.
    failed = pb.ReleaseRequest(lease_id=granted[2].acquire.lease.lease_id, outcome=RATE_LIMITED)
    await call.write(pb.LeaseStreamRequest(calls=[pb.LeaseCall(id=5, release=failed)]))
    [late] = (await call.read()).results
    assert late.id == 5 and late.release.known
    info = await key_info(replica, granted[2].acquire.lease.key_id)
    assert [c.model for c in info.cooldowns] == [MODEL]
    await call.done_writing()


async def test_rate_limit_cools_only_that_model_and_reports_retry_after(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    await add_keys(replica, 1)
    await release(replica, await acquire(replica, token), RATE_LIMITED)
    error = await refused(replica, token)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 28 <= (retry_after_from(error) or 0) <= 30
    other = await acquire(replica, token, OTHER_MODEL)  # per-model cooldown: other models still lease
    assert other.key_id


@pytest.mark.parametrize(
    ("outcome", "state", "leasable"),
    [
        (
            pb.Outcome(http_status=400, error_status="INVALID_ARGUMENT", error_reason="API_KEY_INVALID"),
            pb.INVALID,
            False,
        ),
        (
            pb.Outcome(http_status=401, error_status="UNAUTHENTICATED", error_reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"),
            pb.INVALID,
            False,
        ),
        (SUSPENDED, pb.SUSPENDED, False),
        # Issue 11: a 401/403 whose ErrorInfo blames no key is the request's fault: the key stays as it was.
        (pb.Outcome(http_status=401, error_status="UNAUTHENTICATED"), pb.ACTIVE, True),
        (pb.Outcome(http_status=403, error_status="PERMISSION_DENIED"), pb.ACTIVE, True),
        (pb.Outcome(http_status=400, error_status="INVALID_ARGUMENT"), pb.ACTIVE, True),
        (pb.Outcome(http_status=503, error_status="UNAVAILABLE"), pb.ACTIVE, True),
        (pb.Outcome(http_status=500, error_status="INTERNAL"), pb.ACTIVE, False),
        (pb.Outcome(http_status=502), pb.ACTIVE, False),
        (pb.Outcome(http_status=504, error_status="DEADLINE_EXCEEDED"), pb.ACTIVE, False),
        (pb.Outcome(transport=pb.Outcome.TRANSPORT_CONNECTION), pb.ACTIVE, False),
        (pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED"), pb.ACTIVE, False),
        (pb.Outcome(http_status=200), pb.ACTIVE, True),
        (pb.Outcome(transport=pb.Outcome.TRANSPORT_TIMEOUT), pb.ACTIVE, False),
        (pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED), pb.ACTIVE, True),
        (
            pb.Outcome(
                http_status=429,
                quota_violations=[pb.QuotaViolation(quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")],
            ),
            pb.ACTIVE,
            False,
        ),
    ],
)
async def test_policy_table(start_replica: StartReplica, outcome: pb.Outcome, state: int, leasable: bool) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    [key_id] = await add_keys(replica, 1)
    await release(replica, await acquire(replica, token), outcome)
    info = await key_info(replica, key_id)
    assert info.state == state
    if leasable:
        assert (await acquire(replica, token)).key_id == key_id
    else:
        assert (await refused(replica, token)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    if outcome.http_status in (400, 401, 403) and state != pb.ACTIVE:
        assert info.last_error.http_status == outcome.http_status and info.consecutive_failures == 1


async def test_daily_quota_cools_until_pacific_midnight(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    [key_id] = await add_keys(replica, 1)
    daily = pb.Outcome(
        http_status=429,
        retry_delay_ms=5000,
        quota_violations=[pb.QuotaViolation(quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")],
    )
    await release(replica, await acquire(replica, token), daily)
    [cooldown] = (await key_info(replica, key_id)).cooldowns
    assert cooldown.reason == "daily_quota" and cooldown.model == MODEL
    assert cooldown.until_ms > (time.time() + 10) * 1000


async def test_success_resets_consecutive_failures(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, policy=pb.Policy(server_error_cooldown_ms=1))
    [key_id] = await add_keys(replica, 1)
    await release(replica, await acquire(replica, token), pb.Outcome(http_status=500))
    assert (await key_info(replica, key_id)).consecutive_failures == 1
    lease = await acquire(replica, token)  # the 1 ms cooldown has passed
    await release(replica, lease, pb.Outcome(http_status=200))
    assert (await key_info(replica, key_id)).consecutive_failures == 0


async def test_403_three_times_makes_the_key_invalid(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, policy=pb.Policy(suspend_ms=1))
    [key_id] = await add_keys(replica, 1)
    states = []
    for _ in range(3):
        lease = await acquire(replica, token)  # a suspension of 1 ms has passed: the key gets a new trial
        await release(replica, lease, SUSPENDED)
        states.append((await key_info(replica, key_id)).state)
    assert states == [pb.SUSPENDED, pb.SUSPENDED, pb.INVALID]
    assert (await refused(replica, token)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_cooldown_expires(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    [_key_id] = await add_keys(replica, 1)
    await release(replica, await acquire(replica, token), pb.Outcome(http_status=429, retry_delay_ms=300))
    await refused(replica, token)

    async def leasable() -> bool:
        try:
            await release(replica, await acquire(replica, token))
            return True
        except grpc.aio.AioRpcError:
            return False

    await eventually(leasable, within_s=3)


async def test_abandoned_lease_expires_and_frees_its_slot(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, policy=pb.Policy(max_in_flight=1, lease_ttl_ms=300))
    await add_keys(replica, 1)
    await acquire(replica, token)  # never released: its edge "died"
    assert (await refused(replica, token)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    async def slot_back() -> bool:
        try:
            await acquire(replica, token)
            return True
        except grpc.aio.AioRpcError:
            return False

    await eventually(slot_back, within_s=3)


async def test_weighted_distribution_over_10000_leases(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, strategy=pb.WEIGHTED)
    heavy = await add_keys(replica, 1, seed="heavy", weight=3)
    light = await add_keys(replica, 2, seed="light", weight=1)
    client = KeyringClient([f"127.0.0.1:{replica.server.port}"], tls=session_pki().edge.files)
    counts: Counter[str] = Counter()

    async def lease_once() -> None:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        counts[granted.lease.key_id] += 1
        await granted.release(pb.Outcome(http_status=200))

    try:
        for _ in range(10_000 // 50):  # 50 at a time: the draws are independent, the stream batches them
            await asyncio.gather(*(lease_once() for _ in range(50)))
    finally:
        await client.close()
    expected = {heavy[0]: 0.6, light[0]: 0.2, light[1]: 0.2}
    for key_id, share in expected.items():
        # Five standard deviations of a binomial share (a fair draw misses it once in ~3 million runs);
        # an unweighted pick (1/3 each) is off by 6+ of them.
        bound = 5 * math.sqrt(share * (1 - share) / 10_000)
        assert abs(counts[key_id] / 10_000 - share) <= bound, counts


async def test_quota_429_makes_project_siblings_unleasable(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    siblings = await add_keys(replica, 3, seed="sib", project="proj-a")
    [loner] = await add_keys(replica, 1, seed="lone", project="proj-b")
    lease = await acquire(replica, token, exclude=(loner,))
    assert lease.key_id in siblings
    await release(replica, lease, RATE_LIMITED)
    leased = {(await acquire(replica, token)).key_id for _ in range(8)}
    assert leased == {loner}
    assert (await acquire(replica, token, OTHER_MODEL)).key_id  # only that model


async def test_lower_tier_only_while_the_first_has_nothing(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    free = await add_keys(replica, 2, seed="free", tier=1)
    [paid] = await add_keys(replica, 1, seed="paid", tier=2)
    assert {(await acquire(replica, token)).key_id for _ in range(6)} == set(free)
    for key_id in free:
        await release(
            replica, await acquire(replica, token, exclude=tuple(k for k in free if k != key_id)), RATE_LIMITED
        )
    assert (await acquire(replica, token)).key_id == paid
    await replica.admin.SetKeyState(pb.SetKeyStateRequest(key_id=free[0], action=pb.SetKeyStateRequest.REVIVE))
    assert (await acquire(replica, token)).key_id == free[0]


async def test_cooldown_through_replica_a_is_refused_by_replica_b_quickly(start_replica: StartReplica) -> None:
    replica_a = await start_replica("replica-a")
    replica_b = await start_replica("replica-b")
    token = await make_pool(replica_a)
    await add_keys(replica_a, 1)

    async def b_sees_the_key() -> bool:
        try:
            await release(replica_b, await acquire(replica_b, token))
            return True
        except grpc.aio.AioRpcError:
            return False

    await eventually(b_sees_the_key, within_s=2)
    assert len(replica_a.keyring.cache.view.members) == 2 and len(replica_b.keyring.cache.view.members) == 2
    await release(replica_a, await acquire(replica_a, token), RATE_LIMITED)

    async def b_refuses() -> bool:
        try:
            await release(replica_b, await acquire(replica_b, token))
            return False
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    assert await eventually(b_refuses, within_s=0.5, every_s=0.005) < 0.5


async def test_restarted_replica_keeps_keys_tokens_and_cooldowns(start_replica: StartReplica) -> None:
    first = await start_replica("replica-a")
    token = await make_pool(first)
    key_ids = await add_keys(first, 5)
    await release(first, await acquire(first, token), RATE_LIMITED)
    cooling_before = {k.key_id for k in (await first.admin.ListKeys(pb.ListKeysRequest())).keys if k.cooldowns}
    await first.stop()

    second = await start_replica("replica-b")
    listed = await second.admin.ListKeys(pb.ListKeysRequest())
    assert sorted(k.key_id for k in listed.keys) == sorted(key_ids)
    assert {k.key_id for k in listed.keys if k.cooldowns} == cooling_before and len(cooling_before) == 1
    leased = {(await acquire(second, token)).key_id for _ in range(8)}  # the token still works
    assert leased == set(key_ids) - cooling_before


async def test_membership_and_graceful_shutdown(
    start_replica: StartReplica, etcd_server: EtcdServer, store_prefix: str
) -> None:
    replica = await start_replica("replica-a", membership_ttl_s=2)
    token = await make_pool(replica)
    await add_keys(replica, 1)
    health = health_pb2_grpc.HealthStub(replica.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING

    async with etcd_admin_client(etcd_server) as client:
        members = await client.get_prefix(f"{store_prefix}members/".encode())
        assert [kv.key.decode().rsplit("/", 1)[1] for kv in members] == ["replica-a"]
        replica.keyring.stop_accepting()
        assert (await refused(replica, token)).code() is grpc.StatusCode.UNAVAILABLE
        await replica.stop()
        assert [kv async for kv in _aiter(await client.get_prefix(f"{store_prefix}members/".encode()))] == []


async def _aiter(items):  # type: ignore[no-untyped-def]
    for item in items:
        yield item


async def test_secrets_are_sealed_at_rest_and_never_returned(
    start_replica: StartReplica, etcd_server: EtcdServer, store_prefix: str
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    await add_keys(replica, 3)
    secrets = [fake_gemini_key(f"k{i}") for i in range(3)]
    listed = await replica.admin.ListKeys(pb.ListKeysRequest())
    exported = await replica.admin.ExportConfig(pb.ExportConfigRequest())
    async with etcd_admin_client(etcd_server) as client:
        stored = b"".join(kv.value for kv in await client.get_prefix(store_prefix.encode()))
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret not in str(listed)
        assert secret.encode() not in exported.document
    assert all(k.mask.startswith("AIza...") for k in listed.keys)


async def test_bulk_import_of_hundreds_of_keys(start_replica: StartReplica) -> None:
    replica = await start_replica()
    await make_pool(replica)
    secrets = [fake_gemini_key(f"bulk{i}") for i in range(500)]
    keys = [pb.KeyInput(secret=s) for s in secrets]
    keys.insert(10, pb.KeyInput(secret="not-a-key"))
    keys.insert(20, pb.KeyInput(secret=secrets[0]))
    reply = await replica.admin.AddKeys(pb.AddKeysRequest(pool="main", keys=keys))
    assert reply.added == 500
    assert reply.results[10].status == pb.AddKeyResult.MALFORMED
    assert reply.results[20].status == pb.AddKeyResult.DUPLICATE
    again = await replica.admin.AddKeys(pb.AddKeysRequest(pool="main", keys=keys[:5]))
    assert again.added == 0 and {r.status for r in again.results} == {pb.AddKeyResult.DUPLICATE}
    assert (await replica.admin.ListKeys(pb.ListKeysRequest(filter=pb.KeyFilter(pool="main")))).total == 500


async def snapshot_of(etcd_server: EtcdServer, prefix: str) -> list[tuple[bytes, bytes]]:
    async with etcd_admin_client(etcd_server) as client:
        return [(kv.key, kv.value) for kv in await client.get_prefix(prefix.encode()) if b"/members/" not in kv.key]


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (
            lambda a: a.AddKeys(pb.AddKeysRequest(pool="nope", keys=[pb.KeyInput(secret=fake_gemini_key("x"))])),
            grpc.StatusCode.NOT_FOUND,
        ),
        (lambda a: a.AddKeys(pb.AddKeysRequest(pool="main")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda a: a.AddKeys(pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=fake_gemini_key("x"))] * 5001)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda a: a.AddKeys(pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret="x" * 20_000_000)])),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (
            lambda a: a.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="Bad Name!"))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda a: a.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main"))), grpc.StatusCode.ALREADY_EXISTS),
        (lambda a: a.CreateToken(pb.CreateTokenRequest(pool="nope")), grpc.StatusCode.NOT_FOUND),
        (lambda a: a.GetKey(pb.GetKeyRequest(key_id="k-missing")), grpc.StatusCode.NOT_FOUND),
        (lambda a: a.DeletePool(pb.DeletePoolRequest(name="main")), grpc.StatusCode.FAILED_PRECONDITION),
        (lambda a: a.ImportConfig(pb.ImportConfigRequest(document=b"{not json")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda a: a.UpdateKey(pb.UpdateKeyRequest(key_id="k-missing", update_fields=["color"])),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_admin_input_changes_nothing(
    start_replica: StartReplica, etcd_server: EtcdServer, store_prefix: str, call, code: grpc.StatusCode
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    await add_keys(replica, 2)
    before = await snapshot_of(etcd_server, store_prefix)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(replica.admin)
    assert error.value.code() is code
    assert error.value.details()
    assert await snapshot_of(etcd_server, store_prefix) == before


async def test_malformed_keys_only_change_nothing(
    start_replica: StartReplica, etcd_server: EtcdServer, store_prefix: str
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    before = await snapshot_of(etcd_server, store_prefix)
    reply = await replica.admin.AddKeys(
        pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret="sk-openai-key"), pb.KeyInput(secret="AIzaTooShort")])
    )
    assert reply.added == 0 and all(r.status == pb.AddKeyResult.MALFORMED and r.message for r in reply.results)
    assert "sk-openai-key" not in str(reply)
    assert await snapshot_of(etcd_server, store_prefix) == before


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.AcquireRequest(token_hash="short", model=MODEL), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AcquireRequest(token_hash="0" * 64, model=MODEL), grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_bad_acquire_input(
    start_replica: StartReplica, request_: pb.AcquireRequest, code: grpc.StatusCode
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await replica.lease.Acquire(request_)
    assert error.value.code() is code


async def test_allow_list_denies_other_models(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, allowed_models=[MODEL])
    await add_keys(replica, 1)
    assert (await acquire(replica, token, MODEL)).key_id
    assert (await refused(replica, token, OTHER_MODEL)).code() is grpc.StatusCode.PERMISSION_DENIED


async def test_export_import_into_an_empty_prefix_reproduces_the_state(
    start_replica: StartReplica, etcd_server: EtcdServer, kek: str
) -> None:
    source = await start_replica("replica-a")
    token = await make_pool(source, allowed_models=[MODEL], strategy=pb.WEIGHTED)
    await add_keys(source, 4, project="p1", tier=2, weight=5, tags=["free"])
    document = (await source.admin.ExportConfig(pb.ExportConfigRequest())).document

    from services.keyring.config import KeyringSettings
    from services.keyring.server import create_server

    store = await open_store(etcd_server)
    settings = KeyringSettings(
        kek=kek,
        prefix=f"/test/import-{time.time_ns()}/",
        etcd_endpoint=etcd_server.endpoint,
        replica_id="copy",
        metrics_port=-1,
    )
    target = create_server(settings, store, host="127.0.0.1", port=0)
    await target.start()
    try:
        async with tls_channel(f"127.0.0.1:{target.port}", session_pki().admin) as channel:
            from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc

            admin = pb_grpc.AdminServiceStub(channel)
            # Our own document: its client tokens are kept when asked to (refused otherwise).
            request = pb.ImportConfigRequest(document=document, keep_client_tokens=True)
            imported = await admin.ImportConfig(request)
            assert (imported.pools, imported.keys, imported.tokens) == (1, 4, 1)
            again = orjson.loads((await admin.ExportConfig(pb.ExportConfigRequest())).document)
            first = orjson.loads(document)
            unsealed = lambda tokens: [{**t, "sealed_hash": ""} for t in tokens]  # noqa: E731 (sealed afresh)
            assert again["pools"] == first["pools"] and unsealed(again["tokens"]) == unsealed(first["tokens"])
            assert [k["key_id"] for k in again["keys"]] == [k["key_id"] for k in first["keys"]]
            copied = await admin.ListKeys(pb.ListKeysRequest())
            original = await source.admin.ListKeys(pb.ListKeysRequest())
            strip = lambda keys: sorted((k.key_id, k.mask, k.project, k.tier, k.weight, tuple(k.tags)) for k in keys)  # noqa: E731
            assert strip(copied.keys) == strip(original.keys)
            lease = (
                await pb_grpc.LeaseServiceStub(channel).Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))
            ).lease
            assert lease.secret.startswith("AIza")
    finally:
        await target.stop(1)
        await store.close()


async def test_429_without_retry_info_backs_off_doubling(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica, policy=pb.Policy(rate_limit_cooldown_ms=100))
    [key_id] = await add_keys(replica, 1)
    durations = []
    for _ in range(3):

        async def leasable() -> bool:
            try:
                lease = await acquire(replica, token)
            except grpc.aio.AioRpcError:
                return False
            started = time.time()
            await release(replica, lease, pb.Outcome(http_status=429))
            [cooldown] = (await key_info(replica, key_id)).cooldowns
            durations.append(cooldown.until_ms / 1000 - started)
            return True

        await eventually(leasable, within_s=3)
    assert [round(d, 1) for d in durations] == [0.1, 0.2, 0.4]


async def test_reflection_lists_the_services(start_replica: StartReplica) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    replica = await start_replica(reflection=True)  # off unless switched on
    channel = sync_channel(replica.address, session_pki().edge)
    try:
        services = await asyncio.to_thread(lambda: ProtoReflectionDescriptorDatabase(channel).get_services())
    finally:
        channel.close()
    assert {"keyring.v1.LeaseService", "keyring.v1.AdminService", "grpc.health.v1.Health"} <= set(services)


async def test_a_restarted_replica_with_the_same_name_does_not_release_its_predecessors_leases(
    start_replica: StartReplica,
) -> None:
    first = await start_replica("pod-0")
    token = await make_pool(first, policy=pb.Policy(max_in_flight=1))
    await add_keys(first, 1)
    old_lease = await acquire(first, token)
    await release(first, old_lease)
    await first.stop()
    second = await start_replica("pod-0")  # the same pod name after a container restart
    new_lease = await acquire(second, token)
    assert new_lease.lease_id != old_lease.lease_id
    assert await release(second, old_lease) is False  # a late release of the old lease frees nothing
    assert len(second.keyring.desk.book) == 1
    assert (await refused(second, token)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # cap still held
