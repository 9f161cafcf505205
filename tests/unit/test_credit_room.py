"""A credit never takes the last half of a per-minute limit (issue 23): near one, calls are leased for themselves.

One tenant's credits, idle on its shelf, would otherwise hold the last places of a key's or a project's minute
while another tenant's call of the same project is refused. A plain call is checked exactly as before.
"""

from __future__ import annotations

import pytest

from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.leasing import credit_room
from services.keyring.domain.limits import QuotaMetric
from services.keyring.domain.models import LimitId, Policy, QuotaLimit

from .builders import TOKEN_HASH, World, key

NOW = 1_750_000_000.0  # 40 s into its epoch minute
NEXT_MINUTE = NOW + 20


def credit(world: World, tokens: int = 0, now: float = NOW, tier: str = "") -> str:
    """A credit granted: the key it holds."""
    grant = world.allocator.grant(
        LeaseRequest(TOKEN_HASH, "m", input_tokens=tokens, credit=True, service_tier=tier), now
    )
    assert grant.lease.credit
    return grant.key.key_id


def call(world: World, tokens: int = 0, now: float = NOW, tier: str = "") -> str:
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, "m", input_tokens=tokens, service_tier=tier), now)
    assert not grant.lease.credit
    return grant.key.key_id


def no_credit(world: World, tokens: int = 0, now: float = NOW, tier: str = "") -> None:
    with pytest.raises(NoKeyAvailable):
        credit(world, tokens, now, tier)


def no_call(world: World, tokens: int = 0, now: float = NOW, tier: str = "") -> None:
    with pytest.raises(NoKeyAvailable):
        call(world, tokens, now, tier)


def test_credit_room_is_the_first_half_and_none_of_a_limit_too_small_to_halve() -> None:
    assert [credit_room(limit) for limit in (0, 1, 2, 3, 4, 101)] == [0, -1, 1, 1, 2, 50]
    assert credit_room(-1) == -1  # departed instances used it all: nothing for credits either


@pytest.mark.parametrize(("rpm", "replicas"), [(4, 1), (8, 2)], ids=["one replica", "a share of two"])
def test_a_credit_stops_at_half_the_keys_rpm_share_a_call_goes_on_to_the_whole(rpm: int, replicas: int) -> None:
    world = World([key("k1")], policy=Policy(requests_per_minute=rpm), replicas=replicas)  # a share of 4
    assert [credit(world), credit(world)] == ["k1", "k1"]
    no_credit(world)  # a third would take the last half of the key's minute
    assert [call(world), call(world)] == ["k1", "k1"]  # calls are leased for themselves up to the whole share
    no_call(world)
    assert world.allocator._key_minutes.count("k1", NOW) == 4  # the refused credit counted nothing


def test_a_key_with_one_request_a_minute_takes_no_credit_but_calls() -> None:
    world = World([key("k1")], policy=Policy(requests_per_minute=1))
    no_credit(world)
    assert call(world) == "k1"


def test_credits_go_to_a_key_whose_first_half_is_free() -> None:
    world = World([key("k1"), key("k2")], policy=Policy(requests_per_minute=4))
    call(world)
    call(world)
    call(world)  # round robin: k1 holds 2, k2 1
    assert credit(world) == "k2"
    no_credit(world)  # both at half
    assert {call(world), call(world)} == {"k1", "k2"}


def learnt(world: World, metric: QuotaMetric, limit: int, project: str = "proj-a") -> None:
    world.view.put_limit(QuotaLimit(LimitId(project, "m", metric.value), limit))


@pytest.mark.parametrize("source", ["operator", "learnt"])
def test_a_credit_stops_at_half_the_projects_requests_a_minute(source: str) -> None:
    keys = [key("k1", project="proj-a"), key("k2", project="proj-a")]  # the keys' own minutes are no limit
    world = World(keys, policy=Policy(quota_requests_per_minute=4) if source == "operator" else None)
    if source == "learnt":
        learnt(world, QuotaMetric.REQUESTS_PER_MINUTE, 4)
    credit(world)
    credit(world)
    no_credit(world)
    call(world)
    call(world)
    no_call(world)
    assert world.allocator.quotas.used("proj-a", "m", QuotaMetric.REQUESTS_PER_MINUTE, NOW) == 4


def test_a_credit_stops_at_half_the_projects_input_tokens_a_minute() -> None:
    world = World([key("k1", project="proj-a")])
    learnt(world, QuotaMetric.INPUT_TOKENS_PER_MINUTE, 1000)
    credit(world, 400)  # 400 of the first 500
    no_credit(world, 200)  # 600 would pass half
    credit(world, 100)  # half, not past it
    no_credit(world)  # not even one token more
    call(world, 200)  # 700 of 1000: the call is leased for itself
    call(world, 300)
    no_call(world, 1)
    # A window's first call always fits (one larger than the share must be served some time); a credit does not:
    # the call it would serve is leased for itself.
    no_credit(world, 600, now=NEXT_MINUTE)
    assert call(world, 600, now=NEXT_MINUTE) == "k1"


def test_a_credit_goes_to_the_project_whose_first_half_is_free() -> None:
    world = World(
        [key("k1", project="proj-a"), key("k2", project="proj-b")], policy=Policy(quota_requests_per_minute=4)
    )
    for lease_id in ("other-1", "other-2"):  # proj-b at half (two calls already leased there)
        world.allocator.quotas.reserve(lease_id, "proj-b", "m", NOW)
    assert [credit(world), credit(world)] == ["k1", "k1"]  # round robin alone would alternate
    no_credit(world)
    assert {call(world), call(world)} == {"k1", "k2"}


def test_a_priority_credit_stops_at_half_its_class_limit() -> None:
    """Per service class as pacing checks it: priority's own limit (0.3 of standard's: 3 of 10) is halved too."""
    world = World([key("k1", project="proj-a", billing_tier=2)], policy=Policy(quota_requests_per_minute=10))
    credit(world, tier="priority")  # 1 of priority's 3
    no_credit(world, tier="priority")
    assert credit(world) == "k1"  # standard: 2 of 10 counted, room for credits up to 5
    call(world, tier="priority")
    call(world, tier="priority")
    no_call(world, tier="priority")


def test_credits_are_granted_freely_well_under_half() -> None:
    policy = Policy(requests_per_minute=100, quota_requests_per_minute=100, quota_input_tokens_per_minute=100_000)
    world = World([key("k1", project="proj-a")], policy=policy)
    assert {credit(world, 1000) for _ in range(50)} == {"k1"}  # up to half of each: 50 requests, 50,000 tokens
    no_credit(world, 1000)
    for _ in range(50):
        call(world, 1000)
    no_call(world, 1000)
