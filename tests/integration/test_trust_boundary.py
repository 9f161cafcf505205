"""Issue 11, finding 1: keyring's gRPC port trusts nobody it cannot identify (real replicas, real etcd, real TLS).

Each probe here was reproduced against the code before the issue, where the
port was plaintext and every RPC open to anyone who reached it:

- a client with no credentials called ``ExportConfig`` with secrets in clear;
- ``CreateToken`` with a forged ``x-keyring-actor`` went into the audit log as given;
- ``Acquire`` with a token hash returned a key to whoever asked;
- ``Release`` of a lease id that does not exist, with a 401, marked the named key invalid;
- the edge's (any) identity could call admin RPCs; reflection was on;
- keyring talked to etcd in plaintext without a client certificate.
"""

from __future__ import annotations

import logging

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.etcd_server import EtcdServer
from services.edge.keyring import KeyringClient, LeaseRequest
from services.keyring.config import KeyringSettings
from services.keyring.sealing import generate_kek
from services.keyring.store import EtcdStore, StoreUnavailable
from tests.pki import Pki, channel

from .conftest import Replica, StartReplica, make_pool
from .test_keyring_service import MODEL, add_keys, eventually

INVALID_KEY = pb.Outcome(http_status=401, error_status="UNAUTHENTICATED", error_reason="API_KEY_INVALID")
FORGED_ACTOR = "admin:ops"


async def _denied(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def _state(replica: Replica, key_id: str) -> int:
    return (await replica.admin.GetKey(pb.GetKeyRequest(key_id=key_id))).state


# ------------------------------------------------------------------ no certificate, no answer
@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
async def test_a_client_without_a_certificate_of_the_ca_gets_nothing(
    start_replica: StartReplica, pki: Pki, who: str
) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    await add_keys(replica, 2)
    if who == "plaintext":
        client = grpc.aio.insecure_channel(replica.address)
    else:
        client = channel(replica.address, None if who == "no certificate" else pki.stranger)
    async with client:
        admin, lease = pb_grpc.AdminServiceStub(client), pb_grpc.LeaseServiceStub(client)
        exported = await _denied(admin.ExportConfig(pb.ExportConfigRequest(include_secrets_in_clear=True), timeout=3))
        assert exported.code() is grpc.StatusCode.UNAVAILABLE  # the handshake fails: no RPC ever runs
        acquired = await _denied(lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL), timeout=3))
        assert acquired.code() is grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(client).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert (await _denied(health)).code() is grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------ identities: who may call what
@pytest.mark.parametrize("identity", ["edge", "service"])
async def test_a_lease_certificate_cannot_call_admin_rpcs(start_replica: StartReplica, pki: Pki, identity: str) -> None:
    replica = await start_replica()
    await make_pool(replica)
    await add_keys(replica, 1)
    async with channel(replica.address, getattr(pki, identity)) as client:
        admin = pb_grpc.AdminServiceStub(client)
        for call in (
            admin.ExportConfig(pb.ExportConfigRequest(include_secrets_in_clear=True)),
            admin.ListPools(pb.ListPoolsRequest()),
            admin.CreateToken(pb.CreateTokenRequest(pool="main", name="stolen")),
            admin.ListAudit(pb.ListAuditRequest()),
        ):
            assert (await _denied(call)).code() is grpc.StatusCode.PERMISSION_DENIED
    tokens = await replica.admin.ListTokens(pb.ListTokensRequest(pool="main"))
    assert [token.name for token in tokens.tokens] == ["tests"]  # nothing was created


