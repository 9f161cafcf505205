"""The outcome policy, row by row of the brief's table."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.answers import AnswerKind
from services.keyring.domain.models import (
    ALL_MODELS,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Outcome,
    Policy,
    QuotaViolation,
    Transport,
)
from services.keyring.domain.policy import (
    PACIFIC,
    SPEND_WINDOW_S,
    Verdict,
    is_routine_success,
    judge,
    next_pacific_midnight,
)

from .builders import key

NOW = 1_750_000_000.0
POLICY = Policy()
MODEL = "gemini-3.5-flash"


def verdict(outcome: Outcome, project: str = "", cooldowns: dict | None = None, **fields: object):
    return judge(outcome, key("k1", project=project, **fields), MODEL, POLICY, NOW, cooldowns or {})


def test_success_resets_the_failure_count() -> None:
    result = verdict(Outcome(200), consecutive_failures=4, forbidden_strikes=2)
    assert result.key is not None and result.key.consecutive_failures == 0 and result.key.forbidden_strikes == 0
    assert result.cooldown is None


def test_success_of_a_healthy_key_writes_nothing() -> None:
    assert verdict(Outcome(200)) == Verdict()


def test_429_with_retry_info_cools_the_pair_for_that_delay() -> None:
    result = verdict(Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=37))
    assert result.cooldown is not None
    assert result.cooldown.id == CooldownId(CooldownScope.KEY, "k1", MODEL)
    assert result.cooldown.until == NOW + 37
    assert result.cooldown.reason is CooldownReason.RATE_LIMIT
    assert result.key is not None and result.key.state is KeyState.ACTIVE


def test_429_cools_the_project_when_the_key_has_one() -> None:
    result = verdict(Outcome(429, retry_delay_s=10), project="proj-a")
    assert result.cooldown is not None
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)


def test_per_day_quota_cools_until_pacific_midnight() -> None:
    outcome = Outcome(
        429, retry_delay_s=20, violations=(QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),)
    )
    result = verdict(outcome)
    assert result.cooldown is not None and result.cooldown.reason is CooldownReason.DAILY_QUOTA
    reset = dt.datetime.fromtimestamp(result.cooldown.until, PACIFIC)
    assert (reset.hour, reset.minute, reset.second) == (0, 0, 0)
    assert 0 < result.cooldown.until - NOW <= 24 * 3600


def test_pacific_midnight_across_daylight_saving_change() -> None:
    # 2026-03-08 is the US spring-forward day: that local day has 23 hours.
    before = dt.datetime(2026, 3, 8, 1, 0, tzinfo=PACIFIC).timestamp()
    assert next_pacific_midnight(before) - before == 22 * 3600


def test_429_without_delay_backs_off_doubling_and_capped() -> None:
    first = verdict(Outcome(429))
    assert first.cooldown is not None and first.cooldown.until == NOW + 60
    durations = []
    # Each repeat fails a call sent after the previous cooldown ended (one in force is the same event).
    previous = Cooldown(first.cooldown.id, first.cooldown.reason, NOW - 1, first.cooldown.strikes)
    for _ in range(8):
        nxt = verdict(Outcome(429), cooldowns={previous.id: previous})
        assert nxt.cooldown is not None
        durations.append(nxt.cooldown.until - NOW)
        previous = Cooldown(nxt.cooldown.id, nxt.cooldown.reason, NOW - 1, nxt.cooldown.strikes)
    assert durations[:4] == [120, 240, 480, 960]
    assert max(durations) == POLICY.rate_limit_max_cooldown_s


def test_old_strikes_are_forgotten() -> None:
    old = Cooldown(CooldownId(CooldownScope.KEY, "k1", MODEL), CooldownReason.RATE_LIMIT, NOW - 7200, 5)
    result = verdict(Outcome(429), cooldowns={old.id: old})
    assert result.cooldown is not None and result.cooldown.strikes == 1


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(401, error_reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        Outcome(400, error_reason="API_KEY_INVALID"),
        Outcome(400, error_reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        Outcome(403, error_reason="API_KEY_REPORTED_LEAKED"),
    ],
)
def test_bad_key_becomes_invalid(outcome: Outcome) -> None:
    result = verdict(outcome)
    assert result.key is not None and result.key.state is KeyState.INVALID
    assert result.key.last_error is not None and result.key.last_error.http_status == outcome.http_status


def test_403_suspends_then_invalidates_after_threshold() -> None:
    suspended = Outcome(403, error_status="PERMISSION_DENIED", error_reason="CONSUMER_SUSPENDED")
    first = verdict(suspended)
    assert first.key is not None and first.key.state is KeyState.SUSPENDED
    assert first.key.state_until == NOW + POLICY.suspend_s
    second = judge(suspended, first.key, "m", POLICY, NOW, {})
    assert second.key is not None and second.key.state is KeyState.SUSPENDED
    third = judge(suspended, second.key, "m", POLICY, NOW, {})
    assert third.key is not None and third.key.state is KeyState.INVALID


# Issue 11: a 401/403 that names no key-blaming reason is the request's fault (a credential or header the
# client slipped in): it changes nothing, however often it comes (before, a bare 401 made the key invalid).
@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(401),
        Outcome(401, error_status="UNAUTHENTICATED"),
        Outcome(403, error_status="PERMISSION_DENIED"),
        Outcome(403, error_status="PERMISSION_DENIED", error_reason="USER_PROJECT_DENIED"),
        Outcome(401, error_reason="ACCESS_TOKEN_EXPIRED"),
    ],
)
def test_401_or_403_without_a_key_reason_does_not_touch_the_key(outcome: Outcome) -> None:
    assert outcome.kind is AnswerKind.REQUEST_AT_FAULT
    assert verdict(outcome) == Verdict()
    assert verdict(outcome, consecutive_failures=2, forbidden_strikes=1) == Verdict()


# Issue 18: a 403 BILLING_DISABLED or SERVICE_DISABLED says the key's project lacks what the request asked (a
# paid model or feature, another API): a client chooses those, so the key is never struck, however often.
@pytest.mark.parametrize("reason", ["BILLING_DISABLED", "SERVICE_DISABLED"])
def test_a_feature_the_project_lacks_does_not_strike_the_key(reason: str) -> None:
    outcome = Outcome(403, error_status="PERMISSION_DENIED", error_reason=reason)
    assert outcome.kind is AnswerKind.NOT_FOR_PROJECT and outcome.kind.tries_another_key
    assert verdict(outcome) == Verdict()
    assert verdict(outcome, forbidden_strikes=POLICY.forbidden_threshold - 1) == Verdict()


def test_client_400_does_not_touch_the_key() -> None:
    assert verdict(Outcome(400, error_status="INVALID_ARGUMENT")) == Verdict()


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(500),
        Outcome(501),
        Outcome(502),
        Outcome(504),
        Outcome(408),
        Outcome(0, transport=Transport.TIMEOUT),
        Outcome(0, transport=Transport.CONNECTION),
    ],
)
def test_upstream_trouble_cools_the_key_pair_briefly(outcome: Outcome) -> None:
    result = verdict(outcome, project="proj-a")
    assert result.cooldown is not None
    assert result.cooldown.id.scope is CooldownScope.KEY  # not the project: not a quota
    assert result.cooldown.until == NOW + POLICY.server_error_cooldown_s
    assert result.key is not None and result.key.state is KeyState.ACTIVE


def test_503_overloaded_is_no_penalty() -> None:
    assert verdict(Outcome(503, error_status="UNAVAILABLE")) == Verdict()


def test_cancelled_by_client_says_nothing() -> None:
    assert verdict(Outcome(0, transport=Transport.CANCELLED), consecutive_failures=2) == Verdict()


def test_disabled_key_stays_disabled_on_failure() -> None:
    result = verdict(Outcome(400, error_reason="API_KEY_INVALID"), state=KeyState.DISABLED)
    assert result.key is not None and result.key.state is KeyState.DISABLED


def test_shorter_cooldown_does_not_replace_a_longer_one() -> None:
    running = Cooldown(CooldownId(CooldownScope.KEY, "k1", MODEL), CooldownReason.DAILY_QUOTA, NOW + 5000)
    result = verdict(Outcome(429, retry_delay_s=5), cooldowns={running.id: running})
    assert result.cooldown is None


def test_routine_success_is_exactly_a_success_that_changes_nothing() -> None:
    for fields in ({}, {"consecutive_failures": 1}, {"forbidden_strikes": 1}, {"state": KeyState.SUSPENDED}):
        for outcome in (Outcome(200), Outcome(204), Outcome(429), Outcome(0, transport=Transport.TIMEOUT)):
            candidate = key("k1", **fields)
            routine = is_routine_success(outcome, candidate)
            assert routine == (outcome.http_status in (200, 204) and not fields)
            if routine:
                assert judge(outcome, candidate, "m", POLICY, NOW, {}) == Verdict()


NOT_ON_TIER = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="0")


def test_a_model_not_on_the_tier_is_a_fact_until_the_pacific_midnight_not_a_backoff() -> None:
    assert Outcome(429, violations=(NOT_ON_TIER,)).kind is AnswerKind.MODEL_NOT_ON_TIER
    result = verdict(Outcome(429, retry_delay_s=12, violations=(NOT_ON_TIER,)), project="proj-a")
    assert result.key is None  # not the key's fault: its slate stays clean
    assert result.cooldown is not None and result.cooldown.reason is CooldownReason.NOT_ON_TIER
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)
    assert result.cooldown.until == next_pacific_midnight(NOW) and result.cooldown.strikes == 0
    # A straggler of the same day changes nothing (no strike, no longer cooldown): one call a day at most.
    again = verdict(
        Outcome(429, violations=(NOT_ON_TIER,)), project="proj-a", cooldowns={result.cooldown.id: result.cooldown}
    )
    assert again == Verdict()
    # The next day's answer: until the next midnight, still without a strike.
    later = judge(
        Outcome(429, violations=(NOT_ON_TIER,)), key("k1", project="proj-a"), MODEL, POLICY,
        result.cooldown.until + 5, {result.cooldown.id: result.cooldown},
    )  # fmt: skip
    assert later.cooldown is not None and later.cooldown.strikes == 0
    assert later.cooldown.until == next_pacific_midnight(result.cooldown.until + 5)


def test_an_oversized_request_cools_nothing() -> None:
    tpm = QuotaViolation("GenerateContentInputTokensPerModelPerMinute-FreeTier", quota_value="250000")
    oversized = Outcome(429, violations=(tpm,), estimated_input_tokens=300_000)
    assert oversized.kind is AnswerKind.REQUEST_AT_FAULT
    assert verdict(oversized, project="proj-a") == Verdict()
    # A request within the limit that meets a spent TPM window is a rate limit like any other.
    assert Outcome(429, violations=(tpm,), estimated_input_tokens=1_000).kind is AnswerKind.RATE_LIMITED


def test_a_spend_limit_cools_the_whole_project_for_its_window() -> None:
    spend = QuotaViolation("SpendBasedRateLimitPerBillingTier", quota_metric="generativelanguage.googleapis.com/spend")
    result = verdict(Outcome(429, violations=(spend,)), project="proj-a")
    assert result.cooldown is not None and result.cooldown.reason is CooldownReason.SPEND_LIMIT
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "proj-a", ALL_MODELS)
    assert result.cooldown.until == NOW + SPEND_WINDOW_S
    assert result.cooldown.id in key("k2", project="proj-a").cooldown_subjects("another-model")


def test_the_policy_decides_by_the_shared_classifier_and_has_a_row_for_every_kind() -> None:
    by_kind = {
        AnswerKind.OK: Outcome(200),
        AnswerKind.RATE_LIMITED: Outcome(429),
        AnswerKind.DAILY_QUOTA: Outcome(429, violations=(QuotaViolation("RequestsPerDay"),)),
        AnswerKind.MODEL_NOT_ON_TIER: Outcome(429, violations=(QuotaViolation("x", quota_value="0"),)),
        AnswerKind.KEY_INVALID: Outcome(401, error_reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        AnswerKind.KEY_FORBIDDEN: Outcome(403, error_reason="CONSUMER_SUSPENDED"),
        AnswerKind.NOT_FOR_PROJECT: Outcome(403, error_reason="BILLING_DISABLED"),
        AnswerKind.KEY_MISCONFIGURED: Outcome(403, error_reason="API_KEY_IP_ADDRESS_BLOCKED"),
        AnswerKind.BILLING_DEPLETED: Outcome(402, error_status="RESOURCE_EXHAUSTED"),
        AnswerKind.MODEL_GONE_FOR_PROJECT: Outcome(404, error_message="x is no longer available to new users."),
        AnswerKind.REQUEST_AT_FAULT: Outcome(404),
        AnswerKind.UPSTREAM_TROUBLE: Outcome(500),
        AnswerKind.MODEL_OVERLOADED: Outcome(503),
        AnswerKind.TRANSPORT_FAILURE: Outcome(0, transport=Transport.TIMEOUT),
        AnswerKind.CANCELLED: Outcome(0, transport=Transport.CANCELLED),
    }
    assert set(by_kind) == set(AnswerKind)
    for kind, outcome in by_kind.items():
        assert outcome.kind is kind
        verdict(outcome, consecutive_failures=1)  # no kind without a row


# Issue 13, finding 5: one quota event is one strike.

PAIR = CooldownId(CooldownScope.KEY, "k1", MODEL)
PROJECT_PAIR = CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)


def at(outcome: Outcome, now: float, cooldowns: dict[CooldownId, Cooldown], project: str = "") -> Verdict:
    return judge(outcome, key("k1", project=project), MODEL, POLICY, now, cooldowns)


def apply(result: Verdict, cooldowns: dict[CooldownId, Cooldown]) -> None:
    if result.cooldown is not None:
        cooldowns[result.cooldown.id] = result.cooldown


@settings(max_examples=200, deadline=None)
@given(
    answers=st.lists(
        st.tuples(st.floats(0, 59.9), st.floats(0, 30)),  # (arrival after the first, latency)
        min_size=1,
        max_size=60,
    ),
    project=st.sampled_from(["", "proj-a"]),
)
def test_a_storm_shorter_than_the_base_backoff_is_one_strike(answers: list[tuple[float, float]], project: str) -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    first = at(Outcome(429), NOW, cooldowns, project)
    apply(first, cooldowns)
    for arrival, latency in sorted(answers):
        result = at(Outcome(429, latency_s=latency), NOW + arrival, cooldowns, project)
        assert result.cooldown is None  # nothing to write about the pair
        assert result.key is not None and result.key.last_error is not None  # the key still counts the answer
    [record] = cooldowns.values()
    assert record.id == (PROJECT_PAIR if project else PAIR)
    assert record.strikes == 1 and record.until == NOW + POLICY.rate_limit_cooldown_s


@settings(max_examples=200, deadline=None)
@given(
    delays=st.lists(st.floats(0, 600), min_size=1, max_size=20),
    gaps=st.lists(st.floats(0, 59), min_size=20, max_size=20),
)
def test_retry_info_during_a_cooldown_only_moves_its_end_later(delays: list[float], gaps: list[float]) -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    apply(at(Outcome(429), NOW, cooldowns), cooldowns)
    now = NOW
    for delay, gap in zip(delays, gaps, strict=False):
        now += gap / len(delays)  # all inside the first cooldown (60 s)
        before = cooldowns[PAIR]
        apply(at(Outcome(429, retry_delay_s=delay), now, cooldowns), cooldowns)
        after = cooldowns[PAIR]
        assert after.strikes == 1
        assert after.until == max(before.until, now + delay if delay > 0 else 0.0)


def test_a_call_sent_after_the_cooldown_ended_that_fails_again_escalates() -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    apply(at(Outcome(429), NOW, cooldowns), cooldowns)
    later = NOW + 61
    second = at(Outcome(429, latency_s=0.5), later, cooldowns)
    assert second.cooldown is not None and second.cooldown.strikes == 2
    assert second.cooldown.until == later + 120


# A 429 naming a per-minute quota, no RetryInfo: the chaos bench's storm (the simulator's sticky rate_limit).
RPM = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10")
STORM_POLICY = Policy(rate_limit_cooldown_s=12)  # bench/chaos_bench.py FULL: base_cooldown_s


def storm_record(start: float, length: float) -> Cooldown:
    """The project pair's record after every key answers 429 (RPM) to calls sent every 0.1 s for ``length`` s."""
    cooldowns: dict[CooldownId, Cooldown] = {}
    steps = round(length * 10)
    for step in range(steps):
        sent = start + step / 10
        outcome = Outcome(429, violations=(RPM,), latency_s=0.05)
        result = judge(outcome, key(f"k{step % 5}", project="proj-a"), MODEL, STORM_POLICY, sent + 0.05, cooldowns)
        apply(result, cooldowns)
    return cooldowns[PROJECT_PAIR]


