"""Issue 13, finding 5, through a real keyring replica on a real etcd: one quota event is one strike.

A storm of 429s without RetryInfo, answered to many concurrent calls, used to
add a strike per answer: a 10-second storm left keys cooling for 3-30 minutes
and told clients to come back in 180-240 s. Scaled down here: the pool's base
backoff is BASE_S, the storm lasts STORM_S (the bench's 10 s against 60 s).
"""

from __future__ import annotations

import asyncio
import time

import grpc

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.keyring.domain.models import CooldownId, CooldownScope

from .conftest import Replica, StartReplica, make_pool
from .test_keyring_service import acquire, add_keys, eventually, release, retry_after_from

MODEL = "gemini-3.5-flash"
BASE_S = 2.0  # a second strike would double it: 4 s, past every bound below (BASE_S + 0.5 s or + 1.5 s)
STORM_S = 1.0
CALLS = 48
WAVES = 6


async def test_a_storm_of_429s_without_retry_info_cools_the_pair_for_one_base_backoff(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    token = await make_pool(
        replica, policy=pb.Policy(rate_limit_cooldown_ms=int(BASE_S * 1000), rate_limit_max_cooldown_ms=600_000)
    )
    keys = await add_keys(replica, 2, project="proj-a")
    # Many calls in flight when the upstream starts answering 429.
    leases = [(await acquire(replica, token), time.monotonic()) for _ in range(CALLS)]
    assert {lease.key_id for lease, _ in leases} == set(keys)
    told: list[float] = []
    storm_started = time.time()

    async def answer(lease: pb.Lease, sent: float) -> None:
        latency_ms = int((time.monotonic() - sent) * 1000)
        outcome = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", latency_ms=latency_ms)
        assert await release(replica, lease, outcome)

    async def client_asks() -> None:
        try:
            lease = await acquire(replica, token)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            retry = retry_after_from(error)
            assert retry is not None
            told.append(retry)
        else:  # only before the first 429 has landed
            await release(replica, lease, pb.Outcome(http_status=200))

    per_wave = CALLS // WAVES
    for wave in range(WAVES):
        batch = leases[wave * per_wave : (wave + 1) * per_wave]
        await asyncio.gather(*(answer(lease, sent) for lease, sent in batch), client_asks())
        await asyncio.sleep(STORM_S / WAVES)
    await client_asks()

    cooling = replica.keyring.cache.view.cooldowns[CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)]
    assert cooling.strikes == 1, f"one quota event, {cooling.strikes} strikes"
    assert cooling.until - storm_started <= BASE_S + 0.5, f"cooling {cooling.until - storm_started:.1f} s"
    assert told and max(told) <= BASE_S + 0.5, f"clients told to come back in {told}"

    async def serving() -> bool:
        try:
            lease = await acquire(replica, token)
        except grpc.aio.AioRpcError:
            return False
        await release(replica, lease, pb.Outcome(http_status=200))  # the upstream answers again
        return True

    await eventually(serving, within_s=BASE_S + 1.0, every_s=0.1)
    assert time.time() - storm_started <= BASE_S + 1.5

    # The success decays the pair's strikes: its next 429 backs off from the base again.
    async def decayed() -> bool:
        record = replica.keyring.cache.view.cooldowns.get(CooldownId(CooldownScope.PROJECT, "proj-a", MODEL))
        return record is not None and record.strikes == 0

    await eventually(decayed, within_s=2)
    await asyncio.sleep(0.05)
    again = await acquire(replica, token)
    started = time.time()
    await release(replica, again, pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED"))
    record = replica.keyring.cache.view.cooldowns[CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)]
    assert record.strikes == 1 and abs(record.until - started - BASE_S) < 0.5


async def test_a_storm_answered_on_two_replicas_is_still_one_strike(start_replica: StartReplica) -> None:
    a = await start_replica("replica-a")
    b = await start_replica("replica-b")
    token = await make_pool(a, policy=pb.Policy(rate_limit_cooldown_ms=int(BASE_S * 1000)))
    [key_id] = await add_keys(a, 1)
    await asyncio.sleep(0.3)  # b's view has the pool, key and token
    leases = [await acquire(a, token) for _ in range(16)]

    async def answer(on: Replica, lease: pb.Lease) -> None:
        await release(on, lease, pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", latency_ms=50))

    started = time.time()
    await asyncio.gather(*(answer(a if i % 2 else b, lease) for i, lease in enumerate(leases)))
    pair = CooldownId(CooldownScope.KEY, key_id, MODEL)

    async def both_see_it() -> bool:
        return all(pair in r.keyring.cache.view.cooldowns for r in (a, b))

    await eventually(both_see_it, within_s=3)
    for replica in (a, b):
        record = replica.keyring.cache.view.cooldowns[pair]
        assert record.strikes == 1 and record.until - started <= BASE_S + 0.5
