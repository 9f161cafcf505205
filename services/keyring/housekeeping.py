"""Housekeeping: the chores no request waits for.

The janitor reclaims abandoned leases, flushes this replica's usage buckets
and drops what has aged out (stale cooldowns, old usage, audit beyond its
limit, affinity records past their resource's lifetime; an expired record is
ignored by acquires before it is collected). The re-check probes invalid and suspended keys upstream now and then
(on the leader only); ``verify`` does the same on an operator's demand. The
audit log is written and read here too; every entry also goes out as a JSON
log line (logger ``keyring.audit``), so it reaches the log pipeline and
outlives the store's newest 1,000.

A re-check's answer is judged like any other. A 429 whose QuotaFailure names
a model in its quotaDimensions cools that model; one that names none (listing
models names none) cools the model-less pair, as the check itself is
model-less: generation calls keep their keys and learn any per-model quota
on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from services.common.naming import model_id

from .cache import StateCache
from .desk import LeaseDesk
from .domain.budgets import DAY_S
from .domain.errors import Conflict, KeyringError, NotReady
from .domain.models import KeyState, Outcome
from .domain.usage import Bucket, UsageSummary, joined, shard_set, split, summarise
from .writer import Change, StateWriter

log = logging.getLogger(__name__)
# Every audit entry as a JSON log line too (services.common.logs puts the entry under "audit").
audit_log = logging.getLogger("keyring.audit")

COOLDOWN_GC_INTERVAL_S = 30.0
USAGE_FLUSH_INTERVAL_S = 5.0
USAGE_RETENTION_S = 25 * 3600
AUDIT_LIMIT = 1000
AFFINITY_GC_BATCH = 100  # deletes per store commit (at most MAX_WRITES_PER_COMMIT)
Clock = Callable[[], float]


class Checker(Protocol):
    """One cheap upstream call with a key's secret (``checker.UpstreamChecker``)."""

    async def check(self, secret: str) -> Outcome: ...

    async def close(self) -> None: ...