def test_a_storm_across_a_minute_boundary_cools_for_one_base_backoff_after_it() -> None:
    # The failing chaos run: the storm (10 s) began 54.15 s into a minute. Its first cooldown ends at the minute's
    # end (5.85 s in); the storm goes on, so the pair cools again, for the base backoff (not twice it: 24 s,
    # keys cooling ~20 s after the upstream recovered).
    start = NOW - NOW % 60 + 54.15
    record = storm_record(start, 10)
    minute_end = start - start % 60 + 60
    assert record.strikes == 1
    assert minute_end + 12 <= record.until <= minute_end + 12.2
    # A storm that outlasts that backoff as well doubles as before: the pair served it and failed again.
    longer = storm_record(start, 20)
    assert longer.strikes == 2 and longer.until > minute_end + 12 + 24


@settings(max_examples=100, deadline=None)
@given(offset=st.floats(0, 59.9), length=st.floats(0.1, 11.9))
def test_a_storm_shorter_than_the_base_backoff_never_doubles_wherever_the_minute_ends(
    offset: float, length: float
) -> None:
    start = NOW - NOW % 60 + offset
    record = storm_record(start, length)
    assert record.strikes == 1
    assert record.until <= start + length + 12.1  # the last cooldown began within the storm


def test_a_straggler_sent_before_the_end_and_answered_after_it_is_the_same_event() -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    apply(at(Outcome(429), NOW, cooldowns), cooldowns)
    straggler = at(Outcome(0, transport=Transport.TIMEOUT, latency_s=90), NOW + 70, cooldowns)
    # A timeout is trouble: it cools the (key, model) pair, here the same record; sent at NOW - 20: same event.
    assert straggler.cooldown is None
    late_429 = at(Outcome(429, latency_s=15), NOW + 70, cooldowns)
    assert late_429.cooldown is None


