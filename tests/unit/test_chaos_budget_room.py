"""The chaos bench's budget check (token_budget_death): a refusal counts as one with room left only by the
documented rules (docs/operator-guide.md): a request counts when a lease is granted, so a lease that served
nobody (a failover after an upstream 429) spends one, and two survivors' shares are each rounded down.

The run that failed: the survivors' caps were reached, the minute ended a few calls short of 300, and every
later refusal counted as one with room although keyring had charged the budget for those calls' failed attempts.
"""

from __future__ import annotations

from bench.chaos_bench import BUDGET_RPM, budget_figures

KILLED = 600.0 + 34.5  # second 34.5 of an epoch minute


def minute(served: int, refused_after: int) -> list[tuple[float, float, str]]:
    """``served`` 200s spread over the minute's first 50 s, then ``refused_after`` 429s in its last 9 s."""
    answers = [(600.0 + 50 * i / served, 600.0 + 50 * i / served + 0.01, "200") for i in range(served)]
    answers += [
        (651.0 + 8 * i / refused_after, 651.0 + 8 * i / refused_after + 0.01, "429") for i in range(refused_after)
    ]
    return answers


def test_refusals_once_the_budget_is_charged_in_full_have_no_room_left() -> None:
    # 296 served, 300 leases charged (4 failovers after an upstream 429): the budget is spent.
    figures = budget_figures(minute(296, 80), KILLED, 11.0, 3, attempts=300)
    assert figures["budget_charged_unserved"] == 4
    assert figures["refused_with_budget_left"] == {}
    # One short of the documented room (the rounding of two survivors' shares): no room either.
    assert budget_figures(minute(299, 80), KILLED, 11.0, 3, attempts=299)["refused_with_budget_left"] == {}


def test_refusals_while_the_budget_was_not_charged_in_full_still_count() -> None:
    figures = budget_figures(minute(290, 80), KILLED, 11.0, 3, attempts=290)  # nothing charged beyond the 200s
    assert figures["budget_room"] == BUDGET_RPM - 1
    assert figures["refused_with_budget_left"] == {"after_detection": 80}
    # Without keyring's count (unreachable), every call short of the room is one with room, as before.
    assert budget_figures(minute(296, 80), KILLED, 11.0, 3, attempts=None)["refused_with_budget_left"]
