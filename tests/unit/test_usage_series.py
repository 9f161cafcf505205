"""The usage summary's series: one pool's figures per bucket, every replica's buckets summed (the console's chart)."""

from __future__ import annotations

from services.keyring.domain.usage import BUCKET_S, Call, UsageCounter, summarise


def _counter(now: float, calls: list[Call]) -> UsageCounter:
    counter = UsageCounter()
    for call in calls:
        counter.count(now, call)
    return counter


def test_series_sums_replicas_per_bucket_and_pool_within_the_window() -> None:
    now = 100 * BUCKET_S + 10
    ok, failed = Call("busy", "k1", "t1", False, 1, 2), Call("busy", "k2", "t1", True, 1, 0)
    replica_a = _counter(now, [ok, ok, failed])
    replica_a.count(now - BUCKET_S, ok)  # the bucket before
    replica_a.count(now - 2 * 3600, ok)  # outside the hour
    replica_b = _counter(now, [ok, Call("other", "k3", "", False, 0, 0)])
    buckets = [*replica_a.buckets.values(), *replica_b.buckets.values()]

    summary = summarise(buckets, now - 3600, "busy")

    series = {key: (figures.requests, figures.errors) for key, figures in summary.series.items()}
    assert series == {(99 * BUCKET_S, "busy"): (1, 0), (100 * BUCKET_S, "busy"): (4, 1)}
    assert list(summary.series) == sorted(summary.series)  # oldest first
    assert summary.pools["busy"].requests == sum(requests for requests, _ in series.values())