def test_upstream_trouble_while_the_pair_cools_adds_no_strike() -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    apply(at(Outcome(500), NOW, cooldowns), cooldowns)
    for offset in (0.1, 5, 29):
        assert at(Outcome(502), NOW + offset, cooldowns).cooldown is None
    assert cooldowns[PAIR].strikes == 1 and cooldowns[PAIR].until == NOW + POLICY.server_error_cooldown_s
    again = at(Outcome(500), NOW + 31, cooldowns)
    assert again.cooldown is not None and again.cooldown.strikes == 2


def test_a_per_day_quota_during_a_rate_limit_cooldown_extends_it_to_midnight() -> None:
    cooldowns: dict[CooldownId, Cooldown] = {}
    apply(at(Outcome(429), NOW, cooldowns), cooldowns)
    daily = Outcome(429, violations=(QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),))
    result = at(daily, NOW + 1, cooldowns)
    assert result.cooldown is not None and result.cooldown.reason is CooldownReason.DAILY_QUOTA
    assert result.cooldown.until == next_pacific_midnight(NOW + 1) and result.cooldown.strikes == 1


def ended(strikes: int, pair: CooldownId = PAIR, until: float = NOW - 10) -> dict[CooldownId, Cooldown]:
    return {pair: Cooldown(pair, CooldownReason.RATE_LIMIT, until, strikes, revision=7)}


