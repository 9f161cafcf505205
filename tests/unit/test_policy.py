"""The outcome policy, row by row of the brief's table."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.answers import AnswerKind
from services.keyring.domain.models import (
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
from services.keyring.domain.policy import PACIFIC, Verdict, judge, next_pacific_midnight

from .builders import key

NOW = 1_750_000_000.0
POLICY = Policy()


def verdict(outcome: Outcome, project: str = "", cooldowns: dict | None = None, **fields: object):
    return judge(outcome, key("k1", project=project, **fields), "gemini-2.5-flash", POLICY, NOW, cooldowns or {})


def test_success_resets_the_failure_count() -> None:
    result = verdict(Outcome(200), consecutive_failures=4, forbidden_strikes=2)
    assert result.key is not None and result.key.consecutive_failures == 0 and result.key.forbidden_strikes == 0
    assert result.cooldown is None


def test_success_of_a_healthy_key_writes_nothing() -> None:
    assert verdict(Outcome(200)) == Verdict()


def test_429_with_retry_info_cools_the_pair_for_that_delay() -> None:
    result = verdict(Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=37))
    assert result.cooldown is not None
    assert result.cooldown.id == CooldownId(CooldownScope.KEY, "k1", "gemini-2.5-flash")
    assert result.cooldown.until == NOW + 37
    assert result.cooldown.reason is CooldownReason.RATE_LIMIT
    assert result.key is not None and result.key.state is KeyState.ACTIVE


def test_429_cools_the_project_when_the_key_has_one() -> None:
    result = verdict(Outcome(429, retry_delay_s=10), project="proj-a")
    assert result.cooldown is not None
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "proj-a", "gemini-2.5-flash")


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
    previous = first.cooldown
    for _ in range(8):
        nxt = verdict(Outcome(429), cooldowns={previous.id: previous})
        assert nxt.cooldown is not None
        durations.append(nxt.cooldown.until - NOW)
        previous = Cooldown(nxt.cooldown.id, nxt.cooldown.reason, NOW - 1, nxt.cooldown.strikes)
    assert durations[:4] == [120, 240, 480, 960]
    assert max(durations) == POLICY.rate_limit_max_cooldown_s


def test_old_strikes_are_forgotten() -> None:
    old = Cooldown(CooldownId(CooldownScope.KEY, "k1", "gemini-2.5-flash"), CooldownReason.RATE_LIMIT, NOW - 7200, 5)
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
    running = Cooldown(CooldownId(CooldownScope.KEY, "k1", "gemini-2.5-flash"), CooldownReason.DAILY_QUOTA, NOW + 5000)
    result = verdict(Outcome(429, retry_delay_s=5), cooldowns={running.id: running})
    assert result.cooldown is None


def test_routine_success_is_exactly_a_success_that_changes_nothing() -> None:
    from services.keyring.domain.policy import is_routine_success

    for fields in ({}, {"consecutive_failures": 1}, {"forbidden_strikes": 1}, {"state": KeyState.SUSPENDED}):
        for outcome in (Outcome(200), Outcome(204), Outcome(429), Outcome(0, transport=Transport.TIMEOUT)):
            candidate = key("k1", **fields)
            routine = is_routine_success(outcome, candidate)
            assert routine == (outcome.http_status in (200, 204) and not fields)
            if routine:
                assert judge(outcome, candidate, "m", POLICY, NOW, {}) == Verdict()


def test_a_model_not_on_the_tier_is_for_now_a_429_like_any_other() -> None:
    not_on_tier = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="0")
    assert Outcome(429, violations=(not_on_tier,)).kind is AnswerKind.MODEL_NOT_ON_TIER
    result = verdict(Outcome(429, retry_delay_s=12, violations=(not_on_tier,)), project="proj-a")
    assert result == verdict(Outcome(429, retry_delay_s=12), project="proj-a")
    assert result.cooldown is not None and result.cooldown.reason is CooldownReason.RATE_LIMIT


def test_the_policy_decides_by_the_shared_classifier_and_has_a_row_for_every_kind() -> None:
    by_kind = {
        AnswerKind.OK: Outcome(200),
        AnswerKind.RATE_LIMITED: Outcome(429),
        AnswerKind.DAILY_QUOTA: Outcome(429, violations=(QuotaViolation("RequestsPerDay"),)),
        AnswerKind.MODEL_NOT_ON_TIER: Outcome(429, violations=(QuotaViolation("x", quota_value="0"),)),
        AnswerKind.KEY_INVALID: Outcome(401, error_reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        AnswerKind.KEY_FORBIDDEN: Outcome(403, error_reason="CONSUMER_SUSPENDED"),
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
