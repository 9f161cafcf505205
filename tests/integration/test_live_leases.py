"""Live sessions on held leases, through two real keyring replicas on the session's etcd (issue 20, keyring side).

The contract is the proto's "Live sessions": a session lease is renewed on its granting replica's
stream and reclaimed a TTL after the last renew; the pool's session caps hold across replicas (each
holds its share) and a pool with none left refuses with a reason the edge renders; a browser token
minted on one replica is redeemed once, from any replica, for its model only, before its expiry.
"""

from __future__ import annotations

import time
from collections import Counter

import grpc
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .conftest import Replica, StartReplica, make_pool
from .test_keyring_service import add_keys
from .test_lease_stream_faults import held, until
from .test_replica_death import Stream

MODEL = "gemini-3.8-live"
TTL_S = 0.6  # KEYRING_SESSION_LEASE_TTL_S for these replicas: renewed every 0.2 s


async def two_replicas(start_replica: StartReplica, policy: pb.Policy | None = None) -> tuple[Replica, Replica, str]:
    """Replicas a and b seeing each other and the token; keys k0, k1 in project p1 and k2 in p2."""
    a = await start_replica("replica-a", session_lease_ttl_s=TTL_S)
    b = await start_replica("replica-b", session_lease_ttl_s=TTL_S)
    token = await make_pool(a, policy=policy or pb.Policy())
    await add_keys(a, 2, project="p1")
    await add_keys(a, 1, seed="other", project="p2")
    both = {a.keyring.instance, b.keyring.instance}
    await until(
        lambda: set(a.keyring.cache.instances()) == set(b.keyring.cache.instances()) == both
        and len(b.keyring.cache.view.keys) == 3 and b.keyring.desk.allocator.find_token(token) is not None,
        within_s=3, message="replicas see each other, the keys and the token",
    )  # fmt: skip
    return a, b, token


def session(token: str = "", grant: str = "", model: str = MODEL) -> pb.AcquireRequest:
    return pb.AcquireRequest(token_hash=token, model=model, session=True, session_grant=grant)


async def test_session_caps_hold_across_replicas_and_a_full_pool_refuses_clearly(start_replica: StartReplica) -> None:
    a, b, token = await two_replicas(start_replica, pb.Policy(live_sessions_per_project=2))
    on_a, on_b = Stream(a), Stream(b)
    projects: Counter[str] = Counter()
    for stream in (on_a, on_b):
        first = (await stream.ask(acquire=session(token))).results[0].acquire.lease
        second = (await stream.ask(acquire=session(token))).results[0].acquire.lease
        assert first.project != second.project  # a project at this replica's share is passed over for another
        assert first.renew_every_ms == round(TTL_S * 1000 / 3)
        projects.update((first.project, second.project))
    assert projects == {"p1": 2, "p2": 2}  # two per project, all replicas together
    refused = (await on_a.ask(acquire=session(token))).results[0].error
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and refused.reason == "LIVE_SESSIONS"
    assert refused.retry_after_ms > 0 and "Live sessions" in refused.message
    call = (await on_b.ask(acquire=pb.AcquireRequest(token_hash=token, model=MODEL))).results[0]
    assert call.HasField("acquire")  # ordinary calls are not under the session caps
    on_a.cut()
    on_b.cut()


async def test_a_renewed_session_lease_outlives_its_ttl_and_an_unrenewed_one_is_reclaimed_within_it(
    start_replica: StartReplica,
) -> None:
    a, b, token = await two_replicas(start_replica)
    on_a, on_b = Stream(a), Stream(b)
    lease = (await on_a.ask(acquire=session(token))).results[0].acquire.lease
    renew = pb.RenewRequest(lease_id=lease.lease_id)
    started = time.monotonic()
    while time.monotonic() - started < 2 * TTL_S:  # renewed every third of the TTL, for two TTLs
        renewed = (await on_a.ask(renew=renew)).results[0].renew
        assert renewed.held and renewed.expires_at_ms >= lease.expires_at_ms
        deadline = time.monotonic() + lease.renew_every_ms / 1000
        await until(lambda due=deadline: time.monotonic() >= due, within_s=1, message="the next renew is due")
    assert held(a) == 1
    assert not (await on_b.ask(renew=renew)).results[0].renew.held  # only the granting replica holds it
    stopped = time.monotonic()
    await until(lambda: held(a) == 0, within_s=TTL_S + 0.5, message="the unrenewed session lease reclaimed")
    assert time.monotonic() - stopped <= TTL_S + 0.5
    assert not (await on_a.ask(renew=renew)).results[0].renew.held  # the edge reads "ended"
    on_a.cut()
    on_b.cut()


async def test_a_minted_browser_token_is_redeemed_once_from_any_replica_for_its_model_before_it_expires(
    start_replica: StartReplica,
) -> None:
    a, b, token = await two_replicas(start_replica)
    on_a, on_b = Stream(a), Stream(b)
    minted = await on_a.ask(mint_session_token=pb.MintSessionTokenRequest(token_hash=token, model=MODEL))
    browser = minted.results[0].mint_session_token.token
    assert browser.startswith("auth_tokens/")
    other_model = await on_b.ask(redeem_session_token=pb.RedeemSessionTokenRequest(token=browser, model="gemini-x"))
    assert other_model.results[0].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    redeem = pb.RedeemSessionTokenRequest(token=browser, model=f"models/{MODEL}")
    redeemed = (await on_b.ask(redeem_session_token=redeem)).results[0].redeem_session_token
    assert redeemed.pool == "main" and redeemed.grant
    again = (await on_a.ask(redeem_session_token=redeem)).results[0]  # the OTHER replica: spent all the same
    assert again.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    granted = (await on_a.ask(acquire=session(grant=redeemed.grant))).results[0]  # the session's lease
    assert granted.acquire.lease.pool == "main" and granted.acquire.lease.renew_every_ms > 0
    wrong = (await on_a.ask(acquire=session(grant=redeemed.grant, model="gemini-x"))).results[0]
    assert wrong.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]  # the grant is for its model only

    short = await a.lease.MintSessionToken(pb.MintSessionTokenRequest(token_hash=token, model=MODEL, ttl_ms=300))
    expires_at = short.expires_at_ms / 1000
    await until(lambda: time.time() > expires_at, within_s=2, message="the short token expired")
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await b.lease.RedeemSessionToken(pb.RedeemSessionTokenRequest(token=short.token, model=MODEL))
    assert expired.value.code() is grpc.StatusCode.UNAUTHENTICATED
    on_a.cut()
    on_b.cut()