@pytest.mark.parametrize(("strikes", "decayed"), [(1, 0), (2, 1), (5, 2), (16, 8)])
def test_a_success_after_the_cooldown_halves_its_strikes(strikes: int, decayed: int) -> None:
    cooldowns = ended(strikes)
    assert not is_routine_success(Outcome(200), key("k1"), MODEL, cooldowns)
    result = at(Outcome(200), NOW, cooldowns)
    assert result.cooldown is not None
    assert result.cooldown.strikes == decayed
    assert result.cooldown.until == NOW - 10 and result.cooldown.revision == 7  # guarded by the record read
    assert result.key is None  # the key's slate was clean


def test_a_decayed_pair_starts_again_from_the_base_backoff() -> None:
    cooldowns = ended(3)
    for _ in range(2):
        apply(at(Outcome(200), NOW, cooldowns), cooldowns)
    assert cooldowns[PAIR].strikes == 0
    assert is_routine_success(Outcome(200), key("k1"), MODEL, cooldowns)
    again = at(Outcome(429), NOW + 1, cooldowns)
    assert again.cooldown is not None and again.cooldown.strikes == 1
    assert again.cooldown.until == NOW + 1 + POLICY.rate_limit_cooldown_s


def test_a_success_decays_the_project_pair_of_any_key_of_the_project() -> None:
    cooldowns = ended(4, PROJECT_PAIR)
    other_key = key("k2", project="proj-a")
    assert not is_routine_success(Outcome(200), other_key, MODEL, cooldowns)
    result = judge(Outcome(200), other_key, MODEL, POLICY, NOW, cooldowns)
    assert result.cooldown is not None and result.cooldown.id == PROJECT_PAIR and result.cooldown.strikes == 2