async def test_a_forged_actor_from_a_non_admin_identity_does_not_reach_the_audit_log(
    start_replica: StartReplica, pki: Pki
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    async with channel(replica.address, pki.edge) as client:
        forged = pb_grpc.AdminServiceStub(client).CreateToken(
            pb.CreateTokenRequest(pool="main", name="forged"), metadata=(("x-keyring-actor", FORGED_ACTOR),)
        )
        assert (await _denied(forged)).code() is grpc.StatusCode.PERMISSION_DENIED
    # admin's identity is trusted to name its operator; without a name the certificate identity is recorded
    await replica.admin.CreateToken(
        pb.CreateTokenRequest(pool="main", name="by-ops"), metadata=(("x-keyring-actor", "admin:ci"),)
    )
    await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="unnamed"))
    entries = (await replica.admin.ListAudit(pb.ListAuditRequest(limit=100))).entries
    actors = [entry.actor for entry in entries if entry.action == "CreateToken"]
    assert FORGED_ACTOR not in actors
    assert "admin:ci" in actors and "keyring-admin" in actors
    assert "forged" not in [t.name for t in (await replica.admin.ListTokens(pb.ListTokensRequest())).tokens]


async def test_acquire_returns_no_key_to_a_client_without_a_lease_identity(
    start_replica: StartReplica, pki: Pki
) -> None:
    """With KEYRING_LEASE_IDENTITIES set, only those certificates lease, whatever token hash they bring."""
    replica = await start_replica(lease_identities="keyring-edge")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    document = orjson.loads((await replica.admin.ExportConfig(pb.ExportConfigRequest())).document)
    hashes = [token, *(str(item.get("token_hash", "")) for item in document["tokens"])]
    async with channel(replica.address, pki.service) as client:
        lease = pb_grpc.LeaseServiceStub(client)
        for presented in hashes:
            refused = await _denied(lease.Acquire(pb.AcquireRequest(token_hash=presented, model=MODEL)))
            assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
        stream = lease.LeaseStream()
        await stream.write(
            pb.LeaseStreamRequest(calls=[pb.LeaseCall(id=1, acquire=pb.AcquireRequest(token_hash=token))])
        )
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await stream.read()
        assert streamed.value.code() is grpc.StatusCode.PERMISSION_DENIED
        health = await health_pb2_grpc.HealthStub(client).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health stays open to every identity
    assert (await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))).lease.secret


async def test_an_internal_service_with_its_own_certificate_leases_through_the_client(
    start_replica: StartReplica, pki: Pki
) -> None:
    """A certificate of one's own, the edge's KeyringClient, acquire, release (docs/internal-services.md shows the
    lease client package instead: tests/integration/test_lease_client_package.py)."""
    replica = await start_replica()
    token = await make_pool(replica)
    await add_keys(replica, 1)
    client = KeyringClient([replica.address], tls=pki.service.files)
    try:
        granted = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert granted.lease.secret.startswith("AIza")
        await granted.release(pb.Outcome(http_status=200))
    finally:
        await client.close()


# ------------------------------------------------------------------ releases nobody granted
async def test_release_of_an_unknown_or_forged_lease_with_401_changes_no_key(start_replica: StartReplica) -> None:
    replica = await start_replica()
    token = await make_pool(replica)
    key_a, key_b = await add_keys(replica, 2)
    lease = (await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))).lease
    other = key_b if lease.key_id == key_a else key_a
    base, expires, _mac = lease.lease_id.rsplit(".", 2)
    forged = [
        pb.ReleaseRequest(lease_id="no-such-lease", key_id=key_a, model=MODEL, outcome=INVALID_KEY),
        pb.ReleaseRequest(lease_id=f"{base}9.{expires}.{'0' * 32}", key_id=key_b, model=MODEL, outcome=INVALID_KEY),
        # a real lease id naming another key: the id vouches for its own key only
        pb.ReleaseRequest(lease_id=lease.lease_id + "x", key_id=other, model=MODEL, outcome=INVALID_KEY),
        pb.ReleaseRequest(lease_id=f"{base}.{int(expires) + 1}.{_mac}", key_id=other, model=MODEL, outcome=INVALID_KEY),
    ]
    for request in forged:
        assert not (await replica.lease.Release(request)).known
    stream = replica.lease.LeaseStream()
    await stream.write(pb.LeaseStreamRequest(calls=[pb.LeaseCall(id=1, release=forged[0])]))
    assert not (await stream.read()).results[0].release.known
    await stream.done_writing()
    assert {await _state(replica, key_a), await _state(replica, key_b)} == {pb.ACTIVE}
    metrics = replica.server.metrics.registry.get_sample_value("keyring_releases_refused_total")
    assert metrics == len(forged) + 1


