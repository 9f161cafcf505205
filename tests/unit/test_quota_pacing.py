"""Quota windows and tokens-per-minute pacing (issue 14), under a fake clock.

A 429 without RetryInfo that names a per-minute quota cools the (project,
model) until its fixed minute ends, not for the generic backoff; a known
input-tokens-per-minute limit paces leases by the edge's estimate of each
call, reserved at lease and corrected at release.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.common.answers import QuotaViolation
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.keyring.desk import Observer
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.limits import QuotaCounter, QuotaMetric
from services.keyring.domain.models import (
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    LimitId,
    Outcome,
    Policy,
    QuotaLimit,
    Transport,
)
from services.keyring.domain.policy import PACIFIC, judge, next_pacific_midnight
from services.keyring.lease_servicer import LeaseServicer

from .builders import TOKEN_HASH, key
from .builders import World as Pool
from .test_keyring_core import MODEL, lease_and_release, world  # noqa: F401
from .test_keyring_core import World as CoreWorld

NOW = 1_750_000_000.0  # 40 s into its epoch minute
MINUTE_END = NOW + 20
RPM = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10")
TPM = QuotaViolation("GenerateContentInputTokensPerModelPerMinute-FreeTier", quota_value="1000")
RPD = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="250")
SUBJECT = CooldownId(CooldownScope.PROJECT, "proj-a", "m")


def judged(outcome: Outcome, cooldowns: dict[CooldownId, Cooldown] | None = None) -> Cooldown | None:
    return judge(outcome, key("k1", project="proj-a"), "m", Policy(), NOW, cooldowns or {}).cooldown


# -- a known window, not the generic backoff ----------------------------------------------------------------


@pytest.mark.parametrize("violation", [RPM, TPM], ids=["rpm", "tpm"])
def test_a_per_minute_429_without_retry_info_cools_until_the_minute_ends(violation: QuotaViolation) -> None:
    assert NOW % 60 == 40
    cooldown = judged(Outcome(429, violations=(violation,)))
    assert cooldown is not None and cooldown.id == SUBJECT
    assert cooldown.until == MINUTE_END  # the generic backoff would say NOW + 60
    assert cooldown.reason is CooldownReason.RATE_LIMIT


def test_a_repeated_per_minute_429_does_not_double() -> None:
    # The pair struck three times, the last cooldown ended 5 s ago: the backoff would be 240 s.
    previous = Cooldown(SUBJECT, CooldownReason.RATE_LIMIT, NOW - 5, strikes=3)
    cooldown = judged(Outcome(429, violations=(RPM,)), {SUBJECT: previous})
    assert cooldown is not None and cooldown.until == MINUTE_END


def test_a_pools_shorter_backoff_caps_the_window() -> None:
    """A storm of 429s naming a per-minute quota (issue 13's storm): the pool's 4 s backoff, not the minute's 20 s."""
    policy = Policy(rate_limit_cooldown_s=4)
    cooldown = judge(Outcome(429, violations=(RPM,)), key("k1", project="proj-a"), "m", policy, NOW, {}).cooldown
    assert cooldown is not None and cooldown.until == NOW + 4
    # An answer of the same event (sent while it cools) extends nothing.
    again = Outcome(429, violations=(RPM,), latency_s=1)
    assert judge(again, key("k2", project="proj-a"), "m", policy, NOW + 2, {SUBJECT: cooldown}).cooldown is None


def test_retry_info_still_wins_and_a_429_naming_no_quota_still_backs_off() -> None:
    told = judged(Outcome(429, retry_delay_s=7, violations=(RPM,)))
    assert told is not None and told.until == NOW + 7
    bare = judged(Outcome(429))
    assert bare is not None and bare.until == NOW + 60


def test_a_per_minute_429_of_a_call_sent_in_a_minute_that_has_ended_cools_nothing() -> None:
    # Sent 45 s ago: in the minute that ended 40 s ago; the quota it hit has freed already.
    verdict = judge(Outcome(429, violations=(RPM,), latency_s=45), key("k1", project="proj-a"), "m", Policy(), NOW, {})
    assert verdict.cooldown is None
    assert verdict.key is not None and verdict.key.consecutive_failures == 1


def test_a_per_day_429_without_retry_info_cools_until_pacific_midnight() -> None:
    cooldown = judged(Outcome(429, violations=(RPM, RPD)))
    assert cooldown is not None and cooldown.reason is CooldownReason.DAILY_QUOTA
    assert cooldown.until == next_pacific_midnight(NOW)
    assert dt.datetime.fromtimestamp(cooldown.until, PACIFIC).time() == dt.time(0, 0)


async def test_through_the_desk_the_project_is_back_when_its_minute_ends(world: CoreWorld) -> None:  # noqa: F811
    desk, clock = world.keyring.desk, world.clock
    clock.now += 60.0 - clock.now % 60.0 + 30.0  # 30 s into a minute
    rpm = dataclasses.replace(RPM, dimensions=(("model", MODEL),))
    await lease_and_release(world.keyring, world.token, Outcome(429, violations=(rpm,)))
    with pytest.raises(NoKeyAvailable) as refused:
        desk.acquire(world.token, MODEL)
    assert refused.value.retry_after_s == 30.0  # the minute's end, not the 60 s backoff
    clock.now += 30.0
    assert desk.acquire(world.token, MODEL)[0].key.key_id == world.key_id


# -- tokens per minute ----------------------------------------------------------------------------------------


def two_projects(tpm_a: int, tpm_b: int, replicas: int = 1) -> Pool:
    pool = Pool([key("k1", project="proj-a"), key("k2", project="proj-b")], replicas=replicas)
    metric = QuotaMetric.INPUT_TOKENS_PER_MINUTE.value
    pool.view.put_limit(QuotaLimit(LimitId("proj-a", "m", metric), tpm_a))
    pool.view.put_limit(QuotaLimit(LimitId("proj-b", "m", metric), tpm_b))
    return pool


def lease(pool: Pool, tokens: int, now: float = NOW) -> str:
    grant = pool.allocator.acquire(TOKEN_HASH, "m", frozenset(), now, input_tokens=tokens)
    return grant.key.project


def test_a_known_tpm_limit_paces_each_project_by_the_estimates_reserved_at_lease() -> None:
    pool = two_projects(1000, 1000)
    leased = [lease(pool, 400) for _ in range(4)]  # two 400-token calls fit in each project's 1000
    assert sorted(leased) == ["proj-a", "proj-a", "proj-b", "proj-b"]
    assert lease(pool, 150) in ("proj-a", "proj-b")  # a small call still fits (950 of 1000)
    with pytest.raises(NoKeyAvailable) as refused:
        lease(pool, 400)
    assert refused.value.retry_after_s == MINUTE_END - NOW  # exactly when the window resets
    assert lease(pool, 400, now=MINUTE_END) in ("proj-a", "proj-b")


def test_each_replica_takes_its_share_but_a_windows_first_call_always_fits() -> None:
    pool = two_projects(1000, 1000, replicas=2)  # a share of 500 per project on this replica
    assert sorted([lease(pool, 700), lease(pool, 700)]) == ["proj-a", "proj-b"]  # each first in its window
    with pytest.raises(NoKeyAvailable):
        lease(pool, 1)


def test_a_call_larger_than_a_projects_tpm_goes_where_it_fits_else_upstream_blames_it() -> None:
    pool = two_projects(500, 5000)
    assert {lease(pool, 1000) for _ in range(4)} == {"proj-b"}  # never proj-a, whose limit it exceeds
    only_small = two_projects(500, 800)
    # No project can ever take it: leased anyway, so the upstream's answer makes it the client's fault.
    assert lease(only_small, 1000) in ("proj-a", "proj-b")


def test_a_release_corrects_the_reservation() -> None:
    counter = QuotaCounter()
    used = lambda: counter.used("p", "m", QuotaMetric.INPUT_TOKENS_PER_MINUTE, NOW + 1)  # noqa: E731
    counter.reserve("l1", "p", "m", NOW, 500)
    counter.settle("l1", "p", "m", Outcome(200, input_tokens=120), NOW + 1)
    assert used() == 120  # usageMetadata's count replaces the estimate
    counter.reserve("l2", "p", "m", NOW, 500)
    counter.settle("l2", "p", "m", Outcome(429, violations=(TPM,)), NOW + 1)
    assert used() == 120  # refused: it consumed nothing
    counter.reserve("l3", "p", "m", NOW, 300)
    counter.settle("l3", "p", "m", Outcome(200), NOW + 1)
    assert used() == 420  # a success that told no count: the estimate stands
    counter.reserve("l4", "p", "m", NOW, 300)
    counter.settle("l4", "p", "m", Outcome(0, transport=Transport.TIMEOUT), NOW + 1)
    assert used() == 720  # unknown: the estimate stands
    counter.reserve("l5", "p", "m", NOW + 19, 200)
    counter.settle("l5", "p", "m", Outcome(200, input_tokens=5), MINUTE_END + 1)
    assert counter.used("p", "m", QuotaMetric.INPUT_TOKENS_PER_MINUTE, MINUTE_END + 1) == 0  # not the next minute's
    assert counter.used("p", "m", QuotaMetric.INPUT_TOKENS_PER_DAY, MINUTE_END + 1) == 725  # the day's corrected


def test_a_call_the_upstream_refused_or_the_client_cancelled_keeps_nothing_of_its_estimate() -> None:
    """Issue 18, finding 4: a 400 costs the project's other tenants nothing, nor does a cancel."""
    counter = QuotaCounter()
    used = lambda: counter.used("p", "m", QuotaMetric.INPUT_TOKENS_PER_MINUTE, NOW + 1)  # noqa: E731
    counter.reserve("l0", "p", "m", NOW, 100)
    counter.settle("l0", "p", "m", Outcome(200, input_tokens=100), NOW + 1)
    refused = [
        Outcome(400, error_status="INVALID_ARGUMENT"),
        Outcome(404, error_status="NOT_FOUND"),
        Outcome(500, error_status="INTERNAL"),
        Outcome(0, transport=Transport.CANCELLED),
    ]
    for i, outcome in enumerate(refused):
        counter.reserve(f"r{i}", "p", "m", NOW, 5000)
        assert used() == 5100  # reserved while in flight
        counter.settle(f"r{i}", "p", "m", outcome, NOW + 1)
        assert used() == 100, outcome
    counter.reserve("told", "p", "m", NOW, 5000)
    counter.settle("told", "p", "m", Outcome(0, transport=Transport.CANCELLED, input_tokens=70), NOW + 1)
    assert used() == 170  # a cancel after the answer told its usage counts that


async def test_through_the_desk_a_cancelled_release_gives_its_reservation_back(world: CoreWorld) -> None:  # noqa: F811
    desk, quotas = world.keyring.desk, world.keyring.desk.allocator.quotas
    grant, _ = desk.acquire(world.token, MODEL, input_tokens=800)
    assert quotas.used("proj-a", MODEL, QuotaMetric.INPUT_TOKENS_PER_MINUTE, world.clock.now) == 800
    cancelled = Outcome(0, transport=Transport.CANCELLED)
    assert desk.release_slot(grant.lease.lease_id, grant.key.key_id, MODEL, cancelled).known
    assert quotas.used("proj-a", MODEL, QuotaMetric.INPUT_TOKENS_PER_MINUTE, world.clock.now) == 0


async def test_an_edges_estimate_is_clamped_to_one_leases_worth_and_counted(world: CoreWorld) -> None:  # noqa: F811
    """Issue 18, finding 10: keyring trusts an edge's estimate only as far as ``KEYRING_MAX_INPUT_ESTIMATE``."""
    clamped: list[str] = []

    class Counting(Observer):
        def estimate_clamped(self) -> None:
            clamped.append("clamped")

    desk = world.keyring.desk
    desk.observer = Counting()
    servicer = LeaseServicer(desk, max_input_estimate=1000)
    request = pb.AcquireRequest(token_hash=world.token, model=MODEL, estimated_input_tokens=2**62)
    servicer._acquire(servicer._lease_request(request))  # the wire's request as one value, clamped once
    servicer._acquire(
        servicer._lease_request(pb.AcquireRequest(token_hash=world.token, model=MODEL, estimated_input_tokens=10))
    )
    assert desk.allocator.quotas.used("proj-a", MODEL, QuotaMetric.INPUT_TOKENS_PER_DAY, world.clock.now) == 1010
    assert clamped == ["clamped"]


async def test_through_the_desk_a_release_gives_back_what_the_estimate_overstated(world: CoreWorld) -> None:  # noqa: F811
    desk, clock = world.keyring.desk, world.clock
    tpm = dataclasses.replace(TPM, dimensions=(("model", MODEL),))
    await lease_and_release(world.keyring, world.token, Outcome(429, retry_delay_s=1, violations=(tpm,)))
    clock.now += 60.0 - clock.now % 60.0  # a new minute, the cooldown over
    grant, _ = desk.acquire(world.token, MODEL, input_tokens=800)
    with pytest.raises(NoKeyAvailable):
        desk.acquire(world.token, MODEL, input_tokens=300)  # 800 + 300 > 1000
    assert await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200, input_tokens=100))
    assert desk.acquire(world.token, MODEL, input_tokens=300)[0].key.key_id == world.key_id  # 100 + 300


@pytest.mark.parametrize(
    ("policy", "tokens", "leases"),
    [(Policy(quota_input_tokens_per_minute=1000), 400, 4), (Policy(quota_requests_per_minute=3), 0, 6)],
    ids=["tpm", "rpm"],
)
def test_an_operators_limit_paces_before_anything_is_learnt(policy: Policy, tokens: int, leases: int) -> None:
    pool = Pool([key("k1", project="proj-a"), key("k2", project="proj-b")], policy=policy)
    assert not pool.view.limits
    for _ in range(leases):
        lease(pool, tokens)
    with pytest.raises(NoKeyAvailable) as refused:
        lease(pool, tokens)
    assert refused.value.retry_after_s == MINUTE_END - NOW