class Housekeeping:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        desk: LeaseDesk,
        checker: Checker,
        *,
        instance: str,
        clock: Clock,
    ) -> None:
        self._cache = cache
        self._view = cache.view
        self._layout = cache.layout
        self._writer = writer
        self._desk = desk
        self._checker = checker
        self._instance = instance
        # Each large bucket's shard set this instance last wrote and confirmed, by bucket start: (epoch, count).
        self._shard_sets: dict[int, tuple[int, int]] = {}
        # One flush at a time (the loop's, GetUsage's): a flush awaits several commits, and an older head
        # landing after a newer one would put back fewer counts than were made durable.
        self._flushing = asyncio.Lock()
        self._clock = clock

    async def janitor(self, interval_s: float) -> None:
        """Reclaim abandoned leases, flush usage, drop what has aged out (runs until cancelled)."""
        last_gc = last_flush = 0.0
        while True:
            await asyncio.sleep(interval_s)
            now = self._clock()
            self._desk.reclaim_expired(now)
            self._desk.ledger.count_departed(now)
            with contextlib.suppress(NotReady, Conflict):
                if now - last_flush >= USAGE_FLUSH_INTERVAL_S:
                    last_flush = now
                    await self.flush_usage()
                if now - last_gc >= COOLDOWN_GC_INTERVAL_S:
                    last_gc = now
                    await self._collect_cooldowns(now)
                    await self.collect_affinity(now)
                    await self._collect_usage_and_audit(now)

    async def recheck(self, interval_s: float, replica_id: str) -> None:
        """Probe invalid and suspended keys now and then; those that answer come back (the leader only)."""
        while True:
            await asyncio.sleep(interval_s)
            if not self._cache.is_leader(replica_id):
                continue
            try:
                checked = await self.verify(self.unhealthy_keys())
                log.info("re-checked %d unhealthy keys", len(checked))
            except KeyringError as error:
                log.warning("re-check of unhealthy keys failed: %s", error)

    async def close(self) -> None:
        await self._checker.close()

    # -- checking keys upstream -----------------------------------------

    async def verify(self, key_ids: list[str]) -> list[tuple[str, Outcome]]:
        """Check keys upstream; a key that answers is revived, a refusal is judged as usual."""
        results = []
        for key_id in key_ids:
            key = self._view.keys.get(key_id)
            if key is None:
                continue
            outcome = await self._checker.check(self._desk.secret_of(key_id, key.sealed_secret))
            if 200 <= outcome.http_status < 300:
                await self._writer.transact(functools.partial(self._revived, key_id, f"revive.{secrets.token_hex(8)}"))
            else:  # judged like any outcome: in force at once, written behind
                self._desk.learn(f"recheck.{secrets.token_hex(8)}", key_id, model_id(outcome.quota_model()), outcome)
            results.append((key_id, outcome))
        return results

    def unhealthy_keys(self, pool: str = "") -> list[str]:
        return sorted(
            key.key_id
            for key in self._view.keys.values()
            if key.state in (KeyState.INVALID, KeyState.SUSPENDED) and (not pool or key.pool == pool)
        )

    def _revived(self, key_id: str, decision: str) -> list[Change]:
        """The key healthy again: a health decision of its own (later than any pending one), written at once."""
        key = self._view.keys.get(key_id)
        if key is None or key.state is KeyState.DISABLED:
            return []
        healthy = dataclasses.replace(
            key, state=KeyState.ACTIVE, state_until=0.0, consecutive_failures=0, forbidden_strikes=0
        )
        if healthy == key:
            return []
        return [self._writer.put(dataclasses.replace(healthy, health_id=decision, health_at=self._desk.stamp()))]

    # -- usage and audit ------------------------------------------------

    async def flush_usage(self) -> None:
        """Write this replica's changed usage buckets (only it writes them) in one commit; clean once confirmed.

        Serialised as they are taken, before any await: the epoch they close
        holds exactly their counts (``keyring/ledger.py``). A large bucket's key
        shards (``domain/usage.py`` ``split``) go first, a commit each (etcd's
        request limit); the one commit of every head then makes them count, and
        the shard sets those heads replace are deleted after it.
        """
        async with self._flushing:
            await self._flush_usage()

    async def _flush_usage(self) -> None:
        usage, allocator, now = self._desk.ledger.usage, self._desk.allocator, self._clock()
        taken, epoch = usage.take_dirty()
        writes: list[tuple[str, bytes | None]] = []
        shards: list[tuple[str, bytes | None]] = []
        sets: dict[int, tuple[int, int] | None] = {}
        for bucket in taken:
            head, parts = split(bucket)
            writes.append((self._layout.usage(self._instance, bucket.start), orjson.dumps(head)))
            sets[bucket.start] = (bucket.epoch, len(parts)) if parts else None
            for index, part in enumerate(parts):
                shards.append((self._layout.usage_shard(self._instance, bucket.start, bucket.epoch, index),
                               orjson.dumps(part)))  # fmt: skip
        allocator.budgets.forget_old(now)
        admitted = allocator.published(now)  # what survivors take off if this instance dies (domain/admissions.py)
        if admitted is not None:
            writes.append((self._layout.admitted(self._instance), orjson.dumps(admitted.to_dict())))
        if writes:
            try:
                for shard in shards:
                    await self._writer.write_all_unguarded([shard])
                await self._writer.write_all_unguarded(writes)
            except BaseException:
                usage.not_written(taken)  # they may have landed: written whole again, counted once
                if admitted is not None:
                    allocator.not_published()
                raise
            usage.written(epoch)
            await self._replace_shard_sets(sets)
        usage.forget_written(now)

    async def _replace_shard_sets(self, written: dict[int, tuple[int, int] | None]) -> None:
        """The shard sets the heads just written no longer name: deleted (best effort: the garbage pass retries)."""
        stale: list[tuple[str, bytes | None]] = []
        for start, now_named in written.items():
            before = self._shard_sets.pop(start, None)
            if now_named is not None:
                self._shard_sets[start] = now_named
            if before is not None and before != now_named:
                stale.extend((self._layout.usage_shard(self._instance, start, before[0], i), None)
                             for i in range(before[1]))  # fmt: skip
        for first in range(0, len(stale), 100):  # well under etcd's operations per transaction
            with contextlib.suppress(KeyringError):
                await self._writer.write_all_unguarded(stale[first : first + 100])

    def stored_buckets(self) -> list[Bucket]:
        """Every replica's buckets in the view, each joined with the key shards its head names."""
        buckets = []
        for path, value in self._view.usage.items():
            head = orjson.loads(value)
            named = shard_set(head)
            if named is None:
                buckets.append(Bucket.from_dict(head))
                continue
            _, (replica, start) = self._layout.kind_of(path)
            paths = (self._layout.usage_shard(replica, int(start), named[0], i) for i in range(named[1]))
            buckets.append(joined(head, [orjson.loads(self._view.usage_keys[p]) for p in paths
                                         if p in self._view.usage_keys]))  # fmt: skip
        return buckets

    async def usage_summary(self, window_s: float, pool: str = "") -> UsageSummary:
        await self.flush_usage()
        return summarise(self.stored_buckets(), self._clock() - window_s, pool)

    async def record_audit(self, actor: str, action: str, target: str, detail: str) -> None:
        now = self._clock()
        entry = {"at": now, "actor": actor[:200], "action": action, "target": target[:200], "detail": detail[:500]}
        path = self._layout.audit(int(now * 1000), secrets.token_hex(4))
        # The log line first: it survives even when the store write fails, and outlives the newest 1,000.
        audit_log.info("audit %s %s %s", entry["actor"], action, entry["target"], extra={"fields": {"audit": entry}})
        await self._writer.write_unguarded(path, orjson.dumps(entry))

    def audit_entries(self, limit: int) -> list[dict[str, Any]]:
        newest = sorted(self._view.audit, reverse=True)[:limit]
        return [orjson.loads(self._view.audit[path]) for path in newest]

    # -- garbage --------------------------------------------------------

    async def _collect_usage_and_audit(self, now: float) -> None:
        horizon = now - USAGE_RETENTION_S
        for path in [p for p in self._view.usage if int(p.rsplit("/", 1)[1]) < horizon]:
            await self._writer.write_unguarded(path, None)
        for path in self._stale_shards(horizon):
            await self._writer.write_unguarded(path, None)
        for path in sorted(self._view.audit)[:-AUDIT_LIMIT]:
            await self._writer.write_unguarded(path, None)
        members = self._cache.instances()
        for instance, published in list(self._view.admitted.items()):  # a departed instance's, once its day ended
            if instance not in members and instance != self._instance and published.at + DAY_S < now:
                await self._writer.write_unguarded(self._layout.admitted(instance), None)

    def _stale_shards(self, horizon: float) -> list[str]:
        """Key shards past the retention horizon, and this instance's that no head names (a flush that failed
        after writing them; only epochs already durable: a flush under way writes a later one)."""
        durable = self._desk.ledger.usage.durable
        stale = []
        for path in self._view.usage_keys:
            _, (replica, start, epoch, _index) = self._layout.kind_of(path)
            if int(start) < horizon:
                stale.append(path)
            elif replica == self._instance and int(epoch) < durable:
                named = self._shard_sets.get(int(start))
                if named is None or named[0] != int(epoch):
                    stale.append(path)
        return stale

    async def _collect_cooldowns(self, now: float) -> None:
        memory = max((pool.policy.strike_memory_s for pool in self._view.pools.values()), default=3600.0)
        stale = [c for c in self._view.cooldowns.values() if c.until + memory < now]
        for cooldown in stale:
            await self._writer.commit([self._writer.delete(cooldown)])

    async def collect_affinity(self, now: float) -> int:
        """Delete affinity records whose resource's lifetime ended, guarded (a record bound again stays); how many."""
        expired = [record for record in self._view.affinity.values() if not record.active(now)]
        collected = 0
        for start in range(0, len(expired), AFFINITY_GC_BATCH):
            batch = [(record.pool, record.name) for record in expired[start : start + AFFINITY_GC_BATCH]]
            collected += len(await self._writer.transact(functools.partial(self._still_expired, batch, now)))
        return collected

    def _still_expired(self, batch: list[tuple[str, str]], now: float) -> list[Change]:
        records = (self._view.affinity.get(subject) for subject in batch)
        return [self._writer.delete(record) for record in records if record is not None and not record.active(now)]
