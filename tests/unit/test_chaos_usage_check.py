"""The chaos bench's usage check (issue 19, chaos fix 3): equality, except where an edge was SIGKILLed.

A killed edge's leases are reclaimed as calls of unknown outcome whether or not each reached the upstream,
so there the check is known <= upstream <= known + unknown, and the over-count is reported, not failed.
"""

from __future__ import annotations

from typing import Any

from bench.chaos_bench import usage_violations


def result(counted: int, unknown: int, upstream: int, killed: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {"usage_counted": counted, "usage_unknown": unknown, "upstream_calls": upstream}
    if killed:
        figures["cut_by_kill"] = {"stream_cut": 20}
    return figures


def test_a_killed_edges_reclaimed_leases_may_count_calls_the_upstream_never_saw() -> None:
    assert usage_violations(result(1005, 25, 1000, killed=True)) == []  # 5 reclaimed before their send
    assert usage_violations(result(1000, 25, 1000, killed=True)) == []  # every reclaimed one was billed


def test_outside_the_bound_or_without_a_kill_the_usage_check_fails() -> None:
    assert usage_violations(result(1005, 3, 1000, killed=True))  # 1002 known > 1000 billed: counted twice
    assert usage_violations(result(995, 25, 1000, killed=True))  # 5 billed calls counted nowhere
    assert usage_violations(result(1001, 1, 1000, killed=False))  # no kill: usage equals the upstream's count
    assert usage_violations(result(1000, 0, 1000, killed=False)) == []