async def test_a_lease_granted_by_a_replica_that_went_down_still_reports_its_outcome(
    start_replica: StartReplica,
) -> None:
    """The legitimate cross-replica release: the id vouches for itself at a replica that never saw it."""
    replica_a = await start_replica("replica-a")
    replica_b = await start_replica("replica-b")
    token = await make_pool(replica_a)
    [key_id] = await add_keys(replica_a, 1)

    lease = (await replica_a.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))).lease

    async def b_knows_the_key() -> bool:
        try:
            return await _state(replica_b, key_id) == pb.ACTIVE
        except grpc.aio.AioRpcError:
            return False

    await eventually(b_knows_the_key, within_s=5.0)  # B's watch has seen A's writes
    await replica_a.stop()
    request = pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=INVALID_KEY)
    assert not (await replica_b.lease.Release(request)).known
    assert await _state(replica_b, key_id) == pb.INVALID


# ------------------------------------------------------------------ reflection, start-up, plaintext
async def test_reflection_is_off_by_default(start_replica: StartReplica, pki: Pki) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    replica = await start_replica()
    async with channel(replica.address, pki.admin) as client:
        stub = reflection_pb2_grpc.ServerReflectionStub(client)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in call:
                pass
    assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_no_service_starts_without_certificates_unless_plaintext_is_asked_for() -> None:
    from services.admin.config import AdminSettings
    from services.edge.config import EdgeSettings

    none = {"tls_cert_file": "", "tls_key_file": "", "tls_ca_file": ""}
    with pytest.raises(ValidationError, match="KEYRING_INSECURE_PLAINTEXT"):
        KeyringSettings(kek=generate_kek(), **none)
    with pytest.raises(ValidationError, match="KEYRING_ETCD_INSECURE_PLAINTEXT"):
        KeyringSettings(kek=generate_kek(), etcd_tls_cert_file="", etcd_tls_key_file="", etcd_tls_ca_file="")
    with pytest.raises(ValidationError, match="go together"):
        KeyringSettings(kek=generate_kek(), tls_ca_file="")
    edge_none = {"keyring_tls_cert_file": "", "keyring_tls_key_file": "", "keyring_tls_ca_file": ""}
    with pytest.raises(ValidationError, match="EDGE_KEYRING_INSECURE_PLAINTEXT"):
        EdgeSettings(**edge_none)
    with pytest.raises(ValidationError, match="ADMIN_KEYRING_INSECURE_PLAINTEXT"):
        AdminSettings(admin_tokens="ops:" + "t" * 20, **edge_none)
    assert KeyringSettings(kek=generate_kek(), insecure_plaintext=True, **none).grpc_tls() is None
    assert EdgeSettings(keyring_insecure_plaintext=True, **edge_none).keyring_tls() is None


async def test_plaintext_only_behind_the_switch_and_loudly(
    start_replica: StartReplica, caplog: pytest.LogCaptureFixture
) -> None:
    none = {"tls_cert_file": "", "tls_key_file": "", "tls_ca_file": ""}
    with caplog.at_level(logging.WARNING):
        replica = await start_replica(insecure_plaintext=True, **none)
    assert any("INSECURE PLAINTEXT" in record.getMessage() for record in caplog.records)
    async with grpc.aio.insecure_channel(replica.address) as client:
        pools = await pb_grpc.AdminServiceStub(client).ListPools(pb.ListPoolsRequest())
    assert list(pools.pools) == []


