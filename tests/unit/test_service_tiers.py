"""Issue 21: service tiers in the allocator. Priority goes only to Tier 2/3 billing accounts and is paced by its
own limit (a share of the standard one, or the one a priority 429 told), counted against standard too; flex and
priority 429s cool and teach their own class only; usage counts calls per class."""

from __future__ import annotations

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.keyring.lease import CANCELLED, HeldLease
from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.limits import PRIORITY_SHARE, QuotaMetric, learnt, priority_model, quota_rows
from services.keyring.domain.models import LimitId, Outcome, Policy, QuotaLimit, QuotaViolation, UpstreamKey
from services.keyring.domain.policy import judge
from services.keyring.domain.tiers import class_model, split
from services.keyring.domain.usage import Bucket, Call, UsageCounter, summarise
from services.simulator.quotas import QuotaBook

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


# -- each class its own (issue 21, part 21-tiers): a class's 429 cools and teaches that class only -------------

FLEX = "flex"
PRIORITY = "priority"


def lease(world: World, tier: str = "", model: str = "m") -> str:
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, model, service_tier=tier), NOW)
    world.allocator.release(grant.lease.lease_id)
    return grant.key.project


def rate_limited(value: str = "") -> Outcome:
    quota_id = "GenerateRequestsPerMinutePerProjectPerModel-PriorityTier"
    violation = QuotaViolation(quota_id, dimensions=(("model", "m"),), quota_value=value)
    return Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=30, violations=(violation,))


def cool(world: World, project_key: UpstreamKey, model: str, outcome: Outcome | None = None) -> None:
    verdict = judge(outcome or rate_limited(), project_key, model, Policy(), NOW, world.view.cooldowns)
    assert verdict.cooldown is not None
    world.view.put_cooldown(verdict.cooldown)


def test_a_priority_429_cools_the_priority_class_only_and_priority_moves_to_another_project() -> None:
    k2, k3 = key("k2", project="p2", billing_tier=2), key("k3", project="p3", billing_tier=2)
    world = World([k2, k3])
    cool(world, k2, class_model("m", PRIORITY))
    assert {lease(world, PRIORITY) for _ in range(4)} == {"p3"}
    assert {lease(world) for _ in range(4)} == {"p2", "p3"}  # standard traffic of p2 still served
    assert {lease(world, FLEX) for _ in range(4)} == {"p2", "p3"}


def test_a_flex_429_never_cools_standard_and_standard_quota_does_not_keep_flex_out() -> None:
    k1 = key("k1", project="p1")
    world = World([k1])
    cool(world, k1, class_model("m", FLEX))
    assert lease(world) == "p1"
    with pytest.raises(NoKeyAvailable):
        lease(world, FLEX)
    world = World([k1])
    cool(world, k1, "m")  # standard's quota: flex has its own
    assert lease(world, FLEX) == "p1"
    with pytest.raises(NoKeyAvailable):
        lease(world)


def test_facts_about_the_model_and_the_account_keep_every_class_out() -> None:
    k1 = key("k1", project="p1", billing_account="acct", billing_tier=2)
    for outcome, model in (
        (Outcome(429, violations=(QuotaViolation("GenerateRequestsPerDayPerProjectPerModel", quota_value="0"),)), "m"),
        (Outcome(402, error_status="RESOURCE_EXHAUSTED"), "m"),
    ):
        world = World([k1])
        cool(world, k1, model, outcome)
        for tier in ("", FLEX, PRIORITY):
            with pytest.raises(NoKeyAvailable):
                lease(world, tier)


def test_a_standard_429_keeps_priority_out_too_because_priority_counts_against_standard() -> None:
    k2 = key("k2", project="p2", billing_tier=3)
    world = World([k2])
    cool(world, k2, "m")
    with pytest.raises(NoKeyAvailable) as refused:
        lease(world, PRIORITY)
    assert refused.value.retry_after_s > 0


def test_a_class_429_teaches_the_class_limit_never_standards() -> None:
    told = learnt(rate_limited("3"), "p2", "m", NOW, {}, PRIORITY)
    assert [(limit.id, limit.limit) for limit in told] == [(LimitId("p2", "m@priority", RPM), 3)]
    assert [limit.id.model for limit in learnt(rate_limited("5"), "p2", "m", NOW, {}, FLEX)] == ["m@flex"]
    assert [limit.id.model for limit in learnt(rate_limited("9"), "p2", "m", NOW, {}, "standard")] == ["m"]


