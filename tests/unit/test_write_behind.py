"""Issue 13, findings 2 and 4, on the in-memory store under a fake clock: decisions and usage survive a store outage.

Health decisions hold in memory at once and are written behind with retries;
replaying one changes nothing. Usage buckets stay dirty until their write is
confirmed, and a release counts once however often it is delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from services.common.naming import token_hash
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.administration import Administration, KeyInput
from services.keyring.codec import decode, encode
from services.keyring.core import Keyring
from services.keyring.domain.decisions import covers, merge
from services.keyring.domain.errors import NoKeyAvailable, NotReady
from services.keyring.domain.identity import GEMINI_KEY_PATTERN
from services.keyring.domain.models import Cooldown, CooldownId, CooldownReason, CooldownScope, Outcome, Pool
from services.keyring.domain.usage import BUCKET_S, Bucket
from services.keyring.sealing import SecretBox, generate_kek
from services.keyring.store import MemoryStore, Write

from .builders import FakeChecker, FakeClock

MODEL = "gemini-3.5-flash"
PAIR = CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)
RATE_LIMITED = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=30)
SERVER_ERROR = Outcome(500, error_status="INTERNAL")


@dataclass
class World:
    store: MemoryStore
    clock: FakeClock
    box: SecretBox
    keyring: Keyring
    token: str
    key_id: str

    async def replica(self, replica_id: str) -> Keyring:
        other = Keyring(
            self.store, self.box, FakeChecker(), replica_id=replica_id, janitor_interval_s=3600, clock=self.clock,
            lease_key=b"k" * 32,
        )  # fmt: skip
        await other.start(timeout_s=2)
        return other


@pytest.fixture
async def world() -> AsyncIterator[World]:
    # Just before a usage-bucket boundary.
    store, clock, box = MemoryStore(), FakeClock(1_800_000_000.0 - 1), SecretBox.from_base64(generate_kek())
    keyring = Keyring(
        store, box, FakeChecker(), replica_id="r1", janitor_interval_s=3600, clock=clock, lease_key=b"k" * 32
    )
    await keyring.start(timeout_s=2)
    admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
    await admin.pools.create_pool(Pool("main"))
    [added] = await admin.keys.add_keys("main", [KeyInput(secret=fake_gemini_key("k0"), project="proj-a")])
    _, token = await admin.tokens.create_token("main", "tests")
    yield World(store, clock, box, keyring, token_hash(token), added.key_id)
    store.unavailable = False
    await keyring.stop()
    await store.close()


async def stored_cooldown(world: World) -> Cooldown | None:
    entry = await world.store.get(world.keyring.cache.layout.cooldown(PAIR))
    if entry is None:
        return None
    record = decode("cooldowns", entry.value, entry.mod_revision)
    assert isinstance(record, Cooldown)
    return record


async def test_decisions_made_while_the_store_is_away_hold_at_once_and_are_written_when_it_is_back(
    world: World,
) -> None:
    desk, decisions = world.keyring.desk, world.keyring.decisions
    world.store.unavailable = True
    grant, _ = desk.acquire(world.token, MODEL)
    assert await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)  # no store needed
    with pytest.raises(NoKeyAvailable):
        desk.acquire(world.token, MODEL)  # in force here at once
    with pytest.raises(NotReady):
        await decisions.flush()
    assert decisions.backlog == 2  # the cooldown and the key's health, kept
    world.store.unavailable = False
    await decisions.flush()
    assert decisions.backlog == 0
    stored = await stored_cooldown(world)
    assert stored is not None and stored.until == world.clock.now + 30 and stored.strikes == 1
    key = await world.store.get(world.keyring.cache.layout.key(world.key_id))
    assert key is not None and orjson.loads(key.value)["consecutive_failures"] == 1
    # A replica started now sees both.
    other = await world.replica("r2")
    try:
        assert other.cache.view.cooldowns[PAIR].until == stored.until
        assert other.cache.view.keys[world.key_id].consecutive_failures == 1
    finally:
        await other.stop()


async def test_replaying_a_decision_changes_nothing(world: World) -> None:
    desk, decisions = world.keyring.desk, world.keyring.decisions
    grant, _ = desk.acquire(world.token, MODEL)
    await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)
    await decisions.flush()
    view = world.keyring.cache.view
    cooldown, key = view.cooldowns[PAIR], view.keys[world.key_id]
    revision = world.store.revision
    # The same decision again: applied by the write-behind, by a peer's report, by a retried release.
    decisions.decide([dataclasses.replace(cooldown, revision=0), dataclasses.replace(key, revision=0)])
    desk.learn(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)
    await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)
    assert desk.report(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)
    await decisions.flush()
    assert decisions.backlog == 0 and world.store.revision == revision  # nothing written
    assert view.cooldowns[PAIR] == cooldown and view.keys[world.key_id] == key
    # A write that landed although the store seemed away (a timeout after the commit): retried, merged, once.
    grant, _ = desk.acquire(world.token, "other-model")
    await desk.release(grant.lease.lease_id, grant.key.key_id, "other-model", SERVER_ERROR)
    changed = view.keys[world.key_id]
    assert changed.consecutive_failures == 2
    path = world.keyring.cache.layout.key(world.key_id)
    assert await world.store.commit([Write(path, encode(changed))])  # behind the view's back: its guard loses
    await decisions.flush()
    assert view.keys[world.key_id].consecutive_failures == 2 and decisions.backlog == 0


def test_merges_are_idempotent_and_keep_the_later_until_without_adding_strikes() -> None:
    first = Cooldown(PAIR, CooldownReason.RATE_LIMIT, 100.0, 2, revision=7, decision="a", decided_at=10.0)
    later = Cooldown(PAIR, CooldownReason.RATE_LIMIT, 90.0, 1, decision="b", decided_at=11.0)  # a decay, say
    merged = merge(first, later)
    assert isinstance(merged, Cooldown)
    assert (merged.until, merged.strikes, merged.revision, merged.decision) == (100.0, 1, 7, "b")
    assert merge(merged, later) is merged and merge(merged, first) is merged  # replays, in any order
    assert covers(merged, first) and covers(merged, later)
    same_event = dataclasses.replace(first, until=100.5, decided_at=10.2)  # one 429 judged by another replica
    assert merge(first, same_event) is first


async def test_a_store_stall_across_a_usage_bucket_boundary_loses_no_count(world: World) -> None:
    desk, housekeeping = world.keyring.desk, world.keyring.housekeeping
    first_bucket = (int(world.clock.now) // BUCKET_S) * BUCKET_S
    for _ in range(3):
        grant, _ = desk.acquire(world.token, MODEL)
        await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200))
    world.store.unavailable = True
    with pytest.raises(NotReady):
        await housekeeping.flush_usage()
    world.clock.now += 2  # the next bucket, the store still away
    grant, _ = desk.acquire(world.token, MODEL)
    await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200))
    with pytest.raises(NotReady):
        await housekeeping.flush_usage()
    world.store.unavailable = False
    await housekeeping.flush_usage()
    buckets = {
        bucket.start: bucket
        for value in world.keyring.cache.view.usage.values()
        if (bucket := Bucket.from_dict(orjson.loads(value)))
    }
    assert buckets[first_bucket].keys[world.key_id].requests == 3
    assert buckets[first_bucket + BUCKET_S].keys[world.key_id].requests == 1
    assert list(desk.ledger.usage.buckets) == [first_bucket + BUCKET_S]  # the finished one forgotten once written


async def test_a_retried_release_counts_once(world: World) -> None:
    desk = world.keyring.desk
    other = await world.replica("r2")
    try:
        grant, _ = desk.acquire(world.token, MODEL)
        lease_id, key_id = grant.lease.lease_id, grant.key.key_id
        for _ in range(2):  # the same replica twice (a reply lost), then another one (a timeout)
            await desk.release(lease_id, key_id, MODEL, Outcome(200))
        await other.desk.release(lease_id, key_id, MODEL, Outcome(200))
        assert sum(b.keys[key_id].requests for b in desk.ledger.usage.buckets.values()) == 1
        assert not other.desk.ledger.usage.buckets
        # A lease whose replica went away without its release: the release counts once, on the other replica.
        grant, _ = desk.acquire(world.token, MODEL)
        await world.keyring.stop()
        for _ in range(100):  # until r2's watch has seen r1 leave
            if "r1" not in other.cache.view.members:
                break
            await asyncio.sleep(0.01)
        for _ in range(2):
            await other.desk.release(grant.lease.lease_id, key_id, MODEL, Outcome(200))
        assert sum(b.keys[key_id].requests for b in other.desk.ledger.usage.buckets.values()) == 1
    finally:
        await other.stop()


async def test_a_release_answers_its_usage_epoch_durable_once_its_flush_is_confirmed(world: World) -> None:
    desk, housekeeping = world.keyring.desk, world.keyring.housekeeping
    grant, _ = desk.acquire(world.token, MODEL)
    released = desk.release_slot(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200))
    assert released.known and released.counted_epoch == 1
    assert desk.ledger.usage.durable == 0
    world.store.unavailable = True
    with pytest.raises(NotReady):
        await housekeeping.flush_usage()
    assert desk.ledger.usage.durable == 0  # not confirmed: the edge keeps the release
    world.store.unavailable = False
    await housekeeping.flush_usage()
    assert desk.ledger.usage.durable >= released.counted_epoch
    assert desk.ledger.flushed_epoch(world.keyring.instance) == desk.ledger.usage.durable
    # The edge re-sends it (its stream broke before the durable epoch came): echoed, not counted again.
    again = desk.release_slot(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200), released.counted_epoch)
    assert (again.known, again.counted_epoch) == (False, released.counted_epoch)
    assert sum(b.keys[world.key_id].requests for b in desk.ledger.usage.buckets.values()) == 1


async def test_a_killed_replica_s_unflushed_counts_are_counted_once_by_its_successor(world: World) -> None:
    """SIGKILL then restart: the old instance never writes again; the edge re-sends what was not durable."""
    desk, housekeeping = world.keyring.desk, world.keyring.housekeeping
    released = []
    for flush_after in (False, False, True, False, False):  # three flushed, two not
        grant, _ = desk.acquire(world.token, MODEL)
        lease_id, key_id = grant.lease.lease_id, grant.key.key_id
        released.append((lease_id, key_id, desk.release_slot(lease_id, key_id, MODEL, Outcome(200)).counted_epoch))
        if flush_after:
            await housekeeping.flush_usage()
    never_answered, _ = desk.acquire(world.token, MODEL)  # released, but its answer never reached the edge
    desk.release_slot(never_answered.lease.lease_id, never_answered.key.key_id, MODEL, Outcome(200))
    desk.release_slot(never_answered.lease.lease_id, never_answered.key.key_id, MODEL, Outcome(200))
    assert [epoch for *_, epoch in released] == [1, 1, 1, 2, 2]
    # The successor takes the membership (the old instance is killed: no stop, no last flush).
    successor = await world.replica("r1")
    try:
        assert successor.instance != world.keyring.instance
        for _ in range(100):  # until its watch has brought its own membership (the old instance's replaced)
            if successor.instance.encode() in successor.cache.view.members.get("r1", b""):
                break
            await asyncio.sleep(0.01)
        for _ in range(2):  # re-sent twice (the successor's reply lost once): counted once
            for lease_id, key_id, epoch in released:
                successor.desk.release_slot(lease_id, key_id, MODEL, Outcome(200), epoch)
            successor.desk.release_slot(never_answered.lease.lease_id, never_answered.key.key_id, MODEL, Outcome(200))
        buckets = successor.desk.ledger.usage.buckets.values()
        # The two of the unflushed epoch and the one never answered (its granter had not flushed it either: the
        # one case counted once more, see ledger.py); the three flushed ones not again.
        assert sum(b.keys[world.key_id].requests for b in buckets) == 3
    finally:
        await successor.stop()


async def test_a_release_kept_for_its_granter_counts_only_there(world: World) -> None:
    """The edge delivered it to another replica while the granter's stream was down, and keeps it for the granter."""
    other = await world.replica("r2")
    try:
        grant, _ = world.keyring.desk.acquire(world.token, MODEL)
        lease_id, key_id = grant.lease.lease_id, grant.key.key_id
        other.desk.release_slot(lease_id, key_id, MODEL, Outcome(200), kept_for_granter=True)
        await world.keyring.stop()  # the granter leaves holding the lease: the edge re-sends it to its successor
        for _ in range(100):
            if "r1" not in other.cache.view.members:
                break
            await asyncio.sleep(0.01)
        other.desk.ledger.count_departed(world.clock())
        assert not other.desk.ledger.usage.buckets
    finally:
        await other.stop()