# ------------------------------------------------------------------ etcd
async def test_etcd_refuses_keyring_without_its_client_certificate(
    etcd_server: EtcdServer, pki: Pki, store_prefix: str
) -> None:
    assert etcd_server.client_url.startswith("https://")
    for attempt in (
        EtcdStore(etcd_server.endpoint, timeout_s=2),  # plaintext
        EtcdStore(etcd_server.endpoint, timeout_s=2, tls=pki.stranger.files),  # signed by a CA etcd does not trust
    ):
        try:
            with pytest.raises(StoreUnavailable):
                await attempt.connect(verify=True)
            with pytest.raises(StoreUnavailable):
                await attempt.snapshot(store_prefix)
        finally:
            await attempt.close()
    accepted = await EtcdStore.open(etcd_server.endpoint, timeout_s=2, tls=pki.etcd_client.files)
    try:
        await accepted.connect(verify=True)
        assert (await accepted.snapshot(store_prefix)).entries == []
    finally:
        await accepted.close()


# ------------------------------------------------------------------ outcomes blaming keys: a budget per identity
def _blames(replica: Replica, outcome: str, identity: str) -> float:
    registry = replica.server.metrics.registry
    return registry.get_sample_value(f"keyring_key_blames_{outcome}_total", {"identity": identity}) or 0.0


async def test_outcomes_blaming_keys_past_an_identitys_budget_leave_the_keys_healthy(
    start_replica: StartReplica, pki: Pki
) -> None:
    """Issue 18, finding 10: an edge identity reporting every key it leases as invalid kills its budget's worth
    (KEYRING_KEY_BLAMES_PER_MINUTE) and no more; the slots are still released and the calls counted, and another
    identity's budget is its own (before: each such outcome was judged as sent, and the pool emptied)."""
    replica = await start_replica(key_blames_per_minute=2)
    token = await make_pool(replica)
    keys = await add_keys(replica, 5)
    leases: list[pb.Lease] = []
    for _ in keys:
        taken = [lease.key_id for lease in leases]
        request = pb.AcquireRequest(token_hash=token, model=MODEL, exclude_key_ids=taken)
        leases.append((await replica.lease.Acquire(request)).lease)

    def blamed(lease: pb.Lease) -> pb.ReleaseRequest:
        return pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=INVALID_KEY)

    for lease in leases[:2]:  # within the edge's budget: judged
        assert (await replica.lease.Release(blamed(lease))).known
    stream = replica.lease.LeaseStream()  # past it: a report (a peer's outcome) and a release, not judged
    await stream.write(
        pb.LeaseStreamRequest(
            calls=[pb.LeaseCall(id=1, report=blamed(leases[2])), pb.LeaseCall(id=2, release=blamed(leases[3]))]
        )
    )
    results = (await stream.read()).results
    if len(results) < 2:
        results = [*results, *(await stream.read()).results]
    assert [result.release.known for result in results if result.HasField("release")] == [True]
    await stream.done_writing()
    assert (await replica.lease.Release(blamed(leases[2]))).known  # its slot; its outcome already weighed
    async with channel(replica.address, pki.service) as client:  # another identity, a budget of its own
        assert (await pb_grpc.LeaseServiceStub(client).Release(blamed(leases[4]))).known
    states = [await _state(replica, lease.key_id) for lease in leases]
    assert states == [pb.INVALID, pb.INVALID, pb.ACTIVE, pb.ACTIVE, pb.INVALID]
    assert replica.server.keyring.desk.leases_in_flight == 0  # every slot given back
    registry = replica.server.metrics.registry
    errors = sum(
        registry.get_sample_value("keyring_key_errors_total", {"pool": "main", "key_id": key}) or 0 for key in keys
    )
    assert errors == 5  # every call counted, blamed or not
    assert (_blames(replica, "accepted", "keyring-edge"), _blames(replica, "refused", "keyring-edge")) == (2, 2)
    assert (_blames(replica, "accepted", "billing-batch"), _blames(replica, "refused", "billing-batch")) == (1, 0)
