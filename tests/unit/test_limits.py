"""Learned quota limits (issue 14): what 429s tell, kept per (project, model, metric), shared through the store."""

from __future__ import annotations

from services.common.answers import QuotaViolation
from services.keyring.codec import Layout, decode, encode
from services.keyring.domain.decisions import merge
from services.keyring.domain.limits import (
    QuotaCounter,
    QuotaMetric,
    effective_limit,
    learnt,
    metric_of,
    quota_rows,
    window,
)
from services.keyring.domain.models import LimitId, Outcome, Policy, Pool, QuotaLimit
from services.keyring.domain.policy import next_pacific_midnight

from .builders import key
from .test_keyring_core import MODEL, World, lease_and_release, world  # noqa: F401

RPM = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10",
                     dimensions=(("location", "global"), ("model", MODEL)))  # fmt: skip
RPD = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="250")
TPM = QuotaViolation("GenerateContentInputTokensPerModelPerMinute-FreeTier", quota_value="250000")
NOW = 1_750_000_000.0


def test_each_violation_names_its_metric() -> None:
    assert metric_of(RPM) is QuotaMetric.REQUESTS_PER_MINUTE
    assert metric_of(RPD) is QuotaMetric.REQUESTS_PER_DAY
    assert metric_of(TPM) is QuotaMetric.INPUT_TOKENS_PER_MINUTE
    assert metric_of(QuotaViolation("SpendBasedLimit")) is None


def test_a_429_tells_its_limits_once_and_again_only_when_they_change_or_age() -> None:
    found = learnt(Outcome(429, violations=(RPM, RPD, QuotaViolation(RPM.quota_id))), "proj-a", "m", NOW, {})
    assert [(f.id, f.limit, f.learnt_at) for f in found] == [
        (LimitId("proj-a", MODEL, "requests_per_minute"), 10, NOW),
        (LimitId("proj-a", "m", "requests_per_day"), 250, NOW),
    ]
    known = {f.id: f for f in found}
    assert learnt(Outcome(429, violations=(RPM,)), "proj-a", "m", NOW + 5, known) == []
    changed = QuotaViolation(RPM.quota_id, quota_value="15", dimensions=RPM.dimensions)
    assert [f.limit for f in learnt(Outcome(429, violations=(changed,)), "proj-a", "m", NOW + 5, known)] == [15]
    assert learnt(Outcome(429, violations=(RPM,)), "", "m", NOW, {}) == []  # no project: nothing to know


def test_limits_merge_idempotently_the_later_learnt_wins_and_round_trip_the_codec() -> None:
    limit_id = LimitId("proj/a", "models/x", "requests_per_minute")
    old = QuotaLimit(limit_id, 10, learnt_at=NOW, decision="l1", decided_at=NOW)
    new = QuotaLimit(limit_id, 20, learnt_at=NOW + 1, decision="l2", decided_at=NOW + 1)
    assert merge(old, new) == merge(merge(old, new), old) == merge(merge(old, new), new)
    assert merge(new, old) is new and merge(old, new).limit == 20
    layout = Layout()
    kind, parts = layout.kind_of(layout.path_of(new))
    assert kind == "limits" and LimitId(*parts) == limit_id
    assert decode(kind, encode(new), 7) == QuotaLimit(limit_id, 20, NOW + 1, "", 7, "l2", NOW + 1)


def test_an_operators_limit_wins_and_windows_reset_on_time() -> None:
    record = QuotaLimit(LimitId("p", "m", "requests_per_minute"), 10)
    assert effective_limit(record, Policy(), QuotaMetric.REQUESTS_PER_MINUTE) == (10, "learnt")
    assert effective_limit(record, Policy(quota_requests_per_minute=4), QuotaMetric.REQUESTS_PER_MINUTE) == (
        4, "operator",
    )  # fmt: skip
    assert effective_limit(None, Policy(), QuotaMetric.REQUESTS_PER_DAY) == (None, "")
    assert window(QuotaMetric.REQUESTS_PER_MINUTE, NOW + 1) == (NOW - 40, NOW + 20)
    assert window(QuotaMetric.REQUESTS_PER_DAY, NOW)[1] == next_pacific_midnight(NOW)
    counter = QuotaCounter()
    counter.add("p", "m", NOW, requests=1, input_tokens=100)
    counter.add("p", "m", NOW + 1, requests=1)
    assert counter.used("p", "m", QuotaMetric.REQUESTS_PER_MINUTE, NOW + 2) == 2
    assert counter.used("p", "m", QuotaMetric.INPUT_TOKENS_PER_MINUTE, NOW + 2) == 100
    assert counter.used("p", "m", QuotaMetric.REQUESTS_PER_MINUTE, NOW + 60) == 0  # the next minute
    assert counter.used("p", "m", QuotaMetric.REQUESTS_PER_DAY, NOW + 60) == 2


