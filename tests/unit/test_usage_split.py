"""A usage bucket split into a head and key shards joins back to the same bucket (domain/usage.py ``split``)."""

from __future__ import annotations

from services.keyring.domain.usage import Call, UsageCounter, joined, shard_set, split


def test_a_large_bucket_splits_into_shards_that_join_back_and_a_small_one_stays_whole() -> None:
    counter = UsageCounter()
    for index in range(12):
        counter.count(1000.0 + index, Call("main", f"k-{index:02d}", "t-a" if index % 2 else "", index == 3, 5, 7))
    counter.count(1000.0, Call("main", "k-00", "t-b", True, 1, 0, kind="rate_limited", service_tier="flex"))
    [bucket], epoch = counter.take_dirty()

    head, shards = split(bucket, keys_per_shard=5)
    assert [len(shard["keys"]) for shard in shards] == [5, 5, 2]  # type: ignore[arg-type]
    assert head["keys"] == {} and shard_set(head) == (epoch, 3)
    assert set(head["last_used"]) == {"t-a", "t-b"}  # type: ignore[arg-type]  # tokens' stay in the head
    assert joined(head, shards).to_dict() == bucket.to_dict()

    whole, none = split(bucket, keys_per_shard=12)
    assert none == [] and shard_set(whole) is None and whole == bucket.to_dict()
