"""Credits (leases asked ahead of need, issue 23): granted as any lease, every count taken back when unused;
none for a client token whose rate or budgets are a promise to a tenant, nor in a pool with an in-flight cap."""

from __future__ import annotations

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.keyring.administration.inputs import PoolChanges
from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import NoKeyAvailable, PermissionDenied
from services.keyring.domain.limits import QuotaMetric
from services.keyring.domain.models import Outcome, TokenBudget, Transport
from services.keyring.lease_servicer import MAX_CREDITS, LeaseServicer

from .test_token_budgets import MODEL, Budgeted, world

__all__ = ["world"]  # the fixture, shared with the budgets' tests

UNUSED = Outcome(0, Transport.UNUSED)


def credit(world: Budgeted) -> tuple[str, str]:
    grant, _ = world.keyring.desk.lease(LeaseRequest(world.hashed, MODEL, input_tokens=500, credit=True))
    assert grant.lease.credit
    return grant.lease.lease_id, grant.key.key_id


def project_use(world: Budgeted, metric: QuotaMetric) -> int:
    return world.keyring.desk.allocator.quotas.used("p", MODEL, metric, world.clock.now)


async def test_unused_credits_take_back_every_count_their_grant_made(world: Budgeted) -> None:
    await world.admin.pools.update_pool("main", PoolChanges(policy={"requests_per_minute": 4}))  # per key: 2 keys
    desk = world.keyring.desk
    held = [credit(world) for _ in range(4)]
    assert project_use(world, QuotaMetric.REQUESTS_PER_MINUTE) == 4
    assert project_use(world, QuotaMetric.INPUT_TOKENS_PER_MINUTE) == 2000
    with pytest.raises(NoKeyAvailable):  # the four credits hold the first half of both keys' minutes
        world.keyring.desk.lease(LeaseRequest(world.hashed, MODEL, credit=True))

    for lease_id, key_id in held:
        assert await desk.release(lease_id, key_id, MODEL, UNUSED)
    assert desk.leases_in_flight == 0
    assert project_use(world, QuotaMetric.REQUESTS_PER_MINUTE) == 0
    assert project_use(world, QuotaMetric.INPUT_TOKENS_PER_MINUTE) == 0
    assert desk.ledger.usage.take_dirty()[0] == []  # no call was counted
    assert not world.keyring.cache.view.cooldowns

    for _ in range(8):  # the keys' minutes are whole again: eight calls, then the keys' cap holds
        await world.call()
    world.refused()


async def test_a_lease_that_is_no_credit_released_unused_is_a_cancel_and_refunds_nothing(world: Budgeted) -> None:
    await world.admin.pools.update_pool("main", PoolChanges(policy={"requests_per_minute": 1}))
    desk = world.keyring.desk
    grant, _ = desk.lease(LeaseRequest(world.hashed, MODEL))
    assert await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, UNUSED)
    assert desk.leases_in_flight == 0
    await world.call()
    world.refused()  # the plain lease's request still counts: only credits are refunded


async def test_a_refund_in_a_minute_that_has_moved_on_takes_nothing_from_the_new_one(world: Budgeted) -> None:
    desk = world.keyring.desk
    lease_id, key_id = credit(world)
    world.clock.now += 60  # the next epoch minute
    await world.call()
    assert await desk.release(lease_id, key_id, MODEL, UNUSED)
    assert project_use(world, QuotaMetric.REQUESTS_PER_MINUTE) == 1


@pytest.mark.parametrize("limit", ["budget", "rate", "in-flight cap"])
async def test_a_limited_token_or_a_capped_pool_is_granted_no_credit(world: Budgeted, limit: str) -> None:
    if limit == "budget":
        await world.budgets(TokenBudget(requests_per_minute=100))
    elif limit == "rate":
        world.token = await world.admin.tokens.update_token(world.token.token_id, requests_per_minute=100)
    else:  # one tenant's credits would hold the slots another tenant's calls need
        await world.admin.pools.update_pool("main", PoolChanges(policy={"max_in_flight": 4}))
    with pytest.raises(PermissionDenied, match="no credits"):
        world.keyring.desk.lease(LeaseRequest(world.hashed, MODEL, credit=True))
    assert world.keyring.desk.leases_in_flight == 0
    await world.call()  # its calls are leased as ever


async def test_one_acquire_grants_its_credits_until_the_first_refusal_and_at_most_the_cap(world: Budgeted) -> None:
    """``AcquireRequest.credits``: the others in ``more_credits``, each a lease held; fewer than asked is an answer."""
    servicer, desk = LeaseServicer(world.keyring.desk), world.keyring.desk
    wire = pb.AcquireRequest(token_hash=world.hashed, model=MODEL, credit=True, credits=MAX_CREDITS + 36)
    acquired = servicer._acquire(servicer._lease_request(wire), credits=wire.credits)
    leases = {lease.lease_id for lease in (acquired.lease, *acquired.more_credits)}
    assert len(leases) == MAX_CREDITS == desk.leases_in_flight  # asked 100: granted the cap
    for lease in (acquired.lease, *acquired.more_credits):
        assert await desk.release(lease.lease_id, lease.key_id, MODEL, UNUSED)

    await world.admin.pools.update_pool("main", PoolChanges(policy={"requests_per_minute": 4}))  # per key: 2 keys
    wire.credits = 10
    acquired = servicer._acquire(servicer._lease_request(wire), credits=wire.credits)
    assert len(acquired.more_credits) == 3 and desk.leases_in_flight == 4  # the keys' first halves, no error