async def test_a_learnt_limit_is_in_the_view_at_once_written_behind_and_seen_by_another_replica(world: World) -> None:  # noqa: F811
    outcome = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=5, violations=(RPM, TPM))
    await lease_and_release(world.keyring, world.token, outcome)
    rpm_id = LimitId("proj-a", MODEL, "requests_per_minute")
    assert world.keyring.cache.view.limits[rpm_id].limit == 10
    assert world.keyring.cache.view.limits[LimitId("proj-a", MODEL, "input_tokens_per_minute")].limit == 250000
    await world.keyring.decisions.flush()
    assert world.keyring.decisions.backlog == 0
    other = await world.replica("r2")
    try:
        assert other.cache.view.limits[rpm_id].limit == 10
        assert other.cache.view.limits[rpm_id].learnt_at == world.clock.now
    finally:
        await other.stop()


async def test_a_known_rpm_paces_the_project_before_the_429_and_says_when_it_frees(world: World) -> None:  # noqa: F811
    from services.keyring.domain.errors import NoKeyAvailable

    desk = world.keyring.desk
    rpm = QuotaViolation(RPM.quota_id, quota_value="3", dimensions=RPM.dimensions)
    await lease_and_release(world.keyring, world.token, Outcome(429, retry_delay_s=1, violations=(rpm,)))
    world.clock.now += 60.0 - world.clock.now % 60.0  # the cooldown over, a new minute
    for _ in range(3):
        await lease_and_release(world.keyring, world.token, Outcome(200))
    try:
        desk.acquire(world.token, MODEL)
    except NoKeyAvailable as refused:
        assert refused.retry_after_s == 60.0  # the next minute, exactly
    else:
        raise AssertionError("a fourth request in the minute was leased over the known limit of 3")
    world.clock.now += 60
    assert desk.acquire(world.token, MODEL)[0].key.key_id == world.key_id


def test_model_ids_the_upstream_never_served_leave_no_counter_and_no_quota_row() -> None:
    """Issue 18, finding 9: 300 client-chosen ids answered 404 change neither the rows nor the counters."""
    pools = {"p": Pool("p", policy=Policy(quota_requests_per_minute=5, quota_requests_per_day=100))}
    keys = [key("k1", project="proj-a")]
    counter = QuotaCounter()

    def rows(now: float) -> set[tuple[str, str]]:
        return {(row.model, row.metric.value) for row in quota_rows(pools, keys, {}, counter, 1, now)}

    counter.reserve("l0", "proj-a", "m", NOW, 10)
    counter.settle("l0", "proj-a", "m", Outcome(200, input_tokens=10), NOW)
    before = rows(NOW)
    assert before == {("m", "requests_per_minute"), ("m", "requests_per_day")}
    for i in range(300):
        counter.reserve(f"j{i}", "proj-a", f"junk-{i}", NOW, 10)
        counter.settle(f"j{i}", "proj-a", f"junk-{i}", Outcome(404, error_status="NOT_FOUND"), NOW + 1)
    assert rows(NOW + 1) == before
    assert set(counter.projects()) == {("proj-a", "m")} and len(counter) == 1
    counter.reserve("gone", "proj-a", "junk-x", NOW + 1)  # a lease reclaimed unreleased
    counter.reserve("q", "proj-a", "m2", NOW + 1)
    assert rows(NOW + 1) == before  # in flight: nothing the upstream served yet
    counter.expired("gone")
    counter.settle("q", "proj-a", "m2", Outcome(429, error_status="RESOURCE_EXHAUSTED"), NOW + 2)
    assert {model for model, _ in rows(NOW + 2)} == {"m", "m2"}  # a quota answer: the model exists
    assert len(counter) == 2
    tomorrow = next_pacific_midnight(NOW) + 1
    counter.prune(tomorrow)  # every window ended: forgotten
    assert len(counter) == 0 and rows(tomorrow) == set()
