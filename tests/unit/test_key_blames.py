"""The budget of outcomes blaming a key per caller identity (issue 18, finding 10): ``domain/blames.py``, and
which outcomes blame a key at all (``policy.blames_key``)."""

from __future__ import annotations

import pytest

from services.keyring.domain.blames import BlameBudget
from services.keyring.domain.models import Outcome, Transport
from services.keyring.domain.policy import blames_key


def test_a_caller_spends_its_budget_then_refills_at_its_rate_and_others_keep_theirs() -> None:
    budget = BlameBudget(per_minute=3)
    assert [budget.allow("edge", 100.0) for _ in range(4)] == [True, True, True, False]
    assert budget.allow("service", 100.0)  # a budget of its own
    assert not budget.allow("edge", 119.0)  # 19 s: under one blame refilled (one every 20 s)
    assert budget.allow("edge", 121.0) and not budget.allow("edge", 121.0)
    assert [budget.allow("edge", 1000.0) for _ in range(4)] == [True, True, True, False]  # never more than a minute's


def test_a_clock_going_back_refills_nothing() -> None:
    budget = BlameBudget(per_minute=1)
    assert budget.allow("edge", 100.0)
    assert not budget.allow("edge", 50.0)
    assert not budget.allow("edge", 100.0)


def test_callers_past_the_bound_forget_only_full_buckets() -> None:
    budget = BlameBudget(per_minute=2, max_callers=2)
    assert budget.allow("a", 0.0) and budget.allow("b", 0.0) and budget.allow("b", 0.0)
    assert budget.allow("c", 60.0)  # "a" and "b" refilled by now: forgotten, nothing lost
    assert budget.allow("b", 60.0) and budget.allow("b", 60.0) and not budget.allow("b", 60.0)


def test_the_budget_needs_one_blame_at_least() -> None:
    with pytest.raises(ValueError):
        BlameBudget(per_minute=0)


@pytest.mark.parametrize(
    ("outcome", "blames"),
    [
        (Outcome(http_status=200), False),
        (Outcome(http_status=400, error_status="INVALID_ARGUMENT"), False),  # the request's fault
        (Outcome(http_status=0, transport=Transport.CANCELLED), False),
        (Outcome(http_status=401, error_status="UNAUTHENTICATED", error_reason="API_KEY_INVALID"), True),
        (Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED"), True),
        (Outcome(http_status=503, error_status="UNAVAILABLE"), False),  # overloaded: busy for everyone
        (Outcome(http_status=500, error_status="INTERNAL"), True),
    ],
    ids=["ok", "request-at-fault", "cancelled", "key-invalid", "rate-limited", "overloaded", "upstream-trouble"],
)
def test_which_outcomes_blame_a_key(outcome: Outcome, blames: bool) -> None:
    assert blames_key(outcome) is blames
