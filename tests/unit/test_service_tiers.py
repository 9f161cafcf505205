"""Issue 21: service tiers in the allocator. Priority goes only to Tier 2/3 billing accounts and is paced by its
own limit (a share of the standard one), counted against standard too."""

from __future__ import annotations

import pytest

from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.limits import PRIORITY_SHARE, QuotaMetric, priority_model
from services.keyring.domain.models import LimitId, QuotaLimit

from .builders import TOKEN_HASH, World, key

NOW = 1_750_000_000.0
RPM = QuotaMetric.REQUESTS_PER_MINUTE.value


def priority(world: World, model: str = "m") -> str:
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, model, service_tier="priority"), NOW)
    return grant.key.project


def test_priority_is_leased_only_tier_2_and_3_accounts() -> None:
    world = World([key("k1", project="p1", billing_tier=1), key("k2", project="p2", billing_tier=2)])
    assert {priority(world) for _ in range(6)} == {"p2"}
    standard = {world.allocator.grant(LeaseRequest(TOKEN_HASH, "m"), NOW).key.project for _ in range(6)}
    assert standard == {"p1", "p2"}
    only_tier_1 = World([key("k1", project="p1", billing_tier=1), key("k3", project="p3")])
    with pytest.raises(NoKeyAvailable, match="Tier 2 or 3"):
        priority(only_tier_1)


def test_priority_has_its_own_limit_a_share_of_the_standard_one() -> None:
    world = World([key("k2", project="p2", billing_tier=3)])
    world.view.put_limit(QuotaLimit(LimitId("p2", "m", RPM), 10))
    allowed = int(10 * PRIORITY_SHARE)
    for _ in range(allowed):
        priority(world)
    with pytest.raises(NoKeyAvailable):
        priority(world)
    # Counted against standard too: standard has 10 - 3 left.
    assert world.allocator.quotas.used("p2", "m", QuotaMetric.REQUESTS_PER_MINUTE, NOW) == allowed
    assert world.allocator.quotas.used("p2", priority_model("m"), QuotaMetric.REQUESTS_PER_MINUTE, NOW) == allowed
    world.allocator.grant(LeaseRequest(TOKEN_HASH, "m"), NOW)
