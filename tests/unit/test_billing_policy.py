"""Issue 21: billing accounts, key-configuration faults and Google's capacity in the outcome policy."""

from __future__ import annotations

import pytest

from services.cli.key_file import KeyFileError, parse_key_text
from services.common.answers import AnswerKind
from services.devstack.fake_keys import fake_auth_key
from services.keyring.domain.models import (
    ALL_MODELS,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Outcome,
    Policy,
    QuotaViolation,
)
from services.keyring.domain.policy import (
    BILLING_DEPLETED_S,
    MISCONFIGURED_MESSAGE,
    MODEL_GONE_S,
    SPEND_WINDOW_S,
    Verdict,
    judge,
)

from .builders import key

NOW = 1_800_000_000.0
MODEL = "gemini-3.5-flash"
ACCOUNT = CooldownId(CooldownScope.ACCOUNT, "billing-a", ALL_MODELS)


def test_a_402_cools_every_project_of_the_billing_account_and_no_other() -> None:
    depleted = Outcome(402, error_status="RESOURCE_EXHAUSTED", error_message="Your prepayment credits are depleted.")
    result = judge(depleted, key("k1", project="p1", billing_account="billing-a"), MODEL, Policy(), NOW, {})
    assert result.cooldown is not None and result.cooldown.id == ACCOUNT
    assert result.cooldown.reason is CooldownReason.BILLING_DEPLETED
    assert result.cooldown.until == NOW + BILLING_DEPLETED_S
    assert result.key is None  # the key is fine: no strike, no failure
    sibling = key("k2", project="p2", billing_account="billing-a")
    assert ACCOUNT in sibling.cooldown_subjects("gemini-3.7-flash")
    assert ACCOUNT not in key("k3", project="p3", billing_account="billing-b").cooldown_subjects(MODEL)


def test_a_402_without_a_known_account_cools_the_project() -> None:
    result = judge(Outcome(402), key("k1", project="p1"), MODEL, Policy(), NOW, {})
    assert result.cooldown is not None
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "p1", ALL_MODELS)


def test_a_spend_limit_cools_the_billing_account_for_its_window() -> None:
    spend = Outcome(429, violations=(QuotaViolation("SpendLimitPerBillingAccountPer10Minutes"),))
    result = judge(spend, key("k1", project="p1", billing_account="billing-a"), MODEL, Policy(), NOW, {})
    assert result.cooldown is not None and result.cooldown.id == ACCOUNT
    assert result.cooldown.reason is CooldownReason.SPEND_LIMIT
    assert result.cooldown.until == NOW + SPEND_WINDOW_S


def test_a_key_restriction_suspends_with_a_clear_message_and_never_strikes_to_death() -> None:
    blocked = Outcome(403, error_reason="API_KEY_IP_ADDRESS_BLOCKED", error_message="IP address blocked.")
    current = key("k1", project="p1")
    for _ in range(Policy().forbidden_threshold + 2):
        result = judge(blocked, current, MODEL, Policy(), NOW, {})
        assert result.key is not None
        current = result.key
    assert current.state is KeyState.SUSPENDED and current.forbidden_strikes == 0
    assert current.last_error is not None and current.last_error.reason == "API_KEY_IP_ADDRESS_BLOCKED"
    assert current.last_error.message.startswith(MISCONFIGURED_MESSAGE)


def test_capacity_exhausted_never_cools_or_strikes_the_key() -> None:
    busy = Outcome(429, error_status="RESOURCE_EXHAUSTED", error_reason="MODEL_CAPACITY_EXHAUSTED", retry_delay_s=9)
    assert judge(busy, key("k1", project="p1"), MODEL, Policy(), NOW, {}) == Verdict()


def test_a_spend_limit_told_only_in_googles_words_is_one_too() -> None:
    words = "Your project has exceeded its spend-based rate limit for the current 10-minute window."
    spend = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=120, error_message=words)
    result = judge(spend, key("k1", project="p1", billing_account="billing-a"), MODEL, Policy(), NOW, {})
    assert result.cooldown is not None and result.cooldown.id == ACCOUNT
    assert result.cooldown.reason is CooldownReason.SPEND_LIMIT


def test_the_key_file_names_a_billing_account_third_and_checks_its_shape() -> None:
    first, second = fake_auth_key("kf-1"), fake_auth_key("kf-2")
    lines = parse_key_text(f"{first} proj-1 012345-6789AB-CDEF01\n{second}, proj-2\n")
    assert [(line.project, line.billing_account) for line in lines] == [
        ("proj-1", "012345-6789AB-CDEF01"),
        ("proj-2", ""),
    ]
    with pytest.raises(KeyFileError, match="billing account"):
        parse_key_text(f"{first} proj-1 bad/account\n")


def test_a_model_gone_for_new_users_is_a_fact_about_the_project_and_model() -> None:
    words = "This model models/gemini-2.5-flash is no longer available to new users. Please update your code."
    gone = Outcome(404, error_status="NOT_FOUND", error_message=words)
    assert gone.kind is AnswerKind.MODEL_GONE_FOR_PROJECT and gone.kind.tries_another_key
    result = judge(gone, key("k1", project="p1"), "gemini-2.5-flash", Policy(), NOW, {})
    assert result.cooldown is not None and result.key is None
    assert result.cooldown.id == CooldownId(CooldownScope.PROJECT, "p1", "gemini-2.5-flash")
    assert result.cooldown.reason is CooldownReason.MODEL_GONE and result.cooldown.until == NOW + MODEL_GONE_S
    assert Outcome(404, error_message="models/gemini-9 is not found").kind is AnswerKind.REQUEST_AT_FAULT


def test_the_project_number_google_names_is_learnt_and_checked_against_the_operators() -> None:
    told = Outcome(503, error_message="overloaded", consumer_project="123456789012")
    result = judge(told, key("k1", project="123456789012"), MODEL, Policy(), NOW, {})
    assert result.key is not None and result.key.project_number == "123456789012"
    assert result.key.project_warning() == ""
    wrong = judge(told, key("k1", project="999"), MODEL, Policy(), NOW, {}).key
    assert wrong is not None and "123456789012" in wrong.project_warning() and "999" in wrong.project_warning()
    already = key("k1", project="p1", project_number="123456789012")
    assert judge(told, already, MODEL, Policy(), NOW, {}) == Verdict()
