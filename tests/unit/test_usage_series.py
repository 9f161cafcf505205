"""The usage summary's series: one pool's figures per bucket and its errors by kind, every replica's buckets summed."""

from __future__ import annotations

import orjson

from services.keyring.domain.usage import BUCKET_S, Bucket, Call, UsageCounter, summarise


def _counter(now: float, calls: list[Call]) -> UsageCounter:
    counter = UsageCounter()
    for call in calls:
        counter.count(now, call)
    return counter


def test_series_sums_replicas_per_bucket_and_pool_within_the_window() -> None:
    now = 100 * BUCKET_S + 10
    ok, failed = Call("busy", "k1", "t1", False, 1, 2), Call("busy", "k2", "t1", True, 1, 0, kind="rate_limited")
    replica_a = _counter(now, [ok, ok, failed])
    replica_a.count(now - BUCKET_S, ok)  # the bucket before
    replica_a.count(now - 2 * 3600, ok)  # outside the hour
    replica_b = _counter(now, [ok, Call("other", "k3", "", False, 0, 0)])
    replica_b.count(now, Call("busy", "k2", "", True, 0, 0, kind="upstream_trouble"))
    replica_b.count(now, Call("busy", "k2", "", True, 0, 0))  # a kind not recorded: in errors only
    stored = [*replica_a.buckets.values(), *replica_b.buckets.values()]
    buckets = [Bucket.from_dict(orjson.loads(orjson.dumps(bucket.to_dict()))) for bucket in stored]  # as in etcd

    summary = summarise(buckets, now - 3600, "busy")

    series = {key: (figures.requests, figures.errors) for key, figures in summary.series.items()}
    assert series == {(99 * BUCKET_S, "busy"): (1, 0), (100 * BUCKET_S, "busy"): (6, 3)}
    assert summary.series_errors == {(100 * BUCKET_S, "busy"): {"rate_limited": 1, "upstream_trouble": 1}}
    assert list(summary.series) == sorted(summary.series)  # oldest first
    assert summary.pools["busy"].requests == sum(requests for requests, _ in series.values())
