"""A usage bucket with more keys than one etcd request holds is stored in shards, exactly once (issue 23).

A replica that leased 20,000 keys in five minutes holds a bucket of about 2 MB of JSON, over etcd's 1.5 MiB
request limit: written as one record, every flush was refused (usage stopped being durable, the edges kept
their releases for ever, GetUsage failed). Through two real replicas on a real etcd: the bucket is written as a
head and key shards, the other replica sums it whole; a later flush replaces the shard set and deletes the old
one; a flush that dies after its shards but before its head changes nothing another replica sees, and its
orphaned shards are collected.
"""

from __future__ import annotations

import pytest

from services.keyring.domain.errors import NotReady
from services.keyring.domain.usage import KEYS_PER_SHARD, Call

from .conftest import Replica, StartReplica
from .test_keyring_service import eventually

KEYS = 4 * KEYS_PER_SHARD  # ~2 MB of bucket: refused by etcd as one record


def count_calls(replica: Replica, keys: range, tokens: int = 1) -> None:
    for index in keys:
        replica.keyring.desk.ledger.count(Call("main", f"k-{index:016x}", "t-big", False, tokens, 1))


def own_shards(replica: Replica) -> set[str]:
    instance = replica.keyring.instance
    return {path for path in replica.keyring.cache.view.usage_keys if f"/usage_keys/{instance}/" in path}


async def test_a_bucket_of_twenty_thousand_keys_is_flushed_in_shards_and_summed_whole(
    start_replica: StartReplica,
) -> None:
    writer_replica = await start_replica("replica-a", recheck_interval_s=0)
    reader = await start_replica("replica-b", recheck_interval_s=0)
    housekeeping = writer_replica.keyring.housekeeping
    count_calls(writer_replica, range(KEYS))
    await housekeeping.flush_usage()  # etcd refused the single record before: NotReady
    assert writer_replica.keyring.desk.ledger.usage.durable >= 1
    assert len(own_shards(writer_replica)) == 4

    async def reader_sums(requests: int, input_tokens: int) -> bool:
        summary = await reader.keyring.housekeeping.usage_summary(3600)
        pool = summary.pools.get("main")
        return (
            pool is not None
            and (pool.requests, pool.input_tokens) == (requests, input_tokens)
            and len(summary.keys) == KEYS
            and sum(figures.requests for _, figures in summary.keys.values()) == requests
        )

    await eventually(lambda: reader_sums(KEYS, KEYS), within_s=5)

    # A later flush writes a new shard set and deletes the one the head named before.
    before = own_shards(writer_replica)
    count_calls(writer_replica, range(10), tokens=5)
    await housekeeping.flush_usage()
    after = own_shards(writer_replica)
    assert len(after) == 4 and not after & before
    await eventually(lambda: reader_sums(KEYS + 10, KEYS + 50), within_s=5)

    # A flush that dies between its shards and its head: nothing changes for the others, nothing is lost.
    count_calls(writer_replica, range(3), tokens=7)
    writes = writer_replica.keyring.writer.write_all_unguarded
    heads = 0

    async def head_refused(batch: list[tuple[str, bytes | None]]) -> None:
        nonlocal heads
        if any("/usage/" in path for path, _ in batch):
            heads += 1
            raise NotReady("the store went away before the head")
        await writes(batch)

    writer_replica.keyring.writer.write_all_unguarded = head_refused  # type: ignore[method-assign]
    with pytest.raises(NotReady):
        await housekeeping.flush_usage()
    writer_replica.keyring.writer.write_all_unguarded = writes  # type: ignore[method-assign]
    assert heads == 1 and len(own_shards(writer_replica)) == 8  # the orphaned set beside the named one
    assert await reader_sums(KEYS + 10, KEYS + 50)
    await housekeeping.flush_usage()  # written whole again, counted once
    await eventually(lambda: reader_sums(KEYS + 13, KEYS + 71), within_s=5)
    await housekeeping._collect_usage_and_audit(writer_replica.keyring.desk.ledger._clock())
    assert len(own_shards(writer_replica)) == 4