def test_a_told_priority_limit_wins_over_the_share_of_standard() -> None:
    world = World([key("k2", project="p2", billing_tier=3)], policy=Policy(quota_requests_per_minute=100))
    world.view.put_limit(QuotaLimit(LimitId("p2", "m@priority", RPM), 2))
    for _ in range(2):
        priority(world)
    with pytest.raises(NoKeyAvailable):
        priority(world)  # 2 told, not 30 (0.3 x the operator's 100)
    rows = quota_rows(world.view.pools, world.view.keys.values(), world.view.limits, world.allocator.quotas, 1, NOW)
    shown = {(row.model, row.metric.value): (row.limit, row.service_tier) for row in rows}
    assert shown[("m@priority", RPM)] == (2, PRIORITY)


def test_flex_is_paced_by_its_own_limit_and_counted_apart_from_standard() -> None:
    world = World([key("k1", project="p1")], policy=Policy(quota_requests_per_minute=1))
    world.view.put_limit(QuotaLimit(LimitId("p1", "m@flex", RPM), 2))
    for _ in range(2):
        assert lease(world, FLEX) == "p1"
    with pytest.raises(NoKeyAvailable):
        lease(world, FLEX)
    quotas = world.allocator.quotas
    assert quotas.used("p1", "m", QuotaMetric.REQUESTS_PER_MINUTE, NOW) == 0
    assert quotas.used("p1", "m@flex", QuotaMetric.REQUESTS_PER_MINUTE, NOW) == 2
    assert lease(world) == "p1"  # standard's own minute (the operator's 1) is untouched by flex
    with pytest.raises(NoKeyAvailable):
        lease(world)


def test_usage_counts_calls_per_service_class() -> None:
    counter = UsageCounter()
    for tier in ("", FLEX, FLEX, PRIORITY):
        counter.count(NOW, Call("pool", "k1", "t1", False, 10, 5, service_tier=tier))
    [bucket] = counter.buckets.values()
    assert Bucket.from_dict(bucket.to_dict()).tiers == {"pool": {FLEX: 2, PRIORITY: 1}}
    summary = summarise([bucket], NOW)
    assert summary.series_tiers == {(bucket.start, "pool"): {FLEX: 2, PRIORITY: 1}}
    assert summary.pools["pool"].requests == 4


def test_class_models_round_trip_and_standard_is_todays_key() -> None:
    assert class_model("m", "") == class_model("m", "standard") == "m"
    assert split(class_model("gemini-3.5-flash", FLEX)) == ("gemini-3.5-flash", FLEX)
    assert split("m") == ("m", "")


def test_the_simulator_limits_each_class_apart_priority_at_a_share_of_standard() -> None:
    book = QuotaBook()
    book.set_rule("p1", None, {"rpm": 10})
    assert [book.admit("p1", "m", 1, "priority") for _ in range(3)] == [None] * 3
    refused = book.admit("p1", "m", 1, "priority")  # 0.3 x 10: priority's own minute is spent
    assert refused is not None and [(v.quota_id, v.value) for v in refused.violations] == [
        ("GenerateRequestsPerMinutePerProjectPerModel-Priority", "3")
    ]
    assert [book.admit("p1", "m", 1, "flex") for _ in range(10)] == [None] * 10  # flex: its own 10
    assert book.admit("p1", "m", 1, "flex") is not None
    # Standard served 7 more (priority's 3 counted against it too), then its own 429, named standard's.
    assert [book.admit("p1", "m", 1) for _ in range(7)] == [None] * 7
    refused = book.admit("p1", "m", 1, "standard")
    assert refused is not None and refused.violations[0].quota_id.endswith("-FreeTier")


def test_the_edge_release_says_the_calls_class_without_touching_shared_outcomes() -> None:
    sent: list[pb.Outcome] = []

    class Releases:
        holding = 0  # HeldLease counts itself in

        def send(self, held: object, outcome: pb.Outcome, *rest: object) -> None:
            sent.append(outcome)

    for tier in (FLEX, ""):
        lease = pb.Lease(lease_id="l", key_id="k")
        held = HeldLease(Releases(), lease, (), "r", "m", service_tier=tier)  # type: ignore[arg-type]
        held.release(CANCELLED, confirm=False)
    assert [outcome.service_tier for outcome in sent] == [FLEX, ""]
    assert CANCELLED.service_tier == ""