def test_a_success_does_not_touch_a_cooldown_in_force_or_one_that_ended_after_the_call_left() -> None:
    running = ended(3, until=NOW + 30)
    assert at(Outcome(200), NOW, running).cooldown is None
    just_over = ended(3, until=NOW - 1)
    assert at(Outcome(200, latency_s=5), NOW, just_over).cooldown is None  # sent while it cooled


def test_the_routine_fast_path_needs_no_cooldowns_and_ignores_other_pairs() -> None:
    healthy = key("k1")
    assert is_routine_success(Outcome(200), healthy)
    assert is_routine_success(Outcome(200), healthy, MODEL, {})
    elsewhere = ended(5, CooldownId(CooldownScope.KEY, "k1", "gemini-other"))
    assert is_routine_success(Outcome(200), healthy, MODEL, elsewhere)
    assert is_routine_success(Outcome(200), healthy, MODEL, ended(0))


_COOLDOWN_IDS = st.sampled_from([PAIR, PROJECT_PAIR, CooldownId(CooldownScope.KEY, "k2", MODEL)])
_COOLDOWNS = st.dictionaries(
    _COOLDOWN_IDS,
    st.builds(
        lambda until, strikes: (until, strikes),
        st.floats(NOW - 8000, NOW + 8000),
        st.integers(0, 12),
    ),
    max_size=3,
).map(lambda d: {i: Cooldown(i, CooldownReason.RATE_LIMIT, u, s) for i, (u, s) in d.items()})


@settings(max_examples=300, deadline=None)
@given(
    cooldowns=_COOLDOWNS,
    project=st.sampled_from(["", "proj-a"]),
    status=st.sampled_from([200, 429, 500]),
    retry=st.sampled_from([0.0, 5.0, 4000.0]),
    latency=st.floats(0, 100),
)
def test_strikes_grow_by_at_most_one_and_only_for_a_call_sent_after_the_end(
    cooldowns: dict[CooldownId, Cooldown], project: str, status: int, retry: float, latency: float
) -> None:
    subject = key("k1", project=project)
    outcome = Outcome(status, retry_delay_s=retry, latency_s=latency)
    result = judge(outcome, subject, MODEL, POLICY, NOW, cooldowns)
    if is_routine_success(outcome, subject, MODEL, cooldowns):
        assert result == Verdict()
    if result.cooldown is None:
        return
    previous = cooldowns.get(result.cooldown.id)
    if previous is None:
        assert result.cooldown.strikes == 1
        return
    sent = NOW - latency
    if status == 200:
        assert result.cooldown.strikes == previous.strikes // 2 and previous.until <= sent
        assert result.cooldown.until == previous.until
    elif sent < previous.until:
        assert result.cooldown.strikes == previous.strikes and result.cooldown.until > previous.until
    else:
        assert result.cooldown.strikes in (1, previous.strikes + 1)
